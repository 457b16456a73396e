"""A study as the commands see it (status, best, report, export, compare; run and resume too): a
trial whose stored objective value is not a number (a journal or database edited by hand) is shown
as an unreadable failed trial instead of breaking every command that sorts or formats the values
(and the sampler, which never sees it).

Nothing is written back: the storage keeps what it holds, and only the trials handed to the
reader are mended copies. ``notes`` says, per trial, what was unreadable, for one warning.
"""

from __future__ import annotations

import json
from collections.abc import Container
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

UNREADABLE = "unreadable"
"""The ``failure`` kind of a trial whose stored objective values cannot be read."""


class StoredNull:
    """A database's NULL where Optuna expects a finite objective value (it would assert)."""

    def __repr__(self) -> str:
        return "null"


def is_number(value: Any) -> bool:
    """Whether a stored value is a real number (a bool or a numeric string is not)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    """A stored value as the warning quotes it: JSON-like, at most 40 characters."""
    text = repr(value) if isinstance(value, StoredNull) else json.dumps(value, default=repr)
    return text if len(text) <= 40 else text[:37] + "..."


def value_problem(trial: FrozenTrial, objectives: int) -> str | None:
    """Why a complete trial's stored objective values cannot be read; None when they can."""
    if trial.state != TrialState.COMPLETE:
        return None
    values = trial.values
    if values is None:
        return "stores no objective value"
    if not isinstance(values, list | tuple):
        return f"stores the objective values {_shown(values)}, not a list of numbers"
    for value in values:
        if not is_number(value):
            return f"stores the objective value {_shown(value)}, not a number"
    if len(values) != objectives:
        return f"stores {len(values)} objective values for {objectives} objectives"
    return None


def _metric_problems(attrs: dict[str, Any]) -> list[str]:
    """The stored metrics that are no number (a non-finite one is stored as 'nan' / 'inf')."""
    metrics = attrs.get("metrics")
    if not isinstance(metrics, dict):
        return [] if metrics is None else [f"stores metrics {_shown(metrics)}, not a table"]
    return [f"stores the metric {name} = {_shown(value)}, not a number"
            for name, value in metrics.items() if not _metric_number(value)]


def _metric_number(value: Any) -> bool:
    """A number, or a string of one (non-finite metrics are stored as 'nan' / 'inf')."""
    if is_number(value):
        return True
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def _curve_ok(point: Any) -> bool:
    return isinstance(point, list | tuple) and len(point) == 2 and all(is_number(v) for v in point)


def mended(trial: FrozenTrial, objectives: int) -> tuple[FrozenTrial, list[str]]:
    """``trial`` as the readers may use it, and what was unreadable in it ([] when nothing was,
    then ``trial`` itself): unreadable objective values make it a failed trial (``failure``
    'unreadable', ``reason`` saying which value); unreadable metrics and curve points are left out.
    The stored trial is never changed (a copy is mended)."""
    value = value_problem(trial, objectives)
    metric_problems = _metric_problems(trial.user_attrs)
    curve = trial.user_attrs.get("curve")
    curve_bad = curve is not None and not (isinstance(curve, list) and all(_curve_ok(p) for p in curve))
    if value is None and not metric_problems and not curve_bad:
        return trial, []
    attrs = dict(trial.user_attrs)  # the stored trial's own attrs are never changed
    problems = [value] if value is not None else []
    if metric_problems:
        problems.extend(metric_problems)
        metrics = attrs.get("metrics")
        attrs["metrics"] = ({k: v for k, v in metrics.items() if _metric_number(v)}
                            if isinstance(metrics, dict) else {})
    if curve_bad:
        problems.append("stores a training curve with points that are not [step, loss] numbers")
        attrs["curve"] = [p for p in curve if _curve_ok(p)] if isinstance(curve, list) else []
    if value is not None:
        attrs.update(failure=UNREADABLE, reason=f"trial {trial.number} {value}")
    failed = value is not None
    return FrozenTrial(
        number=trial.number, state=TrialState.FAIL if failed else trial.state, value=None,
        values=None if failed else trial.values, datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete, params=trial.params, distributions=trial.distributions,
        user_attrs=attrs, system_attrs=trial.system_attrs, intermediate_values=trial.intermediate_values,
        trial_id=trial._trial_id,
    ), problems


class ReadableStudy(optuna.Study):
    """An Optuna study whose trials come back mended (``mended``); ``notes`` maps the number of
    each trial that needed it to one sentence saying what was unreadable and what is shown."""

    def __init__(self, study_name: str, storage: str | optuna.storages.BaseStorage,
                 sampler: optuna.samplers.BaseSampler | None = None,
                 pruner: optuna.pruners.BasePruner | None = None) -> None:
        super().__init__(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
        self.notes: dict[int, str] = {}

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        trials = super()._get_trials(deepcopy=deepcopy, states=None, use_cache=use_cache)
        shown = [self._mend(trial) for trial in trials]
        return [t for t in shown if states is None or t.state in states]

    def _mend(self, trial: FrozenTrial) -> FrozenTrial:
        readable, problems = mended(trial, len(self.directions))
        if problems:
            self.notes[trial.number] = _note(trial, problems, readable.state != trial.state)
        return readable

    def unreadable_notes(self) -> list[str]:
        """One sentence per trial with unreadable stored values, in trial order (reads the trials)."""
        self.get_trials(deepcopy=False)
        return [self.notes[number] for number in sorted(self.notes)]


def _note(trial: FrozenTrial, problems: list[str], failed: bool) -> str:
    shown = ("the commands show it as a failed trial ('unreadable') and leave it out of the ranking"
             if failed else "the commands leave those values out")
    return f"trial {trial.number} {'; '.join(problems)} (edited by hand?); {shown}; the storage is left as it is"
