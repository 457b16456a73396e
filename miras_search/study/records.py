"""What a study stores per trial (the contract the report layer reads), and how it is counted.

Trial user attrs: ``point`` (full ModelPoint dump), ``point_key`` (sha256 of the canonical point
JSON), ``axes`` (memory/bias/retention/algorithm -> kind), ``anchor`` (preset name or None),
``metrics``, ``curve`` ([step, train_loss] pairs), ``failure`` + ``reason`` (failed or pruned
early), ``reused_from`` (a duplicate's source trial number), ``constraints`` (limit violations,
<= 0 is feasible), ``worker`` (host/pid/device that ran it), ``requeued_from``, ``driver_died``
(how often a driver died while this point trained: setup.recover_interrupted), ``retried`` (an
infrastructure failure queued again), ``retry_of`` (the trial it retries) and ``fidelity`` (a
longer or larger run of the same point: study.fidelity).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from miras_search.errors import MirasError
from miras_search.schema import ModelPoint, canonical_data

NOT_COUNTED = ("interrupted", "infeasible", "dropped")
"""Failures that do not use up the trial budget: re-queued work, rejected samples and queued
anchors the study file no longer names."""

INFRASTRUCTURE_FAILURES = ("worker_died",)
"""Failures of the machine, not of the point: the trial is run once more (``retried``), and only
a second such failure is reported and counted."""

REUSABLE_FAILURES = ("build", "nan", "diverged", "limit", "crashed")
"""Failures that a duplicate point would hit again (deterministic), so their outcome is reused."""

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def canonical(point: ModelPoint) -> dict[str, Any]:
    """The point without its label and without the fields its settings leave unused (a gate's
    ``value`` in mode 'mamba': ``schema.canonical_data``): two points with equal canonical data
    are the same model. (A point with no unused field keeps the key it had before they were
    dropped.)"""
    data = canonical_data(point)
    data.pop("name", None)
    return data


def point_key(point: ModelPoint) -> str:
    text = json.dumps(canonical(point), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def stored_key(attrs: Mapping[str, Any]) -> str | None:
    """A stored trial's ``point_key`` as this version computes it: from its stored point, as a
    study written before unused fields were dropped (``canonical``) stored another key for a
    point that has some; the stored key when the point is missing or no longer valid."""
    point = attrs.get("point")
    if isinstance(point, dict):
        try:
            return point_key(ModelPoint.model_validate(point))
        except ValidationError:
            pass
    key = attrs.get("point_key")
    return str(key) if key else None


class UnrebuildablePoint(MirasError):
    """A trial whose stored ``point`` cannot be rebuilt into a ModelPoint; ``problem`` says why
    ("stores no 'point' user attribute ...")."""

    def __init__(self, number: int, problem: str) -> None:
        super().__init__(f"trial {number} {problem}; cannot rebuild it")
        self.number, self.problem = number, problem

    def left_out(self, command: str) -> str:
        """The one warning of ``command`` (``miras best``), which leaves the trial out and takes
        the next ranked one."""
        return (f"trial {self.number} {self.problem}, so its model cannot be rebuilt; {command} "
                "leaves it out and takes the next ranked trial; the storage is left as it is")


def stored_point(point: Any, number: int) -> ModelPoint:
    """Trial ``number``'s stored ``point`` user attribute as a ModelPoint; UnrebuildablePoint when
    it stores none (a study made outside miras-search, or the journal record that stored it was
    damaged and set aside) or one this version cannot read."""
    if not point:
        raise UnrebuildablePoint(number, "stores no 'point' user attribute (a study made outside "
                                 "miras-search, or the journal record that stored it was damaged "
                                 "and set aside)")
    if not isinstance(point, dict):
        raise UnrebuildablePoint(number, f"stores a point that is a {type(point).__name__}, not a "
                                 "table of its fields")
    try:
        return ModelPoint.model_validate(point)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "<top level>"
        raise UnrebuildablePoint(number, f"stores a point this version cannot read ({where}: "
                                 f"{first['msg']}; {error.error_count()} problem(s))") from None


Ranked = TypeVar("Ranked")


def rebuildable(ranked: Iterable[Ranked], top: int, point_of: Callable[[Ranked], ModelPoint],
                ) -> tuple[list[tuple[Ranked, ModelPoint]], list[UnrebuildablePoint]]:
    """The first ``top`` of ``ranked``, in their order, whose stored point rebuilds (``point_of``,
    which raises UnrebuildablePoint), each with its point; and why each trial passed over on the
    way cannot be rebuilt (one damaged trial does not stop a command that shows the others)."""
    chosen: list[tuple[Ranked, ModelPoint]] = []
    passed: list[UnrebuildablePoint] = []
    for item in ranked:
        if len(chosen) == top:
            break
        try:
            chosen.append((item, point_of(item)))
        except UnrebuildablePoint as error:
            passed.append(error)
    return chosen, passed


def nothing_rebuildable(study_name: str, passed: list[UnrebuildablePoint], outcome: str) -> MirasError:
    """The error of a command none of whose ranked trials has a point it can rebuild."""
    more = f" (and {len(passed) - 1} other ranked trial(s))" if len(passed) > 1 else ""
    return MirasError(f"study '{study_name}' has no ranked trial whose model can be rebuilt: "
                      f"{passed[0]}{more}; {outcome}")


def finite_metrics(metrics: dict[str, float]) -> dict[str, float | str]:
    """Metrics as JSON-able values (non-finite numbers become 'nan' / 'inf' strings)."""
    return {k: (float(v) if math.isfinite(v) else str(v)) for k, v in metrics.items()}


def counts_toward_budget(trial: FrozenTrial) -> bool:
    if trial.state not in FINISHED or "fidelity" in trial.user_attrs:
        return False  # a longer or larger run of a point already counted (study.fidelity)
    if trial.state == TrialState.FAIL and trial.user_attrs.get("retried"):
        return False  # run again under a new number (INFRASTRUCTURE_FAILURES)
    return not (trial.state == TrialState.FAIL and trial.user_attrs.get("failure") in NOT_COUNTED)


def is_feasible(trial: FrozenTrial) -> bool:
    return all(v <= 0 for v in trial.user_attrs.get("constraints") or [])


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"memory.kind": ..., "train.lr": ...}`` (W&B configs, tables)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
