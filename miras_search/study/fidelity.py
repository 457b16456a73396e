"""Fidelities: longer or larger runs of a point stored as more results of that same point.

A study's own trials are the base fidelity (level 1). ``miras confirm`` (more tokens, more
seeds), ``miras scale`` (other sizes, contexts and budgets) and successive halving (promoted
points) add trials that carry the same ``point`` and ``point_key`` as the point they measure and
a user attr ``fidelity``::

    {"source": "confirm" | "scale" | "halving", "tokens": 262144, "d_model": 64, "n_layers": 2,
     "seq_len": 64, "seeds": 3, "level": 4.0}

``level`` is the run's size-and-budget (tokens x 12 L d^2) over the point's base run: 4.0 for 4x
the tokens at the same size. Fidelity trials never count towards the study's trial budget and
are never reused for a duplicate sampled point; ``ranked`` (``miras best``, the report, the
proxy check's choice of points) reads each point at the highest level it reached, and the sampler
sees each point's higher-fidelity results carried onto the base scale by rank (study.fidelity_values).
"""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial

BASE_LEVEL = 1.0


def fidelity_of(trial: FrozenTrial) -> dict[str, Any] | None:
    """The trial's fidelity record, None for a base (searched or anchor) trial."""
    record = trial.user_attrs.get("fidelity")
    return record if isinstance(record, dict) else None


def is_fidelity_trial(trial: FrozenTrial) -> bool:
    return fidelity_of(trial) is not None


def level(trial: FrozenTrial) -> float:
    """The trial's fidelity level (4 significant digits, so that equal budgets group together)."""
    record = fidelity_of(trial)
    raw = record.get("level", BASE_LEVEL) if record else BASE_LEVEL
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return BASE_LEVEL
    return float(f"{value:.4g}") if value > 0 else BASE_LEVEL


def seeds(trial: FrozenTrial) -> int:
    record = fidelity_of(trial)
    try:
        return max(1, int(record.get("seeds", 1))) if record else 1
    except (TypeError, ValueError):
        return 1


def describe(trial: FrozenTrial) -> str:
    """A short label of the trial's fidelity for tables: 'base', 'confirm x4 (3 seeds)', ..."""
    record = fidelity_of(trial)
    if record is None:
        return "base"
    grow = record.get("grow") if isinstance(record.get("grow"), dict) else {}
    grown = grow.get("d_model_x", 1) != 1 or grow.get("n_layers_x", 1) != 1  # halving over sizes
    size = f" d{record.get('d_model')} L{record.get('n_layers')}" if record.get("source") == "scale" or grown else ""
    n = seeds(trial)
    return f"{record.get('source', '?')} x{level(trial):g}{size}" + (f" ({n} seeds)" if n > 1 else "")
