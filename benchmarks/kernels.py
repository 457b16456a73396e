"""Time the Triton chunked memory kernels against the PyTorch chunked forms and fla.

Run on a CUDA machine:
    python benchmarks/kernels.py [--quick] [--only matrix|mlp] [--no-pytorch] [--jobs N] [--out F]
Prints markdown tables (median milliseconds, triton.testing.do_bench) and writes them to --out if
given. --jobs N first compiles every kernel of the run in N processes at once (the MLP backward
takes 5 to 30 s to compile, on one core); --no-pytorch leaves the slow PyTorch baselines out of
the matrix table. Compared, per point:
  triton     kernels.matrix_chunk.chunk_matrix_memory (inputs in --dtype, state fp32)
  split      the same with backward='split' (sequential state-gradient pass + chunk-parallel pass)
  naive      kernels.matrix_chunk.naive_chunk_matrix_memory (PyTorch chunk loop, fp32 inputs)
  memory     miras_search.memory.memory_forward chunked minibatch form (fp32 state), if importable
  exact      miras_search.memory exact chunked delta rule (gated_deltanet only), if importable
  fla        fla.ops.gated_delta_rule.chunk_gated_delta_rule (exact delta rule; gated_deltanet only)
fla computes the exact delta rule, not our minibatch form: the like-for-like PyTorch baseline
for fla is 'exact'; the Triton kernel vs fla compares two different chunk forms at the same size.

The MLP-memory table times Moneta, Yaad, Memora and Titans (2-layer MLP memory, hidden = 4 x head dim)
through miras_search.memory.memory_forward with kernel='triton' (kernels.mlp_chunk) against
kernel='torch' (the PyTorch chunked form), forward + backward including the initial memory.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from miras_search.kernels.matrix_chunk import chunk_matrix_memory, naive_chunk_matrix_memory

DEVICE = "cuda"


def inputs(B, T, H, D, dtype, alpha="head", momentum=False, huber=False):
    dev = DEVICE
    x = {
        "q": F.normalize(torch.randn(B, T, H, D, device=dev), dim=-1),
        "k": F.normalize(torch.randn(B, T, H, D, device=dev), dim=-1),
        "v": torch.randn(B, T, H, D, device=dev),
        "eta": torch.rand(B, T, H, device=dev) * 0.5 + 0.1,
        "alpha": None,
        "theta": torch.rand(B, T, H, device=dev) * 0.5 + 0.4 if momentum else None,
        "delta": torch.rand(B, T, H, device=dev) + 0.5 if huber else None,
    }
    if alpha == "head":
        x["alpha"] = torch.rand(B, T, H, device=dev) * 0.1 + 0.9
    elif alpha == "channel":
        x["alpha"] = torch.rand(B, T, H, D, device=dev) * 0.1 + 0.9
    return {n: (t.to(dtype).requires_grad_() if t is not None else None) for n, t in x.items()}


def fwd_bwd(fn: Callable[[], torch.Tensor], leaves: list[torch.Tensor]) -> Callable[[], None]:
    def step():
        o = fn()
        torch.autograd.grad(o, leaves, torch.ones_like(o))
    return step


def bench(fn: Callable[[], object]) -> float:
    try:
        return do_bench(fn, warmup=25, rep=100, return_mode="median")
    except Exception as error:  # OOM, or a baseline that refuses this GPU / Triton
        print(f"# failed: {error!r}"[:300])
        torch.cuda.empty_cache()
        return float("nan")


def memory_fns(point_name: str):
    """(minibatch, exact) callables from miras_search.memory, or (None, None)."""
    try:
        from miras_search.memory.forward import memory_forward
        from miras_search.memory.gates import MemoryGates
        from miras_search.memory.rule import MemoryRule
        from miras_search.presets import preset
    except Exception as error:  # not landed, or pydantic missing
        print(f"# miras_search.memory unavailable: {error!r}")
        return None, None
    rule = MemoryRule.from_point(preset(point_name))

    def run(x, form):
        gates = MemoryGates(x["eta"], x["alpha"], x["theta"], x["delta"])
        return memory_forward(rule, x["q"], x["k"], x["v"], gates, [], "chunked", 64, form)
    return (lambda x: run(x, "minibatch")), (lambda x: run(x, "exact_delta"))


def fla_fn(bypass_fla_guard: bool):
    try:
        import fla.ops.common.chunk_o as fla_chunk_o
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    except Exception as error:
        print(f"# fla unavailable: {error!r}")
        return None
    if bypass_fla_guard:
        # fla refuses its gated backward on Hopper with Triton 3.4-3.7.0 (a known miscompile that
        # gives wrong gradients). Bypassed only to time it; its gradients are not used.
        fla_chunk_o.TRITON_ABOVE_3_7_1 = True

    def run(x):
        # fla: g = log alpha (log-space decay), beta = eta
        o, _ = chunk_gated_delta_rule(x["q"], x["k"], x["v"], torch.log(x["alpha"]), x["eta"], scale=1.0)
        return o
    return run


POINTS = {
    # name: (bias, alpha, momentum, miras preset for the memory/ baseline)
    "gated_deltanet": ("l2", "head", False, "gated_deltanet"),
    "mamba2": ("dot", "head", False, "mamba2"),
    "gla": ("dot", "channel", False, "gla"),
    "lp3": ("lp", "head", False, None),
    "huber_switch+momentum": ("huber_switch", "head", True, None),
    "robust": ("robust", "head", False, None),
}


def matrix_inputs(name: str, T: int, D: int, dtype: torch.dtype) -> dict:
    bias, alpha, momentum, _ = POINTS[name]
    return inputs(4, T, 8, D, dtype, alpha, momentum, bias.startswith("huber"))


def matrix_kernel(name: str, x: dict, backward: str = "fused") -> Callable[[], torch.Tensor]:
    """The Triton kernel at one point (B=4, H=8, chunk 64) as a no-argument callable."""
    return lambda: chunk_matrix_memory(**x, bias=POINTS[name][0], chunk_size=64, backward=backward)


def time_case(name: str, T: int, D: int, dtype: torch.dtype, fla, pytorch: bool = True) -> dict:
    """Median ms of every available implementation at one point and size (B=4, H=8, C=64);
    ``pytorch=False`` leaves out the (slow) PyTorch baselines."""
    bias, _, _, preset_name = POINTS[name]
    x = matrix_inputs(name, T, D, dtype)
    x32 = {n: (t.detach().float().requires_grad_() if t is not None else None) for n, t in x.items()}
    leaves = [t for t in x.values() if t is not None]
    leaves32 = [t for t in x32.values() if t is not None]

    row = {"point": name, "T": T, "D": D}
    row["triton fwd"] = bench(matrix_kernel(name, x))
    row["triton fwd+bwd"] = bench(fwd_bwd(matrix_kernel(name, x), leaves))
    row["split fwd+bwd"] = bench(fwd_bwd(matrix_kernel(name, x, "split"), leaves))
    if pytorch:
        def naive():
            return naive_chunk_matrix_memory(**x32, bias=bias, chunk_size=64)

        row["naive fwd+bwd"] = bench(fwd_bwd(naive, leaves32))
        mini, exact = memory_fns(preset_name) if preset_name else (None, None)
        if mini is not None:
            row["memory fwd+bwd"] = bench(fwd_bwd(lambda: mini(x32), leaves32))
        if exact is not None and name == "gated_deltanet":
            row["exact fwd+bwd"] = bench(fwd_bwd(lambda: exact(x32), leaves32))
    if fla is not None and name == "gated_deltanet":
        row["fla fwd"] = bench(lambda: fla(x))
        row["fla fwd+bwd"] = bench(fwd_bwd(lambda: fla(x), leaves))
    return row


MLP_POINTS = ("moneta", "yaad", "memora", "titans")


def mlp_setup(name: str, T: int, D: int, chunk: int, dtype: torch.dtype):
    """(run(inputs, kernel), kernel-dtype inputs, fp32 inputs, initial memory parameters) of one
    MLP-memory point (B=4, H=8, hidden = 4 D)."""
    from miras_search.memory import MemoryGates, MemoryRule, memory_forward
    from miras_search.presets import preset

    rule = MemoryRule.from_point(preset(name))
    needs = rule.needs()
    x = inputs(4, T, 8, D, torch.float32, "head", "theta" in needs, "delta" in needs)
    x["eta"] = (x["eta"].detach() * 0.2).requires_grad_()  # a stable inner step for lp / switch
    params = [p.to(DEVICE).requires_grad_() for p in rule.initial_parameters(8, D, D)]
    cast = {n: (t.detach().to(dtype).requires_grad_() if t is not None else None) for n, t in x.items()}

    def run(inp, kernel):
        gates = MemoryGates(inp["eta"], inp["alpha"], inp["theta"], inp["delta"])
        return memory_forward(rule, inp["q"], inp["k"], inp["v"], gates, params,
                              chunk_size=chunk, kernel=kernel)
    return run, cast, x, params


def time_mlp_case(name: str, T: int, D: int, chunk: int, dtype: torch.dtype) -> dict:
    """Median ms of the MLP kernel and the PyTorch chunked form (B=4, H=8). The kernel must not
    fall back to PyTorch (KernelFallbackWarning is an error here): the row would time PyTorch."""
    from miras_search.kernels import KernelFallbackWarning

    run, cast, x, params = mlp_setup(name, T, D, chunk, dtype)
    leaves = [t for t in cast.values() if t is not None] + params
    leaves32 = [t for t in x.values() if t is not None] + params
    row = {"point": name, "T": T, "D": D, "hidden": 4 * D, "chunk": chunk}
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelFallbackWarning)
        row["triton fwd"] = bench(lambda: run(cast, "triton"))
        row["triton fwd+bwd"] = bench(fwd_bwd(lambda: run(cast, "triton"), leaves))
    row["pytorch fwd+bwd"] = bench(fwd_bwd(lambda: run(x, "torch"), leaves32))
    return row


# the named models' LayerNorm takes tf32x3 products (kernels.precision), whose whole weights fit
# on chip up to K=32, hidden 128 (kernels.limits); at K=64, hidden 256 (the paper's head) the
# kernel walks the hidden dim in tiles (kernels/mlp_chunk/tiled.py)
MLP_CASES = [(name, 2048, D, chunk) for name in MLP_POINTS
             for D, chunk in ((16, 16), (32, 16), (32, 32), (64, 16), (64, 64))]


def matrix_cases(quick: bool) -> list[tuple]:
    cases = [("gated_deltanet", T, D) for T in (2048, 8192) for D in (64, 128)]
    cases += [(p, 2048, 64) for p in POINTS if p != "gated_deltanet"]
    return [c for c in cases if c[1] == 2048] if quick else cases


def warm(kind: str, case: tuple, dtype_name: str) -> str:
    """Compile (and run once) every Triton kernel that ``case`` times, so that the timing process
    finds them in Triton's cache. Runs in a worker process of its own."""
    dtype = getattr(torch, dtype_name)
    if kind == "mlp":
        run, cast, _, params = mlp_setup(*case, dtype)
        fwd_bwd(lambda: run(cast, "triton"), [t for t in cast.values() if t is not None] + params)()
    else:
        x = matrix_inputs(*case, dtype)
        leaves = [t for t in x.values() if t is not None]
        for backward in ("fused", "split"):
            fwd_bwd(matrix_kernel(case[0], x, backward), leaves)()
    torch.cuda.synchronize()
    return f"{kind} {case}"


