"""Check every value a space can give a field against what the point schema allows there.

A space's ``params`` set fields of ModelPoint: each fixed value, each ``choice`` option (list
items and the option keys of the mapping form) and each ``int`` / ``float`` range is checked
against the field it sets, with the schema's own validation. The allowed values named in the
messages come from the schema (a Literal's values, a discriminated union's tags, a number's
bounds), so they follow it. A range must lie wholly within the field's bounds: a space is
sampled within the bounds it states, so a range that reaches outside them is an error.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Iterator
from typing import Any

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from miras_search.errors import Problem, did_you_mean
from miras_search.schema import AXES
from miras_search.schema.plugins import PLUGINS_ENV
from miras_search.schema_paths import Kinds, section_models
from miras_search.space.checks import node_kind
from miras_search.space.spec import Choice, Constraint, FloatRange, IntRange
from miras_search.validation import model_members
from miras_search.yamlio import LineMap, ancestor_line, key_text

Where = tuple[str, ...]
"""Location in the space file, e.g. ("params", "bias", "kind", "choice", "lp", "p")."""

_BOUNDS = ((annotated_types.Ge, "ge", ">="), (annotated_types.Gt, "gt", ">"),
           (annotated_types.Le, "le", "<="), (annotated_types.Lt, "lt", "<"))
_FIXED_SET_LIMIT = 64  # a range on a fixed-set field is checked value by value up to this size


def iter_leaves(tree: dict[str, Any], where: Where = ("params",),
                path: tuple[str, ...] = ()) -> Iterator[tuple[Where, tuple[str, ...], Any]]:
    """Yield (file location, field path, node) for every non-mapping node, in every branch."""
    for here, field, node, _ in _leaves(tree, where, path, {}):
        yield here, field, node


def iter_leaves_in(params: dict[str, Any], base: dict[str, Any]) -> Iterator[
        tuple[Where, tuple[str, ...], Any, Kinds]]:
    """Like ``iter_leaves``, each leaf with the kinds its sections may have where it is set.

    In the branch of an option of a ``kind`` choice the section has that kind; beside a fixed
    ``kind`` (or a list choice of kinds) it has that kind (one of those); elsewhere it has the
    base point's kind or any the params can set anywhere (a ``one_of`` may set it).
    """
    return _leaves(params, ("params",), (), _anywhere(params, base))


def drawn_kinds(params: dict[str, Any], base: dict[str, Any]) -> dict[tuple[str, ...], frozenset[Any]]:
    """Section path -> every kind the section can have in some draw of the space (``base``: the
    point the params apply to): a constraint's test on a field is judged against these kinds.
    Unlike ``_anywhere`` the base's kind is left out where every draw sets the kind (a ``kind``
    outside any choice branch or ``one_of``)."""
    found = dict(_anywhere(params, base))
    from_params: dict[tuple[str, ...], set[Any]] = {}
    always: set[tuple[str, ...]] = set()
    for where, path, node in iter_leaves(params):
        if path[-1] == "kind":
            options = node.options if isinstance(node, Choice) else [node]
            from_params.setdefault(path[:-1], set()).update(o for o in options if _hashable(o))
            if not {"choice", "one_of"} & set(where[:-1]):
                always.add(path[:-1])
    found.update({section: frozenset(from_params[section]) for section in always})
    return found


def _anywhere(params: dict[str, Any], base: dict[str, Any]) -> dict[tuple[str, ...], frozenset[Any]]:
    """Section path -> every kind it can have in some draw: its base kind, and each the params set."""
    found: dict[tuple[str, ...], set[Any]] = {}
    for _, path, node, _ in _leaves(params, ("params",), (), {}):
        if path[-1] == "kind":
            options = node.options if isinstance(node, Choice) else [node]
            found.setdefault(path[:-1], set()).update(o for o in options if _hashable(o))
    searched = set(found)
    for section, kind in _kinds_in(base, ()):
        # a section below one whose kind the params change gets that kind's default, not the base's
        if not any(section[:depth] in searched for depth in range(len(section))):
            found.setdefault(section, set()).add(kind)
    return {section: frozenset(kinds) for section, kinds in found.items()}


def _kinds_in(data: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(section path, kind) of every mapping of ``data`` that has a ``kind``."""
    if not isinstance(data, dict):
        return
    if _hashable(data.get("kind")) and data.get("kind") is not None:
        yield path, data["kind"]
    for key, value in data.items():
        yield from _kinds_in(value, (*path, str(key)))


