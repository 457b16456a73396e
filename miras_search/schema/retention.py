"""Axis 3, retention gate: how the new memory is formed from the old one and the step S_t."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from miras_search.schema._base import Schema
from miras_search.schema.gates import Gate, check_gate_range, gate_field


class _Decaying(Schema):
    """A retention with a forget gate alpha in (0, 1]."""

    kind: str
    alpha: Gate = gate_field(0.9)

    @model_validator(mode="after")
    def _alpha_range(self) -> _Decaying:
        check_gate_range(self.alpha, "alpha", 0.0, 1.0)
        return self


class NoRetention(Schema):
    """W_t = W_{t-1} + S_t."""

    kind: Literal["none"] = "none"


class L2Retention(_Decaying):
    """W_t = alpha_t W_{t-1} + S_t (weight decay / forget gate).

    ``gradient_at`` says where S_t's gradient is taken. ``retained``: at alpha_t W_{t-1} ("retain,
    then learn"), the order of Gated DeltaNet (h = h * exp(g); then the delta-rule step).
    ``previous``: at W_{t-1}, the order of Titans and Yaad (W_t = alpha_t W_{t-1} - eta_t
    grad l(W_{t-1})). They differ only where the gradient depends on W (not for a dot bias).
    """

    kind: Literal["l2"] = "l2"
    gradient_at: Literal["retained", "previous"] = Field(
        "retained",
        description="Where the step's gradient is taken: at alpha_t W_{t-1} ('retained', Gated "
        "DeltaNet) or at W_{t-1} ('previous', Titans, Yaad).",
    )


class LqRetention(_Decaying):
    """A_t = alpha_t A_{t-1} + S_t; W_t = A_t / ||A_t||_q^(q-2) (Moneta, q=4)."""

    kind: Literal["lq"] = "lq"
    q: float = Field(4.0, ge=2.0, le=8.0)


class KLRetention(_Decaying):
    """W_t = c softmax(alpha_t log W_{t-1} - eta_t grad_t) per row (Memora); W_0 uniform."""

    kind: Literal["kl"] = "kl"
    scale: float = Field(1.0, gt=0.0, le=1000.0, description="c, the row sum of the memory.")


class ElasticRetention(_Decaying):
    """W_t = soft_threshold(alpha_t W_{t-1} + S_t, gamma) (elastic net)."""

    kind: Literal["elastic"] = "elastic"
    threshold: float = Field(1e-3, gt=0.0, le=1.0, description="gamma, the soft threshold.")
    smooth: bool = Field(
        True, description="Use |x| atan(x/gamma) / (pi/2) so that gradients flow everywhere."
    )


class BregmanRetention(Schema):
    """W_t = sigmoid(logit(W_{t-1}) - eta_t grad_t): memory kept in (0, 1) element-wise."""

    kind: Literal["bregman"] = "bregman"


Retention = Annotated[
    NoRetention | L2Retention | LqRetention | KLRetention | ElasticRetention | BregmanRetention,
    Field(discriminator="kind"),
]
RETENTION_KINDS = ("none", "l2", "lq", "kl", "elastic", "bregman")