def warm_all(jobs: list[tuple[str, tuple]], dtype_name: str, workers: int) -> None:
    """Compile the kernels of every case in ``workers`` processes at once (Triton compiles one
    kernel on one CPU core, and the MLP backward takes 5 to 30 s)."""
    started = time.time()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(warm, kind, case, dtype_name) for kind, case in jobs]
        for future in as_completed(futures):
            try:
                print(f"# compiled {future.result()} ({time.time() - started:.0f} s)", flush=True)
            except Exception as error:  # the timing run reports it again, in its row
                print(f"# warm-up failed: {error!r}"[:300], flush=True)


def mlp_table(rows: list[dict], dtype_name: str) -> str:
    cols = ["point", "T", "D", "hidden", "chunk", "triton fwd", "triton fwd+bwd", "pytorch fwd+bwd"]
    lines = [f"GPU: {torch.cuda.get_device_name()}; MLP memory, B=4, H=8, triton on {dtype_name} "
             "inputs, PyTorch chunked form on fp32; median ms", "",
             "| " + " | ".join(cols) + " | pytorch / triton |", "|" + "---|" * (len(cols) + 1)]
    for r in rows:
        cells = [f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + f" | {r['pytorch fwd+bwd'] / r['triton fwd+bwd']:.1f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="matrix table: only T=2048")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", default=None)
    parser.add_argument("--only", choices=("matrix", "mlp"), default=None)
    parser.add_argument("--no-pytorch", action="store_true",
                        help="matrix table: leave out the PyTorch baselines (minutes at T=8192)")
    parser.add_argument("--jobs", type=int, default=0,
                        help="compile every kernel first in this many processes at once")
    parser.add_argument("--bypass-fla-guard", action="store_true",
                        help="time fla's backward even where fla refuses it as miscompiled")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("times the kernels on a CUDA GPU, and this machine has none (without one, "
                     "benchmarks/kernel_resources.py compiles them and reports their resources)")
    dtype = getattr(torch, args.dtype)
    cases = [] if args.only == "mlp" else matrix_cases(args.quick)
    mlp_cases = [] if args.only == "matrix" else MLP_CASES
    if args.jobs > 0:
        warm_all([("mlp", c) for c in mlp_cases] + [("matrix", c) for c in cases], args.dtype, args.jobs)
    fla = fla_fn(args.bypass_fla_guard) if cases else None
    mlp_rows, rows = [], []

    def report(final: bool = False) -> None:
        """Write the tables so far to --out after every row (a run cut short keeps its rows)."""
        table = tables_text(mlp_rows, rows, args.dtype)
        if final:
            print(table)
        if args.out:
            Path(args.out).write_text(table + "\n")

    for case in mlp_cases:
        mlp_rows.append(time_mlp_case(*case, dtype))
        print(mlp_rows[-1], flush=True)
        report()
        torch.cuda.empty_cache()
    for name, T, D in cases:
        rows.append(time_case(name, T, D, dtype, fla, pytorch=not args.no_pytorch))
        print(rows[-1], flush=True)
        report()
        torch.cuda.empty_cache()
    report(final=True)


