"""Benchmark one layer's memory op: recurrent vs chunked (b = 16, 64), forward + backward.

d_model 256 -> 4 heads of 64, batch 1, presets gated_deltanet, titans, moneta, yaad, memora.
CPU: float32, one thread; memory = bytes of the distinct tensors autograd saves for backward
(what the sequence length drives). CUDA: bfloat16 autocast, torch.cuda.max_memory_allocated.

    python benchmarks/memory_ops.py [--lengths 512 2048 8192] [--out benchmarks/results/memory_ops_cpu.md]
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from miras_search.memory import MemoryRule, memory_forward
from miras_search.memory.testing import random_inputs
from miras_search.presets import preset

PRESETS = ("gated_deltanet", "titans", "moneta", "yaad", "memora")
HEADS, DIM = 4, 64
RECURRENT_MAX_T = 2048  # the token loop at 8192 takes minutes per preset on one CPU thread


class SavedBytes:
    """Counts the bytes of distinct storages autograd saves for backward (CPU memory proxy)."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """Count x's storage; hand autograd back a detached view of it (the tensor itself, once
        saved through a hook, kept memory alive after every backward: 14 MB a run for Yaad's
        memory op at T=4096)."""
        storage = x.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return x.detach()

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def run_once(rule, inputs, mode: str, chunk: int, form: str, device: str) -> tuple[float, int]:
    q, k, v, gates, params = inputs
    counter = SavedBytes()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else nullcontext()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with autocast, torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda x: x):
        out = memory_forward(rule, q, k, v, gates, params, mode=mode, chunk_size=chunk,
                             chunk_form=form)
    out.float().square().mean().backward()
    if device == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter() - start, torch.cuda.max_memory_allocated()
    return time.perf_counter() - start, counter.total


def bench(name: str, length: int, mode: str, chunk: int, device: str, repeats: int):
    point = preset(name)
    rule = MemoryRule.from_point(point)
    form = "exact_delta" if point.uses_exact_delta() else "minibatch"
    dtype = torch.float32
    inputs = random_inputs(rule, 1, length, HEADS, DIM, dtype=dtype, requires_grad=False)
    q, k, v, gates, params = inputs
    leaves = [x for x in (q, k, v, gates.eta, gates.alpha, gates.theta, gates.delta, *params)
              if x is not None]
    moved = [x.to(device).requires_grad_() for x in leaves]
    it = iter(moved)
    q, k, v = next(it), next(it), next(it)
    gate_vals = {n: (next(it) if getattr(gates, n) is not None else None)
                 for n in ("eta", "alpha", "theta", "delta")}
    params = list(it)
    inputs = (q, k, v, type(gates)(**gate_vals), params)
    times, mem = [], 0
    for _ in range(repeats):
        seconds, mem = run_once(rule, inputs, mode, chunk, form, device)
        times.append(seconds)
    return min(times), mem, form


def format_row(row: dict) -> list[str]:
    """Seconds, speed-ups over the recurrence and memory of one (preset, T) row."""
    rec = row.get("rec")
    keys = ("rec", "16", "64")
    secs = [f"{row[k][0]:.3f}" if k in row else "skipped" for k in keys]
    speed = [f"{rec[0] / row[k][0]:.1f}x" if rec else "-" for k in ("16", "64")]
    mib = [f"{row[k][1] / 2**20:.1f}" if k in row else "-" for k in keys]
    return secs + speed + mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 4096, 8192])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    unit = "peak MiB (cuda)" if args.device == "cuda" else "saved MiB"
    table = Table(title=f"memory op fwd+bwd, B=1, H={HEADS}, K=V={DIM}, {args.device}")
    for col in ("preset", "chunk form", "T", "recurrent s", "b=16 s", "b=64 s",
                "speed-up b=16", "speed-up b=64", f"rec {unit}", f"b=16 {unit}", f"b=64 {unit}"):
        table.add_column(col, justify="right")
    for name in args.presets:
        for length in args.lengths:
            row = {}
            for label, mode, chunk in (("rec", "recurrent", 1), ("16", "chunked", 16),
                                       ("64", "chunked", 64)):
                if mode == "recurrent" and length > RECURRENT_MAX_T:
                    continue
                repeats = 1 if mode == "recurrent" else 2
                row[label] = bench(name, length, mode, chunk, args.device, repeats)
            table.add_row(name, row["16"][2], str(length), *format_row(row))
    console = Console(record=True, width=160)
    console.print(table)
    if args.device == "cpu":
        console.print(f"recurrent skipped above T={RECURRENT_MAX_T} (minutes per preset on one thread)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        text = console.export_text()
        args.out.write_text(
            "# Memory op benchmark\n\nCommand: `python benchmarks/memory_ops.py"
            f" --out {args.out}`\n\n```\n{text}```\n"
        )


if __name__ == "__main__":
    main()
