"""Constraint tests that no draw of a space can pass: the values a space can give a field.

A test on ``block.n_layers`` is compared with the value each sampled point holds there. The
space's params set that value (a fixed value, a choice, a range), in one or several places; a
field the params do not set keeps the base point's value. A test that none of these values can
pass never matches, so its rule never acts (``when``, ``forbid``) or rejects every point it
applies to (``require``). Only what is certain is reported: a field whose section may be replaced
by a different kind (its default then applies) is not judged, nor a ``not_in`` on floats, and
float comparisons keep a tolerance for the grid Optuna computes.
"""

from __future__ import annotations

import math
from typing import Any

from miras_search.errors import Problem
from miras_search.merge import get_path
from miras_search.space.constraints import holds
from miras_search.space.spec import Choice, Constraint, FloatRange, IntRange
from miras_search.space.targets import as_held, is_number, iter_leaves
from miras_search.yamlio import LineMap, ancestor_line

_ENUMERATED = 10_000  # an int range or a float grid up to this size is checked value by value
_MISSING = object()


def _reach(params: dict[str, Any], base: dict[str, Any], path: tuple[str, ...]) -> list[Any] | None:
    """The nodes that give ``path`` its value in some draw (the base value as a fixed node), or
    None when that is not certain."""
    nodes: list[Any] = []
    always = False  # set outside any branch: every draw sets it
    replaced = False  # a section above may change kind: its default values are not known here
    for where, field, node in iter_leaves(params):
        if field == path:
            nodes.append(node)
            always = always or not ({"choice", "one_of"} & set(where[:-1]))
        elif field[-1] == "kind" and len(field) <= len(path) and path[:len(field) - 1] == field[:-1]:
            replaced = True
    if always or replaced:
        return nodes if always else None
    value = get_path(base, path, _MISSING)
    if value is _MISSING or isinstance(value, dict):
        return None
    return [*nodes, value]


def _near(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _grid(node: IntRange | FloatRange) -> list[float] | None:
    """Every value of an int range or a float grid, if there are at most _ENUMERATED; else None."""
    if isinstance(node, IntRange):
        low, high = node.int
        count = (high - low) // node.step + 1
        return list(range(low, high + 1, node.step)) if count <= _ENUMERATED else None
    low, high = node.float
    if node.step is None:
        return [low] if low == high else None
    count = round((high - low) / node.step) + 1
    return [low + k * node.step for k in range(count)] if count <= _ENUMERATED else None


def _holds_near(value: float, test: Any, exact: bool) -> bool:
    """Whether a drawn number may pass ``test`` (exactly for integers; floats compared with a
    tolerance, and a ``not_in`` taken as passable: a computed float may miss an item)."""
    if exact:
        return holds(value, test)
    if not isinstance(test, dict):
        return is_number(test) and _near(value, test)
    if "in" in test and not any(is_number(i) and _near(value, i) for i in test["in"] or []):
        return False
    return all(is_number(bound) and (value >= bound or _near(value, bound)) if op == "min"
               else is_number(bound) and (value <= bound or _near(value, bound))
               for op, bound in test.items() if op in ("min", "max"))


def _interval_may_hold(low: float, high: float, test: Any) -> bool:
    """Whether some number of a continuous [low, high] may pass ``test``."""
    lo, hi = low, high
    if isinstance(test, dict):
        if is_number(test.get("min")):
            lo = max(lo, test["min"])
        if is_number(test.get("max")):
            hi = min(hi, test["max"])
        items = test.get("in")
    else:
        items = [test]
    if lo > hi and not _near(lo, hi):
        return False
    if items is None:
        return True
    return any(is_number(i) and (lo <= i <= hi or _near(i, lo) or _near(i, hi)) for i in items)


def _may_hold(node: Any, test: Any, path: tuple[str, ...]) -> bool:
    """Whether some value ``node`` gives ``path`` may pass ``test`` (True when unsure); a value
    is taken as written and as the point holds it ("2" for an integer field is 2)."""
    if isinstance(node, Choice):
        return any(holds(value, test) for option in node.options for value in as_held(path, option))
    if isinstance(node, IntRange | FloatRange):
        grid = _grid(node)
        if grid is not None:
            exact = isinstance(node, IntRange)
            return any(_holds_near(value, test, exact) for value in grid)
        low, high = node.int if isinstance(node, IntRange) else node.float
        return _interval_may_hold(low, high, test)
    return any(holds(value, test) for value in as_held(path, node))


def _shown(node: Any) -> str:
    """How a node's values read: '{int: [1, 4]}', '{choice: [2, 4]}', 'the value 2'."""
    if isinstance(node, Choice):
        return f"{{choice: {node.options}}}"
    if isinstance(node, IntRange | FloatRange):
        key = "int" if isinstance(node, IntRange) else "float"
        low, high = getattr(node, key)
        step = f", step: {node.step}" if node.step not in (None, 1) else ""
        return f"{{{key}: [{low}, {high}]{step}}}"
    return f"the value {'null' if node is None else repr(node)}"


def _node_numbers(node: Any, path: tuple[str, ...]) -> list[float] | None:
    """The smallest and largest number ``node`` gives ``path`` (as the point holds it), or None
    when it may give something that is no number."""
    if isinstance(node, IntRange | FloatRange):
        return list(node.int if isinstance(node, IntRange) else node.float)
    options = node.options if isinstance(node, Choice) else [node]
    held = [as_held(path, option)[-1] for option in options]
    if not all(is_number(value) for value in held):
        return None
    return [min(held), max(held)]


def number_bounds(params: dict[str, Any], base: dict[str, Any],
                  path: tuple[str, ...]) -> tuple[float, float, str] | None:
    """The smallest and largest number a draw of the space can give ``path``, and how its values
    read ('{choice: [4, 8]}', 'the value 4', joined by ' or '); None when that is not certain."""
    nodes = _reach(params, base, path)
    if not nodes:
        return None
    numbers = [_node_numbers(node, path) for node in nodes]
    if any(found is None for found in numbers):
        return None
    every = [number for found in numbers for number in found or []]
    return min(every), max(every), " or ".join(_shown(node) for node in nodes)


def unreachable_test_problems(params: dict[str, Any], base: dict[str, Any],
                              constraints: list[Constraint], lines: LineMap) -> list[Problem]:
    """Every constraint test that no value the space gives its field can pass."""
    problems: list[Problem] = []
    for index, constraint in enumerate(constraints):
        for section in ("when", "require", "forbid"):
            for dotted, test in getattr(constraint, section).items():
                path = tuple(dotted.split("."))
                nodes = _reach(params, base, path)
                if nodes is None or any(_may_hold(node, test, path) for node in nodes):
                    continue
                at = ("constraints", str(index), section, dotted)
                given = " or ".join(_shown(node) for node in nodes)
                problems.append(Problem(".".join(at), (
                    f"{dotted} takes only {given} in this space, and no such value passes this "
                    "test; the test could never match"), ancestor_line(lines, at)))
    return problems
