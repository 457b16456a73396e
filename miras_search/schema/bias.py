"""Axis 2, attentional bias: the inner loss l(M; k, v) the memory minimises online.

One class per bias, each a subclass of ``AttentionalBias``: its fields (the schema), its ``loss``
and, where it pays, a hand-written gradient factor ``phi`` (the default takes the loss's gradient
with autograd). A subclass that declares its own ``kind`` registers itself, and ``Bias`` (the
discriminated union a ``ModelPoint`` validates against), ``BIAS_KINDS``, the search spaces, the CLI
and the docs table are derived from the registry: adding a bias is one class in this module.

The math works on tensors through their methods (and ``miras_search.primitives``), so this
module imports no torch: validating a point stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from miras_search import primitives
from miras_search.schema._base import AxisOption
from miras_search.schema.gates import Gate, check_gate_range, gate_field

if TYPE_CHECKING:
    from torch import Tensor

MAX_HUBER_DELTA = 1e4
"""Largest Huber threshold: far above any error norm a model reaches (about sqrt(d_v) at init)."""
MAX_SHARPNESS = 1e4
"""Largest c in tanh(c x): past it tanh is the exact sign at float precision."""
MAX_WINDOW = 64
"""Largest Omega window c: each step takes c gradients, so the step's cost grows with c."""


class AttentionalBias(AxisOption):
    """Base of every attentional bias: l(M(k), v), per token, over the value dim.

    Shapes: ``e, pred, v: [..., V]`` (e = pred - v, the error); ``delta: [..., 1] | None``, the
    per-token threshold of a bias with a ``delta`` gate (Huber). A subclass defines ``loss`` and,
    where the gradient has a cheaper or surrogate form, ``phi``; ``exact_phi`` False says that
    ``phi`` is a surrogate, not the loss's gradient (the conformance suite then does not compare
    them).
    """

    registry: ClassVar[dict[str, type[AttentionalBias]]] = {}
    axis: ClassVar[str] = "bias"
    required_hooks: ClassVar[tuple[tuple[str, ...], ...]] = (("loss", "phi"),)
    role: ClassVar[str] = "the inner loss `l(M; k, v)`"

    window: int = Field(
        1, ge=1, le=MAX_WINDOW,
        description="Atlas's Omega rule: c, the tokens whose loss each step minimises, "
        "sum_{i=t-c+1}^{t} gamma_i^(t) l(M; k_i, v_i) (arXiv 2505.23735, Eq. 9). 1 = the online "
        "update of every Miras model.",
    )
    gamma: Gate | None = Field(
        None,
        description="window > 1 only (dropped with window 1): the learned weights gamma_i^(t) in "
        "(0, 1) of the c - 1 past tokens in the window, produced from token t (mode 'channel': "
        "one per lag, 'head': one shared by the lags, 'constant': fixed); the current token's "
        "weight is 1 (eta_t scales it). Default when window > 1: channel-wise, 0.5 at init.",
    )

    @model_validator(mode="before")
    @classmethod
    def _gamma_follows_window(cls, data: Any) -> Any:
        """window > 1 without gamma: the default gamma; window 1: no gamma (a window-1 override
        of a windowed point, e.g. ``preset: atlas`` with ``bias: {window: 1}``, drops it)."""
        if not isinstance(data, dict):
            return data
        window = data.get("window", 1)
        if window in (1, None) and data.get("gamma") is not None:
            data = {key: value for key, value in data.items() if key != "gamma"}
        elif window not in (1, None) and data.get("gamma") is None:
            data = {**data, "gamma": {"mode": "channel", "value": 0.5}}
        return data

    @model_validator(mode="after")
    def _gamma_range(self) -> AttentionalBias:
        if self.gamma is not None:
            check_gate_range(self.gamma, "gamma", 0.0, 1.0)
        return self

    def label(self) -> str:
        return self.kind if self.window == 1 else f"{self.kind} (c={self.window})"

    @property
    def exact_phi(self) -> bool:
        """Whether ``phi`` is the gradient of ``loss`` (False: a surrogate step)."""
        return True

    def loss(self, e: Tensor, v: Tensor, delta: Tensor | None) -> Tensor:
        """l per token, [...]."""
        raise NotImplementedError(f"bias '{self.kind}' defines neither loss nor phi")

    def phi(self, e: Tensor, v: Tensor, delta: Tensor | None) -> Tensor:
        """g = dl/dpred, [..., V]: by default autograd of ``loss`` (differentiable again)."""
        import torch

        with torch.enable_grad():
            point = e if e.requires_grad else e.detach().requires_grad_()
            (g,) = torch.autograd.grad(self.loss(point, v, delta).sum(), point, create_graph=True)
        return g if torch.is_grad_enabled() else g.detach()

    def grad(self, pred: Tensor, v: Tensor, delta: Tensor | None) -> Tensor:
        """g = dl/dpred from the prediction M(k) and the value, both [..., V]."""
        return self.phi(pred - v, v, delta)


