"""Safe YAML I/O that remembers where every key came from, so errors can name the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from miras_search.errors import ConfigError, Problem

LineMap = dict[tuple[str, ...], int]
"""Dotted location (tuple of keys / list indices as strings) -> 1-based line number."""


def _lines_of(node: yaml.Node, path: tuple[str, ...], lines: LineMap) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _lines_of(value_node, (*path, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _lines_of(item, (*path, str(index)), lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"duplicate key '{key}' (first on line {seen[key]})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> tuple[dict[str, Any], LineMap]:
    """Parse ``text`` (YAML) into a mapping and the line of each key; ConfigError on any problem."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as error:
        line = error.problem_mark.line + 1 if error.problem_mark else None
        what = f"{error.context + '; ' if error.context else ''}{error.problem}"
        raise ConfigError(source, [Problem("", f"YAML syntax error: {what}", line)]) from None
    except yaml.YAMLError as error:
        raise ConfigError(source, [Problem("", f"YAML error: {error}")]) from None
    if data is None:
        raise ConfigError(source, [Problem("", "the file is empty; expected a mapping of keys")])
    if not isinstance(data, dict):
        raise ConfigError(
            source,
            [Problem("", f"the top level must be a mapping of keys, not a {type(data).__name__}", 1)],
        )
    lines: LineMap = {}
    if node is not None:
        _lines_of(node, (), lines)
    return data, lines


def read_yaml(path: str | Path) -> tuple[dict[str, Any], LineMap]:
    """Read and parse a YAML file; missing, unreadable or binary files give a ConfigError."""
    path = Path(path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(source, [Problem("", "no such file")]) from None
    except IsADirectoryError:
        raise ConfigError(source, [Problem("", "is a directory, not a YAML file")]) from None
    except OSError as error:
        raise ConfigError(source, [Problem("", f"cannot be read: {error.strerror}")]) from None
    if b"\x00" in raw[:8192]:
        raise ConfigError(source, [Problem("", "is a binary file, not YAML text")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(source, [Problem("", "is not UTF-8 text (binary file?)")]) from None
    return parse_yaml(text, source)


def dump_yaml(data: Any) -> str:
    """Block-style YAML with keys in the order given (the schema's field order)."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
