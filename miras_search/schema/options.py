"""The options of the four axes, read from their registries: ``miras options`` lists them and the
README's axis table names where they live, so a new option shows up by itself."""

from __future__ import annotations

from miras_search.schema._base import AxisOption
from miras_search.schema.algorithm import MemoryAlgorithm
from miras_search.schema.bias import AttentionalBias
from miras_search.schema.feature_map import FeatureMap
from miras_search.schema.memory import MemoryArchitecture
from miras_search.schema.retention import RetentionGate

AXIS_BASES: dict[str, type[AxisOption]] = {
    "memory architecture": MemoryArchitecture,
    "attentional bias": AttentionalBias,
    "retention gate": RetentionGate,
    "learning algorithm": MemoryAlgorithm,
    "feature map": FeatureMap,
}
"""Each axis's title and the base class its options register with, in the paper's order; the
Atlas paper's feature map (``memory.feature_map``) last. The Omega window is a field of every
bias (``bias.window``), Muon an algorithm."""


def axis_options() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(axis title, what it is, [(kind, summary), ...]) for each axis."""
    return [
        (title, base.role, [(kind, option.summary) for kind, option in base.registry.items()])
        for title, base in AXIS_BASES.items()
    ]


def options_markdown() -> str:
    """The README's axis table (markdown, one row per axis): each axis's role and the module its
    option classes live in. The options themselves are not copied into it (``miras options``
    lists them from the registries), so a new option changes no documentation file."""
    rows = ["| axis | what it is | its options, one class each |", "|---|---|---|"]
    for title, base in AXIS_BASES.items():
        path = base.__module__.replace(".", "/") + ".py"
        rows.append(f"| {title} | {base.role} | `{path}` |")
    return "\n".join(rows) + "\n"
