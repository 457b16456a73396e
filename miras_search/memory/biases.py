"""Axis 2, attentional bias: g = dl/dpred from the prediction, the value and the threshold.

Every bias maps ``pred, v: [B, H, N, V]`` and ``delta: [B, H, N, 1 or V] | None`` to
``g: [B, H, N, V]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from miras_search.memory.surrogates import smooth_abs_pow, smooth_sign
from miras_search.schema import Bias

NORM_EPS = 1e-12  # floor of ||e||^2: keeps e / ||e|| and its gradient finite at e = 0


def safe_norm(e: Tensor) -> Tensor:
    """||e|| over the last dim, [..., 1], with a floor so that gradients stay finite at 0."""
    return e.square().sum(-1, keepdim=True).clamp_min(NORM_EPS).sqrt()


@dataclass(frozen=True)
class DotGrad:
    """l = -<M(k), v>: g = -v."""

    needs_delta = False

    def grad(self, pred: Tensor, v: Tensor, delta: Tensor | None) -> Tensor:
        return -v.expand_as(pred)


@dataclass(frozen=True)
class L2Grad:
    """l = 1/2 ||M(k) - v||^2: g = e."""

    needs_delta = False

    def grad(self, pred: Tensor, v: Tensor, delta: Tensor | None) -> Tensor:
        return pred - v


@dataclass(frozen=True)
class LpGrad:
    """l = ||e||_p^p: g = p sign(e) |e|^(p-1), smooth: sign ~ tanh(c e), |e| ~ sqrt(e^2 + eps)."""

    p: float
    smooth: bool
    sharpness: float
    eps: float
    needs_delta = False

    def grad(self, pred: Tensor, v: Tensor, delta: Tensor | None) -> Tensor:
        e = pred - v
        if self.smooth:
            sign = smooth_sign(e, self.sharpness)
            magnitude_pow = smooth_abs_pow(e, self.p - 1.0, self.eps)
        else:
            sign = torch.sign(e)
            magnitude_pow = e.abs().pow(self.p - 1.0)
        return self.p * sign * magnitude_pow


@dataclass(frozen=True)
class HuberGrad:
    """Huber with threshold delta: coordinate clip, norm clip, or Yaad's l2/l1 switch.

    switch: g = e if ||e|| <= delta, else delta tanh(c e) (``smooth``) or delta sign(e), with
    c = sharpness (``relative_sharpness`` False) or sharpness / delta (True); the smooth sign keeps a
    gradient to v in the l1 branch (see miras_search.memory.surrogates for the choice of c).

    A channel-wise threshold (delta [..., V], one per value channel) measures the error in the
    metric diag(1 / delta): the norm and switch variants test ||e / delta|| <= 1, the norm variant
    clips to e / ||e / delta||, the l1 branch is delta_j sign(e_j) (or its smooth form) per
    channel, and coordinate clips each e_j to [-delta_j, delta_j]. With equal channels this is
    the per-head rule.
    """

    variant: str
    smooth: bool = True
    sharpness: float = 10.0
    relative_sharpness: bool = False
    needs_delta = True

    @staticmethod
    def inside(e: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
        """(whether ||e|| <= delta, the norm it was tested with): [..., 1] each. A per-head delta
        compares ||e||; a channel-wise one compares ||e / delta|| with 1 (padded tokens carry
        delta = 0 and e = 0: they count as inside)."""
        if delta.shape[-1] == 1:
            norm = safe_norm(e)
            return norm <= delta, norm
        ratio = safe_norm(e / delta.clamp_min(torch.finfo(delta.dtype).tiny))
        return ratio <= 1.0, ratio

    def grad(self, pred: Tensor, v: Tensor, delta: Tensor | None) -> Tensor:
        if delta is None:
            raise ValueError("bias 'huber' needs gates.delta ([B, T, H]); got None")
        e = pred - v
        if self.variant == "coordinate":
            return torch.minimum(torch.maximum(e, -delta), delta)
        small, size = self.inside(e, delta)
        if self.variant == "norm":
            clipped = delta * e / size if delta.shape[-1] == 1 else e / size
            return torch.where(small, e, clipped)
        if self.smooth:
            # padded tokens carry delta = 0 (and e = 0): the floor keeps their unused branch finite
            relative = self.sharpness / delta.clamp_min(torch.finfo(delta.dtype).tiny)
            sign = smooth_sign(e, relative if self.relative_sharpness else self.sharpness)
        else:
            sign = torch.sign(e)
        return torch.where(small, e, delta * sign)  # switch (Yaad)


@dataclass(frozen=True)
class RobustGrad:
    """l = 1/2 ||e||^2 + Delta ||e||: g = e + Delta e / ||e|| (0 at e = 0)."""

    radius: float
    needs_delta = False

    def grad(self, pred: Tensor, v: Tensor, delta: Tensor | None) -> Tensor:
        e = pred - v
        return e + self.radius * e / safe_norm(e)


BiasGrad = DotGrad | L2Grad | LpGrad | HuberGrad | RobustGrad


def bias_from_schema(bias: Bias) -> BiasGrad:
    """The gradient rule of a schema bias."""
    if bias.kind == "dot":
        return DotGrad()
    if bias.kind == "l2":
        return L2Grad()
    if bias.kind == "lp":
        return LpGrad(bias.p, bias.smooth, bias.sharpness, bias.eps)
    if bias.kind == "huber":
        return HuberGrad(bias.variant, bias.smooth, bias.sharpness, bias.sharpness_scale == "threshold")
    if bias.kind == "robust":
        return RobustGrad(bias.radius)
    raise ValueError(f"unknown bias kind '{bias.kind}'")
