"""Check a space's base point (its preset with ``base`` applied) against the point schema.

Every sampled point starts from the base, so a value the schema rejects there would reject every
draw, and sampling would blame the constraints. The base is checked first instead, and its
problems name ``base.<path>`` and the YAML line. A rule that ties several fields together
(``d_model`` divisible by ``n_heads``, the cross-axis rules) may be met once the params are
applied, so such a problem is reported only when the params set nothing in the section it is
about (nothing at all, for a rule across sections); otherwise sampling judges it.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from miras_search.errors import Problem
from miras_search.schema import ModelPoint
from miras_search.space.targets import iter_leaves
from miras_search.validation import problems_by_error
from miras_search.yamlio import LineMap, ancestor_line

_RULE_ERRORS = ("value_error", "assertion_error")
"""pydantic error types raised by the schema's own validators: rules over several fields."""


def _sections(params: dict[str, Any]) -> set[str]:
    """The top-level sections of the point that the params set something in, in any branch."""
    return {path[0] for _, path, _ in iter_leaves(params)}


def _reported(item: dict[str, Any], touched: set[str]) -> bool:
    """Whether a base error stands whatever the params choose."""
    if item["type"] not in _RULE_ERRORS:
        return True
    loc = tuple(item["loc"])
    return not touched if not loc else loc[0] not in touched


def _located(problem: Problem, base: dict[str, Any], lines: LineMap) -> Problem:
    """The problem at ``base.<path>`` if the base sets that section, else at ``base`` as a whole."""
    parts = tuple(problem.path.split(".")) if problem.path else ()
    if parts and parts[0] in base:
        where = ("base", *parts)
        message = problem.message
    else:  # from the preset combined with the base, e.g. a rule across two sections
        where = ("base",) if base else ("preset",)
        message = f"{problem.path or 'the point'}: {problem.message}"
    line = ancestor_line(lines, where)
    return Problem(".".join(where), message, line)


def base_problems(point: dict[str, Any], base: dict[str, Any], params: dict[str, Any],
                  lines: LineMap) -> list[Problem]:
    """Problems of the base ``point`` (preset + ``base``) that no params value can fix."""
    try:
        ModelPoint.model_validate(point)
    except ValidationError as error:
        touched = _sections(params)
        return [_located(problem, base, lines)
                for item, found in problems_by_error(error, ModelPoint, point, {})
                if _reported(item, touched) for problem in found]
    return []
