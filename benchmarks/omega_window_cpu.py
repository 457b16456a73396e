"""Atlas's Omega window on the CPU: the linear chunked form (c entries per token) against the
materialised one (per-token weights), one memory op fwd+bwd, like for like.

Both sides compute the same chunked form (every gradient of a chunk at its start memory; the
tests hold them equal to 1e-10 in float64) on the same float32 inputs, chunk and thread:
``memory_forward`` runs the window as c plain entries per token of the linear form
(``memory.inputs.window_as_entries``), the other side runs ``memory.materialised``'s chunk, which
every window ran before. Sides interleaved in one process, median of the rounds.

    python benchmarks/omega_window_cpu.py [--batch 8] [--length 128] [--rounds 5] [--out F]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from miras_search.memory import MemoryGates, MemoryRule, memory_forward
from miras_search.memory.chunked import chunked
from miras_search.memory.inputs import prepare_inputs
from miras_search.memory.materialised import checkpointed_chunk
from miras_search.memory.testing import random_inputs
from miras_search.schema import ModelPoint

OMEGANET_MLP = {"kind": "mlp", "depth": 2, "expansion": 4, "activation": "gelu", "layer_norm": True}
ROWS = {
    # label: (memory, algorithm); every row: l2 bias over a window of 4 (gamma per lag), l2
    # retention at the previous memory (OmegaNet's), chunk 16
    "omeganet (mlp, phi degree 2)": ({**OMEGANET_MLP, "feature_map": {"kind": "polynomial", "degree": 2}}, "gd"),
    "mlp": (OMEGANET_MLP, "gd"),
    "matrix": ({"kind": "matrix", "init": "learned"}, "gd"),
    "mlp, phi degree 2, momentum": ({**OMEGANET_MLP, "feature_map": {"kind": "polynomial", "degree": 2}},
                                    "momentum"),
    "mlp, momentum": (OMEGANET_MLP, "momentum"),
    "matrix, momentum": ({"kind": "matrix", "init": "learned"}, "momentum"),
}


def row_point(memory: dict, algorithm: str) -> ModelPoint:
    return ModelPoint(memory=memory, bias={"kind": "l2", "window": 4},
                      retention={"kind": "l2", "gradient_at": "previous"},
                      algorithm={"kind": algorithm, "eta": {"mode": "head", "value": 0.05}})


def op_inputs(point: ModelPoint, batch: int, length: int, heads: int, dim: int):
    """float32 leaves: phi(q), phi(k) (the point's feature map), v, gates, initial params."""
    rule = MemoryRule.from_point(point)
    q, k, v, gates, _ = random_inputs(rule, batch, length, heads, dim, dtype=torch.float32)
    fmap = getattr(point.memory, "feature_map", None)
    if fmap is not None and fmap.kind != "identity":
        q, k = fmap.apply(q), fmap.apply(k)
    params = [p.float() for p in rule.initial_parameters(heads, k.shape[-1], dim)]
    leaves = [x.requires_grad_() for x in (q, k, v, *params)]
    return rule, q, k, v, gates, params, leaves


def materialised(rule: MemoryRule, q, k, v, gates: MemoryGates, params, chunk: int) -> torch.Tensor:
    """The window's chunked form with per-token weights: [B, T, H, V]."""
    x = prepare_inputs(q, k, v, gates, 1, False, torch.float32, rule.omega_window)
    batch, heads, _, key_dim = x.k.shape
    state = rule.initial_state(params, batch, heads, key_dim, x.v.shape[-1], torch.float32, q.device)
    return x.token_outputs(chunked(rule, x, state, chunk, update=checkpointed_chunk))


def sides(rule: MemoryRule, inputs: tuple, chunk: int) -> dict[str, Callable[[], torch.Tensor]]:
    """The two forms of one op on the same inputs (q, k, v, gates, params)."""
    return {
        "materialised": lambda: materialised(rule, *inputs, chunk),
        "entries": lambda: memory_forward(rule, *inputs, chunk_size=chunk),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--sizes", default="8x8,16x16", help="heads x head dim, comma-separated")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    lines = [f"memory op fwd+bwd, float32, 1 thread, B={args.batch}, T={args.length}, chunk {args.chunk}, "
             f"window 4, median of {args.rounds} interleaved rounds",
             "", "| heads x dim | point | key width | materialised ms | entries ms | speed-up | max rel diff |",
             "|---|---|---|---|---|---|---|"]
    for size in args.sizes.split(","):
        heads, dim = (int(n) for n in size.split("x"))
        for label, (memory, algorithm) in ROWS.items():
            point = row_point(memory, algorithm)
            rule, q, k, v, gates, params, leaves = op_inputs(point, args.batch, args.length, heads, dim)
            runs = sides(rule, (q, k, v, gates, params), args.chunk)
            times: dict[str, list[float]] = {name: [] for name in runs}
            outputs = {}
            for _ in range(args.rounds + 1):  # the first round warms up
                for name, run in runs.items():
                    start = time.perf_counter()
                    o = run()
                    torch.autograd.grad(o.square().sum(), leaves)
                    times[name].append(time.perf_counter() - start)
                    outputs[name] = o.detach()
            ms = {name: 1e3 * statistics.median(t[1:]) for name, t in times.items()}
            diff = ((outputs["entries"] - outputs["materialised"]).norm() / outputs["materialised"].norm()).item()
            lines.append(f"| {heads} x {dim} | {label} | {k.shape[-1]} | {ms['materialised']:.1f} | "
                         f"{ms['entries']:.1f} | {ms['materialised'] / ms['entries']:.2f}x | {diff:.1e} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out is not None:
        args.out.write_text(f"# The Omega window on the CPU: entries against per-token weights\n\nCommand: "
                            f"`python benchmarks/omega_window_cpu.py {' '.join(argv or [])}`\n\n{text}")


if __name__ == "__main__":
    main()
