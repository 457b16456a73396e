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
    """l = ||M(k) - v||_p^p, with smooth surrogates sign(x) ~ tanh(c x), |x| ~ sqrt(x^2 + eps)."""

    kind: Literal["lp"] = "lp"
    p: float = Field(3.0, ge=1.0, le=4.0)
    smooth: bool = Field(True, description="Use the smooth surrogates of sign and |.|.")
    sharpness: float = Field(10.0, gt=0.0, le=MAX_SHARPNESS, description="c in tanh(c x).")
    eps: float = Field(1e-6, gt=0.0, description="eps in sqrt(x^2 + eps).")


class HuberBias(Schema):
    """Huber loss with threshold delta.

    - ``coordinate``: per coordinate; grad = clip(e, -delta, delta) k^T.
    - ``norm``: on ||e||; grad = e k^T if ||e|| <= delta else delta e / ||e|| k^T.
    - ``switch`` (Yaad): grad = e k^T if ||e|| <= delta else delta sign(e) k^T
      (sign(e) ~ tanh(c e) when ``smooth``, the default).
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
    sharpness: float = Field(10.0, gt=0.0, le=MAX_SHARPNESS, description="c in tanh(c e) (switch with smooth).")
    relative_sharpness: bool = Field(
        False,
        description=(
            "switch with smooth: the l1 branch is delta_t tanh(sharpness e / delta_t), whose slope "
            "at e = 0 is `sharpness` whatever the threshold (1: the l2 branch's slope), instead of "
            "delta_t tanh(sharpness e), whose slope delta_t * sharpness amplifies small errors."
        ),
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
