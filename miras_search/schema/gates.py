"""Gate specifications: how eta, alpha, theta and delta are produced from the input token.

A gate is either a fixed number, a fixed per-head schedule, or data-dependent:
one scalar per head and token, or one value per key channel, head and token, produced by a
(low-rank) projection of the token followed by a squashing function.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from miras_search.schema._base import Schema

GateMode = Literal["constant", "retnet", "alibi", "head", "channel"]
FIXED_SCHEDULES = ("retnet", "alibi")
"""Modes that are a fixed per-head decay schedule (retention alpha only; ``value`` unused)."""


class Gate(Schema):
    """One gate.

    - ``constant``: the same fixed ``value`` for every head and token (not learned).
    - ``retnet``: a fixed per-head value ``1 - 2**(-5 - h)`` (RetNet's decay schedule; retention only).
    - ``alibi``: a fixed per-head, per-layer value ``exp(-s_h (1 - l / (L - 1) + 1e-5))`` with ALiBi's
      slopes ``s_h = 2**(-8 (h + 1) / H)`` (Lightning Attention / TransNormerLLM; retention only):
      early layers forget fast, the last layer almost not at all.
    - ``head``: data-dependent, one scalar per head and token; ``value`` is its value at init.
    - ``channel``: data-dependent, one value per key channel, head and token, through a rank-``rank``
      projection; ``value`` is its value at init.
    """

    mode: GateMode = "head"
    value: float = Field(0.5, description="Fixed value (constant) or the value at initialisation.")
    rank: int | None = Field(
        None, ge=1, le=1024, description="Rank of the low-rank projection (channel mode only)."
    )

    @model_validator(mode="after")
    def _rank_only_for_channel(self) -> Gate:
        if self.rank is not None and self.mode != "channel":
            raise ValueError(f"'rank' is only used by mode 'channel', not by mode '{self.mode}'")
        return self

    @property
    def data_dependent(self) -> bool:
        return self.mode in ("head", "channel")

    @property
    def projection_rank(self) -> int:
        """Rank of the channel projection (default 32, as in the paper)."""
        return self.rank if self.rank is not None else 32


def gate_field(value: float, mode: GateMode = "head") -> Any:
    """A pydantic field holding a Gate that defaults to ``Gate(mode=mode, value=value)``."""
    return Field(default_factory=lambda: Gate(mode=mode, value=value))


def check_gate_range(gate: Gate, name: str, low: float, high: float, high_open: bool = False) -> None:
    """Raise a ValueError naming ``name`` unless ``low < gate.value <= high`` (``< high`` if open)."""
    ok = low < gate.value < high if high_open else low < gate.value <= high
    if not ok:
        bound = f"{high})" if high_open else f"{high}]"
        raise ValueError(f"{name}.value must lie in ({low}, {bound}, got {gate.value}")
    if gate.mode in FIXED_SCHEDULES and name != "alpha":
        raise ValueError(
            f"{name}.mode '{gate.mode}' is a decay schedule; only the retention gate alpha has it"
        )
