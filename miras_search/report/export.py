"""Write the top points of a study as standalone point files that ``miras train`` loads."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna

from miras_search.points import point_to_yaml
from miras_search.report.confirm import pick_points
from miras_search.report.leaderboard import rank_rows
from miras_search.report.study_data import TrialRow, study_objectives, study_rows


def _plain(value: float) -> float | str:
    return float(value) if math.isfinite(value) else str(value)


def point_meta(study: optuna.Study, row: TrialRow, rank: int) -> dict[str, Any]:
    """Where the point came from and how it scored (the file's ``meta`` section)."""
    objectives = study_objectives(study)
    meta: dict[str, Any] = {
        "study": study.study_name,
        "trial": row.number,
        "rank": rank,
        "objectives": {o.name: {"value": _plain(v), "direction": o.direction}
                       for o, v in zip(objectives, row.values or (), strict=True)},
        "axes": dict(row.axes),
        "metrics": {k: _plain(v) for k, v in sorted(row.metrics.items())},
    }
    if row.anchor:
        meta["anchor"] = row.anchor
    space = study.user_attrs.get("space")
    if space:
        meta["space"] = space
    return meta


def export_top(study: optuna.Study, top: int, out_dir: str | Path) -> list[Path]:
    """``out_dir/rank<NN>-trial<N>.yaml`` for the ``top`` best distinct points; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ranked = rank_rows(study_rows(study), study_objectives(study))
    chosen, _ = pick_points(ranked, top)
    chosen = chosen[:top]  # named models are added by pick_points only for the proxy check
    rank_of = {row.number: index + 1 for index, row in enumerate(ranked)}
    paths = []
    for row in chosen:
        rank = rank_of[row.number]
        path = out / f"rank{rank:02d}-trial{row.number}.yaml"
        header = f"# exported from study '{study.study_name}', trial {row.number} (rank {rank})\n"
        path.write_text(header + point_to_yaml(row.model_point(), meta=point_meta(study, row, rank)))
        paths.append(path)
    return paths
