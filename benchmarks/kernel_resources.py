"""Registers, spill stack and shared memory of the Triton kernels compiled for an H100 (sm_90).

Runs anywhere Triton is installed (no GPU needed: kernels.compile_check uses Triton's compiler
and the ptxas bundled with it). Spills (a non-zero stack) move tiles to local memory; they are
the first thing to look at when a kernel is slower than its arithmetic suggests.

    python benchmarks/kernel_resources.py [--out benchmarks/results/kernel_resources_sm90.md]
    python benchmarks/kernel_resources.py --only-tiled --out benchmarks/results/kernel_resources_mlp_tiled_sm90.md
    python benchmarks/kernel_resources.py --only-channel --out benchmarks/results/kernel_resources_mlp_channel_sm90.md
    python benchmarks/kernel_resources.py --only-matrix-gates --out benchmarks/results/kernel_resources_matrix_gates_sm90.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import triton

from miras_search.kernels import BiasConfig
from miras_search.kernels.compile_check import compile_for_gpu, resource_usage
from miras_search.kernels.matrix_chunk.chunk import compile_specs as matrix_specs
from miras_search.kernels.matrix_chunk.kl import compile_specs as matrix_kl_specs
from miras_search.kernels.mlp_chunk import MlpMemoryConfig
from miras_search.kernels.mlp_chunk.chunk import compile_specs as mlp_specs

MLP_POINTS = {
    "moneta": (MlpMemoryConfig("gelu", True, "lq", q=4.0), BiasConfig("lp"), False),
    "yaad": (MlpMemoryConfig("gelu", True, "l2", gradient_at="previous"), BiasConfig("huber_switch"), False),
    "memora": (MlpMemoryConfig("gelu", True, "kl"), BiasConfig("l2"), False),
    "titans": (MlpMemoryConfig("gelu", True, "l2", gradient_at="previous"), BiasConfig("l2"), True),
    "elastic + momentum (huber_norm)": (MlpMemoryConfig("gelu", True, "elastic", threshold=0.01),
                                        BiasConfig("huber_norm"), True),
}
MATRIX_POINTS = {  # bias, alpha, momentum, head dims (huber_switch: tf32x3, which fits up to 64)
    "gated_deltanet": (BiasConfig("l2"), "head", False, (64, 128)),
    "gla (channel alpha)": (BiasConfig("dot"), "channel", False, (64, 128)),
    "huber_switch + momentum": (BiasConfig("huber_switch"), "head", True, (64,)),
}


def row(point: str, shape: str, specs: list[tuple]) -> str:
    """One table row: warps, registers, spill stack, shared KiB of the forward and backward."""
    cells = []
    for _, kernel, scalars, pointers, warps in specs:
        start = time.time()
        usage = resource_usage(compile_for_gpu(kernel, scalars, pointers, warps))
        cells.append(f"{warps} | {usage.registers} | {usage.stack} | {usage.shared // 1024}")
        print(f"{point} {shape}: {usage} ({time.time() - start:.0f} s)", flush=True)
    return f"| {point} | {shape} | " + " | ".join(cells) + " |"


MLP_SHAPES = [  # K, hidden, chunk, dtype; bf16 inputs of the named models take tf32x3 products
    (16, 64, 16, torch.bfloat16), (32, 128, 16, torch.bfloat16), (32, 128, 32, torch.bfloat16),
    (32, 128, 32, torch.float32),
]
TILED_SHAPES = [  # past MLP_MAX_TILES: the hidden dim in tiles (kernels/mlp_chunk/tiled.py)
    (64, 256, 16, torch.bfloat16), (64, 256, 64, torch.bfloat16), (64, 256, 32, torch.float32),
]
BF16_TILED = (MlpMemoryConfig("silu", False, "lq"), BiasConfig("huber_norm"), True)
"""The widest memory that keeps bf16 products (no LayerNorm; lq, momentum, a row-norm bias)."""
BF16_PRODUCTS = (MlpMemoryConfig("silu", False, "l2"), BiasConfig("l2"), False)
"""A memory whose bf16 inputs keep bf16 products (no LayerNorm, l2 retention: kernels.precision)."""


TILED_CHANNEL_SHAPES = [  # every chunk the hidden-tiled kernel takes at K = 64 (fp32: up to 32)
    (64, 256, 16, torch.bfloat16), (64, 256, 32, torch.bfloat16), (64, 256, 64, torch.bfloat16),
    (64, 256, 16, torch.float32), (64, 256, 32, torch.float32),
]
BF16_TILED_CHANNEL = (MlpMemoryConfig("silu", False, "l2", gradient_at="previous"), BiasConfig("huber_coordinate"),
                      (True, True, True))
"""Channel-wise eta, alpha and delta with bf16 products (no LayerNorm, l2, huber_coordinate)."""


def tiled_rows() -> list[str]:
    """The hidden-tiled MLP kernel at the shapes dispatch gives it (tile: kernels.limits), per-head
    gates, then Moneta's, Yaad's and Memora's own channel-wise ones (Memora's kl: its exact
    per-token read, which always takes alpha per channel)."""
    out = []
    for name, (config, bias, momentum) in MLP_POINTS.items():
        for K, hidden, chunk, dtype in TILED_SHAPES:
            specs = mlp_specs(config, bias, K, hidden, chunk, momentum, dtype)
            shape = f"K={K}, hidden={hidden}, chunk {chunk}" + (", fp32" if dtype == torch.float32 else "")
            out.append(row(f"{name} (MLP, hidden tiles)", shape, specs))
    specs = mlp_specs(*BF16_TILED[:2], 64, 256, 64, BF16_TILED[2], torch.bfloat16)
    out.append(row("silu, no LayerNorm, lq, huber_norm, momentum (MLP, hidden tiles, bf16 products)",
                   "K=64, hidden=256, chunk 64", specs))
    for name in ("moneta as named", "yaad as named", "memora as named"):
        config, bias, gates = CHANNEL_POINTS[name]
        for K, hidden, chunk, dtype in TILED_CHANNEL_SHAPES:
            specs = mlp_specs(config, bias, K, hidden, chunk, False, dtype, None, *gates)
            shape = f"K={K}, hidden={hidden}, chunk {chunk}" + (", fp32" if dtype == torch.float32 else "")
            out.append(row(f"{name} (MLP, hidden tiles, channel-wise gates)", shape, specs))
    specs = mlp_specs(*BF16_TILED_CHANNEL[:2], 64, 256, 64, False, torch.bfloat16, None, *BF16_TILED_CHANNEL[2])
    out.append(row("silu, no LayerNorm, l2, huber_coordinate, channel-wise eta / alpha / delta "
                   "(MLP, hidden tiles, bf16 products)", "K=64, hidden=256, chunk 64", specs))
    for name, (config, bias, gates) in TILED_CHANNEL_MOMENTUM_POINTS.items():
        for K, hidden, chunk, dtype in TILED_CHANNEL_MOMENTUM_SHAPES:
            specs = mlp_specs(config, bias, K, hidden, chunk, True, dtype, None, *gates)
            shape = f"K={K}, hidden={hidden}, chunk {chunk}" + (", fp32" if dtype == torch.float32 else "")
            out.append(row(f"{name} (MLP, hidden tiles, momentum, channel-wise alpha)", shape, specs))
    config, bias, gates = BF16_TILED_CHANNEL_MOMENTUM
    specs = mlp_specs(config, bias, 64, 256, 64, True, torch.bfloat16, None, *gates)
    out.append(row("silu, no LayerNorm, lq, huber_norm, momentum, channel-wise eta / alpha "
                   "(MLP, hidden tiles, bf16 products)", "K=64, hidden=256, chunk 64", specs))
    return out


TILED_CHANNEL_MOMENTUM_POINTS = {  # momentum with a channel-wise alpha in hidden tiles (chunk x K <= 2048)
    "titans, alpha per channel": (MlpMemoryConfig("gelu", True, "l2", gradient_at="previous"), BiasConfig("l2"),
                                  (False, True, False)),
    "moneta's gates (lq)": (MlpMemoryConfig("gelu", True, "lq", q=4.0), BiasConfig("lp"), (True, True, False)),
    "yaad's gates (l2)": (MlpMemoryConfig("gelu", True, "l2", gradient_at="previous"),
                          BiasConfig("huber_switch", sharpness=1.0, relative_sharpness=True), (True, True, True)),
    "memora's gates (kl)": (MlpMemoryConfig("gelu", True, "kl"), BiasConfig("l2"), (True, True, False)),
}
TILED_CHANNEL_MOMENTUM_SHAPES = [(64, 256, 16, torch.bfloat16), (64, 256, 32, torch.bfloat16),
                                 (64, 256, 16, torch.float32), (64, 256, 32, torch.float32)]
BF16_TILED_CHANNEL_MOMENTUM = (MlpMemoryConfig("silu", False, "lq"), BiasConfig("huber_norm"), (True, True, False))
"""Momentum with channel-wise eta and alpha keeping bf16 products (no LayerNorm): chunk 64 fits."""


CHANNEL_POINTS = {  # the named models' own gates: eta / alpha / delta per channel (both layouts)
    "moneta as named": (MlpMemoryConfig("gelu", True, "lq", q=4.0), BiasConfig("lp"), (True, True, False)),
    "yaad as named": (MlpMemoryConfig("gelu", True, "l2", gradient_at="previous"),
                      BiasConfig("huber_switch", sharpness=1.0, relative_sharpness=True), (True, True, True)),
    "memora as named": (MlpMemoryConfig("gelu", True, "kl"), BiasConfig("l2"), (True, True, False)),
    "channel eta only (lq, momentum)": (MlpMemoryConfig("gelu", True, "lq", q=4.0), BiasConfig("lp"),
                                        (True, False, False)),
    "moneta's gates (lq, momentum)": (MlpMemoryConfig("gelu", True, "lq", q=4.0), BiasConfig("lp"),
                                      (True, True, False)),
    "memora's gates (kl, momentum)": (MlpMemoryConfig("gelu", True, "kl"), BiasConfig("l2"), (True, True, False)),
    "elastic, channel eta and alpha": (MlpMemoryConfig("gelu", True, "elastic", threshold=0.01),
                                       BiasConfig("huber_norm"), (True, True, False)),
    "yaad's gates (l2, momentum)": (MlpMemoryConfig("gelu", True, "l2", gradient_at="previous"),
                                    BiasConfig("huber_switch", sharpness=1.0, relative_sharpness=True),
                                    (True, True, True)),
}


def channel_rows() -> list[str]:
    """The whole-W MLP kernels with channel-wise gates (chunk.py's eta / delta, channel.py's alpha)
    at the shapes where dispatch gives them the weights on chip."""
    out = []
    for name, (config, bias, (eta, alpha, delta)) in CHANNEL_POINTS.items():
        momentum = name.endswith("momentum)")
        for K, hidden, chunk, dtype in MLP_SHAPES:
            # momentum with lq or a channel-wise alpha: half the chunk on chip (LQ_MOMENTUM_SHARE)
            if momentum and chunk * (K + hidden) > 2560:
                continue
            specs = mlp_specs(config, bias, K, hidden, chunk, momentum, dtype, None, eta, alpha, delta)
            shape = f"K={K}, hidden={hidden}, chunk {chunk}" + (", fp32" if dtype == torch.float32 else "")
            out.append(row(f"{name} (MLP, channel-wise gates)", shape, specs))
    return out


MATRIX_GATE_POINTS = {  # bias, alpha, momentum, eta, delta, retention, head dims
    "channel eta (l2)": (BiasConfig("l2"), "head", False, "channel", "head", "l2", (64, 128, 256)),
    "channel eta and alpha (l2)": (BiasConfig("l2"), "channel", False, "channel", "head", "l2", (64, 128)),
    "channel eta and delta, switch + momentum": (BiasConfig("huber_switch"), "head", True, "channel",
                                                 "channel", "l2", (64,)),
    "lq (lp)": (BiasConfig("lp"), "head", False, "head", "head", "lq", (64, 128)),
    "lq + momentum, channel eta (lp)": (BiasConfig("lp"), "head", True, "channel", "head", "lq", (64, 128)),
    "lq, channel eta and alpha (l2)": (BiasConfig("l2"), "channel", False, "channel", "head", "lq", (64, 128)),
    "lq + momentum, switch, channel eta and delta": (BiasConfig("huber_switch"), "head", True, "channel",
                                                     "channel", "lq", (64,)),
    "momentum, channel alpha (l2)": (BiasConfig("l2"), "channel", True, "head", "head", "l2", (64, 128)),
    "lq + momentum, channel eta and alpha (lp, Moneta's axes)": (BiasConfig("lp"), "channel", True, "channel",
                                                                 "head", "lq", (64, 128)),
}
"""The matrix kernel's channel-wise eta / delta and lq retention (lq keeps the whole matrix in one
program, as the row-norm biases do: up to 128 with bf16 products, 64 with tf32x3 or fp32)."""


MATRIX_KL_POINTS = {  # bias, alpha, eta, delta, momentum, head dims: kl's kernel (tf32x3 products)
    "kl, Memora's gates (l2)": (BiasConfig("l2"), "channel", "channel", "head", False, (64, 128)),
    "kl, switch, channel eta and delta": (BiasConfig("huber_switch"), "head", "channel", "channel", False, (64,)),
    "kl + momentum, channel eta (l2)": (BiasConfig("l2"), "head", "channel", "head", True, (64, 128)),
    "kl + momentum, Memora's gates (l2)": (BiasConfig("l2"), "channel", "channel", "head", True, (64, 128)),
}


def matrix_gate_rows() -> list[str]:
    """The matrix kernel with channel-wise eta / delta and lq retention, chunk 64, bf16 inputs,
    the fused backward and (in a second row) the split one; kl retention's kernel (kl.py)."""
    out = []
    for name, (bias, alpha, eta, delta, momentum, dims) in MATRIX_KL_POINTS.items():
        for dim in dims:
            for chunk in (16, 64):
                specs = matrix_kl_specs(bias, dim, dim, chunk, alpha, torch.bfloat16, eta, delta, momentum)
                out.append(row(f"{name} (matrix, kl.py)", f"K=V={dim}, chunk {chunk}", specs))
    for name, (bias, alpha, momentum, eta, delta, retention, dims) in MATRIX_GATE_POINTS.items():
        for dim in dims:
            for backward in ("fused", "split"):
                specs = matrix_specs(bias, dim, dim, 64, alpha, momentum, torch.bfloat16, backward,
                                     "retained", eta, delta, retention)
                label = "" if backward == "fused" else ", split backward: state pass / chunk pass"
                out.append(row(f"{name} (matrix{label})", f"K=V={dim}, chunk 64", specs))
    return out


