"""The memory op of one layer, fwd+bwd, as a trial trains it on a GPU (``memory_forward`` with
``kernel='auto'`` under bf16 autocast), against fla's chunk kernel called directly.

Rows: deltanet, gated_deltanet and rwkv7 through our dispatch (which hands them to fla: the cost
of the mapping is the difference) beside fla's ``chunk_delta_rule`` / ``chunk_gated_delta_rule`` /
``chunk_dplr_delta_rule`` on the same bf16 inputs (like for like: the same rule); and Titans, Moneta, Yaad and Memora
at head dim 64 / hidden 256 (their named shapes) through the same dispatch, as a multiple of the
gated_deltanet layer of the same d_model (H x K). The ``path`` column says which kernel ran
(``kernel_problem``: 'kernel' or why the PyTorch form ran). Goals (issue 19): deltanet and
gated_deltanet within 1.1x of fla; the MLP memories at most 8x gated_deltanet at T=4096. At
head dim 64 / hidden 256 the MLP kernel walks the hidden dim in tiles (kernels/mlp_chunk/tiled.py),
with the named models' channel-wise gates; the '/head' rows run Moneta and Yaad with per-head
gates beside them (what the channel-wise gates cost on that kernel). The '/matrix' rows put Moneta's,
Yaad's and Memora's other three axes, channel-wise gates included, on a matrix memory: the matrix
kernel's channel-wise eta / delta, lq and kl retention, at the MLP rows' length. The 'omeganet/'
rows run Atlas's Omega window (c = 4) on the kernels' window entries, beside the PyTorch form
of the same point (its 'torch ms' column), last.

    python benchmarks/layer_gpu.py [--seq-lens 2048,4096,8192] [--batch 4] [--heads 8] [--out F]
    python benchmarks/layer_gpu.py --tiny    # a CPU check of the script (PyTorch form, tiny shapes)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from miras_search.memory import MemoryRule, memory_forward
from miras_search.memory.fla_dqkwg import fla_refuses_gated_dqkwg
from miras_search.memory.fla_path import (
    fla_call,
    fla_gated_backward_problem,
    fla_problem,
    run_fla,
    uses_gated_dqkwg,
)
from miras_search.memory.kernel_path import kernel_problem
from miras_search.memory.testing import random_inputs
from miras_search.model.mixer import resolved_chunk_form
from miras_search.presets import preset
from miras_search.schema import ModelPoint

DELTA = ("deltanet", "gated_deltanet", "rwkv7")
"""The rows fla computes, beside fla's op called directly (rwkv7: its generalized delta rule)."""
GOAL_FLA = ("deltanet", "gated_deltanet")
MLP = ("titans", "moneta", "yaad", "memora", "moneta/head", "yaad/head", "moneta@32", "yaad@32")
"""The MLP memories; '/head' makes the preset's channel-wise gates (the named Moneta's and Yaad's
eta, alpha and delta) per head; '@32' runs the named preset at head dim 32 (hidden 128), where its
weights fit on chip (the whole-W kernel) instead of the hidden-tiled one."""
MATRIX = ("moneta/matrix", "yaad/matrix", "memora/matrix")
"""The named models' bias, retention, algorithm and gates on a matrix memory."""
OMEGA = ("omeganet/mlp", "omeganet/matrix")
"""OmegaNet's Omega window (c = 4, gd) on its MLP memory without the feature map ('/mlp': keys
of the head dim) and on a matrix memory: the kernels' window entries (kernels/omega.py), whose
'x torch form' column is the PyTorch chunked form of the same point (it materialises per-token
weights)."""


def head_dim(name: str, default: int) -> int:
    """The head dim of a row: '@N' sets it, else ``default``."""
    return int(name.partition("@")[2]) if "@" in name else default


