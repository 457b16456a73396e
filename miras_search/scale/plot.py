"""The scaling figure: each point's loss against training compute (log-log), its fitted power
law extended to the target compute, and the target marked."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from miras_search.scale.results import ScaleTable


def scale_figure(table: ScaleTable) -> Figure:
    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    colors = [f"C{i % 10}" for i in range(len(table.points))]
    for point, color in zip(table.points, colors, strict=True):
        if not point.rungs:
            continue
        c = np.array([r.compute for r in point.rungs])
        y = np.array([r.loss for r in point.rungs])
        ax.plot(c, y, "o", color=color, label=point.label)
        if point.fit is not None:
            grid = np.geomspace(c.min(), max(table.target_flops, c.max()), 100)
            ax.plot(grid, point.fit(grid), "-", color=color, alpha=0.8)
            ax.plot([table.target_flops], [point.at_target], "*", color=color, markersize=10)
    ax.axvline(table.target_flops, color="0.5", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute (FLOPs, counted: 6 N + memory work per token)")
    ax.set_ylabel(table.metric)
    ax.set_title(f"{table.metric} against compute; * = fit at the target {table.target_flops:.3g} FLOPs")
    ax.legend(fontsize="small")
    return fig
