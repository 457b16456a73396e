"""Imports flow one way (DESIGN.md): schemas <- space/presets <- memory ops <- model <- trial
(+ data) <- study <- scale <- parallel/tracking/report <- cli. A module imports only its own package and
lower layers, at the top of the file or inside a function alike."""

from __future__ import annotations

import ast
from pathlib import Path

import miras_search

ROOT = Path(miras_search.__file__).parent
LAYER = {
    "errors": 0, "primitives": 0, "jsonio": 0, "yamlio": 1, "paths": 1, "redact": 1, "ray_env": 1, "schema": 1,
    "merge": 2, "validation": 2,
    "schema_paths": 3, "presets": 3, "file_kinds": 3, "points": 4, "space": 4, "kernels": 4, "memory": 5,
    "model": 6, "data": 6, "trial": 7, "testing": 7, "study": 8,
    "scale": 9,  # trains into a study; the report reads its fits
    "parallel": 10, "tracking": 10, "report": 10, "hf": 10,  # side by side: none imports another
    "cli": 11, "__main__": 12, "__init__": 12,
}


def _unit(path: Path) -> str:
    """The package (or top-level module) a file belongs to: 'study', 'redact', '__init__'."""
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def _imported_units(tree: ast.AST) -> set[tuple[str, int]]:
    found = set()
    for node in ast.walk(tree):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else (
            [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "miras_search" and len(parts) > 1:
                found.add((parts[1], node.lineno))
    return found


def test_every_import_goes_down_a_layer():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        unit = _unit(path)
        assert unit in LAYER, f"{path.relative_to(ROOT)}: give the new package '{unit}' a layer here"
        for target, line in _imported_units(ast.parse(path.read_text(), str(path))):
            if target != unit and LAYER.get(target, 99) >= LAYER[unit]:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({unit}) imports miras_search.{target}")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import():
    tree = ast.parse("def f():\n    from miras_search.tracking.trial_run import TrialRun\n")
    assert _imported_units(tree) == {("tracking", 2)}
