"""The report's figures, drawn with matplotlib's object API on the Agg canvas (no display)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from miras_search.report.importance import Importances
from miras_search.report.leaderboard import pareto_mask, role
from miras_search.report.study_data import ObjectiveInfo, TrialRow

COLORS = {"named": "#c2185b", "baseline": "#0277bd", "searched": "#9e9e9e"}
TOP_COLOR = "#2e7d32"


def _color(row: TrialRow, top: set[int]) -> str:
    kind = role(row)
    if kind != "searched":
        return COLORS[kind]
    return TOP_COLOR if row.number in top else COLORS["searched"]


def leaderboard_figure(shown: Sequence[TrialRow], objective: ObjectiveInfo, top: set[int]) -> Figure:
    """Horizontal bars of the first objective for ``shown`` rows (best at the top)."""
    fig = Figure(figsize=(7, 0.35 * len(shown) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(shown))
    ax.barh(y, [r.score[0] for r in shown], color=[_color(r, top) for r in shown])  # type: ignore[index]
    ax.set_yticks(y, [f"{r.label}  {r.axes['memory']}/{r.axes['bias']}/{r.axes['retention']}/"
                      f"{r.axes['algorithm']}" for r in shown], fontsize=8)
    ax.invert_yaxis()
    values = [r.score[0] for r in shown]  # type: ignore[index]
    low, high = min(values), max(values)
    pad = 0.05 * (high - low or abs(high) or 1.0)
    # a maximised score's bars start at 0 (or below, for a negative score)
    ax.set_xlim(low - pad if objective.minimize else min(0.0, low - pad), high + pad)
    ax.set_xlabel(f"{objective.name} ({'lower' if objective.minimize else 'higher'} is better)")
    # over the whole figure: above the axes alone (right of the tick labels) its end was cut off
    fig.suptitle("leaderboard: searched top (green), named models (magenta), baselines (blue)", fontsize=9)
    return fig


def _staircase(ax, x: np.ndarray, y: np.ndarray, mask: np.ndarray, x_minimized: bool) -> None:
    """The edge of the region the front dominates (it lies away from the better corner)."""
    order = np.argsort(x[mask])
    style = "steps-post" if x_minimized else "steps-pre"
    ax.plot(x[mask][order], y[mask][order], drawstyle=style, color="black", lw=1, alpha=0.6)


def pareto_figure(rows: Sequence[TrialRow], quality: ObjectiveInfo, study_front: set[int],
                  top: set[int]) -> Figure | None:
    """Quality vs tokens/s and vs parameters for the leaderboard's ``rows``; the 2-D front of
    each panel (over the feasible rows) as a staircase, the study's own Pareto front
    (``study_front``, trial numbers) as stars, and trials that break a limit as grey crosses.
    None when the metrics are missing.
    """
    rows = [r for r in rows if r.complete]
    panels = [(m, lbl, mini) for m, lbl, mini in (("tokens_per_s", "tokens / s (train)", False),
                                                  ("params", "parameters", True))
              if sum(_measured(r, m) for r in rows) >= 2]
    if not panels:
        return None
    fig = Figure(figsize=(5.5 * len(panels), 4.2), layout="constrained")
    for index, (metric, label, minimize) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), index + 1)
        have = [r for r in rows if _measured(r, metric)]
        _pareto_panel(ax, [r for r in have if r.feasible], metric, (minimize, quality.minimize), study_front, top)
        _infeasible_points(ax, [r for r in have if not r.feasible], metric)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        if metric == "params":
            _count_axis(ax, [r.metrics[metric] for r in have])
        ax.set_xlabel(label)
        ax.set_ylabel(quality.name)
        ax.set_title(f"{quality.name} vs {label}", fontsize=9)
    return fig


def _measured(row: TrialRow, metric: str) -> bool:
    """Whether the row holds a finite ``metric`` (a nan or inf has no place on an axis, and
    would bend a panel's staircase or its scale)."""
    return math.isfinite(row.metrics.get(metric, math.nan))


def _pareto_panel(ax: Axes, rows: Sequence[TrialRow], metric: str, minimize: tuple[bool, bool],
                  study_front: set[int], top: set[int]) -> None:
    """The feasible rows of one panel: dots by role, the panel's staircase, the study's stars."""
    if not rows:
        return
    x = np.array([r.metrics[metric] for r in rows])
    y = np.array([r.score[0] for r in rows])  # type: ignore[index]
    _staircase(ax, x, y, pareto_mask(np.stack([x, y], 1), minimize), minimize[0])
    ax.scatter(x, y, c=[_color(r, top) for r in rows], s=28, zorder=3)
    stars = [i for i, r in enumerate(rows) if r.number in study_front]
    if stars:
        ax.scatter(x[stars], y[stars], marker="*", s=160, facecolors="none", edgecolors="black",
                   zorder=4, label="study Pareto front")
    _name_anchors(ax, x, y, rows)


def _infeasible_points(ax: Axes, rows: Sequence[TrialRow], metric: str) -> None:
    """Trials that break a limit: grey crosses, outside every front."""
    if rows:
        x = np.array([r.metrics[metric] for r in rows])
        y = np.array([r.score[0] for r in rows])  # type: ignore[index]
        ax.scatter(x, y, marker="x", s=28, color=COLORS["searched"], zorder=3, label="breaks a limit")
        _name_anchors(ax, x, y, rows)


def _name_anchors(ax: Axes, x: np.ndarray, y: np.ndarray, rows: Sequence[TrialRow]) -> None:
    """Label the anchors' points with their names."""
    for xi, yi, r in zip(x, y, rows, strict=True):
        if r.anchor:
            ax.annotate(r.anchor, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")


def _count_axis(ax: Axes, values: Sequence[float]) -> None:
    """A log axis when the counts span two decades or more, else a linear one (log ticks inside
    one decade are minor ticks whose labels run into each other); plain labels either way."""
    low, high = min(values), max(values)
    if low > 0 and high >= 100 * low:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _count_label(value)))


