"""The YAML study format: space + trial config + objectives + sampler + pruner + budget + storage.

```yaml
type: study
name: quickstart
space: ../spaces/quickstart.yaml      # relative to this file (or to the working directory)
trial: {data: [{task: text}], tokens: 32768}
objectives:
  - {metric: val_bpb, direction: minimize}
  - {metric: tokens_per_s, direction: maximize}
limits: [{metric: params, max: 2.0e5}]  # constraints: a point over budget is not trained
sampler: {kind: nsgaii, seed: 0, anchors: [moneta, yaad, memora]}
pruner: {kind: none}
trials: 24
```
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from miras_search.errors import ConfigError, MirasError, Problem
from miras_search.file_kinds import plain_file_kind
from miras_search.paths import input_folders, locate_input, user_path
from miras_search.presets import BASELINES, PRESET_AXES
from miras_search.schema import ModelPoint
from miras_search.schema._base import Schema
from miras_search.schema.train import SEED_MAX, batch_cover_problem
from miras_search.space import SearchSpace
from miras_search.study.budget_spec import BudgetSpec
from miras_search.study.scale_spec import ScaleSpec, not_a_scale_point, scale_point_file
from miras_search.trial import Objective, TrialConfig
from miras_search.trial.config import metric_problem
from miras_search.validation import validate
from miras_search.yamlio import LineMap, ancestor_line, read_yaml

SamplerKind = Literal["tpe", "nsgaii", "cmaes", "random", "grid", "anchors"]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
NAME_RULE = ("start with a letter or a digit, then use letters, digits, '_', '-' and '.' only "
             "(it names a folder)")
NAME_MAX = 120

# Metrics a trial knows before training (from the point alone): limits on them skip training.
PRE_TRAINING_METRICS = ("params", "state_size")


class Limit(Schema):
    """A constraint on a measured metric: a point outside [min, max] is infeasible.

    Limits on ``params`` or ``state_size`` are checked before training (the trial is pruned
    at once, reason "limit"); others after training (samplers that support constraints, tpe and
    nsgaii, learn from them; ``miras best`` shows only feasible points).
    """

    metric: str = Field(..., min_length=1)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounded(self) -> Limit:
        if self.min is None and self.max is None:
            raise ValueError("a limit needs 'min' or 'max'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"'min' {self.min:g} is above 'max' {self.max:g}")
        return self

    def violation(self, value: float) -> float:
        """How far ``value`` is outside the limit (<= 0 when it is inside): Optuna's convention."""
        over = value - self.max if self.max is not None else float("-inf")
        under = self.min - value if self.min is not None else float("-inf")
        return max(over, under)

    def describe(self) -> str:
        low = "" if self.min is None else f"{self.min:g} <= "
        high = "" if self.max is None else f" <= {self.max:g}"
        return f"{low}{self.metric}{high}"


class SamplerSpec(Schema):
    """How points are proposed. ``anchors`` are measured first (same budget as searched points)."""

    kind: SamplerKind = "tpe"
    seed: int = Field(0, ge=0)
    anchors: list[str] | Literal["all"] = Field(
        default_factory=lambda: list(BASELINES),
        description="Points run first: preset names or point files (.yaml, relative to the study "
        "file); 'all' for every preset, [] for none.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword arguments of the Optuna sampler."
    )

    @field_validator("seed")
    @classmethod
    def _seed_in_range(cls, value: int) -> int:
        # a validator, not a Field bound: the committed JSON Schema stays as it is
        if value > SEED_MAX:
            raise ValueError(f"must be at most {SEED_MAX} (2**32 - 1, the largest seed Optuna's "
                             f"samplers take), not {value}")
        return value

    @field_validator("anchors")
    @classmethod
    def _known(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list):
            unknown = [n for n in value if n not in PRESET_AXES and not is_point_file(n)]
            if unknown:
                raise ValueError(f"unknown preset(s) {', '.join(unknown)}; known: {', '.join(PRESET_AXES)}, "
                                 "or a point file (.yaml)")
            if len(set(value)) != len(value):
                raise ValueError("an anchor is listed twice")
        return value

    @property
    def anchor_names(self) -> list[str]:
        return list(PRESET_AXES) if self.anchors == "all" else list(self.anchors)


