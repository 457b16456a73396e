"""Axis 3, retention gate: how the new memory is formed from the old one and the step S.

Each rule acts on one weight at a time (``[B, H, out, in]``; alpha ``[B, H, 1, c]`` decays the
key / input dim). ``A`` is the auxiliary accumulator of lq retention (None for the others).

Besides the token-by-token ``update``, each rule gives the pieces of the chunked form (DESIGN,
"Parallel (chunked) training"): the base X_0 the linear form grows from, the per-weight read
scale of non-last tokens, the space the chunk-end state is accumulated in (``end_base``) and
the map back to weights (``end_map``).

Where the step's gradient is taken is the retention's call too (``gradient_scale``): l2 retention
"retains, then learns" (the gradient at alpha_t W_{t-1}, as in Gated DeltaNet); every other rule
takes it at W_{t-1}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

LQ_FLOOR = 1e-6


def _decay(w: Tensor, alpha: Tensor | None) -> Tensor:
    return w if alpha is None else alpha * w


def _tiny(x: Tensor) -> float:
    return torch.finfo(x.dtype).tiny


class GradientAtMemory:
    """The defaults every rule starts from: the gradient at W_{t-1} itself, the weights as their
    own parameters, the linear form grown from W_0, no read scale, the chunk end accumulated in
    weight space. A rule overrides only what differs."""

    def gradient_scale(self, decay: Tensor | None) -> Tensor | None:
        """Per-token scale s with the gradient taken at W diag(s) (None: at W).

        ``decay``: alpha_t [B, H, N, c] in the recurrence, or within a chunk the cumulative
        beta_i = prod_{j<=i} alpha_j (the retained chunk-start memory); None when alpha = 1.
        """
        return None

    def from_param(self, param: Tensor) -> tuple[Tensor, Tensor | None]:
        return param, None

    def linear_base(self, w: Tensor, a: Tensor | None) -> Tensor:
        return w

    def read_scale(self, w: Tensor, a: Tensor | None) -> Tensor | None:
        return None

    def end_base(self, x0: Tensor) -> Tensor:
        return x0


@dataclass(frozen=True)
class LinearRetention(GradientAtMemory):
    """none: W = W + S;  l2: W = alpha W + S_t, S_t from the gradient at alpha W ("retain, then
    learn": W_t = alpha W - eta grad l(alpha W), Gated DeltaNet's order). The chunked linear
    form is exact."""

    kind: str
    nonlinear = False
    lag_token = False

    def gradient_scale(self, decay: Tensor | None) -> Tensor | None:
        return decay if self.kind == "l2" else None

    def update(self, w: Tensor, a: Tensor | None, step: Tensor, alpha: Tensor | None):
        return _decay(w, alpha) + step, None

    def end_map(self, raw: Tensor) -> tuple[Tensor, Tensor | None]:
        return raw, None


@dataclass(frozen=True)
class LqRetention(GradientAtMemory):
    """Moneta: A = alpha A + S; W = A / n(A), n(A) = max(||A||_q, 1e-6)^(q-2) over the whole weight."""

    q: float
    kind = "lq"
    nonlinear = True
    lag_token = False

    def scale(self, a: Tensor) -> Tensor:
        """n(A): [B, H, 1, 1]."""
        norm = a.abs().pow(self.q).sum((-2, -1), keepdim=True).pow(1.0 / self.q)
        return norm.clamp_min(LQ_FLOOR).pow(self.q - 2.0)

    def from_param(self, param: Tensor) -> tuple[Tensor, Tensor | None]:
        return param / self.scale(param), param

    def update(self, w: Tensor, a: Tensor | None, step: Tensor, alpha: Tensor | None):
        a = _decay(a, alpha) + step
        return a / self.scale(a), a

    def linear_base(self, w: Tensor, a: Tensor | None) -> Tensor:
        return a

    def read_scale(self, w: Tensor, a: Tensor | None) -> Tensor | None:
        return 1.0 / self.scale(a)

    def end_map(self, raw: Tensor) -> tuple[Tensor, Tensor | None]:
        return raw / self.scale(raw), raw


@dataclass(frozen=True)
class KLRetention(GradientAtMemory):
    """Memora: W = c softmax_row(alpha log W + S), rows = the last (input) dim of each weight."""

    scale: float
    kind = "kl"
    nonlinear = True
    lag_token = True

    def from_param(self, param: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.scale * torch.softmax(param, dim=-1), None

    def update(self, w: Tensor, a: Tensor | None, step: Tensor, alpha: Tensor | None):
        return self.end_map(_decay(self.end_base(w), alpha) + step)

    def end_base(self, x0: Tensor) -> Tensor:
        return torch.log(x0.clamp_min(_tiny(x0)))

    def end_map(self, raw: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.scale * torch.softmax(raw, dim=-1), None


@dataclass(frozen=True)
class ElasticRetention(GradientAtMemory):
    """W = ST(alpha W + S, gamma); ST = sign(x) max(|x| - g, 0), smooth: |x| atan(x / g) / (pi / 2)."""

    threshold: float
    smooth: bool
    kind = "elastic"
    nonlinear = True
    lag_token = False

    def shrink(self, x: Tensor) -> Tensor:
        if self.smooth:
            return x.abs() * torch.atan(x / self.threshold) / (math.pi / 2.0)
        return torch.sign(x) * (x.abs() - self.threshold).clamp_min(0.0)

    def update(self, w: Tensor, a: Tensor | None, step: Tensor, alpha: Tensor | None):
        return self.shrink(_decay(w, alpha) + step), None

    def end_map(self, raw: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.shrink(raw), None


@dataclass(frozen=True)
class BregmanRetention(GradientAtMemory):
    """W = sigmoid(logit(W) + S): the memory stays in (0, 1) element-wise (no alpha)."""

    kind = "bregman"
    nonlinear = True
    lag_token = False

    def from_param(self, param: Tensor) -> tuple[Tensor, Tensor | None]:
        return torch.sigmoid(param), None

    def update(self, w: Tensor, a: Tensor | None, step: Tensor, alpha: Tensor | None):
        return self.end_map(self.end_base(w) + step)

    def end_base(self, x0: Tensor) -> Tensor:
        return torch.logit(x0, eps=torch.finfo(x0.dtype).eps)

    def end_map(self, raw: Tensor) -> tuple[Tensor, Tensor | None]:
        return torch.sigmoid(raw), None


RetentionRule = LinearRetention | LqRetention | KLRetention | ElasticRetention | BregmanRetention


def retention_from_schema(retention) -> RetentionRule:
    """The retention rule of a schema retention."""
    kind = retention.kind
    if kind in ("none", "l2"):
        return LinearRetention(kind)
    if kind == "lq":
        return LqRetention(retention.q)
    if kind == "kl":
        return KLRetention(retention.scale)
    if kind == "elastic":
        return ElasticRetention(retention.threshold, retention.smooth)
    if kind == "bregman":
        return BregmanRetention()
    raise ValueError(f"unknown retention kind '{kind}'")
