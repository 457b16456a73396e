"""Evaluate declarative constraints on a point's nested dict (no code from YAML is run)."""

from __future__ import annotations

from typing import Any

from miras_search.merge import get_path
from miras_search.space.spec import Constraint

_MISSING = object()


def holds(value: Any, test: Any) -> bool:
    """Whether ``value`` passes ``test`` (a plain value, or a mapping of in / not_in / min / max)."""
    if not isinstance(test, dict):
        return value is not _MISSING and value == test
    if value is _MISSING:
        return False
    if "in" in test and value not in test["in"]:
        return False
    if "not_in" in test and value in test["not_in"]:
        return False
    try:
        if "min" in test and not value >= test["min"]:
            return False
        if "max" in test and not value <= test["max"]:
            return False
    except TypeError:
        return False
    return True


def _all_hold(data: dict[str, Any], tests: dict[str, Any]) -> bool:
    return all(holds(get_path(data, tuple(path.split(".")), _MISSING), t) for path, t in tests.items())


def satisfies(data: dict[str, Any], constraint: Constraint) -> bool:
    """Whether the point (as a nested dict, defaults filled in) satisfies ``constraint``."""
    if constraint.when and not _all_hold(data, constraint.when):
        return True
    if constraint.require:
        return _all_hold(data, constraint.require)
    return not _all_hold(data, constraint.forbid)


def first_violated(data: dict[str, Any], constraints: list[Constraint]) -> int | None:
    """Index of the first constraint the point violates, or None."""
    for index, constraint in enumerate(constraints):
        if not satisfies(data, constraint):
            return index
    return None
