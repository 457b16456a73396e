"""The shapes the Triton kernels take, in one place for the kernels' input checks and dispatch."""

from __future__ import annotations

CHUNK_SIZES = (16, 32, 64)
MATRIX_HEAD_DIMS = (16, 256)
"""Smallest and largest key / value dim of the matrix-memory kernel."""
MLP_MAX_KEY_DIM = 128
MLP_MAX_HIDDEN = 512


def _tile_size(n: int) -> bool:
    """A power of two of at least 16 (tl.dot's smallest tile): the MLP kernel pads no tile."""
    return n >= 16 and n & (n - 1) == 0


def matrix_dims_fit(key_dim: int, value_dim: int) -> bool:
    low, high = MATRIX_HEAD_DIMS
    return low <= key_dim <= high and low <= value_dim <= high


def mlp_dims_fit(key_dim: int, hidden: int) -> bool:
    return (_tile_size(key_dim) and key_dim <= MLP_MAX_KEY_DIM
            and _tile_size(hidden) and hidden <= MLP_MAX_HIDDEN)
