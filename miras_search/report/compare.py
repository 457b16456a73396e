"""Two studies side by side (``miras compare A B``): counts, the best and median value of each
objective they share, their best points, and a rank test of whether one scores better.

Both sides are read at their own budget (base fidelity): the study's trials, not the longer or
larger runs `confirm`, `scale` or successive halving added for some of its points (mixed in, those
would make a study that re-trained its best points look better than one that did not)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import optuna
from rich.markup import escape
from rich.table import Table

from miras_search.errors import MirasError
from miras_search.report.leaderboard import format_value
from miras_search.report.study_data import (
    AXES,
    ObjectiveInfo,
    TrialRow,
    study_objectives,
    study_rows,
)
from miras_search.study.summary import ranked


@dataclass
class StudySide:
    """One study's part of a comparison: its rows and, per shared objective, the values of its
    feasible, non-duplicate complete trials (``values[name]``)."""

    name: str
    rows: list[TrialRow]
    values: dict[str, list[float]]
    ranked: list[TrialRow]
    index: dict[str, int] = field(default_factory=dict)  # objective name -> its place in this study's values
    space: str | None = None  # the searched space's name (a study stores it)

    def best_by(self, objective: ObjectiveInfo) -> list[TrialRow]:
        """The ranked rows best first by ``objective`` (a shared objective need not be the one
        this study ranks by first; ties keep the study's order)."""
        sign = 1.0 if objective.minimize else -1.0
        return sorted(self.ranked, key=lambda r: sign * r.values[self.index[objective.name]])  # type: ignore[index]

    @property
    def complete(self) -> int:
        return sum(r.complete for r in self.rows)

    @property
    def queued(self) -> int:
        """Trials enqueued and never started (WAITING: e.g. the named-model anchors)."""
        return sum(r.state == "WAITING" for r in self.rows)

    @property
    def count_text(self) -> str:
        """'ran (complete)', and the queued ones apart: they were never run."""
        text = f"{len(self.rows) - self.queued} ({self.complete})"
        return f"{text}, {self.queued} queued" if self.queued else text


@dataclass
class Comparison:
    objectives: list[ObjectiveInfo]  # the objectives both studies have (name and direction)
    sides: tuple[StudySide, StudySide]
    p_values: dict[str, float | None]  # two-sided Mann-Whitney U per objective; None: too few
    top: int = 3
    notes: list[str] = field(default_factory=list)

    def table(self, width: int | None = None) -> Table:
        """The comparison as a rich table (three columns: what, study A, study B)."""
        first, second = self.sides
        table = Table(title="comparison", width=width if width and width < 100 else None)
        table.add_column("")
        # a long study name folds over lines rather than being cut to "a-very-long-stu…"
        table.add_column(escape(first.name), justify="right", overflow="fold")
        table.add_column(escape(second.name), justify="right", overflow="fold")
        table.add_row("trials (complete)", *(s.count_text for s in self.sides))
        for objective in self.objectives:
            arrow = "↓" if objective.minimize else "↑"
            for label, pick in (("best", min if objective.minimize else max), ("median", statistics.median)):
                cells = [format_value(objective.name, pick(s.values[objective.name])) if s.values[objective.name]
                         else "-" for s in self.sides]
                table.add_row(escape(f"{label} {objective.name} {arrow}"), *cells)
        first_objective = self.objectives[0]
        best = [s.best_by(first_objective) for s in self.sides]
        for place in range(self.top):
            cells = [_point_cell(rows[place], first_objective, s.index[first_objective.name])
                     if place < len(rows) else "-" for s, rows in zip(self.sides, best, strict=True)]
            table.add_row(f"rank {place + 1}", *cells)
        return table


def _point_cell(row: TrialRow, objective: ObjectiveInfo, index: int) -> str:
    """'#4 mlp/l2/l2/momentum 3.1': the trial, its model or axes, and its value of ``objective``
    (``row.values[index]``: the shared objective need not be the study's first)."""
    label = row.anchor or "/".join(row.axes[a] for a in AXES)
    value = format_value(objective.name, row.values[index]) if row.values else "-"
    return escape(f"#{row.number} {label} {value}")


def _side(study: optuna.Study, objectives: list[ObjectiveInfo], own: list[ObjectiveInfo]) -> StudySide:
    rows = [r for r in study_rows(study) if r.fidelity == "base"]
    by_number = {r.number: r for r in rows}
    ranked_rows = [by_number[t.number] for t in ranked(study, fidelity="base")]
    index = {o.name: i for i, o in enumerate(own)}
    values = {o.name: [r.values[index[o.name]] for r in ranked_rows if r.values] for o in objectives}
    space = study.user_attrs.get("space")
    return StudySide(study.study_name, rows, values, ranked_rows, index, str(space) if space else None)


def compare_studies(first: optuna.Study, second: optuna.Study, top: int = 3) -> Comparison:
    """Compare two studies over the objectives they share (same name and direction).

    For each shared objective, a two-sided Mann-Whitney U test (``scipy.stats.mannwhitneyu``)
    of the two studies' feasible complete trial values says whether one study's trials tend to
    score better; it needs two trials on each side. MirasError when no objective is shared.
    """
    own = [study_objectives(first), study_objectives(second)]
    shared = [o for o in own[0] if o in own[1]]
    if not shared:
        raise MirasError(
            f"studies '{first.study_name}' and '{second.study_name}' share no objective "
            f"({_described(own[0])} vs {_described(own[1])}); "
            "compare studies that rank by the same metric in the same direction")
    sides = (_side(first, shared, own[0]), _side(second, shared, own[1]))
    p_values: dict[str, float | None] = {}
    notes: list[str] = []
    for objective in shared:
        a, b = (s.values[objective.name] for s in sides)
        p_values[objective.name] = _mann_whitney(a, b)
        notes.append(_sentence(objective, sides, p_values[objective.name]))
    if sides[0].space != sides[1].space:
        notes.append(f"the studies search different spaces ('{sides[0].space or '?'}' and "
                     f"'{sides[1].space or '?'}'): the test compares what each found, not the same "
                     "points measured twice")
    return Comparison(shared, sides, p_values, top, notes)


def _described(objectives: list[ObjectiveInfo]) -> str:
    """'val_bpb (minimize), tokens_per_s (maximize)': an objective is its name and direction."""
    return ", ".join(f"{o.name} ({o.direction})" for o in objectives)


def _mann_whitney(a: list[float], b: list[float]) -> float | None:
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy.stats import mannwhitneyu  # scipy comes with the report extra

    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def _sentence(objective: ObjectiveInfo, sides: tuple[StudySide, StudySide], p: float | None) -> str:
    first, second = sides
    a, b = first.values[objective.name], second.values[objective.name]
    if p is None:
        return (f"{objective.name}: too few complete trials to test ({len(a)} and {len(b)}; "
                "two on each side needed)")
    median_a, median_b = statistics.median(a), statistics.median(b)
    better = first.name if (median_a < median_b) == objective.minimize else second.name
    if median_a == median_b:
        better = "neither"
    return (f"{objective.name}: median {format_value(objective.name, median_a)} ({first.name}) vs "
            f"{format_value(objective.name, median_b)} ({second.name}); {better} scores better by the "
            f"median; two-sided Mann-Whitney U p = {p:.3g} over {len(a)} and {len(b)} trials")
