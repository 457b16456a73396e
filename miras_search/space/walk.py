"""One walk over a space's parameter tree, shared by sampling (Optuna) and encoding (point -> params).

Parameter names say where a value goes and under which branch it exists, e.g. ``memory.depth``,
``bias.kind=lp/bias.p`` (``p`` exists only when the bias is lp) or ``one_of=deep/memory.depth``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from miras_search.merge import set_path
from miras_search.space.spec import Choice, FloatRange, IntRange

_PRIMITIVE = (str, int, float, bool, type(None))


class Chooser(Protocol):
    """Picks a value for each searched parameter."""

    def categorical(self, name: str, path: tuple[str, ...], options: list[Any]) -> Any: ...
    def integer(self, name: str, path: tuple[str, ...], node: IntRange) -> int: ...
    def real(self, name: str, path: tuple[str, ...], node: FloatRange) -> float: ...
    def branch(self, name: str, labels: list[str], walk: Callable[[str], None]) -> None: ...
    def fixed(self, path: tuple[str, ...], value: Any) -> None: ...


def encode_option(option: Any) -> Any:
    """Optuna's categorical values must be primitives; lists are carried as JSON text."""
    return option if isinstance(option, _PRIMITIVE) else json.dumps(option)


def decode_option(value: Any, options: list[Any]) -> Any:
    for option in options:
        if encode_option(option) == value:
            return option
    return value


def param_name(qualifiers: tuple[str, ...], path: tuple[str, ...]) -> str:
    return "/".join((*qualifiers, ".".join(path) or "one_of"))


def walk(tree: dict[str, Any], chooser: Chooser, out: dict[str, Any],
         path: tuple[str, ...] = (), qualifiers: tuple[str, ...] = ()) -> None:
    """Visit every node of ``tree`` (a mapping level at ``path``), writing chosen values to ``out``."""
    for key, node in tree.items():
        if key == "one_of":
            _walk_one_of(node, chooser, out, path, qualifiers)
            continue
        here = (*path, key)
        name = param_name(qualifiers, here)
        if isinstance(node, Choice):
            value = chooser.categorical(name, here, node.options)
            set_path(out, here, value)
            branch = node.branch(value)
            if branch:
                walk(branch, chooser, out, path, (*qualifiers, f"{'.'.join(here)}={value}"))
        elif isinstance(node, IntRange):
            set_path(out, here, chooser.integer(name, here, node))
        elif isinstance(node, FloatRange):
            set_path(out, here, chooser.real(name, here, node))
        elif isinstance(node, dict):
            walk(node, chooser, out, here, qualifiers)
        else:
            chooser.fixed(here, node)
            set_path(out, here, node)


def _walk_one_of(branches: Any, chooser: Chooser, out: dict[str, Any],
                 path: tuple[str, ...], qualifiers: tuple[str, ...]) -> None:
    name = param_name(qualifiers, (*path, "one_of"))

    def visit(label: str) -> None:
        walk(branches[label] or {}, chooser, out, path, (*qualifiers, f"{name}={label}"))

    chooser.branch(name, list(branches), visit)


def iter_nodes(tree: dict[str, Any], path: tuple[str, ...] = (), qualifiers: tuple[str, ...] = ()):
    """Yield (name, path, node) for every searched node, in every branch (for summaries)."""
    for key, node in tree.items():
        if key == "one_of":
            name = param_name(qualifiers, (*path, "one_of"))
            yield name, (*path, "one_of"), Choice(choice=dict.fromkeys(node))
            for label, sub in node.items():
                yield from iter_nodes(sub or {}, path, (*qualifiers, f"{name}={label}"))
            continue
        here = (*path, key)
        if isinstance(node, Choice | IntRange | FloatRange):
            yield param_name(qualifiers, here), here, node
            if isinstance(node, Choice):
                for option in node.options:
                    sub = node.branch(option)
                    if sub:
                        yield from iter_nodes(sub, path, (*qualifiers, f"{'.'.join(here)}={option}"))
        elif isinstance(node, dict):
            yield from iter_nodes(node, here, qualifiers)
