"""Safe YAML I/O that remembers where every key came from, so errors can name the line."""

from __future__ import annotations

import contextlib
import difflib
import errno
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from miras_search.errors import ConfigError, Problem

LineMap = dict[tuple[str, ...], int]
"""Dotted location (tuple of keys / list indices as strings) -> 1-based line number."""

MAX_VALUES = 100_000
"""Most values (keys, items, scalars) a document may hold once its aliases are expanded."""
MAX_BYTES = 4 * 2**20
"""Largest YAML file read: the biggest shipped space is a few KB; 4 MiB is read in well under a
second, where an unbounded read of a wrong path (/dev/zero, a data file) would fill the memory."""

_MERGE_TAG = "tag:yaml.org,2002:merge"
_NODE_KINDS = {yaml.ScalarNode: "plain value", yaml.SequenceNode: "list", yaml.MappingNode: "mapping"}


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _is_merge(key_node: yaml.Node) -> bool:
    return key_node.tag == _MERGE_TAG


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expanded_size(root: yaml.Node) -> int | None:
    """Values in the document with every alias expanded; None if an alias contains itself.

    The composed document is a graph (an alias is the same node object as its anchor), so each
    node's size is computed once: the check costs one pass however large the expansion would be.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]  # iterative: documents can nest deeply
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if children_done:
            on_path.discard(id(node))
            sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children), MAX_VALUES + 1)
            continue
        if id(node) in on_path:
            return None
        on_path.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(children) if id(child) not in sizes)
    return sizes[id(root)]


def _distinct_nodes(root: yaml.Node) -> int:
    """Nodes of the document as written (an alias counted once), up to MAX_VALUES + 1."""
    seen: set[int] = set()
    stack = [root]
    while stack and len(seen) <= MAX_VALUES:
        node = stack.pop()
        if id(node) not in seen:
            seen.add(id(node))
            stack.extend(_children(node))
    return len(seen)


def _check_expansion(root: yaml.Node, source: str) -> None:
    distinct = _distinct_nodes(root)
    if distinct > MAX_VALUES:
        raise ConfigError(source, [Problem(
            "", f"the document holds more than {MAX_VALUES:,} values; a point, space or study file "
            "needs far fewer (is it the file you meant?)",
        )])
    size = _expanded_size(root)
    if size is None:
        raise ConfigError(source, [Problem(
            "", "an alias (*name) is used inside the value of its own anchor (&name); "
            "the document would be infinite",
        )])
    if size > MAX_VALUES:
        raise ConfigError(source, [Problem(
            "", f"the document's aliases (*name) expand to more than {MAX_VALUES:,} values; "
            "a point, space or study file needs far fewer (is it an alias bomb?)",
        )])


def _mapping_problems(node: yaml.MappingNode, path: tuple[str, ...],
                      constructor: yaml.constructor.SafeConstructor) -> list[Problem]:
    """Keys that are not plain values, and keys given twice (merged ``<<`` keys may be overridden)."""
    problems: list[Problem] = []
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if _is_merge(key_node):
            continue
        where = ".".join(path)
        if not isinstance(key_node, yaml.ScalarNode):
            problems.append(Problem(where, (
                f"a key must be a plain value (a name or a number), not a {_NODE_KINDS[type(key_node)]}"
            ), _line(key_node)))
            continue
        key = constructor.construct_object(key_node)
        if key in seen:
            problems.append(Problem(
                ".".join((*path, str(key))), f"duplicate key '{key}' (first on line {seen[key]})",
                _line(key_node),
            ))
        seen.setdefault(key, _line(key_node))
    return problems


def _key_problems(root: yaml.Node) -> list[Problem]:
    """Key problems of every mapping in the document, each reported once (at its first path)."""
    constructor = yaml.constructor.SafeConstructor()
    problems: list[Problem] = []
    visited: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[str, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            problems.extend(_mapping_problems(node, path, constructor))
            pairs = [(str(k.value), v) for k, v in node.value if isinstance(k, yaml.ScalarNode)]
            stack.extend((value, (*path, key)) for key, value in reversed(pairs))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, str(i))) for i, item in reversed(list(enumerate(node.value))))
    return problems


def _lines_of(node: yaml.Node, path: tuple[str, ...], lines: LineMap) -> None:
    """Record the line of every key; run after construction, which flattens merge keys (``<<``).

    Flattening puts the merged pairs before the mapping's own, so an explicit key's line wins.
    """
    lines.setdefault(path, _line(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            lines[(*path, key)] = _line(key_node)
            for alias in _key_aliases(key_node):  # `~` is also found as None and null
                lines.setdefault((*path, alias), _line(key_node))
            _lines_of(value_node, (*path, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _lines_of(item, (*path, str(index)), lines)


def key_text(key: Any) -> str:
    """A mapping key as YAML writes it: ``null``, ``true``, ``3``, ``name``."""
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _key_aliases(key_node: yaml.Node) -> set[str]:
    """Other texts a plain key is found under: its value's ``str`` (``None``, ``True``, ``1``, as
    paths built from parsed data spell it) and its YAML spelling (``null``)."""
    if not isinstance(key_node, yaml.ScalarNode) or key_node.style is not None:
        return set()  # a quoted key is text as written
    tag = _Loader.resolve(_Loader, yaml.ScalarNode, key_node.value, (True, False))
    if tag == "tag:yaml.org,2002:str":
        return set()
    try:
        value = _construct(key_node)
    except yaml.YAMLError:
        return set()
    return {str(value), key_text(value)} - {str(key_node.value)}


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2's exponent floats (``1e-3``, ``5E4``) as numbers: YAML
    1.1, PyYAML's, wants a dot (``1.0e-3``) and gives the string '1e-3'. A point's number field
    reads such a string back, but a space's choices and a constraint's tests compare values as
    written, where '1e-3' is no number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _construct(node: yaml.Node) -> Any:
    """The Python value of a composed document (SafeLoader's constructors, merge keys included)."""
    loader = _Loader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


@contextlib.contextmanager
def _yaml_errors(text: str, source: str) -> Iterator[None]:
    """Turn PyYAML's errors (syntax, a disallowed tag, nesting too deep) into a ConfigError at
    the line they are marked at."""
    try:
        yield
    except yaml.MarkedYAMLError as error:
        line = error.problem_mark.line + 1 if error.problem_mark else None
        if line is not None:  # an error at the end of the stream is marked past the last line
            line = min(line, max(1, len(text.splitlines())))
        context = error.context or ""
        if context and error.context_mark is not None and error.context_mark.line + 1 != line:
            context += f" that starts on line {error.context_mark.line + 1}"
        what = f"{context + '; ' if context else ''}{error.problem}"
        if isinstance(error, yaml.constructor.ConstructorError) and "constructor for the tag" in (error.problem or ""):
            tag = (error.problem or "").split("tag", 1)[-1].strip(" '")
            raise ConfigError(source, [Problem("", f"the tag '{tag}' is not allowed: files are read as "
                                               "plain YAML (safe_load), which makes no Python objects", line)]) from None
        raise ConfigError(source, [Problem("", f"YAML syntax error: {what}", line)]) from None
    except yaml.YAMLError as error:
        raise ConfigError(source, [Problem("", f"YAML error: {error}")]) from None
    except RecursionError:
        raise ConfigError(source, [Problem("", "the document is nested too deeply")]) from None


def _document(node: yaml.Node | None, text: str, source: str) -> tuple[dict[str, Any], LineMap]:
    """The mapping of one composed document and the line of each key; ConfigError on any problem."""
    with _yaml_errors(text, source):
        if node is not None:
            _check_expansion(node, source)  # before anything walks the document as a tree
            problems = _key_problems(node)
            if problems:
                raise ConfigError(source, problems)
        data = None if node is None else _construct(node)
    if _blank(node):
        raise ConfigError(source, [Problem("", "the file is empty; expected a mapping of keys")])
    if data is None:  # a document of just `null` or `~`
        raise ConfigError(source, [Problem("", "the file holds only null; expected a mapping of keys")])
    if not isinstance(data, dict):
        raise ConfigError(
            source,
            [Problem("", f"the top level must be a mapping of keys, not a {yaml_kind(data)}", _line(node))],
        )
    lines: LineMap = {}
    _lines_of(node, (), lines)
    return data, lines


def parse_yaml(text: str, source: str) -> tuple[dict[str, Any], LineMap]:
    """Parse ``text`` (one YAML document) into a mapping and the line of each key; ConfigError on
    any problem (several documents included)."""
    with _yaml_errors(text, source):
        try:
            node = yaml.compose(text, Loader=_Loader)
        except yaml.composer.ComposerError as error:
            if "expected a single document" not in (error.context or ""):
                raise
            raise ConfigError(source, [Problem("", _several_documents(text), None)]) from None
    return _document(node, text, source)


def _several_documents(text: str) -> str:
    """Why a file of several documents is refused where one is read, with their count."""
    try:
        count = f"{sum(not _blank(node) for node in yaml.compose_all(text, Loader=_Loader))} documents"
    except (yaml.YAMLError, RecursionError):  # a later document does not parse: its count is unsure
        count = "several documents"
    return (f"the file holds {count} (separated by '---'), where one is read; give a file of one "
            "document (`miras validate` and `miras kernels` also take a file of several points)")


def _blank(node: yaml.Node | None) -> bool:
    """Whether a composed document holds nothing at all (``---`` followed by the next ``---``)."""
    return node is None or (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"
                            and node.value == "")


def parse_yaml_documents(text: str, source: str) -> list[tuple[dict[str, Any], LineMap]]:
    """Every document of ``text`` (as ``miras best`` and ``miras sample`` print them, ``---``
    before each), each parsed like ``parse_yaml``; empty documents are skipped. YAML's own
    parser splits them (directives, ``--- {...}`` on one line, ``---`` inside a quoted string),
    so line numbers are the text's."""
    with _yaml_errors(text, source):
        nodes = [node for node in yaml.compose_all(text, Loader=_Loader) if not _blank(node)]
    if len(nodes) <= 1:
        return [_document(nodes[0] if nodes else None, text, source)]
    return [_document(node, text, f"{source} (document {index})") for index, node in enumerate(nodes, 1)]


def _nearest_file(path: Path) -> str:
    """" (did you mean studies/quickstart.yaml?)" for the closest YAML file beside a missing one."""
    folder = path.parent
    try:
        names = [p.name for p in folder.iterdir() if p.suffix in (".yaml", ".yml")]
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    return f" (did you mean {folder / close[0]}?)" if close else ""


def _missing(path: Path) -> str:
    """Why ``path`` names no file: a symbolic link to nothing, or no such file (with the
    nearest name beside it)."""
    if path.is_symlink():
        with contextlib.suppress(OSError):
            return (f"is a symbolic link to '{os.readlink(path)}', which does not exist; fix the "
                    "link, or give the file itself")
    return f"no such file{_nearest_file(path) or _outside_a_checkout(path)}"


SHIPPED_FOLDERS = ("spaces", "studies")
"""The folders of YAML files a checkout ships beside the package (not installed with it)."""


def _outside_a_checkout(path: Path) -> str:
    """A hint for ``studies/quickstart.yaml`` and the like, named from a folder that has no such
    subfolder: the README's commands read them from a checkout's root folder, and a
    non-editable install does not carry them."""
    if path.is_absolute() or not path.parts or path.parts[0] not in SHIPPED_FOLDERS or path.parent.is_dir():
        return ""
    return (f" (no folder {path.parts[0]}/ here: the shipped spaces/ and studies/ are files of a "
            "miras-search checkout, not of the installed package; run the command from the "
            "checkout's root folder, or give the file's full path)")


def _too_big(size: int) -> str:
    return (f"is {size / 2**20:.1f} MiB; a point, space or study file is at most "
            f"{MAX_BYTES // 2**20} MiB (is it the file you meant?), so it is not read")


def _read_text(path: Path) -> str:
    """The UTF-8 text of a YAML file; missing, unreadable, oversized, non-regular (a device, a
    pipe) or binary files give a ConfigError."""
    source = str(path)
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError
        if not stat.S_ISREG(info.st_mode):  # /dev/zero, a pipe: an endless read
            raise ConfigError(source, [Problem("", "is not a regular file (a device, pipe or socket), "
                                               "so it is not read; give a YAML file")])
        if info.st_size > MAX_BYTES:
            raise ConfigError(source, [Problem("", _too_big(info.st_size))])
        with open(path, "rb") as file:
            raw = file.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(source, [Problem("", _missing(path))]) from None
    except IsADirectoryError:
        raise ConfigError(source, [Problem("", "is a directory, not a YAML file")]) from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ConfigError(source, [Problem("", "is a symbolic link whose links loop (it leads back "
                                               "to itself), so there is no file to read; fix the "
                                               "link, or give the file itself")]) from None
        raise ConfigError(source, [Problem("", f"cannot be read: {error.strerror}")]) from None
    if len(raw) > MAX_BYTES:  # it grew while being read
        raise ConfigError(source, [Problem("", _too_big(len(raw)))])
    if b"\x00" in raw[:8192]:
        raise ConfigError(source, [Problem("", "is a binary file, not YAML text")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(source, [Problem("", "is not UTF-8 text (binary file?)")]) from None


def read_yaml(path: str | Path) -> tuple[dict[str, Any], LineMap]:
    """Read and parse a YAML file; missing, unreadable or binary files give a ConfigError."""
    path = Path(path)
    return parse_yaml(_read_text(path), str(path))


def read_yaml_documents(path: str | Path) -> list[tuple[dict[str, Any], LineMap]]:
    """Every document of a YAML file, each parsed like ``read_yaml`` (``parse_yaml_documents``)."""
    path = Path(path)
    return parse_yaml_documents(_read_text(path), str(path))


def ancestor_line(lines: LineMap, where: tuple[str, ...], *, root: bool = False) -> int | None:
    """The line of ``where``, or of its nearest ancestor that has one (the document's own line
    only with ``root``); None when none has."""
    stop = -1 if root else 0
    return next((lines[where[:cut]] for cut in range(len(where), stop, -1) if where[:cut] in lines), None)


def yaml_kind(value: Any) -> str:
    """How a parsed YAML value reads to a user: 'mapping', 'list', 'boolean', 'number', ..."""
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__


def dump_yaml(data: Any) -> str:
    """Block-style YAML with keys in the order given (the schema's field order)."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
