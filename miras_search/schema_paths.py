"""Check that a dotted path (``bias.p``, ``block.d_model``) names a field of ModelPoint."""

from __future__ import annotations

from pydantic import BaseModel

from miras_search.errors import Problem
from miras_search.schema import ModelPoint
from miras_search.validation import model_members
from miras_search.yamlio import LineMap, ancestor_line


def _fields_at(path: tuple[str, ...]) -> tuple[list[type[BaseModel]], str | None]:
    """The models a path prefix may resolve to, and the first unknown key (None if all known)."""
    models: list[type[BaseModel]] = [ModelPoint]
    for depth, key in enumerate(path):
        holders = [m for m in models if key in m.model_fields]
        if not holders:
            return models, key
        if depth == len(path) - 1:
            return models, None
        models = [m2 for m in holders for m2 in model_members(m.model_fields[key].annotation)]
        if not models:  # a leaf value (int, list, ...) cannot have sub-keys
            return holders, path[depth + 1]
    return models, None


def unknown_path_problem(path: tuple[str, ...], where: tuple[str, ...],
                         lines: LineMap) -> Problem | None:
    """A Problem naming ``where`` if ``path`` is not a field path of ModelPoint, else None."""
    if not path:
        return None
    models, unknown = _fields_at(path)
    if unknown is None:
        return None
    allowed = sorted({name for m in models for name in m.model_fields})
    line = ancestor_line(lines, where)
    return Problem(
        ".".join(where),
        f"'{unknown}' is not a field of the point here; allowed: {', '.join(allowed)}",
        line,
    )
