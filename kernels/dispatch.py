"""Which memory points have a Triton kernel, and whether kernels can run here.

``kernel_for`` reads a point's four axes duck-typed, so it takes a ``ModelPoint`` (schema
objects with ``.kind``) or a ``miras_search.memory`` rule (plain strings and bias-gradient
dataclasses) without importing either. It only answers coverage: choosing between the
minibatch and the exact-delta chunk form stays with the caller.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from .bias import BiasConfig

_GRAD_CLASS_KIND = {
    "DotGrad": "dot", "L2Grad": "l2", "LpGrad": "lp", "HuberGrad": "huber", "RobustGrad": "robust",
}


def available() -> bool:
    """Triton importable and a CUDA device present, or Triton's interpreter on (TRITON_INTERPRET=1)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    import torch

    return torch.cuda.is_available()


def _kind(axis: Any) -> str | None:
    """'matrix', 'gd', ... from a plain string or an object with ``.kind``."""
    return axis if isinstance(axis, str) else getattr(axis, "kind", None)


def bias_config(bias: Any) -> BiasConfig | None:
    """The kernel's BiasConfig for a schema bias or a memory bias-gradient rule; None if not covered."""
    kind = getattr(bias, "kind", None) or _GRAD_CLASS_KIND.get(type(bias).__name__)
    if kind in ("dot", "l2"):
        return BiasConfig(kind)
    if kind == "lp":
        if not getattr(bias, "smooth", True):
            return None  # only the smooth surrogates have a kernel
        return BiasConfig("lp", p=bias.p, sharpness=bias.sharpness, eps=bias.eps)
    if kind == "huber":
        return BiasConfig(f"huber_{bias.variant}", smooth=getattr(bias, "smooth", True),
                          sharpness=getattr(bias, "sharpness", 10.0))
    if kind == "robust":
        return BiasConfig("robust", radius=bias.radius)
    return None


def _gate_modes(rule: Any) -> dict[str, str]:
    """Gate name -> mode ('constant', 'retnet', 'head', 'channel')."""
    modes = getattr(rule, "gate_modes", None)
    if modes is not None:
        return dict(modes)
    found = {}
    for name, owner in (("eta", rule.algorithm), ("theta", rule.algorithm), ("alpha", rule.retention)):
        gate = getattr(owner, name, None)
        if gate is not None:
            found[name] = gate.mode
    return found


def kernel_for(rule: Any) -> Callable[..., Any] | None:
    """The Triton kernel for this point, or None when it is not covered.

    Covered: matrix memory; biases dot, l2, lp (smooth), huber (coordinate / norm / switch),
    robust; retention none or l2; algorithm gd or momentum; eta per head (not channel-wise);
    alpha per head or channel-wise (channel-wise only with gd).
    The callable is ``chunk_matrix_memory`` with the bias bound:
    ``f(q, k, v, eta, alpha=None, theta=None, delta=None, initial_state=None, chunk_size=64)``.
    """
    if _kind(rule.memory) != "matrix":
        return None
    algorithm = _kind(rule.algorithm)
    if algorithm not in ("gd", "momentum") or _kind(rule.retention) not in ("none", "l2"):
        return None
    bias = bias_config(rule.bias)
    if bias is None:
        return None
    modes = _gate_modes(rule)
    if modes.get("eta") == "channel":
        return None
    if algorithm == "momentum" and modes.get("alpha") == "channel":
        return None
    from .matrix_chunk import chunk_matrix_memory

    return functools.partial(chunk_matrix_memory, bias=bias)