def rows() -> list[str]:
    out = []
    for name, (config, bias, momentum) in MLP_POINTS.items():
        for K, hidden, chunk, dtype in MLP_SHAPES:
            specs = mlp_specs(config, bias, K, hidden, chunk, momentum, dtype)
            shape = f"K={K}, hidden={hidden}, chunk {chunk}" + (", fp32" if dtype == torch.float32 else "")
            out.append(row(f"{name} (MLP)", shape, specs))
    for K, hidden, chunk in ((64, 256, 16), (64, 256, 32), (128, 128, 32)):
        specs = mlp_specs(*BF16_PRODUCTS[:2], K, hidden, chunk, BF16_PRODUCTS[2], torch.bfloat16)
        out.append(row("silu, no LayerNorm, l2 (MLP, bf16 products)", f"K={K}, hidden={hidden}, chunk {chunk}", specs))
    for name, (bias, alpha, momentum, dims) in MATRIX_POINTS.items():
        for dim in dims:
            specs = matrix_specs(bias, dim, dim, 64, alpha, momentum, torch.bfloat16)
            out.append(row(f"{name} (matrix)", f"K=V={dim}, chunk 64", specs))
    for name, bias in (("gated_deltanet + momentum", BiasConfig("l2")), ("huber_norm + momentum", BiasConfig("huber_norm"))):
        dim = 256 if not bias.row_norm else 128  # the widest kernels.limits admits in bf16
        specs = matrix_specs(bias, dim, dim, 64, "head", True, torch.bfloat16)
        out.append(row(f"{name} (matrix, widest)", f"K=V={dim}, chunk 64", specs))
    for dim in (64, 128):  # the split backward: state pass in the fwd columns, chunk pass in bwd
        specs = matrix_specs(BiasConfig("l2"), dim, dim, 64, "head", False, torch.bfloat16, "split")
        out.append(row("gated_deltanet, split backward: state pass / chunk pass", f"K=V={dim}, chunk 64", specs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    parser.add_argument("--only-tiled", action="store_true",
                        help="only the hidden-tiled MLP kernel's rows (a few minutes each)")
    parser.add_argument("--only-channel", action="store_true",
                        help="only the whole-W MLP kernels with channel-wise gates")
    parser.add_argument("--only-matrix-gates", action="store_true",
                        help="only the matrix kernel with channel-wise eta / delta and lq retention")
    args = parser.parse_args()
    header = [
        f"Triton {triton.__version__} kernels compiled for sm_90 (H100), bf16 inputs unless the shape "
        "says fp32 (products as kernels.precision picks them: the named MLP models and the sharp "
        "Huber biases take tf32x3). Per program, forward then backward:",
        "warps, registers per thread, spill stack bytes per thread, shared memory KiB.",
        "Command: `python benchmarks/kernel_resources.py` (no GPU needed).",
        "",
        "| point | shape | fwd warps | fwd regs | fwd stack | fwd smem | bwd warps | bwd regs | "
        "bwd stack | bwd smem |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    if args.only_tiled:
        header[2] = "Command: `python benchmarks/kernel_resources.py --only-tiled` (no GPU needed)."
        body = tiled_rows()
    elif args.only_channel:
        header[2] = "Command: `python benchmarks/kernel_resources.py --only-channel` (no GPU needed)."
        body = channel_rows()
    elif args.only_matrix_gates:
        header[2] = "Command: `python benchmarks/kernel_resources.py --only-matrix-gates` (no GPU needed)."
        body = matrix_gate_rows()
    else:
        body = rows() + tiled_rows() + channel_rows() + matrix_gate_rows()
    table = "\n".join(header + body)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