def _hashable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | type(None))


def _level_kinds(tree: dict[str, Any], path: tuple[str, ...], kinds: Kinds) -> Kinds:
    """``kinds`` with the section at ``path`` set to the kind(s) a ``kind`` key of ``tree`` gives."""
    node = tree.get("kind")
    if node is None or isinstance(node, dict | IntRange | FloatRange):
        return kinds
    options = node.options if isinstance(node, Choice) else [node]
    if not all(_hashable(o) for o in options):
        return kinds
    return {**kinds, path: frozenset(options)}


def _walk(tree: dict[str, Any], where: Where, path: tuple[str, ...],
          kinds: Kinds) -> Iterator[tuple[bool, Where, tuple[str, ...], Any, Kinds]]:
    """Depth first, (is a mapping, file location, path, node, kinds) of every mapping of the params
    (sub-sections, ``one_of`` sub-trees and choice branches; path: its section's) and, within
    each, of every non-mapping node (path: the field's), each with the kinds its sections may
    have there (in a ``kind`` branch the section has that kind)."""
    kinds = _level_kinds(tree, path, kinds)
    yield True, where, path, tree, kinds
    for key, node in tree.items():
        if key == "one_of":
            if isinstance(node, dict):  # shape errors are reported by checks.py first
                for label, sub in node.items():
                    if isinstance(sub, dict):
                        yield from _walk(sub, (*where, key, key_text(label)), path, kinds)
            continue
        here = (*where, key)
        if isinstance(node, dict):
            yield from _walk(node, here, (*path, key), kinds)
            continue
        # a kind is checked against every kind of its section, not narrowed by its own value
        own = {k: v for k, v in kinds.items() if k != path} if key == "kind" else kinds
        yield False, here, (*path, key), node, own
        if isinstance(node, Choice) and isinstance(node.choice, dict):
            for option, branch in node.choice.items():
                chosen = {**kinds, path: frozenset([option])} if key == "kind" else kinds
                yield from _walk(branch or {}, (*here, "choice", key_text(option)), path, chosen)


def _leaves(tree: dict[str, Any], where: Where, path: tuple[str, ...],
            kinds: Kinds) -> Iterator[tuple[Where, tuple[str, ...], Any, Kinds]]:
    for mapping, here, field, node, around in _walk(tree, where, path, kinds):
        if not mapping:
            yield here, field, node, around


def sibling_problems(params: dict[str, Any], base: dict[str, Any], lines: LineMap) -> list[Problem]:
    """A key set beside a ``kind`` choice is set in every draw, so it must be a field of every
    kind the choice offers: ``bias: {kind: {choice: [l2, lp]}, p: 3}`` makes every l2 draw a
    point the schema refuses (l2 has no ``p``), a branch the sampler could never reach. (A key no
    offered kind has is an unknown field, reported by ``unknown_path_problem``.)"""
    problems = []
    for mapping, where, path, tree, kinds in _walk(params, ("params",), (), _anywhere(params, base)):
        node = tree.get("kind") if mapping else None
        if not isinstance(node, Choice) or not all(_hashable(o) for o in node.options):
            continue
        for key in tree:
            if key in ("kind", "one_of"):
                continue
            lacking = [o for o in node.options
                       if not holders((*path, key), {**kinds, path: frozenset([o])})]
            if not lacking or len(lacking) == len(node.options):
                continue
            having = [o for o in node.options if o not in lacking]
            section = ".".join(path)
            problems.append(Problem(".".join((*where, key)), (
                f"'{key}' is set beside the choice of {section}.kind, so in every draw, but "
                f"{section} kind{'s' if len(lacking) > 1 else ''} {' and '.join(map(str, lacking))} "
                f"{'have' if len(lacking) > 1 else 'has'} no '{key}': those draws "
                f"would always be refused. Set it inside the branches of the kinds that have it "
                f"({', '.join(map(str, having))}): kind: {{choice: {{{having[0]}: {{{key}: ...}}, "
                f"{lacking[0]}: {{}}}}}}"), ancestor_line(lines, (*where, key))))
    return problems


