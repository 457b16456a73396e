"""The leaderboard: the study's ranking (as ``miras best`` shows it), marked infeasible trials,
and the Pareto front."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from miras_search.presets import NAMED_MODELS
from miras_search.report.study_data import AXES, ObjectiveInfo, TrialRow


def rank_rows(rows: Sequence[TrialRow]) -> list[TrialRow]:
    """The ranked rows (feasible, non-duplicate complete trials) in the study layer's order, the
    order of ``miras best``: by the objective, or for several the Pareto front first. The order
    is the one ``study_rows`` stored from ``study.summary.ranked`` (``TrialRow.rank``)."""
    return sorted((r for r in rows if r.rank is not None), key=lambda r: r.rank or 0)


def board_rows(rows: Sequence[TrialRow], objectives: Sequence[ObjectiveInfo]) -> list[TrialRow]:
    """The leaderboard's rows: the ranked ones, then the complete trials that break a limit
    (unranked), best first by the first objective. Duplicates of an earlier point are left out."""
    sign = 1.0 if objectives[0].minimize else -1.0
    broken = [r for r in rows if r.complete and not r.feasible and r.reused_from is None]
    broken.sort(key=lambda r: (sign * r.values[0], r.number))  # type: ignore[index]
    return [*rank_rows(rows), *broken]


def pareto_mask(values: np.ndarray, minimize: Sequence[bool]) -> np.ndarray:
    """Which rows of ``values: [N, M]`` no other row dominates (better or equal everywhere,
    strictly better somewhere). ``minimize[m]`` says the direction of column m. Returns [N] bool.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(minimize):
        raise ValueError(f"values must be [N, {len(minimize)}], got {values.shape}")
    costs = values * np.where(np.asarray(minimize), 1.0, -1.0)  # everything minimised
    no_worse = (costs[:, None, :] <= costs[None, :, :]).all(-1)  # [i, j]: i no worse than j
    better = (costs[:, None, :] < costs[None, :, :]).any(-1)
    dominated = (no_worse & better).any(0)  # j is dominated by some i
    return ~dominated


def role(row: TrialRow) -> str:
    """``named`` (Moneta / Yaad / Memora), ``baseline`` (another anchor) or ``searched``."""
    if row.anchor in NAMED_MODELS:
        return "named"
    return "baseline" if row.anchor else "searched"


LEADERBOARD_METRICS = ("val_bpb", "val_loss", "acc_mean", "tokens_per_s", "kernel_share", "params")


def shown_metrics(ranked: Sequence[TrialRow], objectives: Sequence[ObjectiveInfo]) -> list[str]:
    """Metric columns worth showing: the common ones the trials measured, minus the objectives.
    ``kernel_share`` (the share of a trial's memory layers on a fast kernel) only where some trial
    ran one: on a GPU it tells which tokens/s came from the PyTorch form; on a CPU it is all 0."""
    names = {o.name for o in objectives}

    def worth(metric: str) -> bool:
        if metric == "kernel_share":
            return any(r.metrics.get(metric, 0.0) > 0 for r in ranked)
        return any(metric in r.metrics for r in ranked)

    return [m for m in LEADERBOARD_METRICS if m not in names and worth(m)]


def format_value(name: str, value: float | None) -> str:
    """A value for a table: 4 significant digits, counts with thousands separators; "-" for a
    value that is missing or not a number (a metric stored as nan), never the word 'nan'."""
    if value is None or math.isnan(value):
        return "-"
    if name == "kernel_share":
        return f"{value:.0%}"
    if name in ("params", "state_size", "tokens", "tokens_per_s"):
        return f"{value:,.0f}"
    return f"{value:.4g}"


def rank_text(row: TrialRow) -> str:
    """The rank cell: the row's place, or "-" for a row the study does not rank."""
    return "-" if row.rank is None else str(row.rank)


def limit_text(row: TrialRow) -> str:
    """The limit cell: what a trial that breaks a limit breaks (empty for a feasible one)."""
    return "; ".join(row.broken_limits)


def leaderboard_table(rows: Sequence[TrialRow], objectives: Sequence[ObjectiveInfo],
                      top: int | None = None, title: str = "leaderboard",
                      width: int | None = None) -> Table:
    """The terminal leaderboard (``board_rows``): rank, trial, role, the four axis choices,
    objectives, metrics, the Pareto front (several objectives) and the limits a row breaks.

    With ``width`` (the terminal's; 80 when piped), metric columns are left out from the last
    one while the table would be wider, then the four axis columns become one ("mlp/l2/lq/gd"),
    so that the identifying columns are not cut to "me…". Where even a wrapped table would cut a
    word or a number (a narrow terminal), the axes wrap ("mlp / l2 /" over "lq / gd"), then
    columns are left out in turn: the axes, the model, the
    Pareto mark, the objectives after the first, the limits; rank, trial and the first objective
    stay.
    """
    shown = list(rows[:top] if top else rows)
    layout = _Layout(metrics=tuple(shown_metrics(shown, objectives)), objectives=len(objectives))
    table = _board(shown, objectives, layout, title)
    while width is not None and layout.metrics and _natural_width(table) > width:
        layout = replace(layout, metrics=layout.metrics[:-1])
        table = _board(shown, objectives, layout, title)
    if width is not None and _natural_width(table) > width:
        layout = replace(layout, axes="one")
        table = _board(shown, objectives, layout, title)
    narrower = iter(_narrower(layout))
    while width is not None and (_least_width(table) > width or _cuts(table, width)):
        layout = next(narrower, None)
        if layout is None:
            break
        table = _board(shown, objectives, layout, title)
    return table


