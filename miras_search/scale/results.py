"""Read a study's rung trials back: loss against compute per point, fits, and the ranking."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from miras_search.jsonio import json_text
from miras_search.scale.fit import FitError, PowerLaw, fit_power_law
from miras_search.scale.runner import is_rung_trial

TARGET_FACTOR = 10.0
"""Without --target-flops, points are ranked at 10x the largest compute of the ladder."""


@dataclass
class RungResult:
    """One rung of one point: its compute and the loss, averaged over its seeds."""

    rung: str
    index: int
    compute: float
    flops_per_token: float
    params: float | None
    loss: float
    seeds: int
    d_model: int
    n_layers: int
    seq_len: int
    tokens: int


@dataclass
class PointScaling:
    """A point's rungs, its power law (None with its reason when it cannot be fitted) and its
    loss extrapolated to the target compute."""

    label: str
    point_key: str
    rungs: list[RungResult]
    fit: PowerLaw | None = None
    fit_error: str = ""
    at_target: float = math.nan
    failures: list[str] = field(default_factory=list)


@dataclass
class ScaleTable:
    metric: str
    target_flops: float
    points: list[PointScaling]  # best first at the target; unfitted points last

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for point, raw in zip(self.points, out["points"], strict=True):
            raw["fit"] = asdict(point.fit) if point.fit is not None else None
        return out

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json_text(self.to_dict()))  # a value that is not finite: null

    def markdown(self) -> str:
        lines = [f"| rank | point | rungs | fit | {self.metric} at {self.target_flops:.3g} FLOPs |",
                 "|---|---|---|---|---|"]
        for place, point in enumerate(self.points, start=1):
            rungs = ", ".join(f"{r.loss:.4g} @ {r.compute:.3g}" for r in point.rungs)
            fit = point.fit.describe() if point.fit is not None else f"none: {point.fit_error}"
            value = f"{point.at_target:.4g}" if math.isfinite(point.at_target) else "-"
            rank = str(place) if math.isfinite(point.at_target) else "-"
            lines.append(f"| {rank} | {point.label} | {rungs} | {fit} | {value} |")
        return "\n".join(lines) + "\n"


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def scale_table(study: optuna.Study, metric: str, target_flops: float | None = None) -> ScaleTable | None:
    """The study's rung trials as a ranked table; None when it holds none."""
    trials = [t for t in study.get_trials(deepcopy=False) if is_rung_trial(t)]
    if not trials:
        return None
    by_point: dict[str, dict[str, list]] = {}
    labels: dict[str, str] = {}
    failures: dict[str, list[str]] = {}
    for trial in trials:
        key = str(trial.user_attrs.get("point_key"))
        labels.setdefault(key, str(trial.user_attrs.get("label") or trial.user_attrs.get("anchor") or key[:8]))
        attrs = trial.user_attrs["scale"]
        if trial.state != TrialState.COMPLETE:
            failures.setdefault(key, []).append(
                f"{attrs.get('rung')}: {trial.user_attrs.get('failure')}: {trial.user_attrs.get('reason')}")
            continue
        loss = _number((trial.user_attrs.get("metrics") or {}).get(metric))
        by_point.setdefault(key, {}).setdefault(attrs["rung"], []).append((attrs, loss))
    points = []
    for key in labels:
        rungs = []
        for rung, runs in (by_point.get(key) or {}).items():
            attrs = runs[0][0]
            losses = [loss for _, loss in runs]
            rungs.append(RungResult(
                rung, int(attrs.get("index", 0)), float(np.mean([_number(a["compute"]) for a, _ in runs])),
                _number(attrs.get("flops_per_token")), _number(attrs.get("params")),
                float(np.mean(losses)), len(runs), int(attrs["d_model"]), int(attrs["n_layers"]),
                int(attrs["seq_len"]), int(attrs["tokens"])))
        rungs.sort(key=lambda r: r.compute)
        points.append(PointScaling(labels[key], key, rungs, failures=failures.get(key, [])))
    largest = max((r.compute for p in points for r in p.rungs), default=math.nan)
    target = target_flops if target_flops is not None else TARGET_FACTOR * largest
    for point in points:
        try:
            point.fit = fit_power_law([r.compute for r in point.rungs], [r.loss for r in point.rungs], point.label)
            point.at_target = float(point.fit(target))
        except FitError as error:
            point.fit_error = str(error)
    points.sort(key=lambda p: (not math.isfinite(p.at_target), p.at_target if math.isfinite(p.at_target) else 0.0))
    return ScaleTable(metric, float(target), points)