def holders(path: tuple[str, ...], kinds: Kinds | None = None) -> list[type[BaseModel]]:
    """The models whose field the last key of ``path`` names (empty if the path is unknown),
    each section on the way narrowed to the kinds ``kinds`` gives it."""
    if not path:
        return []
    return [m for m in section_models(path[:-1], kinds) if path[-1] in m.model_fields]


def _literal_values(annotation: Any) -> list[Any] | None:
    """The values an annotation made only of Literals, enums and None admits, else None."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return list(typing.get_args(annotation))
    if annotation is type(None):
        return [None]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [member.value for member in annotation]
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        args = typing.get_args(annotation)
        parts = [_literal_values(arg) for arg in (args[:1] if origin is typing.Annotated else args)]
        if all(part is not None for part in parts):
            return [value for part in parts if part is not None for value in part]
    return None


def allowed_values(models: list[type[BaseModel]], field: str) -> list[Any] | None:
    """The fixed set of values ``field`` takes in any of ``models``, or None if it is not fixed."""
    values: list[Any] = []
    for model in models:
        found = _literal_values(model.model_fields[field].annotation)
        if found is None:
            return None
        values.extend(v for v in found if v not in values)
    return values


def _number_kind(annotation: Any) -> str | None:
    """'integer' or 'number' for an int / float field (None allowed beside), else None."""
    args = [a for a in (typing.get_args(annotation) or (annotation,)) if a is not type(None)]
    if args == [int]:
        return "integer"
    if args in ([float], [int, float], [float, int]):
        return "number"
    return None


def _bounds_text(info: FieldInfo) -> str:
    """' >= 2 and <= 8' from a field's ge / gt / le / lt, or '' when it has none."""
    parts = []
    for item in info.metadata:
        for kind, attribute, sign in _BOUNDS:
            if isinstance(item, kind):
                parts.append(f"{sign} {getattr(item, attribute)}")
    return (" " + " and ".join(parts)) if parts else ""


def _describe_field(models: list[type[BaseModel]], field: str) -> str | None:
    """What ``field`` allows, in words, e.g. 'dot, l2, lp' or 'an integer >= 2 and <= 8'."""
    fixed = allowed_values(models, field)
    if fixed is not None:
        return ", ".join("null" if v is None else str(v) for v in fixed)
    texts: list[str] = []
    for model in models:
        info = model.model_fields[field]
        kind = _number_kind(info.annotation)
        if kind is None:
            return None
        article = "an" if kind == "integer" else "a"
        nullable = " (or null)" if type(None) in typing.get_args(info.annotation) else ""
        text = f"{article} {kind}{_bounds_text(info)}{nullable}"
        if text not in texts:
            texts.append(text)
    return " or ".join(texts) or None


def _alone(model: type[BaseModel], field: str, value: Any) -> dict[str, Any]:
    """``{field: value}``, with the model's own ``kind`` for an axis option."""
    data: dict[str, Any] = {field: value}
    kind = model.model_fields.get("kind")
    if field != "kind" and kind is not None and kind.default is not None:
        data["kind"] = kind.default
    return data


