"""Triton kernels for the chunked memory update (importable as ``miras_search.kernels``).

``kernel_for(point_or_rule)`` gives the kernel that covers a point (or None) and
``available()`` says whether Triton can run here. Each operator lives in its own folder beside
its PyTorch reference (``naive.py``): ``matrix_chunk`` (matrix memory) and ``mlp_chunk`` (the
2-layer MLP memory of Moneta, Yaad, Memora and Titans); ``omega.py`` runs Atlas's Omega window on
either as plain gd entries. ``compile_check`` compiles a kernel for
an NVIDIA GPU without one and reports its registers, spills and shared memory.
"""

from .bias import BIAS_KINDS, BiasConfig, KernelFallbackWarning, KernelInputError
from .dispatch import available, kernel_for

__all__ = ["BIAS_KINDS", "BiasConfig", "KernelFallbackWarning", "KernelInputError", "available", "kernel_for"]
