"""What a journal record of each operation needs for Optuna to replay it.

Optuna's ``JournalStorage`` replays a journal by reading, for each record, the fields its
``op_code`` names (``_JournalStorageReplayResult._apply_*`` in optuna/storages/journal/_storage.py)
and turning them into studies and trials; a record without one of them, or with one of another
type (a trial id that is text, a state that is no trial state, a time that is no ISO time), stops
the replay with a bare KeyError, TypeError or ValueError, so every command refuses the study. Such
a record is as damaged as a garbage line: ``replayable`` says which records are whole, so that the
journal repair sets the others aside.

Only what the replay itself reads is checked, with the types Optuna writes. A value Optuna stores
as given (a user attribute, an objective value, a metric) is not judged here: an objective value
edited into text is the readers' to show as an unreadable trial (``study.readable``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.study import StudyDirection
from optuna.trial import TrialState

Check = Callable[[Any], bool]

_TRIAL_STATES = frozenset(state.value for state in TrialState)
_DIRECTIONS = frozenset(direction.value for direction in StudyDirection)


def _is_int(value: Any) -> bool:
    """An integer, as Optuna writes ids, steps and enum values (a bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A real number (NaN and infinities included, as Optuna writes them); a bool is not one."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_one_attribute(value: Any) -> bool:
    """A ``{key: value}`` table of one entry (Optuna asserts the one entry of an attribute record)."""
    return isinstance(value, dict) and len(value) == 1


def _is_time(value: Any) -> bool:
    """An ISO time, as Optuna writes a trial's start and end."""
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value).astimezone()
    except (ValueError, OverflowError, OSError):
        return False
    return True


def _is_time_or_none(value: Any) -> bool:
    return value is None or _is_time(value)


def _is_trial_state(value: Any) -> bool:
    return _is_int(value) and value in _TRIAL_STATES


def _are_directions(value: Any) -> bool:
    return isinstance(value, list) and all(_is_int(d) and d in _DIRECTIONS for d in value)


def _is_list_or_none(value: Any) -> bool:
    """Objective values: a list (each value the readers' to judge) or none."""
    return value is None or isinstance(value, list)


def _is_table(value: Any) -> bool:
    return isinstance(value, dict)


def _are_steps(value: Any) -> bool:
    """Intermediate values keyed by their step (JSON writes the step as text: ``"4"``)."""
    if not isinstance(value, dict):
        return False
    try:
        for step in value:
            int(step)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=1024)
def _distribution(text: str) -> BaseDistribution | None:
    """The distribution a record stores as JSON text; None when it is none (cached: the same
    few texts repeat on every parameter record)."""
    try:
        return json_to_distribution(text)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _is_distribution(value: Any) -> bool:
    return isinstance(value, str) and _distribution(value) is not None


def _fits(text: str, value: Any) -> bool:
    """Whether ``value`` is an internal value of the distribution stored as ``text`` (a
    categorical parameter's value is the index of its choice)."""
    distribution = _distribution(text)
    if distribution is None or not _is_number(value):
        return False
    try:
        distribution.to_external_repr(value)
    except (ValueError, IndexError, TypeError, OverflowError):
        return False
    return True


_NEEDS: dict[int, dict[str, Check]] = {
    0: {"study_name": _is_text, "directions": _are_directions},  # CREATE_STUDY
    1: {"study_id": _is_int},  # DELETE_STUDY
    2: {"study_id": _is_int, "user_attr": _is_one_attribute},  # SET_STUDY_USER_ATTR
    3: {"study_id": _is_int, "system_attr": _is_one_attribute},  # SET_STUDY_SYSTEM_ATTR
    4: {"study_id": _is_int, "datetime_start": _is_time_or_none},  # CREATE_TRIAL
    5: {"trial_id": _is_int, "param_name": _is_text, "param_value_internal": _is_number,
        "distribution": _is_distribution},  # SET_TRIAL_PARAM
    6: {"trial_id": _is_int, "state": _is_trial_state, "values": _is_list_or_none},  # SET_TRIAL_STATE_VALUES
    7: {"trial_id": _is_int, "step": _is_int, "intermediate_value": _is_number},  # SET_TRIAL_INTERMEDIATE_VALUE
    8: {"trial_id": _is_int, "user_attr": _is_one_attribute},  # SET_TRIAL_USER_ATTR
    9: {"trial_id": _is_int, "system_attr": _is_one_attribute},  # SET_TRIAL_SYSTEM_ATTR
    10: {},  # DISCARD_TRIALS: Optuna's replay skips it
}
"""The fields each operation's replay reads, and what each must be."""

_MAY_HAVE: dict[int, dict[str, Check]] = {
    4: {"state": _is_trial_state, "datetime_complete": _is_time, "values": _is_list_or_none,
        "distributions": _is_table, "params": _is_table, "user_attrs": _is_table,
        "system_attrs": _is_table, "intermediate_values": _are_steps},
}
"""The fields an operation's replay reads when they are there (a trial created from a template
carries them), and what each must be then."""


def _has(record: Mapping[str, Any], needs: Mapping[str, Check], optional: bool = False) -> bool:
    """Whether each field of ``needs`` in ``record`` passes its check (and, unless ``optional``,
    is there)."""
    return all(check(record[name]) if name in record else optional for name, check in needs.items())


def _trial_fits(record: Mapping[str, Any]) -> bool:
    """A trial creation: each stored parameter fits its stored distribution, and the trial has
    one objective value or a list of them, not both."""
    distributions = record.get("distributions") or {}
    if not all(_is_distribution(text) for text in distributions.values()):
        return False
    params = record.get("params") or {}
    if not all(name in distributions and _fits(distributions[name], value) for name, value in params.items()):
        return False
    return record.get("value") is None or record.get("values") is None


def _state_times_fit(record: Mapping[str, Any]) -> bool:
    """A state change: a trial set running carries its start time, a finished one its end time."""
    state = TrialState(record["state"])
    if state == TrialState.RUNNING:
        return _is_time(record.get("datetime_start"))
    if state.is_finished():
        return _is_time(record.get("datetime_complete"))
    return True


_WHOLE: dict[int, Callable[[Mapping[str, Any]], bool]] = {
    4: _trial_fits,
    5: lambda record: _fits(record["distribution"], record["param_value_internal"]),
    6: _state_times_fit,
}
"""What an operation's replay needs beyond single fields (run once those fields passed)."""


def replayable(record: Mapping[str, Any]) -> bool:
    """Whether Optuna can replay ``record``, a JSON object whose ``op_code`` is a known operation:
    it has every field that operation reads, each of the type Optuna writes."""
    op = record["op_code"]
    if not _has(record, _NEEDS[op]) or not _has(record, _MAY_HAVE.get(op, {}), optional=True):
        return False
    whole = _WHOLE.get(op)
    return whole is None or whole(record)
