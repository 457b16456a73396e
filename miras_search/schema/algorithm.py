"""Axis 4, memory learning algorithm: the online optimiser that applies the bias and retention."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from miras_search.schema._base import Schema
from miras_search.schema.gates import Gate, check_gate_range, gate_field


class _Stepping(Schema):
    """An algorithm with an inner learning rate eta > 0."""

    kind: str
    eta: Gate = gate_field(0.5)

    @model_validator(mode="after")
    def _eta_range(self) -> _Stepping:
        check_gate_range(self.eta, "eta", 0.0, 1e3)
        return self


class GD(_Stepping):
    """S_t = -eta_t grad_t."""

    kind: Literal["gd"] = "gd"


class Momentum(_Stepping):
    """S_t = theta_t S_{t-1} - eta_t grad_t (Titans)."""

    kind: Literal["momentum"] = "momentum"
    theta: Gate = gate_field(0.9)

    @model_validator(mode="after")
    def _theta_range(self) -> Momentum:
        check_gate_range(self.theta, "theta", 0.0, 1.0, high_open=True)
        if self.theta.mode == "channel":
            raise ValueError("theta.mode 'channel' is not supported; use 'constant' or 'head'")
        return self


class Implicit(_Stepping):
    """W_t = argmin_W l(W; k_t, v_t) + ||W - W_{t-1}||^2 / (2 eta_t) (Longhorn)."""

    kind: Literal["implicit"] = "implicit"


class Multistep(_Stepping):
    """``steps`` inner gd steps per token, each on its own key/value and eta (DeltaProduct)."""

    kind: Literal["multistep"] = "multistep"
    steps: int = Field(2, ge=2, le=8)


class Newton(_Stepping):
    """l2 step preconditioned by the running inverse key covariance (Mesa-style)."""

    kind: Literal["newton"] = "newton"


class NoAlgorithm(Schema):
    """No online optimiser: only for memory 'none' (softmax attention)."""

    kind: Literal["none"] = "none"


Algorithm = Annotated[
    GD | Momentum | Implicit | Multistep | Newton | NoAlgorithm, Field(discriminator="kind")
]
ALGORITHM_KINDS = ("gd", "momentum", "implicit", "multistep", "newton", "none")
