"""Point files: a ModelPoint in YAML, optionally ``preset: NAME`` plus overrides; and back to YAML."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from miras_search.errors import ConfigError, MirasError, Problem
from miras_search.merge import deep_merge
from miras_search.presets import PRESET_AXES, is_preset_point, preset, preset_hint
from miras_search.schema import AXES, ModelPoint
from miras_search.validation import validate
from miras_search.yamlio import LineMap, dump_yaml, read_yaml, yaml_kind

_FILE_KEYS = ("type", "preset", "meta")
"""Keys a point file takes beside ModelPoint's fields (read before the point is validated)."""


def _check_preset_name(name: Any, source: str, lines: LineMap) -> None:
    """ConfigError unless ``name`` (a point file's ``preset``) names a known preset."""
    if isinstance(name, str) and name in PRESET_AXES:
        return
    what = f"unknown preset '{name}'{preset_hint(name)}" if isinstance(name, str) else (
        f"'preset' must be a preset name, not a {yaml_kind(name)}; known presets: {', '.join(PRESET_AXES)}"
    )
    raise ConfigError(source, [Problem("preset", what, lines.get(("preset",)))])


def point_from_dict(data: dict[str, Any], source: str = "<point>",
                    lines: LineMap | None = None) -> ModelPoint:
    """Validate a point mapping: ``preset`` (optional) is the base, the other keys override it."""
    if not isinstance(data, Mapping):
        raise ConfigError(source, [Problem("", f"a point is a mapping of its fields (memory, bias, ...), "
                                               f"not a {yaml_kind(data)}")])
    data = dict(data)
    if data.pop("type", "point") != "point":
        raise ConfigError(source, [Problem("type", "a point file has 'type: point' (or no type)")])
    data.pop("meta", None)
    name = data.pop("preset", None)
    named = "name" in data
    if name is not None:
        _check_preset_name(name, source, lines or {})
        data = deep_merge(preset(name).model_dump(mode="json"), data)
    point = validate(ModelPoint, data, source, lines, top_keys=_FILE_KEYS)
    if name is not None and not named and not is_preset_point(point):
        # a variant of the preset is not the preset: named after its file
        stem = Path(source).stem if source.endswith((".yaml", ".yml")) else f"{name}-variant"
        point = point.model_copy(update={"name": stem})
    return point


def load_point(ref: str | Path) -> ModelPoint:
    """A point from a YAML file path or a preset name (``moneta``)."""
    if not isinstance(ref, str | os.PathLike):
        raise MirasError(f"load_point: expected a point file's path or a preset name; got "
                         f"{type(ref).__name__} (a mapping of a point's fields: point_from_dict)")
    path = Path(ref)
    if path.exists():
        data, lines = read_yaml(path)
        return point_from_dict(data, str(path), lines)
    if str(ref) in PRESET_AXES:
        return preset(str(ref))
    raise ConfigError(str(ref), [Problem("", f"no such point file, and no preset of that name{preset_hint(str(ref))}")])


def as_point(point: ModelPoint | str | Path | Mapping[str, Any]) -> ModelPoint:
    """``point`` as a ModelPoint: a preset name, a point file, a mapping of a point's fields
    (``preset`` allowed, as in a file), or a ModelPoint, returned as it is.

    ConfigError for a mapping or file that does not validate; MirasError for anything else."""
    if isinstance(point, BaseModel) and "block" in type(point).model_fields:
        return point  # a ModelPoint (possibly of a class rebuilt since: plugins.refresh)
    if isinstance(point, str) and point in PRESET_AXES:
        return preset(point)
    if isinstance(point, str | Path):
        return load_point(point)
    if isinstance(point, Mapping):
        return point_from_dict(dict(point))
    raise MirasError(f"point: expected a ModelPoint, a preset name ({', '.join(PRESET_AXES)}), a point "
                     f"file or a mapping of a point's fields; got {type(point).__name__}")


def _compact(model: BaseModel) -> dict[str, Any]:
    """Fields that differ from their defaults (``kind`` always kept), recursively.

    A sub-model equal to its field's default is left out; otherwise it is written relative to
    its own class defaults, which is what loading fills in for the keys it lacks.
    """
    defaults = type(model).model_construct()
    out: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        default = getattr(defaults, name, None)
        if isinstance(value, BaseModel):
            if value != default:
                out[name] = _compact(value)
        elif name == "kind" or value != default:
            out[name] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    return out


def point_to_dict(point: ModelPoint, compact: bool = True) -> dict[str, Any]:
    """The point as plain data: every field, or (compact) only what differs from the defaults."""
    if not compact:
        return point.model_dump(mode="json")
    data = _compact(point)
    for axis in AXES:  # the four axes are always shown
        data.setdefault(axis, {"kind": getattr(point, axis).kind})
    order = list(ModelPoint.model_fields)
    return {key: data[key] for key in order if key in data}


def point_to_yaml(point: ModelPoint | str | Mapping[str, Any], compact: bool = True,
                  meta: dict[str, Any] | None = None) -> str:
    """The point (anything ``as_point`` takes) as a point file's YAML, with ``meta`` if given."""
    data = point_to_dict(as_point(point), compact)
    if meta:
        data["meta"] = meta
    return dump_yaml(data)
