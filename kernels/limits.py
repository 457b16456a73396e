"""The shapes the Triton kernels take, in one place for the kernels' input checks and dispatch."""

from __future__ import annotations

CHUNK_SIZES = (16, 32, 64)
MATRIX_HEAD_DIMS = (16, 256)
"""Smallest and largest key / value dim of the matrix-memory kernel."""

MLP_TILE_BYTES = {"chunk x hidden": 16384, "chunk x K": 8192, "K x hidden": 32768}
"""Largest tile of the MLP-memory kernel, in bytes of its input dtype (2 for bf16, 4 for fp32).

A program keeps W1, W2 [hidden, K] and the segment's [chunk, hidden] / [chunk, K] activations on
chip; past these sizes the backward's tiles (and fp32's forward) need more shared memory than an
H100 has (227 KiB), or more registers than ptxas can give one instruction (K=128, hidden=512).
Measured for every named model on sm_90 with Triton 3.6 and 3.9 (compile_check, no GPU needed):
benchmarks/results/kernel_resources_sm90.md lists the largest shapes. A smaller GPU that refuses a
launch inside these bounds gets the PyTorch form with a KernelFallbackWarning.
"""


def _tile_size(n: int) -> bool:
    """A power of two of at least 16 (tl.dot's smallest tile): the MLP kernel pads no tile."""
    return n >= 16 and n & (n - 1) == 0


def matrix_dims_fit(key_dim: int, value_dim: int) -> bool:
    low, high = MATRIX_HEAD_DIMS
    return low <= key_dim <= high and low <= value_dim <= high


def mlp_shape_problem(key_dim: int, hidden: int, chunk_size: int, element_bytes: int) -> str | None:
    """Why the MLP-memory kernel cannot take this head dim K, hidden dim and chunk size at inputs
    of ``element_bytes`` (2: bf16, 4: fp32), or None when it can."""
    if not (_tile_size(key_dim) and _tile_size(hidden)):
        return f"the MLP-memory kernel needs K and the hidden dim powers of two >= 16; got K={key_dim}, hidden={hidden}"
    sizes = {"chunk x hidden": chunk_size * hidden, "chunk x K": chunk_size * key_dim,
             "K x hidden": key_dim * hidden}
    for name, elements in sizes.items():
        if elements * element_bytes > MLP_TILE_BYTES[name]:
            dtype, other = ("bf16", "") if element_bytes == 2 else ("fp32", ", or bf16 inputs")
            return (
                f"the MLP-memory kernel's {name} tile ({elements} elements at K={key_dim}, "
                f"hidden={hidden}, chunk {chunk_size}) does not fit on chip in {dtype}: at most "
                f"{MLP_TILE_BYTES[name] // element_bytes} elements (try a smaller chunk or "
                f"hidden dim{other})"
            )
    return None