class DotBias(AttentionalBias):
    """l = -<M(k), v> (linear attention's Hebbian rule; softmax for memory 'none'): g = -v."""

    kind: Literal["dot"] = "dot"

    def loss(self, e: Tensor, v: Tensor, delta: Tensor | None) -> Tensor:
        return -((e + v) * v).sum(-1)

    def phi(self, e: Tensor, v: Tensor, delta: Tensor | None) -> Tensor:
        return -v.expand_as(e)


class L2Bias(AttentionalBias):
    """l = 1/2 ||M(k) - v||^2 (the delta rule): g = e."""

    kind: Literal["l2"] = "l2"

    @classmethod
    def examples(cls) -> list[dict]:
        return [{"kind": "l2"}, {"kind": "l2", "window": 3}]

    def loss(self, e: Tensor, v: Tensor, delta: Tensor | None) -> Tensor:
        return 0.5 * e.square().sum(-1)

    def phi(self, e: Tensor, v: Tensor, delta: Tensor | None) -> Tensor:
        return e


class LpBias(AttentionalBias):
    """l = ||M(k) - v||_p^p, with smooth surrogates sign(x) ~ tanh(c x), |x| ~ sqrt(x^2 + eps).

    The smooth step is a descent step wherever the exact one is while
    ``c < 2 / (s p (2 eps)^((p-1)/2))``, s = eta times the memory's curvature along the step
    (``miras_search.memory.surrogates``): 3.3e5 at p = 3 and s = 1, so c = 10 changes Moneta's
    step only for errors below 0.1 and never lengthens it past a descent step; at p = 1 the bound
    is 2 / s.
    """

    kind: Literal["lp"] = "lp"
    summary: ClassVar[str] = "p in [1, 4], smooth surrogates"
    p: float = Field(3.0, ge=1.0, le=4.0)
    smooth: bool = Field(True, description="Use the smooth surrogates of sign and |.|.")
    sharpness: float = Field(
        10.0, gt=0.0, le=MAX_SHARPNESS,
        description="c in tanh(c x); a descent step wherever the exact one is while "
        "c < 2 / (eta p (2 eps)^((p-1)/2)) for unit keys (3.3e5 at p = 3, 2 at p = 1).",
    )
    eps: float = Field(1e-6, gt=0.0, description="eps in sqrt(x^2 + eps).")

    def label(self) -> str:
        return f"lp (p={self.p:g})" + ("" if self.window == 1 else f" (c={self.window})")

    @classmethod
    def examples(cls) -> list[dict]:
        return [{"kind": "lp", "p": 3.0}]

    @property
    def exact_phi(self) -> bool:  # the smooth surrogates are not the loss's gradient
        return not self.smooth

    def loss(self, e: Tensor, v: Tensor, delta: Tensor | None) -> Tensor:
        return e.abs().pow(self.p).sum(-1)

    def phi(self, e: Tensor, v: Tensor, delta: Tensor | None) -> Tensor:
        """g = p sign(e) |e|^(p-1); smooth: sign ~ tanh(c e), |e| ~ sqrt(e^2 + eps)."""
        if self.smooth:
            sign = primitives.smooth_sign(e, self.sharpness)
            magnitude_pow = primitives.smooth_abs_pow(e, self.p - 1.0, self.eps)
        else:
            sign = e.sign()
            magnitude_pow = e.abs().pow(self.p - 1.0)
        return self.p * sign * magnitude_pow