class PrunerSpec(Schema):
    """Early stopping of bad trials from their learning curve: the study's objective on a one-batch
    validation pass every ``trial.report_every`` steps (the training loss for an objective that
    validation cannot give, such as throughput); single objective only."""

    kind: Literal["median", "hyperband", "none"] = "median"
    n_startup_trials: int = Field(4, ge=0, description="median: trials finished before pruning starts.")
    n_warmup_steps: int = Field(0, ge=0, description="median: steps before a trial can be pruned.")
    min_resource: int = Field(1, ge=1, description="hyperband: smallest step budget.")
    reduction_factor: int = Field(3, ge=2, description="hyperband: successive halving rate.")


class ParallelSpec(Schema):
    """Where trials run: Ray workers (a local instance by default), one trial per worker."""

    workers: int = Field(1, ge=1, le=1024)
    address: str | None = Field(None, description="Join a running Ray cluster (e.g. 'auto', 'host:6379').")
    gpus_per_trial: float | None = Field(
        None, ge=0, description=(
            "GPUs each trial holds: a fraction below 1 (0.5, 0.25) runs several trials on one GPU, "
            "above 1 a whole number. Default: 1 when the cluster has GPUs, else 0."
        ),
    )
    shared_storage: bool = Field(
        False, description="The storage file is on a file system every node of the cluster mounts."
    )

    @field_validator("gpus_per_trial")
    @classmethod
    def _whole_above_one(cls, value: float | None) -> float | None:
        problem = None if value is None else gpus_per_trial_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


def gpus_per_trial_problem(value: float) -> str | None:
    """Why ``value`` is no GPU request Ray can grant a trial (None: it is one): a finite number
    >= 0, a fraction below 1 (trials share a GPU), or a whole number of GPUs."""
    if not math.isfinite(value) or value < 0:
        return f"GPUs per trial must be a finite number >= 0, not {value}"
    if value > 1 and value != int(value):
        return (f"GPUs per trial above 1 must be a whole number, not {value}: Ray shares a GPU "
                "only in fractions below 1 (use e.g. 0.25, 0.5, 1 or 2)")
    return None


class TrackingSpec(Schema):
    """W&B: one run per trial and a summary run. Offline by default (no login, no network)."""

    wandb: Literal["offline", "online", "off"] = "offline"
    project: str = "miras-search"
    entity: str | None = None

    @field_validator("wandb", mode="before")
    @classmethod
    def _unquoted_off(cls, value: Any) -> Any:
        """YAML 1.1 reads an unquoted ``off`` / ``no`` as false: that can only mean 'off'."""
        if value is False:
            return "off"
        if value is True:
            raise ValueError("YAML reads an unquoted on / yes / true as a boolean: write 'online' "
                             "or 'offline' (in quotes)")
        return value


class CheckpointSpec(Schema):
    """Keep the final weights of the study's best trials, in <run_dir>/<name>/checkpoints/
    (``trial<N>.pt``; `miras train --from`, `miras export --weights`, `miras eval` read them).
    On a cluster the run_dir must be on a file system every node mounts."""

    keep: int = Field(0, ge=0, le=1000, description="Best trials whose final weights are kept; 0: none.")
    max_mb: float = Field(512.0, gt=0, description="Weights larger than this (MiB) are not saved.")


