"""How the chunked memory forms' cost grows with the sequence length (forward + backward).

Every memory preset runs its resolved chunk form (exact_delta where the preset uses it, else the
mini-batch form) at T = 1024 .. 8192 on one CPU thread, float32, B=1, H=4, K=V=64. The lengths
are interleaved round by round (each round times every T once, after an untimed run at that T
and a pass that evicts the caches: a first run at a new size pays for fresh memory pages, which
a training loop pays once, and switching lengths in one process leaves the heap cut to the other
length's tensors, so each switch pays them again: memora at T=8192 took 9.5 to 18 s after a run
at 4096; the untimed run alone left a short length's inputs cache-hot) so that a busy machine
slows them alike; the time per T is the minimum over rounds (load only adds). The exponent is the least-squares slope of
log(time) against log(T) (1.0 = linear); the same slope of the bytes autograd saves for the
backward says whether memory is linear, and that of the elements all ops write (forward and
backward, counted once per T) whether the work is: unlike the time it does not move with the
machine's load.

    python benchmarks/chunk_scaling.py [--presets a,b] [--chunk 16] [--head-dim 64] [--rounds 3]
        [--out benchmarks/results/chunk_scaling_cpu.md]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
from memory_ops import SavedBytes  # benchmarks/ is on sys.path when a script here runs
from rich.console import Console
from rich.table import Table

from miras_search.memory import MemoryRule, chunked, memory_forward
from miras_search.memory.testing import random_inputs, written_elements
from miras_search.model.mixer import resolved_chunk_form
from miras_search.presets import preset, preset_names
from miras_search.trial.allocator import release_free_memory, tune_allocator

LENGTHS = (1024, 2048, 4096, 8192)
HEADS, DIM = 4, 64


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) on log(x)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


CACHE_FLUSH_BYTES = 128 * 2**20
"""Written before every timed run: several times the last-level cache of the machines measured."""


def flush_caches(_buffer: list[torch.Tensor] = []) -> None:  # noqa: B006 (one buffer, kept)
    """Evict the caches by writing CACHE_FLUSH_BYTES (the buffer is allocated once)."""
    if not _buffer:
        _buffer.append(torch.empty(CACHE_FLUSH_BYTES // 4))
    _buffer[0].fill_(1.0)


def time_once(rule: MemoryRule, inputs, chunk: int, form: str) -> float:
    """Seconds of one forward + backward."""
    q, k, v, gates, params = inputs
    start = time.perf_counter()
    out = memory_forward(rule, q, k, v, gates, params, chunk_size=chunk, chunk_form=form)
    out.square().mean().backward()
    return time.perf_counter() - start


def saved_bytes(rule: MemoryRule, inputs, chunk: int, form: str) -> int:
    """Bytes autograd saves for the backward of one forward, measured apart from the timed runs
    (which run without a hook). The hook here hands autograd nothing back (no backward follows)
    and holds detached views of what was saved until the count is done, so that no storage is
    freed and its address counted again."""
    q, k, v, gates, params = inputs
    counter, held = SavedBytes(), []

    def count(x: torch.Tensor) -> None:
        held.append(counter.pack(x))  # a detached view

    with torch.autograd.graph.saved_tensors_hooks(count, lambda _: None):
        memory_forward(rule, q, k, v, gates, params, chunk_size=chunk, chunk_form=form)
    return counter.total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    memory_presets = [n for n in preset_names() if preset(n).memory.kind != "none"]
    parser.add_argument("--presets", default=",".join(memory_presets))
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=DIM,
                        help="K = V per head (Atlas's degree-2 features at 64 take 12.5 GB at T=1024)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tune_allocator()  # as in every trial process (miras_search.trial.allocator)
    # the chunk updates as they are: a deep memory keeping over 1 GiB per layer (ttt_mlp, titans,
    # moneta, yaad at T=8192 here) would run them checkpointed, a recomputation (about 1.3x) that
    # is not the form's own scaling
    chunked.CHECKPOINT_LAYER_BYTES = float("inf")
    console = Console(record=True, width=140)
    table = Table(title=f"chunked memory fwd+bwd, B=1, H={HEADS}, K=V={args.head_dim}, chunk {args.chunk}, "
                        f"cpu 1 thread, min of {args.rounds} interleaved rounds")
    for col in ("preset", "form", *(f"T={t} s" for t in args.lengths), "time exponent", "work exponent",
                "memory exponent"):
        table.add_column(col, justify="right")
    for name in args.presets.split(","):
        release_free_memory()  # the last preset's heap, as a trial worker between trials
        point = preset(name)
        rule = MemoryRule.from_point(point)
        form = resolved_chunk_form(point)
        inputs = {t: random_inputs(rule, 1, t, HEADS, args.head_dim, dtype=torch.float32, requires_grad=True)
                  for t in args.lengths}
        written = {t: written_elements(rule, inputs[t], args.chunk, form) for t in args.lengths}  # + warm-up
        times: dict[int, list[float]] = {t: [] for t in args.lengths}
        saved = {t: saved_bytes(rule, inputs[t], args.chunk, form) for t in args.lengths}
        for _ in range(args.rounds):
            for t in args.lengths:
                # untimed first: after a run at another length the heap's free blocks are cut to
                # that length's tensors, and the first run at this one grows the heap again
                # (fresh pages, faulted in), as a training loop's first step does once; then the
                # caches flushed, so that a short length's inputs are not timed cache-hot
                time_once(rule, inputs[t], args.chunk, form)
                flush_caches()
                seconds = time_once(rule, inputs[t], args.chunk, form)
                times[t].append(seconds)
        best = [min(times[t]) for t in args.lengths]
        exponent = slope(list(args.lengths), best)
        mem_exponent = slope(list(args.lengths), [saved[t] for t in args.lengths])
        work_exponent = slope(list(args.lengths), [written[t] for t in args.lengths])
        table.add_row(name, form, *(f"{m:.3f}" for m in best), f"{exponent:.2f}", f"{work_exponent:.2f}",
                      f"{mem_exponent:.2f}")
        console.print(f"{name}: exponent {exponent:.2f} (work {work_exponent:.2f}, memory {mem_exponent:.2f})")
    console.print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            "# Chunked forms: time against sequence length\n\nCommand: `python benchmarks/chunk_scaling.py"
            f" --presets {args.presets} --chunk {args.chunk} --head-dim {args.head_dim} --rounds {args.rounds}`"
            f"\n\n```\n{console.export_text()}```\n"
        )


if __name__ == "__main__":
    main()
