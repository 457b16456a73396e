"""Axis 3, retention gate: how the new memory is formed from the old one and the step S.

Each rule acts on one weight at a time (``[B, H, out, in]``; alpha ``[B, H, 1, c]`` decays the
key / input dim). ``a`` is a rule's auxiliary state (lq: the accumulator A; kl: log W; None
for the others).

Besides the token-by-token ``update``, each rule gives the pieces of the chunked form (DESIGN,
"Parallel (chunked) training"): the base X_0 the linear form grows from, the per-weight read
scale of non-last tokens, the space the chunk-end state is accumulated in (``end_base``) and
the map back to weights (``end_map``).

Where the step's gradient is taken is the retention's call too (``gradient_scale``): l2 retention
either "retains, then learns" (the gradient at alpha_t W_{t-1}, as in Gated DeltaNet) or takes it
at W_{t-1} (Titans, Yaad), as its ``gradient_at`` says; every other rule takes it at W_{t-1}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from miras_search.memory.mirror_read import mirror_chunk_read, mirror_diagonal_read
from miras_search.memory.networks import DiagonalLayer, Layer

LQ_FLOOR = 1e-6


def _abs_pow(x: Tensor, q: float) -> Tensor:
    """|x|^q; q = 2, 4, 6 by squaring (torch's pow with a general exponent runs a scalar power
    per element on CPU, several times slower than the few multiplications)."""
    if q in (2.0, 4.0, 6.0):
        sq = x.square()
        return sq if q == 2.0 else sq.square() if q == 4.0 else sq.square() * sq
    return x.abs().pow(q)


def _decay(w: Tensor, alpha: Tensor | None) -> Tensor:
    return w if alpha is None else alpha * w


class GradientAtMemory:
    """The defaults every rule starts from: the gradient at W_{t-1} itself, the weights as their
    own parameters, the linear form grown from W_0, no read scale, the chunk end accumulated in
    weight space. A rule overrides only what differs."""

    carries_aux = False
    """Whether the rule keeps an auxiliary state ``a`` beside W (lq: A; kl: log W)."""

    def gradient_scale(self, decay: Tensor | None) -> Tensor | None:
        """Per-token scale s with the gradient taken at W diag(s) (None: at W).

        ``decay``: alpha_t [B, H, N, c] in the recurrence, or within a chunk the cumulative
        beta_i = prod_{j<=i} alpha_j (the retained chunk-start memory); None when alpha = 1.
        """
        return None

    def from_param(self, param: Tensor) -> tuple[Tensor, Tensor | None]:
        return param, None

    def accumulator_for(self, w: Tensor) -> Tensor:
        """The raw parameter whose weights (``from_param``) are ``w``: w itself unless the rule
        maps its state to weights (lq)."""
        return w

    def linear_base(self, w: Tensor, a: Tensor | None) -> Tensor:
        return w

    def read_scale(self, w: Tensor, a: Tensor | None) -> Tensor | None:
        return None

    def end_base(self, x0: Tensor) -> Tensor:
        return x0

    def end_map_scaled(self, raw: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """end_map(raw) and the read scale of its result: (w, a, read_scale(w, a))."""
        w, a = self.end_map(raw)
        return w, a, self.read_scale(w, a)

    def end_start(self, w: Tensor, a: Tensor | None) -> Tensor:
        """The chunk-start state in the space the chunk end is accumulated in: end_base of the
        linear base, unless the rule carries that state itself (kl: log W in ``a``)."""
        return self.end_base(self.linear_base(w, a))

    def chunk_read(self, layer: Layer, w: Tensor, a: Tensor | None, base: Tensor, beta: Tensor,
                   s0: Tensor | None, m: Tensor | None, coef: Tensor | None, delta: Tensor,
                   ex: Tensor, z: Tensor) -> Tensor:
        """U_t z_t inside a chunk (before the read scale): the linear form grown from ``base``
        (``linear_base(w, a)``); see ``LinearLayer.chunk_read`` for the shapes."""
        return layer.chunk_read(base, beta, s0, m, coef, delta, ex, z)


@dataclass(frozen=True)
class LinearRetention(GradientAtMemory):
    """none: W = W + S;  l2: W = alpha W + S_t, S_t from the gradient at alpha W (``gradient_at``
    'retained': W_t = alpha W - eta grad l(alpha W), Gated DeltaNet's order) or at W ('previous':
    W_t = alpha W - eta grad l(W), Titans' and Yaad's). The chunked linear form is exact."""

    kind: str
    gradient_at: str = "retained"
    nonlinear = False
    lag_token = False

    @property
    def retains_first(self) -> bool:
        """Whether the gradient is taken at the retained memory alpha W."""
        return self.kind == "l2" and self.gradient_at == "retained"

    def gradient_scale(self, decay: Tensor | None) -> Tensor | None:
        return decay if self.retains_first else None

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
    carries_aux = True

    def log_scale(self, a: Tensor) -> Tensor:
        """log n(A): [B, H, 1, 1], without forming |A|^q: at q = 6 an |A| of 1e7 (or 1e-7)
        overflows (underflows) float32 there, while the norm itself is representable.

        ||A||_q = m (sum (|A| / m)^q)^(1/q) with m = max |A| (no gradient needed: the norm is
        1-homogeneous, so its derivative in m is zero)."""
        m = a.detach().abs().amax((-2, -1), keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
        ratio = _abs_pow(a / m, self.q).sum((-2, -1), keepdim=True)  # in [1, numel]
        log_norm = m.log() + ratio.log() / self.q
        return (self.q - 2.0) * log_norm.clamp_min(math.log(LQ_FLOOR))

    def scale(self, a: Tensor) -> Tensor:
        """n(A) = max(||A||_q, 1e-6)^(q-2): [B, H, 1, 1]."""
        return self.log_scale(a).exp()

    def normalised(self, a: Tensor) -> Tensor:
        """W = A / n(A), through log n so that a huge n gives a tiny W, not 0 * inf."""
        return a * torch.exp(-self.log_scale(a))

    def from_param(self, param: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.normalised(param), param

    def accumulator_for(self, w: Tensor) -> Tensor:
        """A with A / n(A) = w (per head): A = c w with c^(3-q) = n(w), since n(c w) = c^(q-2) n(w).
        At q = 3, A / n(A) = A / ||A||_3 fixes W's scale, and A = w; at q = 2, n = 1."""
        if self.q == 3.0:
            return w
        return w * (self.log_scale(w) / (3.0 - self.q)).exp()

    def update(self, w: Tensor, a: Tensor | None, step: Tensor, alpha: Tensor | None):
        a = _decay(a, alpha) + step
        return self.normalised(a), a

    def linear_base(self, w: Tensor, a: Tensor | None) -> Tensor:
        return a

    def read_scale(self, w: Tensor, a: Tensor | None) -> Tensor | None:
        return torch.exp(-self.log_scale(a))

    def end_map(self, raw: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.normalised(raw), raw

    def end_map_scaled(self, raw: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        scale = torch.exp(-self.log_scale(raw))  # n(A) once for the weights and the next reads
        return raw * scale, raw, scale


@dataclass(frozen=True)
class KLRetention(GradientAtMemory):
    """Memora: W = c softmax_row(alpha log W + S), rows = the last (input) dim of each weight.

    Inside a chunk the log-space state is linear in the steps (all taken at the chunk-start W_0)
    and every token reads its own exact map of it (``chunk_read``).

    The rule carries log W = log c + log_softmax_row(raw) itself (the auxiliary state ``a``)
    rather than taking the log of W: entries of W that underflow float32 (1e-38 is reached
    within a sequence) would lose their value and give the log a gradient of 1 / W = inf.
    """

    scale: float
    kind = "kl"
    nonlinear = True
    lag_token = True
    carries_aux = True

    def _mapped(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        log_w = math.log(self.scale) + torch.log_softmax(raw, dim=-1)
        return log_w.exp(), log_w

    def from_param(self, param: Tensor) -> tuple[Tensor, Tensor | None]:
        return self._mapped(param)

    def update(self, w: Tensor, a: Tensor | None, step: Tensor, alpha: Tensor | None):
        return self._mapped(_decay(a, alpha) + step)

    def end_start(self, w: Tensor, a: Tensor | None) -> Tensor:
        return a

    def end_map(self, raw: Tensor) -> tuple[Tensor, Tensor | None]:
        return self._mapped(raw)

    def chunk_read(self, layer: Layer, w: Tensor, a: Tensor | None, base: Tensor, beta: Tensor,
                   s0: Tensor | None, m: Tensor | None, coef: Tensor | None, delta: Tensor,
                   ex: Tensor, z: Tensor) -> Tensor:
        """Each token reads c softmax_row of its log-space state (miras_search.memory.mirror_read)."""
        read = mirror_diagonal_read if layer is DiagonalLayer else mirror_chunk_read
        return read(a, self.scale, beta, s0, m, coef, delta, ex, z)


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
        return LinearRetention(kind, getattr(retention, "gradient_at", "retained"))
    if kind == "lq":
        return LqRetention(retention.q)
    if kind == "kl":
        return KLRetention(retention.scale)
    if kind == "elastic":
        return ElasticRetention(retention.threshold, retention.smooth)
    if kind == "bregman":
        return BregmanRetention()
    raise ValueError(f"unknown retention kind '{kind}'")
