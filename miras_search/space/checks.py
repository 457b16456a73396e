"""Checks of a space's shape that its pydantic models cannot express, with YAML paths and lines.

``one_of`` is a key of an ordinary parameter mapping, so pydantic parses its value as any other
node; and a constraint test's operators carry values whose type depends on the operator. Both
are checked here, before anything walks the tree, so a bad file gets a problem, not a traceback.
"""

from __future__ import annotations

import math
from typing import Any

from miras_search.errors import Problem
from miras_search.space.spec import Choice, Constraint, FloatRange, IntRange
from miras_search.yamlio import LineMap, ancestor_line, key_text, yaml_kind

_ONE_OF_SHAPE = "a mapping of option name -> sub-tree, e.g. {fast: {train: {chunk_size: 64}}}"


def _problem(where: tuple[str, ...], message: str, lines: LineMap) -> Problem:
    """A Problem at ``where`` with the line of its nearest ancestor that has one."""
    line = ancestor_line(lines, where)
    return Problem(".".join(where), message, line)


def node_kind(node: Any) -> str:
    """How a parsed params node reads to a user of the YAML format, e.g. 'an {int: ...} range'."""
    for model, kind in ((Choice, "a {choice: ...} node"), (IntRange, "an {int: ...} range"),
                        (FloatRange, "a {float: ...} range")):
        if isinstance(node, model):
            return kind
    if isinstance(node, dict | list):
        return f"a {yaml_kind(node)}"
    return f"a plain value ({node!r})"


def _one_of_problems(node: Any, where: tuple[str, ...], lines: LineMap) -> list[Problem]:
    if not isinstance(node, dict):
        return [_problem(where, f"'one_of' must be {_ONE_OF_SHAPE}; got {node_kind(node)}", lines)]
    if not node:
        return [_problem(where, f"'one_of' must list at least one option; it is {_ONE_OF_SHAPE}", lines)]
    problems: list[Problem] = []
    for label, sub in node.items():
        here = (*where, key_text(label))
        if sub is None:
            continue  # an option that changes nothing
        if isinstance(sub, dict):
            problems.extend(_tree_problems(sub, here, lines))
        else:
            problems.append(_problem(here, (
                "each option of 'one_of' must be a mapping of the parameters it sets, "
                f"e.g. {{train: {{chunk_size: 64}}}}; got {node_kind(sub)}"
            ), lines))
    return problems


def _tree_problems(tree: dict[str, Any], where: tuple[str, ...], lines: LineMap) -> list[Problem]:
    """Problems of every ``one_of`` in a parameter mapping, its sub-mappings and branches."""
    problems: list[Problem] = []
    for key, node in tree.items():
        here = (*where, key)
        if key == "one_of":
            problems.extend(_one_of_problems(node, here, lines))
        elif isinstance(node, Choice) and isinstance(node.choice, dict):
            for option, branch in node.choice.items():
                problems.extend(_tree_problems(branch or {}, (*here, "choice", key_text(option)), lines))
        elif isinstance(node, dict):
            problems.extend(_tree_problems(node, here, lines))
    return problems


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _operator_problem(operator: str, value: Any) -> str | None:
    """What is wrong with one operator of a constraint test, or None."""
    if operator in ("in", "not_in") and not isinstance(value, list):
        return f"'{operator}' needs a list of values, e.g. {{{operator}: [2, 4]}}; got {value!r}"
    if operator in ("min", "max") and not _is_number(value):
        return f"'{operator}' needs a finite number, e.g. {{{operator}: 2}}; got {value!r}"
    return None


def _constraint_problems(index: int, constraint: Constraint, lines: LineMap) -> list[Problem]:
    problems: list[Problem] = []
    for section in ("when", "require", "forbid"):
        for dotted, test in getattr(constraint, section).items():
            if not isinstance(test, dict):
                continue  # a plain value: equality
            for operator, value in test.items():
                message = _operator_problem(operator, value)
                if message is not None:
                    where = ("constraints", str(index), section, dotted, operator)
                    problems.append(_problem(where, message, lines))
    return problems


def shape_problems(params: dict[str, Any], constraints: list[Constraint],
                   lines: LineMap) -> list[Problem]:
    """Every ``one_of`` and constraint-test problem of a space, in file order."""
    problems = _tree_problems(params, ("params",), lines)
    for index, constraint in enumerate(constraints):
        problems.extend(_constraint_problems(index, constraint, lines))
    return problems
