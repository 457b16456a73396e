"""Constraint tests that no draw of a space can pass: the values a space can give a field.

A test on ``block.n_layers`` is compared with the value each sampled point holds there. The
space's params set that value (a fixed value, a choice, a range), in one or several places; a
field the params do not set keeps the base point's value. A test that none of these values can
pass never matches, so its rule never acts (``when``, ``forbid``) or rejects every point it
applies to (``require``). A field that exists only for some kinds of its section (``bias.p``: lp)
is judged in the draws of those kinds: the values their branches set and, for a kind whose
draws need not set it, the kind's default (the base's value when the base has that kind); a
field no drawn kind has is refused as unknown (``SearchSpace``). Only what is certain is
reported: a field below a section whose kind may change (its default then applies) is not
judged, nor a ``not_in`` on floats, and float comparisons keep a tolerance for the grid Optuna
computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from miras_search.errors import Problem
from miras_search.merge import get_path
from miras_search.schema_paths import section_models
from miras_search.space.constraints import holds
from miras_search.space.spec import Choice, Constraint, FloatRange, IntRange
from miras_search.space.targets import as_held, drawn_kinds, is_number, iter_leaves, iter_leaves_in
from miras_search.validation import model_kind
from miras_search.yamlio import LineMap, ancestor_line

_ENUMERATED = 10_000  # an int range or a float grid up to this size is checked value by value
_MISSING = object()


def _reach(params: dict[str, Any], base: dict[str, Any], path: tuple[str, ...]) -> _Reached | None:
    """The nodes that give ``path`` its value in some draw (the base value as a fixed node), or
    None when that is not certain. Where the params search the kind of the field's own section,
    only the draws of the kinds that have the field count (``_reach_by_kind``)."""
    nodes: list[Any] = []
    always = False  # set outside any branch: every draw sets it
    replaced = False  # a section above may change kind: its default values are not known here
    own_kind = False  # the field's own section changes kind: judged per kind
    for where, field, node in iter_leaves(params):
        if field == path:
            nodes.append(node)
            always = always or not ({"choice", "one_of"} & set(where[:-1]))
        elif field[-1] == "kind" and len(field) <= len(path) and path[:len(field) - 1] == field[:-1]:
            own_kind = own_kind or field[:-1] == path[:-1]
            replaced = replaced or field[:-1] != path[:-1]
    if always:
        return _Reached(nodes)
    if replaced:
        return None
    if own_kind:
        return _reach_by_kind(params, base, path)
    value = get_path(base, path, _MISSING)
    if value is _MISSING or isinstance(value, dict):
        return None
    return _Reached([*nodes, value])


@dataclass
class _Reached:
    """The nodes that give a field its value, and, where the field exists only for some kinds of
    its section, those kinds (for the message)."""

    nodes: list[Any]
    kinds: list[Any] | None = None


def _kinds_having(section: tuple[str, ...], field: str, kinds: frozenset[Any]) -> list[Any]:
    """Those of ``kinds`` (of the section at ``section``) whose model has ``field``, sorted."""
    return sorted((kind for kind in kinds if any(
        model_kind(model) == kind and field in model.model_fields
        for model in section_models(section, {section: frozenset([kind])}))), key=str)


def _default(section: tuple[str, ...], field: str, kind: Any, base: dict[str, Any]) -> Any:
    """The value ``field`` has in a draw of ``kind`` that does not set it: the base point's when
    its section has that kind (the base is kept), else the kind's default; _MISSING if none."""
    if get_path(base, (*section, "kind"), _MISSING) == kind:
        return get_path(base, (*section, field), _MISSING)
    for model in section_models(section, {section: frozenset([kind])}):
        info = model.model_fields.get(field)
        if model_kind(model) == kind and info is not None and not info.is_required():
            return info.get_default(call_default_factory=True)
    return _MISSING


def _always_under(where: tuple[str, ...], section: tuple[str, ...]) -> list[str]:
    """The kind (as the file writes it) under which a leaf at ``where`` is set in every draw:
    [kind] when its only branch is an option of its section's kind choice
    (params.bias.kind.choice.lp.p), else []."""
    branches = [i for i, key in enumerate(where[:-1]) if key in ("choice", "one_of")]
    if len(branches) != 1 or where[:branches[0]] != ("params", *section, "kind"):
        return []
    return [where[branches[0] + 1]]


def _reach_by_kind(params: dict[str, Any], base: dict[str, Any], path: tuple[str, ...]) -> _Reached | None:
    """The nodes that give ``path`` its value in the draws whose section kind has the field: the
    params' values set where the section may have such a kind, and each such kind's default."""
    section, field = path[:-1], path[-1]
    having = _kinds_having(section, field, drawn_kinds(params, base).get(section, frozenset()))
    if not having:
        return None  # no kind has it: refused as an unknown field (search_space)
    nodes, set_always = [], set()
    for where, leaf, node, kinds in iter_leaves_in(params, base):
        if leaf == path and set(kinds.get(section) or having) & set(having):
            nodes.append(node)
            set_always.update(_always_under(where, section))
    for kind in having:
        if str(kind) in set_always:
            continue  # every draw of this kind sets the field: its default never shows
        value = _default(section, field, kind, base)
        if value is _MISSING or isinstance(value, dict | BaseModel):
            return None
        if value not in nodes:
            nodes.append(value)
    return _Reached(nodes, having)


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
    reached = _reach(params, base, path)
    nodes = reached.nodes if reached is not None else []
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
                reached = _reach(params, base, path)
                if reached is None or any(_may_hold(node, test, path) for node in reached.nodes):
                    continue
                at = ("constraints", str(index), section, dotted)
                given = " or ".join(_shown(node) for node in reached.nodes)
                under = "" if reached.kinds is None else (
                    f" (in the draws whose {path[-2]} kind has {path[-1]}: "
                    f"{', '.join(str(k) for k in reached.kinds)})")
                problems.append(Problem(".".join(at), (
                    f"{dotted} takes only {given} in this space{under}, and no such value passes "
                    "this test; the test could never match"), ancestor_line(lines, at)))
    return problems
