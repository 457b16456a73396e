"""The options of the four axes, read from their registries: the README's axis table and
``miras options`` are made from here, so a new option shows up in both by itself."""

from __future__ import annotations

from miras_search.schema._base import AxisOption
from miras_search.schema.algorithm import MemoryAlgorithm
from miras_search.schema.bias import AttentionalBias
from miras_search.schema.memory import MemoryArchitecture
from miras_search.schema.retention import RetentionGate

AXIS_BASES: dict[str, type[AxisOption]] = {
    "memory architecture": MemoryArchitecture,
    "attentional bias": AttentionalBias,
    "retention gate": RetentionGate,
    "learning algorithm": MemoryAlgorithm,
}
"""Each axis's title and the base class its options register with, in the paper's order."""


def axis_options() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(axis title, what it is, [(kind, summary), ...]) for each axis."""
    return [
        (title, base.role, [(kind, option.summary) for kind, option in base.registry.items()])
        for title, base in AXIS_BASES.items()
    ]


def options_markdown() -> str:
    """The README's axis table (markdown, one row per axis)."""
    rows = ["| axis | what it is | options |", "|---|---|---|"]
    for title, role, options in axis_options():
        cells = ", ".join(f"`{kind}` ({summary})" if summary else f"`{kind}`" for kind, summary in options)
        rows.append(f"| {title} | {role} | {cells} |")
    return "\n".join(rows) + "\n"
