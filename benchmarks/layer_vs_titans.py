"""One memory layer on CPU: our Moneta / Titans layers against titans-pytorch's NeuralMemory and
against the time their matrix products need.

Shape: d_model 256 = 4 heads of 64, MLP memory of depth 2 with hidden 256 (expansion 4), B=1,
T=2048, chunk 16 (titans-pytorch: chunk_size = batch_size = 16), float32, one thread, forward +
backward of the whole layer (projections, gates, memory, output). What each side computes:

- ours: ``MemoryMixer`` of the preset (q/k/v projections, short conv, l2 norm, gates, the chunked
  MLP memory with LayerNorm and residual, output norm, output gate, output projection);
- titans-pytorch (optional; skipped when ``titans_pytorch`` is not installed):
  ``NeuralMemory(dim=256, heads=4, dim_head=64, chunk_size=16, batch_size=16)``, its default
  MLP memory (depth 2, expansion 4, GELU, LayerNorm + residual), momentum, learned decay and step.
  The same kind of layer (a chunked MLP memory of the same size with momentum and decay), not the
  same arithmetic: it takes per-sample gradients with torch.func, we use hand-written chunk math.

Matmul bound: the matrix-product FLOPs of our layer's forward + backward, counted with
``torch.utils.flop_counter.FlopCounterMode``, divided by this machine's one-thread fp32 matmul
rate (median of a few 1024^3 products, measured in the same run). Sides are interleaved round
by round; times are medians.

``--compile`` adds each preset once more under train.compile (``compile_layers``: the layer and
its chunk update compiled by inductor, a copy of the same weights); its bound is the eager
layer's FLOP count (the same products; the counter does not see inside compiled graphs), and its
first call (the compile) is reported apart.

    python benchmarks/layer_vs_titans.py [--rounds 5] [--length 2048] [--chunk 16] [--compile]
        [--out benchmarks/results/layer_vs_titans_cpu.md]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from miras_search.model.compiling import compile_layers
from miras_search.model.mixer import MemoryMixer
from miras_search.presets import preset
from miras_search.trial.allocator import tune_allocator

D_MODEL, HEADS, DIM_HEAD = 256, 4, 64


def matmul_rate(size: int = 1024, repeats: int = 5) -> float:
    """One-thread fp32 matmul FLOP/s (median of ``repeats`` size^3 products)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def our_layer(name: str, chunk: int) -> nn.Module:
    block = {"d_model": D_MODEL, "n_heads": HEADS, "n_layers": 1}
    train = {"chunk_size": chunk, "kernel": "torch"}
    return MemoryMixer(preset(name, block=block, train=train))


def titans_layer(chunk: int) -> nn.Module | None:
    if importlib.util.find_spec("titans_pytorch") is None:
        return None
    from titans_pytorch import NeuralMemory

    return NeuralMemory(dim=D_MODEL, heads=HEADS, dim_head=DIM_HEAD, chunk_size=chunk, batch_size=chunk)


def runner(layer: nn.Module, x: torch.Tensor, titans: bool) -> Callable[[], None]:
    def run() -> None:
        out = layer(x)
        out = out[0] if titans else out
        out.square().mean().backward()
        layer.zero_grad(set_to_none=True)
        x.grad = None
    return run


def timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def matmul_flops(run: Callable[[], None]) -> int:
    """FLOPs of the matrix products (mm, bmm, addmm, baddbmm, attention) of one call. The
    counter's convolution entries are left out: it counts a depthwise conv as a dense one."""
    with FlopCounterMode(display=False) as counter:
        run()
    return sum(flops for op, flops in counter.get_flop_counts()["Global"].items()
               if "convolution" not in str(op))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="moneta,titans")
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also each preset under train.compile")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tune_allocator()  # as in every trial process (miras_search.trial.allocator)
    torch.manual_seed(0)
    x = torch.randn(1, args.length, D_MODEL, requires_grad=True)
    layers = {name: our_layer(name, args.chunk) for name in args.presets.split(",")}
    runs: dict[str, Callable[[], None]] = {name: runner(layer, x, titans=False) for name, layer in layers.items()}
    theirs = titans_layer(args.chunk)
    if theirs is not None:
        runs["titans-pytorch"] = runner(theirs, x, titans=True)
    else:
        print("titans_pytorch is not installed: its column is skipped (pip install titans-pytorch)")
    # counted before anything compiles: a compiled layer run after the counter's dispatch mode
    # recompiled (its guards failed once)
    flops = {name: matmul_flops(run) for name, run in runs.items()}  # also the warm-up
    first_call: dict[str, float] = {}
    if args.compile:
        for name, layer in layers.items():
            compiled = copy.deepcopy(layer)
            if not compile_layers([compiled], torch.device("cpu")):
                break  # no C++ compiler: compile_layers warned, the compiled rows are left out
            label = f"{name} (compiled)"
            runs[label], flops[label] = runner(compiled, x, titans=False), flops[name]
            first_call[label] = timed(runs[label])
    rates: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        rates.append(matmul_rate())
        for name, run in runs.items():
            times[name].append(timed(run))
    rate = statistics.median(rates)
    med = {name: statistics.median(t) for name, t in times.items()}
    console = Console(record=True, width=130)
    table = Table(title=f"layer fwd+bwd, d_model {D_MODEL} = {HEADS} x {DIM_HEAD}, MLP hidden 256, B=1, "
                        f"T={args.length}, chunk {args.chunk}, fp32, cpu 1 thread, median of {args.rounds} "
                        f"interleaved rounds; matmul rate {rate / 1e9:.1f} GFLOP/s")
    columns = ["layer", "seconds", "matmul GFLOP", "matmul bound s", "x bound", "titans-pytorch / this"]
    for col in columns + (["first call s"] if first_call else []):
        table.add_column(col, justify="right")
    for name in runs:
        bound = flops[name] / rate
        vs = f"{med['titans-pytorch'] / med[name]:.2f}" if "titans-pytorch" in med else "-"
        row = [name, f"{med[name]:.3f}", f"{flops[name] / 1e9:.2f}", f"{bound:.3f}", f"{med[name] / bound:.1f}", vs]
        if first_call:
            row.append(f"{first_call[name]:.1f}" if name in first_call else "")
        table.add_row(*row)
    console.print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            "# Memory layer against titans-pytorch and the matmul bound\n\nCommand: "
            f"`python benchmarks/layer_vs_titans.py --rounds {args.rounds} --chunk {args.chunk}"
            f"{' --compile' if args.compile else ''}`\n\n"
            f"```\n{console.export_text()}```\n"
        )


if __name__ == "__main__":
    main()
