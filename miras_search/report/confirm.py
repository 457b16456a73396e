"""Proxy check: do short trials rank points the way longer training does?

The top points of a study and its named models are trained again with ``scale`` times the
token budget and several seeds; the short-trial score (the study's first objective) and the
seed-averaged long score are compared with Spearman and Kendall correlations and bootstrap CIs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from miras_search.errors import MirasError
from miras_search.presets import NAMED_MODELS
from miras_search.report.leaderboard import rank_rows
from miras_search.report.ranks import BOOTSTRAP_METHOD, Correlation, rank_agreement
from miras_search.report.study_data import ObjectiveInfo, TrialRow, study_objectives, study_rows
from miras_search.trial import Objective, TrialConfig, TrialResult, run_trial


@dataclass
class ConfirmEntry:
    """One re-trained point: its short score and the long score of each seed."""

    trial: int
    label: str
    anchor: str | None
    short: float
    tokens: int
    long: list[float] = field(default_factory=list)  # one per seed that completed
    failures: list[str] = field(default_factory=list)  # "seed 2: nan: ..." for the others

    @property
    def long_mean(self) -> float:
        return float(np.mean(self.long)) if self.long else float("nan")

    @property
    def long_std(self) -> float:
        return float(np.std(self.long, ddof=1)) if len(self.long) > 1 else float("nan")


@dataclass
class ConfirmResult:
    study: str
    objective: ObjectiveInfo
    scale: float
    seeds: list[int]
    entries: list[ConfirmEntry]
    correlations: list[Correlation]
    verdict: str
    predicts: bool | None  # None: too few points to tell
    method: str = f"{BOOTSTRAP_METHOD} over the points (seeded), on seed-averaged long scores"
    missing: list[str] = field(default_factory=list)  # named models the study did not measure

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for entry, raw in zip(self.entries, data["entries"], strict=True):
            raw["long_mean"], raw["long_std"] = entry.long_mean, entry.long_std
        return data

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, allow_nan=True) + "\n")

    @classmethod
    def read_json(cls, path: str | Path) -> ConfirmResult:
        """Read a ``write_json`` file; MirasError (naming the file) when it is unreadable or broken."""
        try:
            return cls._from_dict(json.loads(Path(path).read_text()))
        except OSError as error:
            raise MirasError(f"{path} cannot be read ({error.strerror or error})") from None
        except json.JSONDecodeError as error:
            raise MirasError(f"{path} is not valid JSON ({error.msg}, line {error.lineno})") from None
        except KeyError as error:
            raise MirasError(f"{path} is not a confirm result: it has no '{error.args[0]}'") from None
        except (TypeError, ValueError, AttributeError) as error:
            raise MirasError(f"{path} is not a confirm result ({error})") from None

    @classmethod
    def _from_dict(cls, data: Any) -> ConfirmResult:
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, found {type(data).__name__}")
        for entry in data["entries"]:
            entry.pop("long_mean", None)
            entry.pop("long_std", None)
        return cls(
            study=data["study"], objective=ObjectiveInfo(**data["objective"]), scale=data["scale"],
            seeds=data["seeds"], entries=[ConfirmEntry(**e) for e in data["entries"]],
            correlations=[Correlation(**c) for c in data["correlations"]], verdict=data["verdict"],
            predicts=data["predicts"], method=data["method"], missing=data.get("missing", []),
        )


def study_trial_config(study: optuna.Study) -> TrialConfig:
    """The study's trial config from its stored study file (``trial:`` section), else defaults."""
    stored = study.user_attrs.get("study_file") or {}
    section = stored.get("trial") if isinstance(stored, dict) else None
    return TrialConfig.model_validate(section) if isinstance(section, dict) else TrialConfig()


def pick_points(ranked: Sequence[TrialRow], top: int) -> tuple[list[TrialRow], list[str]]:
    """The ``top`` best distinct points, then every named-model anchor not among them.

    Returns (rows, named models the study has no complete trial of).
    """
    chosen: list[TrialRow] = []
    seen: set[str] = set()
    for row in ranked:
        key = row.point_key or json.dumps(row.point, sort_keys=True)
        if key in seen or row.reused_from is not None:
            continue
        seen.add(key)
        if len(chosen) < top:
            chosen.append(row)
    named = {r.anchor: r for r in ranked if r.anchor in NAMED_MODELS and r.reused_from is None}
    for name in NAMED_MODELS:
        if name in named and all(r.number != named[name].number for r in chosen):
            chosen.append(named[name])
    return chosen, [n for n in NAMED_MODELS if n not in named]