@dataclass(frozen=True)
class _Layout:
    """The leaderboard's columns: which metrics, the axes as four columns, one or none, and
    whether the model, the Pareto mark and the limits are shown; the first ``objectives``."""

    metrics: tuple[str, ...]
    objectives: int
    axes: str = "four"  # "four", "one" ("mlp/l2/lq/gd"), "wrapped" ("mlp / l2 / lq / gd") or "none"
    model: bool = True
    front: bool = True
    breaks: bool = True


def _narrower(layout: _Layout) -> list[_Layout]:
    """Ever fewer columns, for a narrow terminal, in the order they are left out."""
    steps = [replace(layout, metrics=(), axes="wrapped"), replace(layout, metrics=(), axes="none")]
    steps.append(replace(steps[-1], model=False))
    steps.append(replace(steps[-1], front=False))
    steps += [replace(steps[-1], objectives=n) for n in range(layout.objectives - 1, 0, -1)]
    steps.append(replace(steps[-1], breaks=False))
    return steps


def _natural_width(table: Table) -> int:
    """Columns the table takes when nothing wraps."""
    return Console(width=10_000).measure(table).maximum


def _least_width(table: Table) -> int:
    """Columns the table needs for every word and number to show whole (the rest wrapped)."""
    return Console(width=10_000).measure(table).minimum


def _cuts(table: Table, width: int) -> bool:
    """Whether rich, laying the table out in ``width`` columns, cuts a cell to "gated_delta…"
    (its least width is only a bound: shrinking the wrapping columns can still cut a word)."""
    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    with console.capture() as captured:
        console.print(table)
    return "…" in captured.get()


def _broken_cell(row: TrialRow, shown_columns: set[str]) -> list[str]:
    """Each broken limit as its rule when its metric has a column (the value is there), else
    with the measured value."""
    return [b.rule if b.metric in shown_columns else b.sentence for b in row.broken]


def _board(shown: list[TrialRow], objectives: Sequence[ObjectiveInfo], layout: _Layout,
           title: str) -> Table:
    objectives = objectives[:layout.objectives]
    multi = len(objectives) > 1 and layout.front
    limits = any(not r.feasible for r in shown) and layout.breaks
    shown_columns = {o.name for o in objectives} | set(layout.metrics)
    axis_columns = {"four": AXES, "one": ("/".join(AXES),), "wrapped": (" / ".join(AXES),), "none": ()}[layout.axes]
    table = Table(title=title)
    table.add_column("rank")
    table.add_column("trial")
    if layout.model:  # a name is not wrapped: rich would rather cut it than the axes
        names = [escape(r.anchor or "") for r in shown]
        table.add_column("model", no_wrap=True, min_width=max(map(cell_len, ["model", *names])))
    for column in axis_columns:
        table.add_column(column)
    numbers = [(f"{o.name} {'↓' if o.minimize else '↑'}", [format_value(o.name, r.score[i]) for r in shown])  # type: ignore[index]
               for i, o in enumerate(objectives)]
    numbers += [(m, [format_value(m, r.metrics.get(m)) for r in shown]) for m in layout.metrics]
    for header, cells in numbers:
        # never wrapped or cut; their full width is the column's least too (rich measures a
        # "val_bpb ↓" header at its longest word, and would cut it before a wrapping column)
        table.add_column(escape(header), justify="right", no_wrap=True, min_width=max(map(cell_len, [header, *cells])))
    if multi:
        table.add_column("front")
    if limits:
        table.add_column("breaks")  # one limit a line
    styles = {"named": "bold magenta", "baseline": "cyan", "searched": ""}
    for index, row in enumerate(shown):
        axes = [row.axes[a] for a in AXES]
        cells = [rank_text(row), f"#{row.number}", *((escape(row.anchor or ""),) if layout.model else ())]
        cells += [escape(v) for v in {"four": axes, "one": ["/".join(axes)], "wrapped": [" / ".join(axes)],
                                      "none": []}[layout.axes]]
        cells += [column[1][index] for column in numbers]
        if multi:
            cells.append("★" if row.on_front else "")
        if limits:
            cells.append(escape("\n".join(_broken_cell(row, shown_columns))))
        table.add_row(*cells, style=styles[role(row)] if row.feasible else "dim")
    return table
