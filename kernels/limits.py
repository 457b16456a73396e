"""The shapes the Triton kernels take, in one place for the kernels' input checks and dispatch."""

from __future__ import annotations

CHUNK_SIZES = (16, 32, 64)
MATRIX_HEAD_DIMS = (16, 256)
"""Smallest and largest key / value dim of the matrix-memory kernel."""

MLP_MAX_TILES = {
    "bf16": {"chunk x (K + hidden)": 10240, "K x hidden": 16384},
    "fp32": {"chunk x (K + hidden)": 5120, "K x hidden": 4096},
}
"""Largest tiles (elements) of the MLP-memory kernel, by input dtype.

A program keeps W1, W2 [hidden, K] (and with momentum their momenta) and the segment's
[chunk, hidden] and [chunk, K] activations on chip. Past these sizes the backward needs more shared memory than an H100 has (227 KiB), or more
registers than ptxas can give one instruction (K=128, hidden=512); fp32 takes more than twice
bf16's room (its matrix products run on FMA layouts, not tensor cores). Measured for the named
models on sm_90 with Triton 3.9 (compile_check, no GPU needed): Titans at K=64, hidden 128,
chunk 64 (chunk x (K + hidden) = 12288) needs 264 KiB, K=64 / hidden 256 / chunk 32 (10240) at
most 172 KiB; benchmarks/results/kernel_resources_sm90.md lists the widest admitted shapes. A smaller GPU that refuses a launch
inside these bounds gets the PyTorch form with a KernelFallbackWarning.
"""


def _tile_size(n: int) -> bool:
    """A power of two of at least 16 (tl.dot's smallest tile): the MLP kernel pads no tile."""
    return n >= 16 and n & (n - 1) == 0


def matrix_dims_fit(key_dim: int, value_dim: int) -> bool:
    low, high = MATRIX_HEAD_DIMS
    return low <= key_dim <= high and low <= value_dim <= high


def mlp_shape_problem(key_dim: int, hidden: int, chunk_size: int, dtype: str) -> str | None:
    """Why the MLP-memory kernel cannot take this head dim K, hidden dim and chunk size at
    ``dtype`` ('bf16' or 'fp32') inputs, or None when it can."""
    if not (_tile_size(key_dim) and _tile_size(hidden)):
        return f"the MLP-memory kernel needs K and the hidden dim powers of two >= 16; got K={key_dim}, hidden={hidden}"
    sizes = {"chunk x (K + hidden)": chunk_size * (key_dim + hidden), "K x hidden": key_dim * hidden}
    for name, elements in sizes.items():
        if elements > MLP_MAX_TILES[dtype][name]:
            hint = "" if dtype == "bf16" else ", or bf16 inputs"
            return (
                f"the MLP-memory kernel's {name} tile ({elements} elements at K={key_dim}, "
                f"hidden={hidden}, chunk {chunk_size}) does not fit on chip in {dtype}: at most "
                f"{MLP_MAX_TILES[dtype][name]} (try a smaller chunk or hidden dim{hint})"
            )
    return None