def stored_objective(study: optuna.Study, name: str) -> Objective | None:
    """The study file's objective called ``name`` (it knows weighted formulas), if stored."""
    stored = study.user_attrs.get("study_file") or {}
    for raw in (stored.get("objectives") or []) if isinstance(stored, dict) else []:
        try:
            objective = Objective.model_validate(raw)
        except ValueError:
            continue
        if objective.name == name:
            return objective
    return None


def objective_value(objective: ObjectiveInfo, config: TrialConfig, result: TrialResult,
                    formula: Objective | None = None) -> float:
    """The study objective's value from a re-run's metrics (same formula as the study)."""
    if formula is not None:
        try:
            return formula.value(result.metrics)
        except KeyError as error:
            raise MirasError(f"the long run cannot compute objective '{objective.name}': "
                             f"{error.args[0]}") from None
    if objective.name in result.metrics:
        return float(result.metrics[objective.name])
    if objective.name == config.objective.name and result.objective is not None:
        return float(result.objective)
    if objective.name in ("objective", "objective 0") and result.objective is not None:
        return float(result.objective)
    raise MirasError(
        f"the long run did not measure the study's objective '{objective.name}'; "
        f"measured: {', '.join(sorted(result.metrics))}"
    )


def _verdict(correlations: list[Correlation], n: int, scale: float) -> tuple[str, bool | None]:
    if n < 3 or not correlations:
        return (f"Too few points ({n}) completed the longer run to judge the proxy; "
                "confirm at least 3 points."), None
    rho = correlations[0]
    if math.isfinite(rho.low) and rho.low > 0:
        return (f"The short-trial score predicts the {scale:g}x longer run: {rho.describe()}."), True
    if not rho.value > 0:
        return (f"The short-trial score does NOT predict the {scale:g}x longer run: {rho.describe()}. "
                "Do not trust this study's short-trial ranking at the longer budget."), False
    return (f"The short-trial score is NOT shown to predict the {scale:g}x longer run: "
            f"{rho.describe()}; with {n} points the interval includes zero, so the short ranking may "
            "be unrelated to the long one. Confirm more points (--top) before trusting it."), False


Progress = Callable[[TrialRow, int, TrialResult], None]


def confirm_study(study: optuna.Study, *, top: int = 5, scale: float = 4.0, seeds: Sequence[int] = (0, 1, 2),
                  config: TrialConfig | None = None, device: str | None = None,
                  resamples: int = 2000, level: float = 0.95, bootstrap_seed: int = 0,
                  progress: Progress | None = None) -> ConfirmResult:
    """Re-train the top points and named models with ``scale`` x tokens per seed; correlate.

    Uses ``run_trial`` with the study's trial config (or ``config``), ``tokens`` = scale x the
    study's budget and ``seed`` from ``seeds``. Correlations use points whose long runs completed
    for at least one seed.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise MirasError(f"--scale must be a positive, finite number, got {scale}")
    if not seeds:
        raise MirasError("the proxy check needs at least one seed")
    objectives = study_objectives(study)
    objective = objectives[0]
    config = config or study_trial_config(study)
    formula = stored_objective(study, objective.name)
    chosen, missing = pick_points(rank_rows(study_rows(study), objectives), top)
    if not chosen:
        raise MirasError(f"study '{study.study_name}' has no complete trial to confirm")
    entries: list[ConfirmEntry] = []
    for row in chosen:
        point = row.model_point()
        tokens = max(1, round(scale * (config.tokens or point.train.tokens)))
        entry = ConfirmEntry(row.number, row.label, row.anchor, row.values[0], tokens)  # type: ignore[index]
        for seed in seeds:
            long_config = config.model_copy(update={"tokens": tokens, "seed": int(seed)})
            result = run_trial(point, long_config, device=device)
            if progress is not None:
                progress(row, int(seed), result)
            if result.ok:
                entry.long.append(objective_value(objective, long_config, result, formula))
            else:
                entry.failures.append(f"seed {seed}: {result.failure}: {result.reason}")
        entries.append(entry)
    usable = [e for e in entries if e.long]
    correlations: list[Correlation] = []
    if len(usable) >= 3:
        short = np.array([e.short for e in usable])
        long = np.array([e.long_mean for e in usable])
        correlations = rank_agreement(short, long, resamples=resamples, level=level, seed=bootstrap_seed)
    verdict, predicts = _verdict(correlations, len(usable), scale)
    return ConfirmResult(study.study_name, objective, scale, [int(s) for s in seeds], entries,
                         correlations, verdict, predicts, missing=missing)
