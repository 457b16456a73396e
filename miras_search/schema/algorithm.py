"""Axis 4, memory learning algorithm: the online optimiser that applies the bias and retention."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from miras_search.schema._base import AxisOption
from miras_search.schema.gates import Gate, check_gate_range, gate_field


class MemoryAlgorithm(AxisOption):
    """Base of every memory learning algorithm; a subclass with its own ``kind`` registers itself.

    ``built``: whether the memory ops have its recurrence and chunked form (False: points that
    choose it validate, and building them names it as not built yet).
    """

    registry: ClassVar[dict[str, type[MemoryAlgorithm]]] = {}
    axis: ClassVar[str] = "algorithm"
    role: ClassVar[str] = "the online optimiser"
    built: ClassVar[bool] = True

    @property
    def steps_per_token(self) -> int:
        """Inner steps per token, each on its own key, value and eta."""
        return 1


class _Stepping(MemoryAlgorithm):
    """An algorithm with an inner learning rate eta > 0."""

    eta: Gate = gate_field(0.5)

    @model_validator(mode="after")
    def _eta_range(self) -> _Stepping:
        check_gate_range(self.eta, "eta", 0.0, 1e3)
        return self


WriteKey = Literal["key", "one_minus_alpha", "lerp"]


class GD(_Stepping):
    """S_t = -eta_t grad_t.

    ``write_key`` says which key the value is written with (the ``v_t x^T`` part of the step):

    - ``key``: the key itself, scaled by eta (the plain gradient step; every Table-1 row but two).
    - ``one_minus_alpha``: the key is ``1 - alpha_t`` (HGRN2: the input gate tied to the forget
      gate, ``W_t = W_{t-1} diag(alpha_t) + eta_t v_t (1 - alpha_t)^T``); needs a dot bias.
    - ``lerp``: an l2 (delta-rule) step whose removal part keeps ``eta_t * k_t`` while the value
      is written with ``k_t * (1 + (eta_t - 1) * a)``, ``a`` a learned per-channel vector
      starting at 1 (RWKV-7's replacement key; the plain delta rule at initialisation):
      ``W_t = alpha_t W_{t-1} - (W_{t-1} k_t)(eta_t * k_t)^T + v_t kw_t^T``; needs an l2 bias.
    """

    kind: Literal["gd"] = "gd"
    summary: ClassVar[str] = "write key: the key, HGRN2's `1 - alpha`, RWKV-7's replacement key"
    write_key: WriteKey = Field(
        "key",
        description="The key the value is written with: 'key' (eta * k, the gradient step), "
        "'one_minus_alpha' (HGRN2: 1 - alpha_t, dot bias) or 'lerp' (RWKV-7: "
        "k * (1 + (eta - 1) * a), a learned, l2 bias).",
    )


def _check_momentum_theta(theta: Gate) -> None:
    """The momentum gate of Momentum and Muon: in (0, 1), a scalar per head at most."""
    check_gate_range(theta, "theta", 0.0, 1.0, high_open=True)
    if theta.mode == "channel":
        raise ValueError("theta.mode 'channel' is not supported; use 'constant' or 'head'")


class Momentum(_Stepping):
    """S_t = theta_t S_{t-1} - eta_t grad_t (Titans)."""

    kind: Literal["momentum"] = "momentum"
    summary: ClassVar[str] = "Titans"
    theta: Gate = gate_field(0.9)

    @model_validator(mode="after")
    def _theta_range(self) -> Momentum:
        _check_momentum_theta(self.theta)
        return self


class Implicit(_Stepping):
    """W_t = argmin_W l(W; k_t, v_t) + ||W - W_{t-1}||^2 / (2 eta_t) (Longhorn)."""

    kind: Literal["implicit"] = "implicit"
    summary: ClassVar[str] = "Longhorn"


class Multistep(_Stepping):
    """``steps`` inner gd steps per token, each on its own key/value and eta (DeltaProduct)."""

    kind: Literal["multistep"] = "multistep"
    summary: ClassVar[str] = "DeltaProduct"
    steps: int = Field(2, ge=2, le=8)

    @property
    def steps_per_token(self) -> int:
        return self.steps

    @classmethod
    def examples(cls) -> list[dict]:
        return [{"kind": "multistep", "steps": 2}]


class Muon(_Stepping):
    """Atlas's optimiser (Behrouz et al. 2025, arXiv 2505.23735, Eqs. 32-33): momentum of the
    gradients, the step orthogonalised by ``ns_steps`` Newton-Schulz iterations, per memory
    weight matrix (each MLP layer on its own):

        S_t = theta_t S_{t-1} + grad_t,    M_t = alpha_t M_{t-1} - eta_t NewtonSchulz-k(S_t).

    (Table 1 writes ``S_t = theta_t S_{t-1} - grad``, Eq. 33 ``+ grad``: Newton-Schulz is odd,
    NS(-S) = -NS(S), so both give this descent step.) eta stays outside the orthogonalisation:
    Newton-Schulz normalises its input, so an eta inside (as Eq. 35 writes it) would cancel.
    The chunked form computes every gradient of a chunk at its start memory (the paper's parallel
    form, Eqs. 34-41): exact at chunk 1, an approximation for longer chunks.
    """

    kind: Literal["muon"] = "muon"
    summary: ClassVar[str] = "Atlas: momentum + Newton-Schulz"
    theta: Gate = gate_field(0.9)
    ns_steps: int = Field(
        5, ge=1, le=10,
        description="Newton-Schulz iterations k on each step (Muon's 5; more: closer to the "
        "nearest semi-orthogonal matrix).",
    )
    eta: Gate = gate_field(0.05)

    @model_validator(mode="after")
    def _theta_range(self) -> Muon:
        _check_momentum_theta(self.theta)
        return self

    def label(self) -> str:
        return f"muon (k={self.ns_steps})"

    @classmethod
    def examples(cls) -> list[dict]:
        return [{"kind": "muon", "ns_steps": 3}]


class NoAlgorithm(MemoryAlgorithm):
    """No online optimiser: only for memory 'none' (softmax attention)."""

    kind: Literal["none"] = "none"
    summary: ClassVar[str] = "with memory `none` only"

    @classmethod
    def examples(cls) -> list[dict]:
        return []  # softmax attention: no memory rule


Algorithm = MemoryAlgorithm.union()
ALGORITHM_KINDS = MemoryAlgorithm.kinds()
