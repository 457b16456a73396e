"""What a kernel does when Triton refuses its launch on this GPU (OutOfResources): warn once per
call site with a KernelFallbackWarning and run the PyTorch reference instead, forward and
backward. The shape limits (kernels.limits) keep an H100 clear of this; smaller GPUs (less
shared memory per block) may still need it."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from triton.runtime.errors import OutOfResources

from .bias import KernelFallbackWarning


def warn_fallback(kernel: str, error: OutOfResources) -> None:
    """Warn that ``kernel`` (e.g. 'MLP-memory forward') runs as PyTorch for this call."""
    warnings.warn(
        f"the {kernel} Triton kernel does not fit this GPU ({error}); this call runs the "
        "PyTorch chunked form instead (same math, slower)",
        KernelFallbackWarning,
        stacklevel=4,
    )


def reference_grads(reference: Callable[..., torch.Tensor], inputs: list[torch.Tensor | None],
                    grad_output: torch.Tensor) -> list[torch.Tensor | None]:
    """Gradients of ``reference(*inputs)`` for ``grad_output``, recomputed with autograd; None
    for the inputs that are None (and for any the output does not depend on)."""
    leaves = [x.detach().requires_grad_() if x is not None else None for x in inputs]
    with torch.enable_grad():
        o = reference(*leaves)
        wanted = [x for x in leaves if x is not None]
        got = iter(torch.autograd.grad(o, wanted, grad_output, allow_unused=True))
    return [next(got) if x is not None else None for x in leaves]
