"""Triton kernels for the chunked memory update (importable as ``miras_search.kernels``).

``kernel_for(point_or_rule)`` gives the kernel that covers a point (or None) and
``available()`` says whether Triton can run here; ``matrix_chunk`` holds the matrix-memory
kernel and its PyTorch reference.
"""

from .bias import BIAS_KINDS, BiasConfig, KernelInputError
from .dispatch import available, kernel_for

__all__ = ["BIAS_KINDS", "BiasConfig", "KernelInputError", "available", "kernel_for"]
