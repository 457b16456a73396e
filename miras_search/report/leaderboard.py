"""The leaderboard: complete trials ranked by the first objective, and the Pareto front."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rich.markup import escape
from rich.table import Table

from miras_search.presets import NAMED_MODELS
from miras_search.report.study_data import AXES, ObjectiveInfo, TrialRow


def rank_rows(rows: Sequence[TrialRow], objectives: Sequence[ObjectiveInfo]) -> list[TrialRow]:
    """Complete trials, best first by the first objective (ties: lower trial number first)."""
    sign = 1.0 if objectives[0].minimize else -1.0
    done = [r for r in rows if r.complete]
    return sorted(done, key=lambda r: (sign * r.values[0], r.number))  # type: ignore[index]


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


def front_numbers(ranked: Sequence[TrialRow], objectives: Sequence[ObjectiveInfo]) -> set[int]:
    """Trial numbers on the Pareto front of the study's objectives (all of them when single)."""
    if not ranked:
        return set()
    if len(objectives) == 1:
        return {ranked[0].number}
    values = np.array([r.values for r in ranked], dtype=float)
    mask = pareto_mask(values, [o.minimize for o in objectives])
    return {r.number for r, keep in zip(ranked, mask, strict=True) if keep}


def role(row: TrialRow) -> str:
    """``named`` (Moneta / Yaad / Memora), ``baseline`` (another anchor) or ``searched``."""
    if row.anchor in NAMED_MODELS:
        return "named"
    return "baseline" if row.anchor else "searched"


LEADERBOARD_METRICS = ("val_bpb", "val_loss", "acc_mean", "tokens_per_s", "params")


def shown_metrics(ranked: Sequence[TrialRow], objectives: Sequence[ObjectiveInfo]) -> list[str]:
    """Metric columns worth showing: the common ones the trials measured, minus the objectives."""
    names = {o.name for o in objectives}
    return [m for m in LEADERBOARD_METRICS if m not in names and any(m in r.metrics for r in ranked)]


def format_value(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    if name in ("params", "state_size", "tokens", "tokens_per_s"):
        return f"{value:,.0f}"
    return f"{value:.4g}"


def leaderboard_table(ranked: Sequence[TrialRow], objectives: Sequence[ObjectiveInfo],
                      top: int | None = None, title: str = "leaderboard") -> Table:
    """The terminal leaderboard: rank, trial, role, the four axis choices, objectives, metrics."""
    front = front_numbers(ranked, objectives)
    metrics = shown_metrics(ranked, objectives)
    table = Table(title=title)
    for column in ("rank", "trial", "model", *AXES):
        table.add_column(column)
    for objective in objectives:
        arrow = "↓" if objective.minimize else "↑"
        table.add_column(escape(f"{objective.name} {arrow}"), justify="right")
    for metric in metrics:
        table.add_column(escape(metric), justify="right")
    if len(objectives) > 1:
        table.add_column("front")
    styles = {"named": "bold magenta", "baseline": "cyan", "searched": ""}
    for rank, row in enumerate(ranked[:top] if top else ranked, start=1):
        model = row.anchor or (f"= #{row.reused_from}" if row.reused_from is not None else "")
        cells = [str(rank), f"#{row.number}", escape(model), *(escape(row.axes[a]) for a in AXES)]
        cells += [format_value(o.name, v) for o, v in zip(objectives, row.values, strict=True)]  # type: ignore[arg-type]
        cells += [format_value(m, row.metrics.get(m)) for m in metrics]
        if len(objectives) > 1:
            cells.append("★" if row.number in front else "")
        table.add_row(*cells, style=styles[role(row)])
    return table
