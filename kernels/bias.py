"""Attentional-bias settings shared by the matrix-memory kernels and their reference.

A bias turns the error ``e = W k - v`` of one token into the gradient factor ``g = phi(e)``
(the update is ``g k^T``). ``phi`` acts on the value dimension ``V``: element-wise for
``dot``, ``l2``, ``lp`` and ``huber_coordinate``; through the row norm ``||e||`` for
``huber_norm``, ``huber_switch`` (Yaad) and ``robust``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from miras_search.errors import MirasError
from miras_search.primitives import NORM_FLOOR
from miras_search.schema.bias import AttentionalBias, HuberBias

BIAS_KINDS = ("dot", "l2", "lp", "huber_coordinate", "huber_norm", "huber_switch", "robust")
ROW_NORM_KINDS = ("huber_norm", "huber_switch", "robust")
NORM_EPS = NORM_FLOOR
"""Floor of ``||e||`` in the divisions of the row-norm biases (keeps e = 0 finite)."""


class KernelInputError(MirasError, ValueError):
    """Inputs of a memory kernel with a wrong shape, dtype or setting (the message names it)."""


class KernelFallbackWarning(RuntimeWarning):
    """A kernel launch did not fit this GPU, so the call ran the PyTorch form (same math, slower)."""


@dataclass(frozen=True)
class BiasConfig:
    """One attentional bias and its fixed hyper-parameters.

    ``p``, ``sharpness`` (c in tanh(c x)) and ``eps`` are used by ``lp``; ``radius`` (Delta) by
    ``robust``. ``smooth`` replaces sign(e) by tanh(sharpness e) in ``lp`` and in the l1 branch of
    ``huber_switch`` (Yaad); ``relative_sharpness`` makes that branch delta tanh(sharpness e / delta).
    The Huber threshold is the per-token tensor ``delta``, not a field.
    """

    kind: str = "l2"
    p: float = 3.0
    sharpness: float = 10.0
    eps: float = 1e-6
    radius: float = 0.1
    smooth: bool = True
    relative_sharpness: bool = False

    def __post_init__(self) -> None:
        if self.kind not in BIAS_KINDS:
            raise KernelInputError(
                f"bias kind {self.kind!r} is not one the matrix kernels know; "
                f"choose one of {', '.join(BIAS_KINDS)}"
            )

    @property
    def needs_delta(self) -> bool:
        return self.kind.startswith("huber")

    @property
    def row_norm(self) -> bool:
        return self.kind in ROW_NORM_KINDS

    def schema(self) -> AttentionalBias:
        """The registered bias class with these settings (not validated: the kernels take
        settings past the schema's ranges too)."""
        if self.kind.startswith("huber_"):
            return HuberBias.model_construct(
                variant=self.kind.removeprefix("huber_"), smooth=self.smooth, sharpness=self.sharpness,
                sharpness_scale="threshold" if self.relative_sharpness else "absolute",
            )
        option = AttentionalBias.registry[self.kind]
        fields = {"p": self.p, "sharpness": self.sharpness, "eps": self.eps, "radius": self.radius,
                  "smooth": self.smooth}
        return option.model_construct(**{k: v for k, v in fields.items() if k in option.model_fields})


def as_bias(bias: BiasConfig | str) -> BiasConfig:
    """Accept a bias kind name as shorthand for its default config."""
    return bias if isinstance(bias, BiasConfig) else BiasConfig(kind=bias)


def phi(e: torch.Tensor, v: torch.Tensor, delta: torch.Tensor | None, bias: BiasConfig) -> torch.Tensor:
    """Gradient factor g = phi(e) of every token: the bias class's own ``phi``.

    e, v: [..., V] (error and value); delta: [...] (Huber threshold), [..., V] (one per value
    channel) or None. Returns [..., V].
    """
    if delta is not None and delta.dim() < e.dim():
        delta = delta.unsqueeze(-1)
    return bias.schema().phi(e, v, delta)
