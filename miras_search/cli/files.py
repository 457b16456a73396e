"""Recognise and load any of the toolkit's YAML files: a point, a space or a study."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from miras_search.errors import ConfigError, Problem
from miras_search.points import point_from_dict
from miras_search.space import SearchSpace
from miras_search.yamlio import read_yaml

FileKind = Literal["point", "space", "study"]
_SPACE_KEYS = {"params", "constraints", "anchors"}
_STUDY_KEYS = {"space", "objectives", "sampler", "pruner", "trial"}


def detect_kind(data: dict[str, Any]) -> FileKind:
    """The file's ``type`` if given, else guessed from its keys."""
    declared = data.get("type")
    if declared in ("point", "space", "study"):
        return declared
    if _STUDY_KEYS & data.keys():
        return "study"
    if _SPACE_KEYS & data.keys():
        return "space"
    return "point"


def load_any(path: str | Path) -> tuple[FileKind, Any]:
    """Load and validate ``path``; returns its kind and the loaded object. ConfigError on failure."""
    data, lines = read_yaml(path)
    declared = data.get("type")
    if declared is not None and declared not in ("point", "space", "study"):
        raise ConfigError(str(path), [Problem(
            "type", f"unknown file type '{declared}'; allowed: point, space, study", lines.get(("type",))
        )])
    kind = detect_kind(data)
    if kind == "space":
        return kind, SearchSpace.from_dict(data, str(path), lines)
    if kind == "study":
        from miras_search.study.spec import load_study_dict  # the study layer sits above this one

        return kind, load_study_dict(data, str(path), lines)
    return kind, point_from_dict(data, str(path), lines)