def _errors_with(model: type[BaseModel], field: str, value: Any) -> list[tuple[tuple[Any, ...], str]]:
    """(loc, message) of each error of ``model`` validated with ``value`` in ``field`` alone (and
    the model's own ``kind``, for an axis option)."""
    try:
        model.model_validate(_alone(model, field, value))
    except ValidationError as error:
        return [(tuple(item["loc"]), str(item["msg"]).removeprefix("Value error, "))
                for item in error.errors(include_url=False)]
    return []


def _field_error(model: type[BaseModel], field: str, value: Any) -> str | None:
    """The schema's message for ``value`` in ``model.field``, or None if the field accepts it."""
    return next((message for loc, message in _errors_with(model, field, value) if loc[:1] == (field,)),
                None)


def value_error(models: list[type[BaseModel]], field: str, value: Any) -> str | None:
    """None if some model's ``field`` accepts ``value``, else the first model's message."""
    messages = [_field_error(model, field, value) for model in models]
    return None if any(m is None for m in messages) else messages[0]


def _is_section(models: list[type[BaseModel]], field: str) -> bool:
    """Whether ``field`` is a sub-model (memory, block, a gate, ...): set by a mapping only."""
    return all(model_members(model.model_fields[field].annotation) for model in models)


def _shown(value: Any) -> str:
    return "null" if value is None else repr(value)


def _rejection(models: list[type[BaseModel]], path: tuple[str, ...], value: Any,
               what: str) -> str | None:
    """'<what> is not allowed for bias.kind; allowed: ...' if ``value`` is rejected, else None."""
    field = path[-1]
    message = value_error(models, field, value)
    if message is None:
        return None
    allowed = _describe_field(models, field)
    if allowed:
        # an axis's kind: an option of the user's own is loaded by naming its module
        hint = f" (an option defined in a module of your own: name the module in {PLUGINS_ENV})" \
            if field == "kind" and path[0] in AXES else ""
        close = did_you_mean(value, [str(v) for v in allowed_values(models, field) or []])
        return f"{what} is not allowed for {'.'.join(path)}{close}; allowed: {allowed}{hint}"
    return f"{what} is not allowed for {'.'.join(path)}: {message[:1].lower()}{message[1:]}"


def _choice_problems(node: Choice, where: Where, path: tuple[str, ...],
                     models: list[type[BaseModel]], lines: LineMap) -> list[Problem]:
    problems = []
    mapping = isinstance(node.choice, dict)
    for index, option in enumerate(node.options):
        message = _rejection(models, path, option, f"option {_shown(option)}")
        if message is not None:
            at = (*where, "choice", key_text(option) if mapping else str(index))
            shown = at if mapping else (*where, "choice")
            problems.append(Problem(".".join(shown), message, ancestor_line(lines, at)))
    return problems


def _range_values(node: IntRange | FloatRange) -> list[Any]:
    """Every value of an int range when it is small, else its two ends."""
    if isinstance(node, IntRange):
        low, high = node.int
        values = range(low, high + 1, node.step)
        return list(values) if len(values) <= _FIXED_SET_LIMIT else [low, high]
    return list(node.float)


def _range_message(node: IntRange | FloatRange, path: tuple[str, ...],
                   models: list[type[BaseModel]]) -> str | None:
    """What is wrong with a range at ``path``, or None."""
    field = path[-1]
    numbers = {_number_kind(m.model_fields[field].annotation) for m in models}
    if allowed_values(models, field) is not None or None in numbers:
        return _not_numeric_message(node, path, models)
    if isinstance(node, FloatRange) and numbers == {"integer"} and not _integral_grid(node):
        return f"{'.'.join(path)} takes integers; use {{int: [low, high]}} instead of {{float: ...}}"
    return _bounds_message(node, path, models)