class HuberBias(AttentionalBias):
    """Huber loss with threshold delta.

    - ``coordinate``: per coordinate; grad = clip(e, -delta, delta) k^T.
    - ``norm``: on ||e||; grad = e k^T if ||e|| <= delta else delta e / ||e|| k^T.
    - ``switch`` (Yaad): grad = e k^T if ||e|| <= delta else delta sign(e) k^T
      (sign(e) ~ tanh(c e) when ``smooth``, the default).

    The smooth l1 branch ``delta tanh(c e)`` is a descent step wherever the exact one is for any c,
    and at every error (also near e = 0, where the exact sign overshoots) iff
    ``eta kappa delta c < 2`` (kappa = ||k||^2 = 1 for unit keys; see
    ``miras_search.memory.surrogates``). ``sharpness_scale: threshold`` takes c = sharpness /
    delta_t: the l1 branch's slope is then at most ``sharpness``, and with sharpness <= 1 never
    steeper than the l2 branch, whatever the threshold.
    """

    kind: Literal["huber"] = "huber"
    summary: ClassVar[str] = "coordinate, norm, Yaad's switch"
    variant: Literal["coordinate", "norm", "switch"] = "coordinate"
    delta: Gate = gate_field(1.0, mode="constant")
    smooth: bool = Field(
        True,
        description=(
            "switch only: sign(e) ~ tanh(sharpness * e) in the l1 branch, so that the values keep "
            "a gradient there (with the exact sign, tokens past the threshold teach v nothing)."
        ),
    )
    sharpness: float = Field(
        10.0, gt=0.0, le=MAX_SHARPNESS,
        description="switch with smooth: c in tanh(c e), or c = sharpness / delta_t with "
        "sharpness_scale 'threshold'. A descent step at every error iff eta delta c < 2 for unit keys.",
    )
    sharpness_scale: Literal["absolute", "threshold"] = Field(
        "absolute",
        description="switch with smooth: 'absolute' = tanh(sharpness e); 'threshold' = "
        "tanh(sharpness e / delta_t), whose slope (at most sharpness) does not grow with the "
        "threshold; sharpness <= 1 keeps the l1 branch no steeper than the l2 branch (Yaad: 1).",
    )
    threshold_units: Literal["absolute", "sqrt_dv"] = Field(
        "absolute",
        description=(
            "sqrt_dv: delta_t = (the gate) * sqrt(d_v). Behind the memory's LayerNorm the error norm "
            "is about sqrt(d_v) at init, so a gate value of 1 puts the threshold among the errors "
            "(both branches taken) at every head size."
        ),
    )

    @model_validator(mode="after")
    def _delta_positive(self) -> HuberBias:
        # the error norm is about sqrt(d_v) at init; a threshold far above any reachable error
        # turns Huber into l2 and squares past float range in the loss (1e308 gave inf)
        check_gate_range(self.delta, "delta", 0.0, MAX_HUBER_DELTA)
        return self

    def label(self) -> str:
        return f"huber ({self.variant})" + ("" if self.window == 1 else f" (c={self.window})")

    @classmethod
    def examples(cls) -> list[dict]:
        return [{"kind": "huber", "variant": variant, "delta": {"mode": "head"}}
                for variant in ("coordinate", "norm", "switch")]

    @property
    def exact_phi(self) -> bool:  # the switch's l1 branch is a step, not a loss's gradient
        return self.variant != "switch"

    def loss(self, e: Tensor, v: Tensor, delta: Tensor | None) -> Tensor:
        size = e.abs() if self.variant == "coordinate" else primitives.safe_norm(e)
        huber = (0.5 * size.square()).where(size <= delta, delta * (size - 0.5 * delta))
        return huber.sum(-1)

    @staticmethod
    def inside(e: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
        """(whether ||e|| <= delta, the norm it was tested with): [..., 1] each. A per-head delta
        compares ||e||; a channel-wise one compares ||e / delta|| with 1 (padded tokens carry
        delta = 0 and e = 0: they count as inside)."""
        if delta.shape[-1] == 1:
            norm = primitives.safe_norm(e)
            return norm <= delta, norm
        ratio = primitives.safe_norm(e / delta.clamp_min(primitives.tiny(delta)))
        return ratio <= 1.0, ratio

    def phi(self, e: Tensor, v: Tensor, delta: Tensor | None) -> Tensor:
        """coordinate: clip(e, -delta, delta); norm: e, or delta e / ||e|| past the threshold;
        switch (Yaad): e, or delta tanh(c e) (``smooth``) / delta sign(e) past it, with c =
        sharpness, or sharpness / delta (``sharpness_scale: threshold``).

        ``delta``: [..., 1] (per head) or [..., V] (channel-wise: one threshold per value channel).
        A channel-wise threshold measures the error in the metric diag(1 / delta): the norm and
        switch variants test ||e / delta|| <= 1, the norm variant clips to e / ||e / delta||, the
        l1 branch is delta_j sign(e_j) (or its smooth form) per channel, and coordinate clips
        each e_j to [-delta_j, delta_j]. With equal channels this is the per-head rule.
        """
        if delta is None:
            raise ValueError("bias 'huber' needs gates.delta ([B, T, H]); got None")
        if self.variant == "coordinate":
            return e.maximum(-delta).minimum(delta)
        small, size = self.inside(e, delta)
        if self.variant == "norm":
            clipped = delta * e / size if delta.shape[-1] == 1 else e / size
            return e.where(small, clipped)
        if self.smooth:
            sharpness = self.sharpness
            if self.sharpness_scale == "threshold":
                # padded tokens (the Omega window's lags before the first token) carry delta = 0:
                # their l1 branch is multiplied by delta = 0, but c = sharpness / tiny overflows
                # to inf and inf * 0 is NaN, so they divide by 1 instead
                sharpness = self.sharpness / delta.where(delta > 0, 1.0)
            sign = primitives.smooth_sign(e, sharpness)
        else:
            sign = e.sign()
        return e.where(small, delta * sign)  # switch (Yaad)


class RobustBias(AttentionalBias):
    """l = max_{||dv|| <= Delta} 1/2 ||M(k) - v - dv||^2 = 1/2 ||e||^2 + Delta ||e||;
    g = e + Delta e / ||e|| (0 at e = 0)."""

    kind: Literal["robust"] = "robust"
    radius: float = Field(0.1, gt=0.0, le=10.0, description="Delta, the radius of the value shift.")

    @classmethod
    def examples(cls) -> list[dict]:
        return [{"kind": "robust", "radius": 0.3}]

    def loss(self, e: Tensor, v: Tensor, delta: Tensor | None) -> Tensor:
        return 0.5 * e.square().sum(-1) + self.radius * primitives.safe_norm(e)[..., 0]

    def phi(self, e: Tensor, v: Tensor, delta: Tensor | None) -> Tensor:
        return e + self.radius * e / primitives.safe_norm(e)


Bias = AttentionalBias.union()
BIAS_KINDS = AttentionalBias.kinds()
