"""Axis 3, retention gate: how the new memory is formed from the old one and the step S_t.

One class per retention, each a subclass of ``RetentionGate``: its fields (the schema), its
update and the hooks of the chunked form, and its flags (``nonlinear``, ``learned_init``) held
once here. A subclass that declares its own ``kind`` registers itself; ``Retention`` (the
discriminated union), ``RETENTION_KINDS`` and every membership list are derived from the registry.

The math acts on one weight at a time (``[B, H, out, in]``; alpha ``[B, H, 1, c]`` decays the
key / input dim); ``a`` is a rule's auxiliary state (lq: the accumulator A; kl: log W; None for
the others). Besides the token-by-token ``update``, each rule gives the pieces of the chunked
form (``miras_search.memory.chunked``): the base X_0 the linear form grows from, the per-weight
read scale of non-last tokens, the space the chunk-end state is accumulated in (``end_base``) and
the map back to weights (``end_map``). Where the step's gradient is taken is the retention's call
too (``gradient_scale``): l2 retention either "retains, then learns" (the gradient at
alpha_t W_{t-1}, as in Gated DeltaNet) or takes it at W_{t-1} (Titans, Yaad), as its
``gradient_at`` says; every other rule takes it at W_{t-1}.

The math works through tensor methods (and ``miras_search.primitives``): this module imports no
torch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from miras_search import primitives
from miras_search.schema._base import AxisOption
from miras_search.schema.gates import Gate, check_gate_range, gate_field

if TYPE_CHECKING:
    from torch import Tensor


def _decay(w: Tensor, alpha: Tensor | None) -> Tensor:
    return w if alpha is None else alpha * w


class RetentionGate(AxisOption):
    """Base of every retention gate, with the defaults each rule starts from: the gradient at
    W_{t-1} itself, the weights as their own parameters, the linear form grown from W_0, no read
    scale, the chunk end accumulated in weight space. A rule overrides only what differs."""

    registry: ClassVar[dict[str, type[RetentionGate]]] = {}
    axis: ClassVar[str] = "retention"
    required_hooks: ClassVar[tuple[tuple[str, ...], ...]] = (("update",), ("end_map",))
    role: ClassVar[str] = "how the memory forgets"
    nonlinear: ClassVar[bool] = True
    """Whether W_t is not linear in the steps (the chunked form then maps its chunk end exactly)."""
    learned_init: ClassVar[bool] = False
    """Whether the memory needs a learned, non-zero initial state (memory.init 'zeros' refused)."""
    carries_aux: ClassVar[bool] = False
    """Whether the rule keeps an auxiliary state ``a`` beside W (lq: A; kl: log W)."""
    lag_token: ClassVar[bool] = False
    """Whether each chunk starts with one exact micro-step (kl)."""
    maps_each_token: ClassVar[bool] = False
    """Whether each token inside a chunk reads the exact map of its log-space state (kl: c
    softmax_row, miras_search.memory.mirror_read) rather than the linear form grown from W_0."""

    def update(self, w: Tensor, a: Tensor | None, step: Tensor,
               alpha: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """(W_t, a_t) from W_{t-1}, a_{t-1}, the step S_t and alpha_t."""
        raise NotImplementedError(f"retention '{self.kind}' defines no update")

    def end_map(self, raw: Tensor) -> tuple[Tensor, Tensor | None]:
        """(W, a) from the state the chunk end is accumulated in."""
        raise NotImplementedError(f"retention '{self.kind}' defines no end_map")

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

    def initial_parameter(self, shape: tuple[int, ...], std: float, mlp: bool) -> Tensor:
        """A learned initial state [H, out, in] whose weights have entries of about ``std``
        (drawn from torch's global generator)."""
        import torch

        return self.accumulator_for(std * torch.randn(shape))

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

    def chunk_read(self, layer: Any, w: Tensor, a: Tensor | None, base: Tensor, beta: Tensor,
                   s0: Tensor | None, m: Tensor | None, coef: Tensor | None, delta: Tensor,
                   ex: Tensor, z: Tensor) -> Tensor:
        """U_t z_t inside a chunk (before the read scale): the linear form grown from ``base``
        (``linear_base(w, a)``); see ``LinearLayer.chunk_read`` for the shapes."""
        return layer.chunk_read(base, beta, s0, m, coef, delta, ex, z)


class _Decaying(RetentionGate):
    """A retention with a forget gate alpha in (0, 1]."""

    alpha: Gate = gate_field(0.9)

    @model_validator(mode="after")
    def _alpha_range(self) -> _Decaying:
        check_gate_range(self.alpha, "alpha", 0.0, 1.0)
        return self


class NoRetention(RetentionGate):
    """W_t = W_{t-1} + S_t."""

    kind: Literal["none"] = "none"
    nonlinear: ClassVar[bool] = False
    retains_first: ClassVar[bool] = False

    def update(self, w: Tensor, a: Tensor | None, step: Tensor, alpha: Tensor | None):
        return _decay(w, alpha) + step, None

    def end_map(self, raw: Tensor) -> tuple[Tensor, Tensor | None]:
        return raw, None


class L2Retention(_Decaying):
    """W_t = alpha_t W_{t-1} + S_t (weight decay / forget gate).

    ``gradient_at`` says where S_t's gradient is taken. ``retained``: at alpha_t W_{t-1} ("retain,
    then learn"), the order of Gated DeltaNet (h = h * exp(g); then the delta-rule step).
    ``previous``: at W_{t-1}, the order of Titans and Yaad (W_t = alpha_t W_{t-1} - eta_t
    grad l(W_{t-1})). They differ only where the gradient depends on W (not for a dot bias).
    """

    kind: Literal["l2"] = "l2"
    summary: ClassVar[str] = "forget gate"
    gradient_at: Literal["retained", "previous"] = Field(
        "retained",
        description="Where the step's gradient is taken: at alpha_t W_{t-1} ('retained', Gated "
        "DeltaNet) or at W_{t-1} ('previous', Titans, Yaad).",
    )
    nonlinear: ClassVar[bool] = False

    @property
    def retains_first(self) -> bool:
        """Whether the gradient is taken at the retained memory alpha W."""
        return self.gradient_at == "retained"

    def gradient_scale(self, decay: Tensor | None) -> Tensor | None:
        return decay if self.retains_first else None

    def update(self, w: Tensor, a: Tensor | None, step: Tensor, alpha: Tensor | None):
        return _decay(w, alpha) + step, None

    def end_map(self, raw: Tensor) -> tuple[Tensor, Tensor | None]:
        return raw, None


class LqRetention(_Decaying):
    """A_t = alpha_t A_{t-1} + S_t; W_t = A_t / n(A_t), n(A) = max(||A||_q, 1e-6)^(q-2) over the
    whole weight (Moneta, q=4)."""

    kind: Literal["lq"] = "lq"
    summary: ClassVar[str] = "Moneta"
    q: float = Field(4.0, ge=2.0, le=8.0)
    learned_init: ClassVar[bool] = True
    carries_aux: ClassVar[bool] = True

    def label(self) -> str:
        return f"lq (q={self.q:g})"

    def log_scale(self, a: Tensor) -> Tensor:
        """log n(A): [B, H, 1, 1] (``primitives.lq_log_scale``)."""
        return primitives.lq_log_scale(a, self.q)

    def scale(self, a: Tensor) -> Tensor:
        """n(A) = max(||A||_q, 1e-6)^(q-2): [B, H, 1, 1]."""
        return self.log_scale(a).exp()

    def normalised(self, a: Tensor) -> Tensor:
        """W = A / n(A), through log n so that a huge n gives a tiny W, not 0 * inf."""
        return a * (-self.log_scale(a)).exp()

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
        return (-self.log_scale(a)).exp()

    def end_map(self, raw: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.normalised(raw), raw

    def end_map_scaled(self, raw: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        scale = (-self.log_scale(raw)).exp()  # n(A) once for the weights and the next reads
        return raw * scale, raw, scale


class KLRetention(_Decaying):
    """W_t = c softmax(alpha_t log W_{t-1} - eta_t grad_t) per row (Memora); W_0 uniform.

    Rows are the last (input) dim of each weight. Inside a chunk the log-space state is linear in
    the steps (all taken at the chunk-start W_0) and every token reads its own exact map of it
    (``maps_each_token``; miras_search.memory.mirror_read).

    The rule carries log W = log c + log_softmax_row(raw) itself (the auxiliary state ``a``)
    rather than taking the log of W: entries of W that underflow float32 (1e-38 is reached
    within a sequence) would lose their value and give the log a gradient of 1 / W = inf.
    """

    kind: Literal["kl"] = "kl"
    summary: ClassVar[str] = "Memora"
    scale: float = Field(1.0, gt=0.0, le=1000.0, description="c, the row sum of the memory.")
    learned_init: ClassVar[bool] = True
    carries_aux: ClassVar[bool] = True
    lag_token: ClassVar[bool] = True
    maps_each_token: ClassVar[bool] = True

    def _mapped(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        log_w = primitives.kl_log_weights(raw, self.scale)
        return log_w.exp(), log_w

    def from_param(self, param: Tensor) -> tuple[Tensor, Tensor | None]:
        return self._mapped(param)

    def initial_parameter(self, shape: tuple[int, ...], std: float, mlp: bool) -> Tensor:
        """0 (a uniform W_0), or N(0, 0.1^2) for mlp memories, whose hidden units would
        otherwise stay identical forever."""
        import torch

        return 0.1 * torch.randn(shape) if mlp else torch.zeros(shape)

    def update(self, w: Tensor, a: Tensor | None, step: Tensor, alpha: Tensor | None):
        return self._mapped(_decay(a, alpha) + step)

    def end_start(self, w: Tensor, a: Tensor | None) -> Tensor:
        return a

    def end_map(self, raw: Tensor) -> tuple[Tensor, Tensor | None]:
        return self._mapped(raw)


class ElasticRetention(_Decaying):
    """W_t = soft_threshold(alpha_t W_{t-1} + S_t, gamma) (elastic net); soft_threshold(x) =
    sign(x) max(|x| - gamma, 0), smooth: |x| atan(x / gamma) / (pi / 2)."""

    kind: Literal["elastic"] = "elastic"
    threshold: float = Field(1e-3, gt=0.0, le=1.0, description="gamma, the soft threshold.")
    smooth: bool = Field(
        True, description="Use |x| atan(x/gamma) / (pi/2) so that gradients flow everywhere."
    )

    def shrink(self, x: Tensor) -> Tensor:
        if self.smooth:
            return x.abs() * (x / self.threshold).atan() / (math.pi / 2.0)
        return x.sign() * (x.abs() - self.threshold).clamp_min(0.0)

    def update(self, w: Tensor, a: Tensor | None, step: Tensor, alpha: Tensor | None):
        return self.shrink(_decay(w, alpha) + step), None

    def end_map(self, raw: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.shrink(raw), None


class BregmanRetention(RetentionGate):
    """W_t = sigmoid(logit(W_{t-1}) - eta_t grad_t): memory kept in (0, 1) element-wise (no alpha)."""

    kind: Literal["bregman"] = "bregman"
    learned_init: ClassVar[bool] = True

    def from_param(self, param: Tensor) -> tuple[Tensor, Tensor | None]:
        return param.sigmoid(), None

    def initial_parameter(self, shape: tuple[int, ...], std: float, mlp: bool) -> Tensor:
        """N(0, 0.1^2) (W_0 = sigmoid of it)."""
        import torch

        return 0.1 * torch.randn(shape)

    def update(self, w: Tensor, a: Tensor | None, step: Tensor, alpha: Tensor | None):
        return self.end_map(self.end_base(w) + step)

    def end_base(self, x0: Tensor) -> Tensor:
        return x0.logit(eps=primitives.machine_eps(x0))

    def end_map(self, raw: Tensor) -> tuple[Tensor, Tensor | None]:
        return raw.sigmoid(), None


Retention = RetentionGate.union()
RETENTION_KINDS = RetentionGate.kinds()
