"""Open a finished (or running) study and read its trials through the storage contract.

The study layer stores, per trial, ``user_attrs`` with the point, its axis choices, the anchor
name, the metrics and the learning curve; per study, the objectives and the study file. This
module turns those into plain rows the report, the export and the proxy check share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial
from pydantic import ValidationError

from miras_search.errors import MirasError
from miras_search.file_kinds import plain_file_kind
from miras_search.paths import names_a_file, user_path
from miras_search.schema import AXES, ModelPoint
from miras_search.study.fidelity import describe as describe_fidelity
from miras_search.study.records import is_feasible, stored_point
from miras_search.study.setup import load_existing, refuse_literal_home
from miras_search.study.spec import Limit
from miras_search.study.storage import local_file_missing, make_storage, normalise
from miras_search.study.summary import pareto_front, ranked_scores
from miras_search.yamlio import read_yaml


@dataclass(frozen=True)
class ObjectiveInfo:
    """One objective of the study: the value ``trial.values[index]`` and which way is better."""

    name: str
    direction: str  # "minimize" | "maximize"

    @property
    def minimize(self) -> bool:
        return self.direction == "minimize"


@dataclass(frozen=True)
class BrokenLimit:
    """One limit a trial breaks: its metric (None when the study file is not stored), the rule
    alone ("val_bpb <= 5.36") and the sentence with the measured value."""

    metric: str | None
    rule: str
    sentence: str


@dataclass
class TrialRow:
    """One trial as the report sees it (the contract's user_attrs, decoded)."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    values: tuple[float, ...] | None
    axes: dict[str, str]
    anchor: str | None
    point: dict[str, Any] | None
    metrics: dict[str, float] = field(default_factory=dict)
    curve: list[tuple[int, float]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    failure: str | None = None  # why it failed or was pruned early: "nan", "limit", ...
    point_key: str | None = None
    reused_from: int | None = None
    feasible: bool = True  # inside every limit of the study (study.records.is_feasible)
    broken: tuple[BrokenLimit, ...] = ()  # the study's limits this trial breaks
    rank: int | None = None  # place in the study's ranking (`miras best`'s order); None: unranked
    on_front: bool = False  # on the study's Pareto front (for one objective: the best trial)
    fidelity: str = "base"  # the study's own budget, or a longer / larger run of the point (study.fidelity)
    ranked_values: tuple[float, ...] | None = None  # what the ranking used: the mean over ``runs`` runs
    runs: int = 1  # runs of the point at its highest fidelity that ``ranked_values`` averages

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE" and self.values is not None and all(
            math.isfinite(v) for v in self.values
        )

    @property
    def score(self) -> tuple[float, ...] | None:
        """The values to show beside the row: those it was ranked by (the mean over the runs of
        its point at its highest fidelity, e.g. the seeds of a `miras scale` rung), else its own."""
        return self.ranked_values if self.ranked_values is not None else self.values

    @property
    def broken_limits(self) -> tuple[str, ...]:
        """What each broken limit says: "val_bpb = 5.368 breaks val_bpb <= 5.36"."""
        return tuple(b.sentence for b in self.broken)

    @property
    def label(self) -> str:
        """``#12`` or ``#0 moneta`` for an anchor."""
        return f"#{self.number}" + (f" {self.anchor}" if self.anchor else "")

    def model_point(self) -> ModelPoint:
        """The stored point, validated; UnrebuildablePoint (a MirasError) when the trial carries
        none or a broken one (``study.records.stored_point``)."""
        return stored_point(self.point, self.number)


def _axes_of(trial: FrozenTrial) -> dict[str, str]:
    axes = trial.user_attrs.get("axes")
    if isinstance(axes, dict):
        return {axis: str(axes.get(axis, "?")) for axis in AXES}
    point = trial.user_attrs.get("point") or {}
    return {axis: str((point.get(axis) or {}).get("kind", "?")) for axis in AXES}


def study_limits(study: optuna.Study) -> list[Limit]:
    """The limits of the stored study file, in the order of each trial's ``constraints``;
    [] when the study stores none (or none this version can read)."""
    stored = study.user_attrs.get("study_file")
    raw = stored.get("limits") if isinstance(stored, dict) else None
    try:
        return [Limit.model_validate(limit) for limit in raw or []]
    except ValidationError:
        return []


def broken_limits(trial: FrozenTrial, limits: list[Limit]) -> tuple[BrokenLimit, ...]:
    """The limits the trial breaks (positive ``constraints`` entries), with the measured value
    when the trial stores it; a numbered limit when the study file is not stored."""
    violations = trial.user_attrs.get("constraints") or []
    metrics = trial.user_attrs.get("metrics") or {}
    broken = []
    for index, violation in enumerate(violations):
        if violation <= 0:
            continue
        if len(limits) != len(violations):
            broken.append(BrokenLimit(None, f"limit {index + 1}", f"breaks limit {index + 1} (by {violation:.4g})"))
            continue
        limit = limits[index]
        value = metrics.get(limit.metric)
        measured = f"{limit.metric} = {float(value):.4g} " if _is_number(value) else ""
        broken.append(BrokenLimit(limit.metric, limit.describe(), f"{measured}breaks {limit.describe()}"))
    return tuple(broken)


def trial_row(trial: FrozenTrial, limits: list[Limit] | None = None) -> TrialRow:
    """One trial as a row; ``limits`` (the study's) name the limits an infeasible trial breaks."""
    attrs = trial.user_attrs
    metrics = {k: float(v) for k, v in (attrs.get("metrics") or {}).items() if _is_number(v)}
    curve = [(int(step), float(loss)) for step, loss in attrs.get("curve") or []]
    return TrialRow(
        number=trial.number,
        state=trial.state.name,
        values=tuple(float(v) for v in trial.values) if trial.values is not None else None,
        axes=_axes_of(trial),
        anchor=attrs.get("anchor"),
        point=attrs.get("point"),
        metrics=metrics,
        curve=curve,
        params=dict(trial.params),
        reason=attrs.get("reason"),
        failure=attrs.get("failure"),
        point_key=attrs.get("point_key"),
        reused_from=attrs.get("reused_from"),
        feasible=is_feasible(trial),
        broken=broken_limits(trial, limits or []),
        fidelity=describe_fidelity(trial),
    )


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def study_rows(study: optuna.Study) -> list[TrialRow]:
    """Every trial of ``study`` as a row, in trial-number order, with its place in the study
    layer's ranking (``study.summary.ranked``: feasible, non-duplicate complete trials, as
    ``miras best`` orders them) and whether it is on the study's Pareto front."""
    limits = study_limits(study)
    rows = [trial_row(t, limits) for t in study.get_trials(deepcopy=False)]
    by_number = {row.number: row for row in rows}
    for place, score in enumerate(ranked_scores(study), start=1):
        row = by_number[score.trial.number]
        row.rank, row.ranked_values, row.runs = place, score.values, score.runs
    for trial in pareto_front(study):
        by_number[trial.number].on_front = True
    return rows


def study_objectives(study: optuna.Study) -> list[ObjectiveInfo]:
    """The objectives from the study's ``objectives`` user attribute, else generic names."""
    stored = study.user_attrs.get("objectives")
    directions = [d.name.lower() for d in study.directions]
    if isinstance(stored, list) and len(stored) == len(directions):
        return [ObjectiveInfo(str(o.get("name", f"objective {i}")), str(o.get("direction", d)))
                for i, (o, d) in enumerate(zip(stored, directions, strict=True))]
    if len(directions) == 1:
        return [ObjectiveInfo("objective", directions[0])]
    return [ObjectiveInfo(f"objective {i}", d) for i, d in enumerate(directions)]


def count_states(rows: list[TrialRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    return counts


# -- opening a study from the command line ------------------------------------------------------


def storage_from_spec(spec: str | Path) -> BaseStorage:
    """The Optuna storage of a URL (``sqlite:///x.db``, ``postgresql+psycopg://...``) or of an
    existing file (a ``.db`` / ``.sqlite`` file is SQLite, any other an Optuna journal), opened as
    the study commands open it (miras_search.study.storage). Nothing is created: a missing file
    is a MirasError."""
    url = normalise(str(spec))
    refuse_literal_home(str(spec), url, "--storage", str(spec))
    if local_file_missing(url):
        raise MirasError(f"storage {url} does not exist (run the study first)")
    return make_storage(url)


def _default_storage(name: str, runs: Path) -> BaseStorage:
    folder = runs / name
    for candidate in ("study.journal", "study.db", "study.sqlite", "journal.log", "study.log"):
        if (folder / candidate).exists():
            return storage_from_spec(folder / candidate)
    raise MirasError(
        f"no storage found for study '{name}': looked for study.journal / study.db under {folder}; "
        "pass --storage URL_OR_FILE, or run the study first (`miras run STUDY`)"
    )


def _from_study_layer(path: Path, storage: str | None) -> optuna.Study | None:
    """Use the study package's own ``open_study`` when it exists (it knows its storage defaults)."""
    try:
        from miras_search.study import open_study  # type: ignore[attr-defined]
    except ImportError:
        return None
    return open_study(path, storage)


def other_file_kind(data: dict[str, Any]) -> str | None:
    """'point' or 'space' when ``data`` is plainly that kind of file rather than a study; None
    otherwise."""
    kind = plain_file_kind(data)
    return kind if kind in ("point", "space") else None


def _check_study_kind(path: Path) -> None:
    """MirasError, in one line, when the file at ``path`` is a point or space file, not a study."""
    data, _ = read_yaml(path)
    kind = other_file_kind(data)
    if kind is not None:
        raise MirasError(f"{path} is a {kind} file, not a study file; give a study file (the one "
                         "`miras run` ran) or a study name")


def open_report_study(ref: str | Path, storage: str | None = None, runs: str | Path = "runs") -> optuna.Study:
    """The Optuna study behind ``ref``: a study YAML file, or a study name (+ ``storage``).

    A file goes through the study package's ``open_study`` when it is installed; otherwise its
    ``name`` and ``storage`` are read here (``storage`` overrides). Without a storage the study's
    default folder ``<run_dir>/<name>/`` is searched. MirasError when nothing matches.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = Path(ref)
    if path.is_dir():
        raise MirasError(f"{path} is a directory, not a YAML file; give a study file (or a study name)")
    if names_a_file(path):
        _check_study_kind(path)
        study = _from_study_layer(path, storage)
        if study is not None:
            return study
        data, _ = read_yaml(path)
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise MirasError(f"{path}: a study file needs a 'name' (the Optuna study's name)")
        spec = storage or data.get("storage")
        run_dir = data.get("run_dir") if isinstance(data.get("run_dir"), str) else runs
        resolved = storage_from_spec(spec) if isinstance(spec, str) else _default_storage(name, user_path(run_dir))
    elif str(ref).endswith((".yaml", ".yml")):
        raise MirasError(f"study file {ref} does not exist")
    else:
        name = str(ref)
        resolved = storage_from_spec(storage) if storage else _default_storage(name, user_path(runs))
    return load_existing(name, resolved, "the storage")
