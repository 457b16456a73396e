"""Turn pydantic's ValidationError into readable problems that name the YAML path and line."""

from __future__ import annotations

import re
import types
import typing
from typing import Any, TypeVar

from pydantic import BaseModel, Tag, ValidationError

from miras_search.errors import ConfigError, Problem, did_you_mean
from miras_search.schema.plugins import PLUGINS_ENV
from miras_search.yamlio import LineMap, ancestor_line, key_text, yaml_kind

M = TypeVar("M", bound=BaseModel)
_CROSS_RULE = re.compile(r"^([a-z_]+(?:\.[a-z_]+)+): ")
_FIELD_RULE = re.compile(r"^([a-z_][a-z0-9_]*): ")
_SUBJECT = re.compile(r"^([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+) ")
"""A rule whose subject is a field below the model it checks: "alpha.value must lie in ..."."""


def _keys_in(data: Any, path: list[str]) -> tuple[list[str], Any]:
    """The leading part of ``path`` that names keys of ``data`` (a union's tag after it dropped),
    and the value there."""
    kept: list[str] = []
    for part in path:
        if isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            break
        kept.append(part)
    return kept, data


def model_members(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic model classes an annotation admits (unions unpacked)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return [m for arg in typing.get_args(annotation) for m in model_members(arg)]
    return []


def model_kind(model: type[BaseModel]) -> str | None:
    """The ``kind`` an axis option (a member of a tagged union) is told apart by, or None."""
    field = model.model_fields.get("kind")
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    return args[0] if args else None


def _tagged_members(annotation: Any) -> dict[str, Any]:
    """Tag -> member of a union told apart by a callable ``Discriminator`` (``Annotated[X,
    Tag('<x>')]`` members; a ``TypeAliasType`` such as the spaces' ParamNode unpacked)."""
    annotation = getattr(annotation, "__value__", annotation)  # a TypeAliasType
    found: dict[str, Any] = {}
    for arg in typing.get_args(annotation):
        tags = [meta.tag for meta in getattr(arg, "__metadata__", ()) if isinstance(meta, Tag)]
        if tags:
            found[tags[0]] = typing.get_args(arg)[0]
        elif typing.get_origin(arg) in (typing.Union, types.UnionType, typing.Annotated):
            found.update(_tagged_members(arg))
    return found


def _walk_loc(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, set[int]]:
    """The model whose field the last key of ``loc`` names, and the indices of ``loc`` that are
    pydantic's union tags (``'lq'`` in ``('retention', 'lq')``) rather than keys of the input.
    List indices and mapping keys of ``dict[str, X]`` are skipped."""
    annotation: Any = root
    owner: type[BaseModel] | None = None
    tags: set[int] = set()
    aliases: dict[str, Any] = {}  # a recursive alias names itself by a forward reference
    for index, part in enumerate(loc):
        if hasattr(annotation, "__value__"):
            aliases[annotation.__name__] = annotation
        name = getattr(annotation, "__forward_arg__", annotation)
        annotation = aliases.get(name, annotation) if isinstance(name, str) else annotation
        tagged = _tagged_members(annotation)
        if isinstance(part, str) and part in tagged:
            annotation = tagged[part]
            tags.add(index)
            continue
        current = model_members(annotation)
        if len(current) > 1:  # a discriminated union: pydantic puts the tag in loc
            chosen = [m for m in current if model_kind(m) == part]
            if chosen:
                annotation = chosen[0] if len(chosen) == 1 else annotation
                tags.add(index)
                continue
        origin = typing.get_origin(annotation)
        if origin in (list, tuple, dict) and typing.get_args(annotation):
            annotation = typing.get_args(annotation)[-1]  # an item, or a mapping's value
            continue
        model = current[0] if len(current) == 1 else None
        owner = model
        field = model.model_fields.get(part) if model is not None and isinstance(part, str) else None
        annotation = field.annotation if field is not None else None
    return owner, tags


def _data_path(data: Any, loc: tuple[Any, ...], tags: set[int] = frozenset()) -> list[str]:
    """The keys of ``loc`` that exist in ``data``; pydantic's union tags in between are dropped,
    and so is a tag at the end (a model's own check of a tagged member, e.g. ``retention.lq``)."""
    path: list[str] = []
    current = data
    for index, part in enumerate(loc):
        if isinstance(part, str) and part.startswith("<") and part.endswith(">"):
            continue  # a tag of miras_search.space.spec.ParamNode
        if (isinstance(current, dict) and part in current) or (isinstance(current, list) and isinstance(part, int) and part < len(current)):
            current = current[part]
        elif index < len(loc) - 1 or index in tags:
            continue  # a union tag, not a key of the input
        path.append(str(part))
    return path


def _discriminator(error: dict[str, Any]) -> str:
    """The key a tagged union is told apart by ('kind' for the axes, 'task' for data sources)."""
    return str(error.get("ctx", {}).get("discriminator", "kind")).strip("'\"")


def _message(error: dict[str, Any], allowed: list[str] | None) -> str:
    """One readable line for a pydantic error; ``allowed``: the keys the mapping of an unknown key
    takes (None when not known)."""
    kind = error["type"]
    if kind == "union_tag_not_found":
        return f"required key '{_discriminator(error)}' is missing (it says which kind of entry this is)"
    if kind == "union_tag_invalid":
        ctx, key = error.get("ctx", {}), _discriminator(error)
        tags = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        message = (f"'{ctx.get('tag')}' is not a known {key}{did_you_mean(ctx.get('tag'), tags)}; "
                   f"expected tags: {ctx.get('expected_tags')}")
        if key == "kind":  # an axis option: a user's own is loaded by naming its module
            message += f" (an option defined in a module of your own: name the module in {PLUGINS_ENV})"
        return message
    if kind == "extra_forbidden":
        if allowed is None:
            return "unknown key"
        key = error["loc"][-1] if error["loc"] else ""
        return f"unknown key{did_you_mean(key, allowed)}; allowed keys here: {', '.join(allowed)}"
    if kind == "missing":
        return "required key is missing"
    if kind == "invalid_key":  # a YAML key such as `~`, `3` or `true` where names go
        listed = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        key = error.get("input")
        what = "null" if key is None else f"the {yaml_kind(key)} {key_text(key)}"
        return f"a key here must be a name, not {what}{listed}"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if kind not in ("value_error", "union_tag_invalid", "union_tag_not_found") and "input" in error:
        shown = repr(error["input"])
        if len(shown) <= 60:
            message += f" (got {shown})"
    return message


def _subject_keys(rule: str, node: Any) -> list[str]:
    """The keys of the field a rule starts with ("alpha.value must ..."), as far as ``node`` (the
    data the failing model checked) holds them; empty when the rule names no field of it."""
    subject = _SUBJECT.match(rule)
    if subject is None or not isinstance(node, dict):
        return []
    return _keys_in(node, subject.group(1).split("."))[0]


def _allowed_keys(owner: type[BaseModel] | None, loc: tuple[Any, ...],
                  top_keys: tuple[str, ...]) -> list[str] | None:
    """The keys the mapping that holds the last key of ``loc`` takes (``top_keys`` beside the
    fields at the top level), or None when its model is not known."""
    if owner is None:
        return None
    return [*owner.model_fields, *(top_keys if len(loc) == 1 else ())]


def problems_by_error(error: ValidationError, root: type[BaseModel], data: Any, lines: LineMap,
                      prefix: tuple[str, ...] = (), top_keys: tuple[str, ...] = (),
                      ) -> list[tuple[dict[str, Any], list[Problem]]]:
    """Each pydantic error with its Problems: one, or one per rule for a validator that reports
    several broken rules at once (one "dotted.path: message" line each). ``top_keys``: keys the
    file takes at its top level beside the model's fields (a point file's ``preset``)."""
    grouped = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        owner, tags = _walk_loc(root, loc)
        path = _data_path(data, loc, tags)
        allowed = _allowed_keys(owner, loc, top_keys) \
            if item["type"] in ("extra_forbidden", "invalid_key") else None
        if item["type"] == "invalid_key" and path:  # the key as YAML writes it: null, not None
            path[-1] = key_text(item.get("input"))
        if item["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path.append(_discriminator(item))
        message = _message(item, allowed)
        rules = message.split("\n") if item["type"] == "value_error" else [message]
        found = []
        node_path, node = _keys_in(data, path)
        for rule in rules:
            cross = _CROSS_RULE.match(rule)
            own = _FIELD_RULE.match(rule) if item["type"] == "value_error" else None
            if cross and isinstance(node, dict) and cross.group(1) in node:
                # a rule about one entry of a mapping keyed by dotted paths (a constraint's tests)
                found.append(_located(prefix, [*node_path, cross.group(1)], rule[cross.end():], lines))
            elif cross:  # a rule between fields names the field it is about: "algorithm.kind: ..."
                found.append(_located(prefix, [*path, *cross.group(1).split(".")],
                                      rule[cross.end():], lines))
            elif own and isinstance(node, dict) and own.group(1) in node:
                # a model's own check of one of its fields ("n_heads: a number is needed")
                found.append(_located(prefix, [*node_path, own.group(1)], rule[own.end():], lines))
            elif (subject := _subject_keys(rule, node)) and item["type"] == "value_error":
                # a model's check of a field below it ("alpha.value must lie in ..."): at that field
                found.append(_located(prefix, [*node_path, *subject], rule, lines))
            else:
                found.append(_located(prefix, path, rule, lines))
        grouped.append((item, found))
    return grouped


def problems_from(error: ValidationError, root: type[BaseModel], data: Any, lines: LineMap,
                  prefix: tuple[str, ...] = (), top_keys: tuple[str, ...] = ()) -> list[Problem]:
    """The Problems of every pydantic error, with the dotted path and the YAML line when known."""
    return [problem for _, found in problems_by_error(error, root, data, lines, prefix, top_keys)
            for problem in found]


def _located(prefix: tuple[str, ...], path: list[str], message: str, lines: LineMap) -> Problem:
    """A Problem at ``prefix + path``, with the line of its nearest ancestor that has one."""
    full = (*prefix, *path)
    return Problem(".".join(full), message, ancestor_line(lines, full, root=True))


def validate(model: type[M], data: Any, source: str, lines: LineMap | None = None,
             prefix: tuple[str, ...] = (), top_keys: tuple[str, ...] = ()) -> M:
    """``model.model_validate(data)``, raising ConfigError with readable problems on failure
    (``top_keys``: keys the file also takes at its top level, named among the allowed ones)."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(source, problems_from(error, model, data, lines or {}, prefix,
                                                top_keys)) from None
