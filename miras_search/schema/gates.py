"""Gate specifications: how eta, alpha, theta and delta are produced from the input token.

A gate is either a fixed number, a fixed per-head schedule, or data-dependent:
one scalar per head and token, or one value per key channel, head and token, produced by a
(low-rank) projection of the token followed by a squashing function; or, for the retention gate,
Mamba2's parameterization ``alpha = exp(-A softplus(w . x + b))`` with per-head initial values
drawn from ranges.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from miras_search.schema._base import Schema

GateMode = Literal["constant", "retnet", "alibi", "head", "channel", "mamba"]
FIXED_SCHEDULES = ("retnet", "alibi")
"""Modes that are a fixed per-head decay schedule (retention alpha only; ``value`` unused)."""
ALPHA_ONLY_MODES = (*FIXED_SCHEDULES, "mamba")
"""Modes only the retention gate alpha may take (``value`` unused)."""
MODE_FIELDS: dict[str, tuple[GateMode, ...]] = {
    "rank": ("channel",), "max_ratio": ("head", "channel"), "a_init": ("mamba",), "dt_init": ("mamba",),
}
"""The gate fields that only some modes take: field -> the modes that use it (any other mode
refuses it)."""
MAMBA_A_INIT = (1.0, 16.0)
MAMBA_DT_INIT = (0.001, 0.1)
"""Mamba2's initial ranges (Dao and Gu, 2024): A uniform in [1, 16], dt log-uniform in [1e-3, 0.1]."""


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
    - ``mamba``: Mamba2's / Gated DeltaNet's decay (retention only), one scalar per head and token:
      ``alpha = exp(-A_h dt)``, ``dt = softplus(w_h . x + b_h)``, with ``A_h`` learned (as log A)
      and drawn at init uniformly from ``a_init``, and ``b_h`` set so that ``dt`` starts at a value
      drawn log-uniformly from ``dt_init``: every head starts at its own retention (``value``
      unused).

    ``max_ratio`` (eta only, modes ``head`` and ``channel``) bounds a learned step relative to its
    initial value: eta = max_ratio value sigmoid(z - logit(1 / max_ratio)), range (0, max_ratio
    value), starting at ``value``. Unset, eta's range is (0, 1) for a value below 1 (a sigmoid)
    and (0, inf) from 1 up (a softplus). An MLP memory behind its LayerNorm reaches the edge of its
    inner loop's stability a few times above a stable initial step (Memora at about 3x), and a free
    gate lets the outer optimiser walk it there; ``max_ratio`` keeps it inside.
    """

    mode: GateMode = "head"
    value: float = Field(0.5, description="Fixed value (constant) or the value at initialisation.")
    rank: int | None = Field(
        None, ge=1, le=1024, description="Rank of the low-rank projection (channel mode only)."
    )
    max_ratio: float | None = Field(
        None, gt=1.0, le=1e3, description="Bounds a learned eta to (0, max_ratio * value): eta = "
        "max_ratio * value * sigmoid(z), starting at value (eta only, modes 'head' and 'channel'). "
        "Unset: (0, 1) for a value below 1, (0, inf) from 1 up.",
    )
    a_init: tuple[float, float] | None = Field(
        None, description="Range [low, high] the per-head A is drawn from, uniformly, at init "
        "(mode 'mamba' only; default [1, 16], Mamba2's; Gated DeltaNet draws from [0, 16])."
    )
    dt_init: tuple[float, float] | None = Field(
        None, description="Range [low, high] the per-head dt starts in, log-uniformly "
        "(mode 'mamba' only; default [0.001, 0.1], Mamba2's and Gated DeltaNet's)."
    )

    @model_validator(mode="after")
    def _fields_of_their_mode(self) -> Gate:
        # one message per field; MODE_FIELDS says the same (tests/test_schema.py checks they agree)
        if self.rank is not None and self.mode != "channel":
            raise ValueError(f"'rank' is only used by mode 'channel', not by mode '{self.mode}'")
        if self.max_ratio is not None and self.mode not in ("head", "channel"):
            raise ValueError(
                f"'max_ratio' bounds a learned gate (mode 'head' or 'channel'), not mode '{self.mode}'"
            )
        for name in ("a_init", "dt_init"):
            if getattr(self, name) is not None and self.mode != "mamba":
                raise ValueError(f"'{name}' is only used by mode 'mamba', not by mode '{self.mode}'")
        if self.a_init is not None and not (0.0 <= self.a_init[0] <= self.a_init[1] and self.a_init[1] > 0):
            raise ValueError(
                f"a_init must be [low, high] with 0 <= low <= high and high > 0, got {list(self.a_init)}"
            )
        if self.dt_init is not None and not 0.0 < self.dt_init[0] <= self.dt_init[1]:
            raise ValueError(f"dt_init must be [low, high] with 0 < low <= high, got {list(self.dt_init)}")
        return self

    def unused_fields(self) -> frozenset[str]:
        """``value`` in the modes that never read it (a fixed schedule, Mamba2's decay): two such
        gates that differ only in ``value`` build the same model. (The other fields of a mode
        that does not use them are refused, so are always unset there.)"""
        return frozenset({"value"}) if self.mode in ALPHA_ONLY_MODES else frozenset()

    @property
    def data_dependent(self) -> bool:
        return self.mode in ("head", "channel", "mamba")

    @property
    def mamba_ranges(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """(A range, dt range) of mode 'mamba', defaults filled in."""
        return self.a_init or MAMBA_A_INIT, self.dt_init or MAMBA_DT_INIT

    @property
    def upper(self) -> float | None:
        """The top of a bounded gate's range, ``max_ratio * value`` (None: unbounded)."""
        return None if self.max_ratio is None else self.max_ratio * self.value

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
    if gate.max_ratio is not None and name != "eta":
        raise ValueError(f"{name}.max_ratio is not used: only the step eta takes a bounded range")
    if gate.mode in ALPHA_ONLY_MODES and name != "alpha":
        what = "a decay schedule" if gate.mode in FIXED_SCHEDULES else "Mamba2's decay parameterization"
        raise ValueError(f"{name}.mode '{gate.mode}' is {what}; only the retention gate alpha has it")
