"""Check that a dotted path (``bias.p``, ``block.d_model``) names a field of ModelPoint."""

from __future__ import annotations

from pydantic import BaseModel

from miras_search.errors import Problem
from miras_search.schema import ModelPoint
from miras_search.validation import model_members
from miras_search.yamlio import LineMap, ancestor_line


def _fields_at(path: tuple[str, ...]) -> tuple[list[type[BaseModel]], str | None, int | None]:
    """The models a path prefix may resolve to, the first unknown key (None if all known), and
    the depth of the plain-value field the unknown key sits under (None if it is not under one)."""
    models: list[type[BaseModel]] = [ModelPoint]
    for depth, key in enumerate(path):
        holders = [m for m in models if key in m.model_fields]
        if not holders:
            return models, key, None
        if depth == len(path) - 1:
            return models, None, None
        models = [m2 for m in holders for m2 in model_members(m.model_fields[key].annotation)]
        if not models:  # a leaf value (int, list, ...) cannot have sub-keys
            return holders, path[depth + 1], depth
    return models, None, None


def unknown_path_problem(path: tuple[str, ...], where: tuple[str, ...],
                         lines: LineMap) -> Problem | None:
    """A Problem naming ``where`` if ``path`` is not a field path of ModelPoint, else None."""
    if not path:
        return None
    models, unknown, value_depth = _fields_at(path)
    if unknown is None:
        return None
    line = ancestor_line(lines, where)
    if value_depth is not None:  # e.g. an Optuna-style {low: .., high: ..} under train.lr
        field = ".".join(path[:value_depth + 1])
        return Problem(".".join(where), (
            f"{field} holds one value, not a mapping of keys; give a value, "
            "{choice: [...]}, {int: [lo, hi]} or {float: [lo, hi]} (with step / log)"), line)
    allowed = sorted({name for m in models for name in m.model_fields})
    return Problem(
        ".".join(where),
        f"'{unknown}' is not a field of the point here; allowed: {', '.join(allowed)}",
        line,
    )