def _not_numeric_message(node: IntRange | FloatRange, path: tuple[str, ...],
                         models: list[type[BaseModel]]) -> str | None:
    """A range on a field with a fixed set of values (or no numbers) works only inside that set."""
    if all(value_error(models, path[-1], v) is None for v in _range_values(node)):
        return None
    key = "int" if isinstance(node, IntRange) else "float"
    allowed = _describe_field(models, path[-1])
    hint = f"allowed: {allowed}; list the values with {{choice: [...]}}" if allowed else (
        "a range needs a numeric field")
    return f"an {{{key}: ...}} range cannot set {'.'.join(path)}; {hint}"


def _bounds_message(node: IntRange | FloatRange, path: tuple[str, ...],
                    models: list[type[BaseModel]]) -> str | None:
    """A range must lie within the field's bounds: wholly outside or reaching out is an error."""
    field = path[-1]
    low, high = node.int if isinstance(node, IntRange) else node.float
    bad = [v for v in (low, high) if value_error(models, field, v) is not None]
    if not bad:
        return None
    middle = (low + high) // 2 if isinstance(node, IntRange) else (low + high) / 2
    outside = len(bad) == 2 and value_error(models, field, middle) is not None
    return (f"the range [{low}, {high}] {'lies' if outside else 'reaches'} outside the values "
            f"{'.'.join(path)} allows; allowed: {_describe_field(models, field)}; "
            "keep the range within these bounds")


def _gate_message(node: Any, path: tuple[str, ...], kinds: Kinds) -> str | None:
    """A value of a gate (``retention.alpha.value``) outside what the axis that owns the gate
    allows there (alpha in (0, 1], ...): that bound is the owner's rule, not the gate's, so the
    field check cannot see it; the sampler would silently drop the draws."""
    if len(path) < 2 or path[-1] != "value":
        return None
    owners, gate = holders(path[:-1], kinds), path[-2]
    for value, what in _gate_values(node):
        messages = [_owner_rule(owner, gate, value) for owner in owners]
        if owners and all(message is not None for message in messages):
            if isinstance(node, IntRange | FloatRange):
                return (f"{what} reaches outside the values {'.'.join(path)} allows: {messages[0]}; "
                        "keep the range within these bounds")
            return f"{what} is not allowed for {'.'.join(path)}: {messages[0]}"
    return None


def _gate_values(node: Any) -> list[tuple[Any, str]]:
    """(value, how to name it) for each value of a node a gate's owner must accept: a fixed
    value, each option of a choice, both ends of a range."""
    if isinstance(node, Choice):
        values = [(option, f"option {_shown(option)}") for option in node.options]
    elif isinstance(node, IntRange | FloatRange):
        low, high = node.int if isinstance(node, IntRange) else node.float
        values = [(end, f"the range [{low}, {high}]") for end in (low, high)]
    else:
        values = [(node, _shown(node))]
    return [(value, what) for value, what in values if is_number(value)]


