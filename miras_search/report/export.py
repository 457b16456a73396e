"""Write the top points of a study as standalone point files that ``miras train`` loads."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from miras_search.points import point_to_yaml
from miras_search.report.leaderboard import rank_rows
from miras_search.report.study_data import TrialRow, study_objectives, study_rows
from miras_search.study.records import nothing_rebuildable, rebuildable


def _plain(value: float) -> float | str:
    return float(value) if math.isfinite(value) else str(value)


def point_meta(study: optuna.Study, row: TrialRow) -> dict[str, Any]:
    """Where the point came from and how it scored (the file's ``meta`` section)."""
    objectives = study_objectives(study)
    meta: dict[str, Any] = {
        "study": study.study_name,
        "trial": row.number,
        "rank": row.rank,
        "objectives": {o.name: {"value": _plain(v), "direction": o.direction}
                       for o, v in zip(objectives, row.score or (), strict=True)},
        "axes": dict(row.axes),
        "metrics": {k: _plain(v) for k, v in sorted(row.metrics.items())},
    }
    if row.anchor:
        meta["anchor"] = row.anchor
    space = study.user_attrs.get("space")
    if space:
        meta["space"] = space
    return meta


def export_top(study: optuna.Study, top: int, out_dir: str | Path,
               notice: Callable[[str], None] | None = None) -> list[Path]:
    """``out_dir/rank<NN>-trial<N>.yaml`` for the ``top`` best points, the points ``miras best -n
    top`` shows in its order (feasible, non-duplicate complete trials; the Pareto front first for
    several objectives). Returns the paths; [] (and no folder) when the study ranks no trial.

    A ranked trial whose stored point cannot be rebuilt (``study.records.stored_point``) is left
    out, the next one taking its place, and ``notice`` gets one sentence naming it; a MirasError
    when no ranked trial's point can be rebuilt."""
    ranked = rank_rows(study_rows(study))
    chosen, passed = rebuildable(ranked, top, TrialRow.model_point)
    if not chosen:
        if passed:
            raise nothing_rebuildable(study.study_name, passed, "nothing to export")
        return []
    for trial in passed:
        if notice is not None:
            notice(trial.left_out("`miras export`"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for row, point in chosen:
        path = out / f"rank{row.rank:02d}-trial{row.number}.yaml"
        header = f"# exported from study '{study.study_name}', trial {row.number} (rank {row.rank})\n"
        path.write_text(header + point_to_yaml(point, meta=point_meta(study, row)))
        paths.append(path)
    return paths