def layer_point(name: str) -> ModelPoint:
    """The preset ``name``, with '/head' its channel-wise gates made per head, with '/matrix' on a
    matrix memory."""
    base, _, variant = name.partition("@")[0].partition("/")
    point = preset(base)
    if variant not in ("head", "matrix", "mlp"):
        return point
    spec = point.model_dump()
    if variant == "mlp":
        spec["memory"]["feature_map"] = {"kind": "identity"}
        return ModelPoint.model_validate(spec)
    if variant == "matrix":
        spec["memory"] = {"kind": "matrix", "init": "learned"}
        return ModelPoint.model_validate(spec)
    for axis, gate in (("algorithm", "eta"), ("retention", "alpha"), ("bias", "delta")):
        if isinstance(spec[axis].get(gate), dict) and spec[axis][gate]["mode"] == "channel":
            spec[axis][gate].update(mode="head", rank=None)
    return ModelPoint.model_validate(spec)


def timer(device: torch.device) -> Callable[[Callable[[], None]], float]:
    """Median milliseconds of a callable (triton's do_bench on CUDA)."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return lambda fn: do_bench(fn, warmup=25, rep=100)

    def cpu(fn: Callable[[], None]) -> float:
        fn()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - start))
        return statistics.median(times)
    return cpu


def layer_case(name: str, batch: int, length: int, heads: int, dim: int, device: torch.device,
               kernel: str) -> tuple[Callable[[], None], Callable[[], None] | None, str]:
    """(our fwd+bwd, fla's fwd+bwd or None, the path our call takes) for preset ``name``."""
    point = layer_point(name)
    rule = MemoryRule.from_point(point)
    form = resolved_chunk_form(point)
    channel = tuple(g for g, mode in rule.gate_modes.items() if mode == "channel")
    q, k, v, gates, params = random_inputs(rule, batch, length, heads, dim, dtype=torch.float32,
                                           channel=channel)
    cuda = device.type == "cuda"
    half = torch.bfloat16 if cuda else torch.float32

    def leaf(x, dtype):
        return None if x is None else x.to(device, dtype).requires_grad_(True)

    q, k, v = (leaf(x, half) for x in (q, k, v))
    for f in ("eta", "alpha", "theta", "delta"):
        setattr(gates, f, leaf(getattr(gates, f), torch.float32))
    gates.write_key = leaf(gates.write_key, half)  # RWKV-7's, made by the block in the input dtype
    params = [leaf(p, torch.float32) for p in params]
    leaves = [x for x in (q, k, v, gates.eta, gates.alpha, gates.write_key, *params) if x is not None]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    chunk = point.train.chunk_size
    with autocast:
        problem = kernel_problem(rule, q, v, chunk, kernel, "chunked", form)
        path = ("fla" if fla_problem(rule, q, "chunked", form) is None else "triton") if problem is None \
            else f"pytorch ({problem})"

    def ours() -> None:
        with autocast:
            o = memory_forward(rule, q, k, v, gates, params, chunk_size=chunk, chunk_form=form, kernel=kernel)
        torch.autograd.grad(o.float().square().sum(), leaves)

    theirs = None
    call = fla_call(rule, q, k, v, gates, params, torch.bfloat16) if cuda and name in DELTA else None
    if call is not None and uses_gated_dqkwg(rule, call.op) and fla_gated_backward_problem():
        call = None  # fla refuses this op's gradient here (path says so)
    if call is not None:
        def theirs() -> None:
            o = run_fla(call)
            torch.autograd.grad(o.float().square().sum(), leaves)
    return ours, theirs, path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-lens", default="2048,4096,8192")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--mlp-seq-len", type=int, default=4096)
    parser.add_argument("--layers", default=",".join(DELTA + MLP + MATRIX + OMEGA),
                        help="the rows to run, in this order (gated_deltanet first gives the 'x' column)")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    known = DELTA + MLP + MATRIX + OMEGA
    unknown = [name for name in args.layers.split(",") if name not in known]
    if unknown:
        parser.error(f"--layers: {', '.join(unknown)} not among {', '.join(known)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kernel = "auto"
    seq_lens = [int(s) for s in args.seq_lens.split(",")]
    if args.tiny:
        args.batch, args.heads, args.dim, args.mlp_seq_len, seq_lens = 1, 2, 8, 64, [64]
    if device.type == "cpu":
        torch.set_num_threads(1)
    bench = timer(device)
    title = (f"memory op fwd+bwd, B={args.batch}, H={args.heads}, K=V={args.dim}, "
             f"{'bf16 autocast on ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else 'fp32 cpu'}"
             ", median ms")
    rows: list[tuple[str, ...]] = []
    gdn: dict[int, float] = {}
    verdicts: list[str] = []
    for length in sorted(set(seq_lens) | {args.mlp_seq_len}):
        names = [name for name in args.layers.split(",")
                 if name == "gated_deltanet" or (name in DELTA and length in seq_lens)
                 or (name in MLP + MATRIX + OMEGA and length == args.mlp_seq_len)]
        for name in names:
            try:
                ours, theirs, path = layer_case(name, args.batch, length, args.heads,
                                                head_dim(name, args.dim), device, kernel)
                ours_ms = bench(ours)
                fla_ms = bench(theirs) if theirs is not None else None
                torch_ms = None
                if name in OMEGA:  # the same point's PyTorch form
                    torch_ms = bench(layer_case(name, args.batch, length, args.heads,
                                                head_dim(name, args.dim), device, "torch")[0])
            except torch.cuda.OutOfMemoryError:
                rows.append((name, str(length), "-", "-", "-", "-", "-", "out of memory"))
                continue
            except Exception as error:  # a layer that cannot run here gets a row that says why
                text = str(error).strip().splitlines()
                rows.append((name, str(length), "-", "-", "-", "-", "-",
                             f"{type(error).__name__}: {text[0] if text else ''}"[:110]))
                continue
            if name == "gated_deltanet":
                gdn[length] = ours_ms
            ratio = ours_ms / fla_ms if fla_ms else None
            times_gdn = ours_ms / gdn[length] if length in gdn else None
            if ratio is not None and name in GOAL_FLA:
                verdicts.append(f"{name} T={length}: ours / fla = {ratio:.2f} (goal <= 1.1: "
                                f"{'met' if ratio <= 1.1 else 'NOT met'})")
            if name in MLP and times_gdn is not None:
                verdicts.append(f"{name} T={length}: {times_gdn:.1f}x gated_deltanet (goal <= 8x: "
                                f"{'met' if times_gdn <= 8 else 'NOT met'}; path: {path[:60]})")
            rows.append((name, str(length), f"{ours_ms:.2f}", f"{fla_ms:.2f}" if fla_ms else "-",
                         f"{ratio:.2f}" if ratio else "-", f"{times_gdn:.1f}" if times_gdn else "-",
                         f"{torch_ms:.2f}" if torch_ms else "-", path[:110]))
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if args.out is not None:  # as it goes: a run cut short keeps the rows it has
                write(args.out, render(title, rows, ["(still running)"]), argv)
    if device.type != "cuda":
        verdicts = ["(a CPU dry run: the goals are for a GPU)"]
    elif fla_refuses_gated_dqkwg():
        verdicts.append("fla refuses its gated chunk_bwd_dqkwg on this GPU / Triton (fla #640): both "
                        "columns' gated rows run fla's kernels with our PyTorch form of that one kernel")
    text = render(title, rows, verdicts)
    print(text)
    if args.out is not None:
        write(args.out, text, argv)


def render(title: str, rows: list[tuple[str, ...]], verdicts: list[str]) -> str:
    console = Console(record=True, width=200, file=io.StringIO())
    table = Table(title=title)
    for col in ("layer", "T", "ours ms", "fla ms", "ours / fla", "x gated_deltanet", "torch ms", "path"):
        table.add_column(col, justify="left" if col in ("layer", "path") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for line in verdicts:
        console.print(line)
    return console.export_text()


def write(path: Path, text: str, argv: list[str] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/layer_gpu.py " + " ".join(argv if argv is not None else sys.argv[1:])
    path.write_text(f"# Memory layers on a GPU against fla\n\nCommand: `{command.strip()}`\n\n```\n{text}```\n")

if __name__ == "__main__":
    main()