class StudyFile(Schema):
    """A declared study: what to search, how to measure, how to search, where to keep results."""

    type: Literal["study"] = "study"
    name: str = Field(..., min_length=1, max_length=NAME_MAX, description="Optuna study name; runs/<name>/.")
    description: str = ""
    space: str = Field(..., min_length=1, description="Space file, relative to this file (else to the "
                       "working directory); '~' is the home folder.")
    trial: TrialConfig = Field(default_factory=TrialConfig)
    objectives: list[Objective] = Field(default_factory=lambda: [Objective()], min_length=1)
    limits: list[Limit] = Field(default_factory=list)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    trials: int | None = Field(None, ge=1, description="Finished trials to reach (anchors included).")
    timeout_s: float | None = Field(None, gt=0, description="Wall-clock budget of one run/resume.")
    seeds: list[Annotated[int, Field(ge=0, le=SEED_MAX)]] | None = Field(
        None, min_length=1, description="Train every point once per seed; metrics are averaged."
    )
    storage: str | None = Field(
        None, description="Optuna storage URL, or a file path: a journal (default "
        "runs/<name>/study.journal), or SQLite for a .db / .sqlite file. Like run_dir, a relative "
        "path is taken from the working directory (inputs such as 'space' from this file's folder); "
        "'~' is the home folder."
    )
    run_dir: str = Field("runs", description="Folder of the study's outputs (journal, W&B runs), "
                         "relative to the working directory; '~' is the home folder.")
    parallel: ParallelSpec = Field(default_factory=ParallelSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    checkpoints: CheckpointSpec = Field(default_factory=CheckpointSpec)
    scale: ScaleSpec | None = Field(None, description="`miras scale`: points, ladder and target compute.")
    budget: BudgetSpec = Field(default_factory=BudgetSpec)

    _source: str = PrivateAttr("<study>")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        problem = name_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _coherent(self) -> StudyFile:
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):  # first: the advice below would be wrong for a repeat
            raise ValueError("objectives: an objective is listed twice")
        multi = len(self.objectives) > 1
        if multi and self.pruner.kind != "none":
            raise ValueError("pruner.kind: pruning needs a single objective; use 'pruner: {kind: none}'")
        if multi and self.sampler.kind == "cmaes":
            raise ValueError("sampler.kind: cmaes is single-objective; use nsgaii, tpe or random")
        if self.trials is None and self.timeout_s is None and self.sampler.kind not in ("grid", "anchors"):
            raise ValueError("trials: give 'trials' (a number of finished trials) or 'timeout_s'")
        return self

    @property
    def source(self) -> str:
        return self._source

    @property
    def objective_records(self) -> list[dict[str, str]]:
        """``[{"name", "direction"}]`` in file order (the study's ``objectives`` user attr)."""
        return [{"name": o.name, "direction": o.direction} for o in self.objectives]

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def space_path(self) -> Path:
        """The space file: absolute as written (``~`` read as the home folder), else beside the
        study file (beside a symbolic link to it, then beside the file it points to), else from
        the working directory (``paths.input_places``); where it would be when it is nowhere."""
        return locate_input(self.space, input_folders(self._source), "space file", strict=False)

    def load_space(self) -> SearchSpace:
        try:
            path = locate_input(self.space, input_folders(self._source), "space file")
        except MirasError as error:
            raise ConfigError(self._source, [Problem("space", str(error))]) from None
        return SearchSpace.load(path)

    def sample_trial_points(self, n: int, seed: int = 0) -> tuple[list[ModelPoint], int]:
        """``n`` points drawn from the space with the study's trial settings applied, as its trials
        train them, and how many of the ``n`` the trial budget does not fit (the study fails those
        without training; they are not in the list)."""
        points, unfit = [], 0
        for point in self.load_space().sample(n, seed=seed):
            try:
                points.append(self.trial.apply(point))
            except ValueError:
                unfit += 1
        return points, unfit

    def out_dir(self) -> Path:
        """``<run_dir>/<name>``, ``~`` in run_dir read as the home folder (as W&B reads it)."""
        return user_path(self.run_dir) / self.name

    def checkpoint_dir(self) -> Path:
        """Absolute, as workers elsewhere need it: <run_dir>/<name>/checkpoints."""
        return (self.out_dir() / "checkpoints").resolve()


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a study (its folder under run_dir), or None when it can."""
    if not _NAME.fullmatch(name):  # not match: '$' also matches before a final newline
        return NAME_RULE
    if len(name) > NAME_MAX:
        return f"at most {NAME_MAX} characters, not {len(name)}"
    return None


def metric_problems(study: StudyFile, lines: LineMap | None = None) -> list[Problem]:
    """The objectives', limits' and ``scale.metric``'s metric names that no trial of the study's
    data measures (TrialConfig.metric_names), each at its field and line, with a did-you-mean."""
    known = study.trial.metric_names()
    seeds = study.seeds or []
    named: list[tuple[tuple[str, ...], str]] = []
    for index, objective in enumerate(study.objectives):
        if objective.weights is not None:
            named += [(("objectives", str(index), "weights", m), m) for m in objective.weights]
        elif objective.metric is not None:
            named.append((("objectives", str(index), "metric"), objective.metric))
    named += [(("limits", str(index), "metric"), limit.metric) for index, limit in enumerate(study.limits)]
    if study.scale is not None:
        named.append((("scale", "metric"), study.scale.metric))
    problems = []
    for path, metric in named:
        # a rung trial of `miras scale` is one seed: no per-seed metrics there
        problem = metric_problem(metric, known, [] if path[0] == "scale" else seeds)
        if problem is not None:
            problems.append(Problem(".".join(path), problem, ancestor_line(lines or {}, path, root=True)))
    return problems


def rung_batch_problems(study: StudyFile, lines: LineMap | None = None) -> list[Problem]:
    """The ``scale.rungs`` whose tokens do not cover one batch (batch_size * seq_len), where the
    file sets the batch (scale.batch_size or trial.batch_size); otherwise each point's own batch
    size decides, which `miras scale` checks once it knows the points."""
    batch_size = None if study.scale is None else study.scale.batch_size or study.trial.batch_size
    if study.scale is None or batch_size is None:
        return []
    problems = []
    for index, rung in enumerate(study.scale.rungs):
        problem = batch_cover_problem(rung.tokens, batch_size, rung.seq_len)
        if problem is not None:
            path = ("scale", "rungs", str(index), "tokens")
            problems.append(Problem(".".join(path), problem, ancestor_line(lines or {}, path, root=True)))
    return problems


def storage_problems(study: StudyFile, lines: LineMap | None = None) -> list[Problem]:
    """``storage`` where it is a URL no command can open (an unknown database scheme): the check
    every command that opens the storage makes (``study.storage.normalise``), at its line."""
    from miras_search.study.storage import normalise

    if study.storage is None:
        return []
    try:
        normalise(study.storage)
    except MirasError as error:
        return [Problem("storage", str(error), (lines or {}).get(("storage",)))]
    return []


def scale_point_problems(study: StudyFile, lines: LineMap | None = None) -> list[Problem]:
    """``scale.points`` that `miras scale` could not read (neither a preset nor a point file, or
    a point file that does not load), each at its line, in the words `miras scale` uses; files
    are read as it reads them (``scale_spec.scale_point_file``)."""
    from miras_search.points import load_point

    if study.scale is None:
        return []
    problems = []
    for index, name in enumerate(study.scale.points):
        if name in PRESET_AXES:
            continue
        where = ("scale", "points", str(index))
        path = scale_point_file(name, input_folders(study.source))
        message = not_a_scale_point(name, list(PRESET_AXES)) if path is None else None
        if path is not None:
            try:
                load_point(path)
            except MirasError as error:
                message = f"the point file does not load: {error}"
        if message is not None:
            problems.append(Problem(".".join(where), message, ancestor_line(lines or {}, where, root=True)))
    return problems


def is_point_file(anchor: str) -> bool:
    """Whether an anchor names a point file (``.yaml`` / ``.yml``) rather than a preset."""
    return anchor.endswith((".yaml", ".yml"))


def anchor_points(study: StudyFile) -> dict[str, ModelPoint]:
    """The study's point-file anchors: label (as written) -> the point, each file read relative
    to the study file. ConfigError names a file that is missing or is not a valid point."""
    from miras_search.points import load_point

    folders = input_folders(study.source)
    points = {}
    for index, anchor in enumerate(study.sampler.anchor_names):
        if not is_point_file(anchor):
            continue
        try:
            path = locate_input(anchor, folders, "point file")
        except MirasError as error:
            raise ConfigError(study.source, [Problem(f"sampler.anchors.{index}", str(error))]) from None
        points[anchor] = load_point(path)
    return points


def load_study_dict(data: dict[str, Any], source: str = "<study>",
                    lines: LineMap | None = None) -> StudyFile:
    """Validate a study mapping (and, when ``source`` is a file, that its space file loads)."""
    study = validate(StudyFile, data, source, lines)
    study._source = source
    is_file = source != "<study>" and Path(source).exists()
    if is_file:  # its data files and tokenizers are read beside it, as its space is
        study.trial.relative_to(*input_folders(source))
    problems = (metric_problems(study, lines) + rung_batch_problems(study, lines)
                + storage_problems(study, lines))
    if is_file:
        problems += scale_point_problems(study, lines)
    if problems:
        raise ConfigError(source, problems)
    if is_file:
        if study.space_path().resolve() == Path(source).resolve():
            raise ConfigError(source, [Problem("space", "names this study file itself; give a space file "
                                               "(type: space, with its preset, params and constraints)",
                                               (lines or {}).get(("space",)))])
        try:
            study.load_space()
        except ConfigError as error:
            if error.source == source:
                raise
            raise ConfigError(source, [Problem(
                "space", f"the space file does not load: {error}", (lines or {}).get(("space",))
            )]) from None
        except MirasError as error:
            raise ConfigError(source, [Problem("space", str(error), (lines or {}).get(("space",)))]) from None
        anchor_points(study)  # point-file anchors load, or ConfigError now rather than mid-study
    return study


def load_study_file(path: str | Path) -> StudyFile:
    """A validated study file; ConfigError names each bad field and its line, and says so in one
    line when the file is plainly a point or a space file instead."""
    data, lines = read_yaml(path)
    kind = plain_file_kind(data)
    if kind in ("point", "space"):
        raise ConfigError(str(path), [Problem("", f"this is a {kind} file, not a study file; give a "
                                                  "study file (type: study, with its space, "
                                                  "objectives and trial settings)", 1)])
    return load_study_dict(data, str(path), lines)