def matrix_table(rows: list[dict], dtype_name: str) -> str:
    cols = ["point", "T", "D", "triton fwd", "triton fwd+bwd", "split fwd+bwd", "naive fwd+bwd",
            "memory fwd+bwd", "exact fwd+bwd", "fla fwd", "fla fwd+bwd"]
    lines = [f"GPU: {torch.cuda.get_device_name()}; B=4, H=8, chunk 64, {dtype_name} inputs; "
             "median ms (triton.testing.do_bench)", "",
             "| " + " | ".join(cols) + " | speed-up vs naive | vs memory | fla/triton (fwd+bwd) "
             "| fla/split |",
             "|" + "---|" * (len(cols) + 4)]
    for r in rows:
        cells = [str(r.get(c, "")) if c in ("point", "T", "D") else
                 (f"{r[c]:.3f}" if c in r else "-") for c in cols]
        tri = r["triton fwd+bwd"]
        ratios = [f"{r[c] / tri:.1f}x" if c in r else "-" for c in ("naive fwd+bwd", "memory fwd+bwd")]
        ratios.append(f"{r['fla fwd+bwd'] / tri:.2f}" if "fla fwd+bwd" in r else "-")
        ratios.append(f"{r['fla fwd+bwd'] / r['split fwd+bwd']:.2f}" if "fla fwd+bwd" in r else "-")
        lines.append("| " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


def tables_text(mlp_rows: list[dict], rows: list[dict], dtype_name: str) -> str:
    """The matrix table (if any rows) above the MLP table (if any rows), as markdown."""
    tables = [matrix_table(rows, dtype_name)] if rows else []
    tables += [mlp_table(mlp_rows, dtype_name)] if mlp_rows else []
    return "\n\n".join(tables)


if __name__ == "__main__":
    main()
