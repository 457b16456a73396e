"""Which of the toolkit's YAML files a mapping is (a point, a space or a study), told from its
``type`` or its keys before it is validated: the loaders of every layer above the schemas ask."""

from __future__ import annotations

from typing import Any, Literal

from miras_search.schema import ModelPoint

FileKind = Literal["point", "space", "study"]
_STUDY_KEYS = frozenset({"space", "objectives", "sampler", "pruner", "trial"})
_SPACE_KEYS = frozenset({"params", "constraints", "anchors"})
_POINT_KEYS = frozenset({*ModelPoint.model_fields, "preset"})


def plain_file_kind(data: dict[str, Any]) -> FileKind | None:
    """What a YAML file of the toolkit is: its ``type`` when it says, else told by its keys (a
    study's ``space`` / ``objectives`` / ..., a space's ``params`` / ``constraints``, a point's
    axes or ``preset``); None when neither says."""
    declared = data.get("type")
    if declared in ("point", "space", "study"):
        return declared
    if declared is not None:
        return None
    if _STUDY_KEYS & data.keys():
        return "study"
    if _SPACE_KEYS & data.keys():
        return "space"
    return "point" if _POINT_KEYS & data.keys() else None