def _count_label(value: float) -> str:
    """``150k``, ``1.2M``: a short tick label for a count."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{suffix}"
    return f"{value:.4g}"


def importance_figure(importances: Sequence[Importances]) -> Figure:
    """Per objective: the per-axis sums (left) and the ten most important parameters (right)."""
    fig = Figure(figsize=(11, 2.8 * len(importances) + 0.6), layout="constrained")
    for row, imp in enumerate(importances):
        ax = fig.add_subplot(len(importances), 2, 2 * row + 1)
        axes = list(imp.axes)
        ax.barh(axes, [imp.axes[a] for a in axes], color="#5e35b1")
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_title(f"{imp.objective}: importance per axis", fontsize=9)
        ax = fig.add_subplot(len(importances), 2, 2 * row + 2)
        names = list(imp.params)[:10]
        ax.barh(names, [imp.params[n] for n in names], color="#7e57c2")
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(f"{imp.objective}: top parameters", fontsize=9)
    return fig


def _series_colors(rows: Sequence[TrialRow]) -> list[tuple[float, ...]]:
    """One distinct colour per row (a line or a bar group), tab10 then tab20."""
    cmap = matplotlib.colormaps["tab10" if len(rows) <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(len(rows))]


def curves_figure(top_rows: Sequence[TrialRow], anchors: Sequence[TrialRow]) -> Figure | None:
    """Training-loss curves: the top searched points (solid) against the anchors (dashed)."""
    drawn = [r for r in (*top_rows, *anchors) if r.curve]
    if not drawn:
        return None
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for row, color in zip(drawn, _series_colors(drawn), strict=True):
        steps, losses = zip(*row.curve, strict=True)
        ax.plot(steps, losses, "--" if row.anchor else "-", lw=1.4, label=row.label, color=color)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("learning curves: top points (solid) vs anchors (dashed)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return fig


def task_names(rows: Sequence[TrialRow]) -> list[str]:
    """The synthetic tasks measured (``acc/<task>`` metrics), sorted."""
    return sorted({k.removeprefix("acc/") for r in rows for k in r.metrics if k.startswith("acc/")})


def tasks_figure(rows: Sequence[TrialRow]) -> Figure | None:
    """Grouped bars of answer accuracy per synthetic task for ``rows``."""
    tasks = task_names(rows)
    if not tasks or not rows:
        return None
    fig = Figure(figsize=(max(6.0, 1.6 * len(tasks) + 0.25 * len(rows)), 4.2), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(rows)
    x = np.arange(len(tasks))
    for index, (row, color) in enumerate(zip(rows, _series_colors(rows), strict=True)):
        scores = [row.metrics.get(f"acc/{t}", np.nan) for t in tasks]
        bars = ax.bar(x + index * width - 0.4 + width / 2, scores, width, label=row.label,
                      color=color, hatch="//" if row.anchor else None, edgecolor="white")
        ax.bar_label(bars, fmt="%.2f", fontsize=6)  # so that a zero score still shows
    ax.set_xticks(x, tasks)
    ax.set_ylim(0, 1)
    ax.set_ylabel("answer accuracy")
    ax.set_title("synthetic recall tasks: top points and anchors (hatched)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return fig


def rank_figure(short: np.ndarray, long: np.ndarray, labels: Sequence[str], short_name: str,
                long_name: str) -> Figure:
    """Short-trial score vs the longer run's, one numbered dot per point (proxy check); a key
    beside the plot names them, lowest longer-run score first, with both scores (the names of
    close points would overlap on the plot)."""
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax, key = fig.subplots(1, 2, width_ratios=[3, 1.4])
    ax.scatter(short, long, color="#00695c")
    order = np.argsort(np.asarray(long, dtype=float), kind="stable")
    offsets = [(4, 4), (4, -10), (-12, 4), (-12, -10)]  # alternate corners: neighbours stay apart
    for number, index in enumerate(order, start=1):
        ax.annotate(str(number), (short[index], long[index]), fontsize=7,
                    xytext=offsets[(number - 1) % len(offsets)], textcoords="offset points")
    ax.set_xlabel(short_name)
    ax.set_ylabel(long_name)
    ax.set_title("proxy check: short trial vs longer run", fontsize=9)
    key.axis("off")
    lines = [f"{number:>2}  {labels[index]}  {short[index]:.3g} / {long[index]:.3g}"
             for number, index in enumerate(order, start=1)]
    key.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", fontsize=7, family="monospace",
             transform=key.transAxes)
    return fig
