"""Recognise and load any of the toolkit's YAML files: a point, a space or a study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from miras_search.errors import ConfigError, Problem
from miras_search.file_kinds import FileKind, plain_file_kind
from miras_search.points import point_from_dict
from miras_search.space import SearchSpace
from miras_search.yamlio import LineMap, read_yaml, read_yaml_documents


def detect_kind(data: dict[str, Any]) -> FileKind:
    """The file's ``type`` if given, else guessed from its keys (a point when nothing says)."""
    return plain_file_kind(data) or "point"


def load_any(path: str | Path) -> tuple[FileKind, Any]:
    """Load and validate ``path``; returns its kind and the loaded object. ConfigError on failure."""
    data, lines = read_yaml(path)
    return _load(data, lines, str(path))


def load_all(path: str | Path) -> list[tuple[FileKind, Any]]:
    """Every document of ``path`` (points printed by ``miras best`` / ``miras sample`` come
    several to a file), each loaded as ``load_any`` does; ConfigError names the document."""
    documents = read_yaml_documents(path)
    if len(documents) == 1:
        return [_load(*documents[0], str(path))]
    return [_load(data, lines, f"{path} (document {index})")
            for index, (data, lines) in enumerate(documents, 1)]


def _load(data: dict[str, Any], lines: LineMap, source: str) -> tuple[FileKind, Any]:
    declared = data.get("type")
    if declared is not None and declared not in ("point", "space", "study"):
        raise ConfigError(source, [Problem(
            "type", f"unknown file type '{declared}'; allowed: point, space, study", lines.get(("type",))
        )])
    kind = detect_kind(data)
    if kind == "space":
        return kind, SearchSpace.from_dict(data, source, lines)
    if kind == "study":
        from miras_search.study.spec import load_study_dict  # the study layer sits above this one

        return kind, load_study_dict(data, source, lines)
    return kind, point_from_dict(data, source, lines)
