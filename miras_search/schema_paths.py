"""Check that a dotted path (``bias.p``, ``block.d_model``) names a field of ModelPoint.

A section told apart by its ``kind`` (an axis, a feature map) has the fields of the kind in
effect: ``kinds`` maps such a section's path to the kinds it may have where the path is set (the
option of the ``kind`` choice whose branch holds the key, say), and a key is checked against those
kinds only, not against every kind of the axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from miras_search.errors import Problem, did_you_mean
from miras_search.schema import ModelPoint
from miras_search.validation import model_kind, model_members
from miras_search.yamlio import LineMap, ancestor_line

Kinds = Mapping[tuple[str, ...], frozenset[Any]]
"""Section path (``("bias",)``) -> the kinds that section may have at a place of a file."""


def narrowed(models: list[type[BaseModel]], section: tuple[str, ...],
             kinds: Kinds) -> list[type[BaseModel]]:
    """The members of ``models`` whose kind ``section`` may have (all of them when ``kinds`` says
    nothing there, or names no kind among them: an unknown kind is reported on its own)."""
    allowed = kinds.get(section)
    if not allowed:
        return models
    kept = [m for m in models if model_kind(m) in allowed]
    return kept or models


@dataclass(frozen=True)
class _Resolved:
    models: list[type[BaseModel]]  # the models the deepest known prefix may be
    unknown: str | None = None  # the first unknown key, None if every key is known
    value_depth: int | None = None  # depth of the plain-value field an unknown key sits under
    section: tuple[str, ...] = ()  # the path of the mapping the unknown key sits in


def _resolve(path: tuple[str, ...], kinds: Kinds) -> _Resolved:
    """Walk ``path`` through ModelPoint's fields, each section narrowed to its kinds."""
    models: list[type[BaseModel]] = [ModelPoint]
    for depth, key in enumerate(path):
        holding = [m for m in models if key in m.model_fields]
        if not holding:
            return _Resolved(models, key, None, path[:depth])
        if depth == len(path) - 1:
            return _Resolved(models)
        members = [m2 for m in holding for m2 in model_members(m.model_fields[key].annotation)]
        if not members:  # a leaf value (int, list, ...) cannot have sub-keys
            return _Resolved(holding, path[depth + 1], depth, path[:depth + 1])
        models = narrowed(members, path[:depth + 1], kinds)
    return _Resolved(models)


def section_models(section: tuple[str, ...], kinds: Kinds | None = None) -> list[type[BaseModel]]:
    """The models the mapping at ``section`` may be (``[ModelPoint]`` for the top level), each
    section on the way narrowed to its kinds; empty if the path is not a section."""
    if not section:
        return [ModelPoint]
    found = _resolve(section, kinds or {})
    if found.unknown is not None:
        return []
    return narrowed([m2 for m in found.models if section[-1] in m.model_fields
                     for m2 in model_members(m.model_fields[section[-1]].annotation)],
                    section, kinds or {})


def _kind_words(models: list[type[BaseModel]], section: tuple[str, ...], kinds: Kinds) -> str | None:
    """'the l2 bias' when ``section`` was narrowed to some of its kinds, else None."""
    if not section or not kinds.get(section):
        return None
    shown = [str(model_kind(m)) for m in models if model_kind(m) is not None]
    every = [m for m in section_models(section) if model_kind(m) is not None]
    if not shown or len(shown) == len(every):
        return None
    return f"the {' or '.join(shown)} {section[-1]}"


def unknown_path_problem(path: tuple[str, ...], where: tuple[str, ...],
                         lines: LineMap, kinds: Kinds | None = None) -> Problem | None:
    """A Problem naming ``where`` if ``path`` is not a field path of ModelPoint (sections narrowed
    to ``kinds``), else None."""
    if not path:
        return None
    kinds = kinds or {}
    found = _resolve(path, kinds)
    if found.unknown is None:
        return None
    line = ancestor_line(lines, where)
    if found.value_depth is not None:  # e.g. an Optuna-style {low: .., high: ..} under train.lr
        field = ".".join(path[:found.value_depth + 1])
        return Problem(".".join(where), (
            f"{field} holds one value, not a mapping of keys; give a value, "
            "{choice: [...]}, {int: [lo, hi]} or {float: [lo, hi]} (with step / log)"), line)
    allowed = sorted({name for m in found.models for name in m.model_fields})
    owner = _kind_words(found.models, found.section, kinds)
    hint = did_you_mean(found.unknown, allowed)
    if owner is not None:
        fields = f"{hint}; its fields: {', '.join(allowed)}" if hint else f" (its fields: {', '.join(allowed)})"
        message = f"'{found.unknown}' is not a field of {owner}{fields}"
    else:
        message = f"'{found.unknown}' is not a field of the point here{hint}; allowed: {', '.join(allowed)}"
    return Problem(".".join(where), message, line)