def is_number(value: Any) -> bool:
    """Whether ``value`` is an int or a float (a bool is not a number here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _owner_rule(owner: type[BaseModel], gate: str, value: float) -> str | None:
    """The message of ``owner``'s own rule on ``gate.value`` (a model-level check that names
    '<gate>.value'), or None when ``owner`` takes ``value`` there."""
    return next((message for loc, message in _errors_with(owner, gate, {"value": value})
                 if loc[:1] in ((), (gate,)) and f"{gate}.value" in message), None)


def _integral_grid(node: FloatRange) -> bool:
    """Whether a float range only yields whole numbers (integral ends and step)."""
    low, high = node.float
    return node.step is not None and all(float(v).is_integer() for v in (low, high, node.step))


def _leaf_problems(where: Where, path: tuple[str, ...], node: Any,
                   lines: LineMap, kinds: Kinds) -> list[Problem]:
    """Problems of one params node against the field(s) it sets (its sections of ``kinds``)."""
    models = holders(path, kinds)
    if not models:
        return []  # an unknown path: reported by the path check
    field = path[-1]
    if _is_section(models, field):
        return [Problem(".".join(where), (
            f"{'.'.join(path)} is a section of the point and must be a mapping of its fields "
            f"(allowed: {', '.join(_section_fields(models, field))}); got {node_kind(node)}"
        ), ancestor_line(lines, where))]
    if isinstance(node, Choice):
        problems = _choice_problems(node, where, path, models, lines)
        message = None if problems else _gate_message(node, path, kinds)
        return problems or ([] if message is None else [
            Problem(".".join(where), message, ancestor_line(lines, where))])
    if isinstance(node, IntRange | FloatRange):
        message = _range_message(node, path, models)
    else:
        message = _rejection(models, path, node, f"{_shown(node)}")
    message = message or _gate_message(node, path, kinds)
    return [] if message is None else [Problem(".".join(where), message, ancestor_line(lines, where))]


def _section_fields(models: list[type[BaseModel]], field: str) -> list[str]:
    """The keys a section's mapping may hold (the fields of every model it admits)."""
    names: list[str] = []
    for model in models:
        for member in model_members(model.model_fields[field].annotation):
            names.extend(n for n in member.model_fields if n not in names)
    return names


def target_problems(params: dict[str, Any], lines: LineMap,
                    base: dict[str, Any] | None = None) -> list[Problem]:
    """Every params value, option or range that the field it sets does not allow, with the kind
    in effect there (``base``: the point the params apply to)."""
    problems: list[Problem] = []
    for where, path, node, kinds in iter_leaves_in(params, base or {}):
        problems.extend(_leaf_problems(where, path, node, lines, kinds))
    return problems


def constraint_value_problems(constraints: list[Constraint], lines: LineMap) -> list[Problem]:
    """Every value a constraint tests for (a plain value, ``in`` and ``not_in`` items) that the
    field it names does not allow: such a test could never match, so the rule would never act."""
    problems: list[Problem] = []
    for index, constraint in enumerate(constraints):
        for section in ("when", "require", "forbid"):
            for dotted, test in getattr(constraint, section).items():
                path = tuple(dotted.split("."))
                models = holders(path)
                if not models:
                    continue  # an unknown path: reported on its own
                tested = [(None, test)] if not isinstance(test, dict) else [
                    (operator, item) for operator in ("in", "not_in")
                    for item in (test.get(operator) or [])]
                for operator, value in tested:
                    message = _rejection(models, path, value, _shown(value)) or _spelled(models, path, value)
                    if message is not None:
                        at = ("constraints", str(index), section, dotted, *(operator,) * (operator is not None))
                        problems.append(Problem(".".join(at), message + "; the test could never match",
                                                ancestor_line(lines, at)))
    return problems


def as_held(path: tuple[str, ...], value: Any) -> list[Any]:
    """``value`` as written and as a point holds it at ``path`` once validated (``"2"`` -> ``2``
    for an integer field), for comparing it with a constraint's test."""
    found = [value]
    for model in holders(path):
        try:
            held = model.model_validate(_alone(model, path[-1], value)).model_dump(mode="json")[path[-1]]
        except (ValidationError, KeyError):
            continue
        if held not in found:
            found.append(held)
    return found


def _spelled(models: list[type[BaseModel]], path: tuple[str, ...], value: Any) -> str | None:
    """'"1" is text, ...' when the field accepts ``value`` only by converting it (a number written
    as text): a constraint compares drawn values as they are, so the text would never equal them."""
    field, converted = path[-1], None
    for model in models:
        data = _alone(model, field, value)
        try:
            model.model_validate(data, strict=True)
            return None  # taken as it is
        except ValidationError:
            pass
        try:
            converted = getattr(model.model_validate(data), field)
        except ValidationError:
            continue
    if converted is None:
        return None
    return (f"{_shown(value)} is text, while {'.'.join(path)} holds {type(converted).__name__} values: "
            f"write {_shown(converted)} without quotes")

