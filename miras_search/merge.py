"""Kind-aware deep merge of nested point dicts (presets + overrides, space base + samples)."""

from __future__ import annotations

from typing import Any

from miras_search.schema.gates import MODE_FIELDS


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``, recursively.

    A section whose ``kind`` changes is replaced, not merged: the old kind's parameters do not
    belong to the new one (``bias: {kind: lp, p: 3}`` + ``bias: {kind: l2}`` = ``{kind: l2}``).
    A gate whose ``mode`` changes keeps its value but not the fields only the old mode takes
    (``MODE_FIELDS``: the channel mode's ``rank``, Mamba2's ``a_init`` / ``dt_init``, a learned
    gate's ``max_ratio``), unless ``override`` sets them
    (``{mode: channel, value: 0.5, rank: 32}`` + ``{mode: head}`` = ``{mode: head, value: 0.5}``).
    """
    merged = dict(base)
    for key, value in override.items():
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and "mode" in value and value["mode"] != old.get("mode"):
            old = {name: field for name, field in old.items()
                   if name in value or value["mode"] in MODE_FIELDS.get(name, (value["mode"],))}
        same_kind = (
            isinstance(old, dict)
            and isinstance(value, dict)
            and value.get("kind", old.get("kind")) == old.get("kind")
        )
        merged[key] = deep_merge(old, value) if same_kind else value
    return merged


def set_path(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """``target[p0][p1]...[pn] = value``, creating the intermediate dicts."""
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


def get_path(source: Any, path: tuple[str, ...], default: Any = None) -> Any:
    """``source[p0][p1]...`` or ``default`` when any step is missing."""
    for key in path:
        if not isinstance(source, dict) or key not in source:
            return default
        source = source[key]
    return source
