"""Axis 2, attentional bias: the inner loss l(M; k, v) the memory minimises online."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from miras_search.schema._base import Schema
from miras_search.schema.gates import Gate, check_gate_range, gate_field

MAX_HUBER_DELTA = 1e4
"""Largest Huber threshold: far above any error norm a model reaches (about sqrt(d_v) at init)."""
MAX_SHARPNESS = 1e4
"""Largest c in tanh(c x): past it tanh is the exact sign at float precision."""


class DotBias(Schema):
    """l = -<M(k), v> (linear attention's Hebbian rule; softmax for memory 'none')."""

    kind: Literal["dot"] = "dot"


class L2Bias(Schema):
    """l = 1/2 ||M(k) - v||^2 (the delta rule)."""

    kind: Literal["l2"] = "l2"


class LpBias(Schema):
    """l = ||M(k) - v||_p^p, with smooth surrogates sign(x) ~ tanh(c x), |x| ~ sqrt(x^2 + eps).

    The smooth step is a descent step wherever the exact one is while
    ``c < 2 / (s p (2 eps)^((p-1)/2))``, s = eta times the memory's curvature along the step
    (``miras_search.memory.surrogates``): 3.3e5 at p = 3 and s = 1, so c = 10 changes Moneta's
    step only for errors below 0.1 and never lengthens it past a descent step; at p = 1 the bound
    is 2 / s.
    """

    kind: Literal["lp"] = "lp"
    p: float = Field(3.0, ge=1.0, le=4.0)
    smooth: bool = Field(True, description="Use the smooth surrogates of sign and |.|.")
    sharpness: float = Field(
        10.0, gt=0.0, le=MAX_SHARPNESS,
        description="c in tanh(c x); a descent step wherever the exact one is while "
        "c < 2 / (eta p (2 eps)^((p-1)/2)) for unit keys (3.3e5 at p = 3, 2 at p = 1).",
    )
    eps: float = Field(1e-6, gt=0.0, description="eps in sqrt(x^2 + eps).")


class HuberBias(Schema):
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


class RobustBias(Schema):
    """l = max_{||dv|| <= Delta} 1/2 ||M(k) - v - dv||^2; grad = (e + Delta e / ||e||) k^T."""

    kind: Literal["robust"] = "robust"
    radius: float = Field(0.1, gt=0.0, le=10.0, description="Delta, the radius of the value shift.")


Bias = Annotated[
    DotBias | L2Bias | LpBias | HuberBias | RobustBias, Field(discriminator="kind")
]
BIAS_KINDS = ("dot", "l2", "lp", "huber", "robust")
