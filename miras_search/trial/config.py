"""Trial configuration: the data mix, the budget, evaluation, failure bounds and the objective."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from miras_search.data import MAD_TASKS, PRESETS, SYNTHETIC_TASKS, DataSpec
from miras_search.data.text_sources import TextCorpus, _TextSpec
from miras_search.schema import ModelPoint
from miras_search.schema._base import Schema
from miras_search.schema.train import MAX_TOKENS, batch_cover_problem

Direction = Literal["minimize", "maximize"]


class Objective(Schema):
    """The number a trial is ranked by: one metric, or a weighted sum of metrics (minimised).

    ``metric: val_bpb`` ranks by validation bits per byte; ``weights: {val_bpb: 1.0,
    acc/mqar: -0.5}`` ranks by ``val_bpb - 0.5 * acc/mqar`` (lower is better).
    """

    metric: str | None = Field("val_loss", description="A metric name, e.g. val_bpb, acc/mqar.")
    direction: Direction = "minimize"
    weights: dict[str, float] | None = Field(None, description="Weighted score (minimised).")

    @model_validator(mode="after")
    def _one_form(self) -> Objective:
        if self.weights is not None:
            if not self.weights:
                raise ValueError("'weights' must name at least one metric")
            if self.direction != "minimize":
                raise ValueError("a weighted score is minimised; flip the signs of its weights")
        return self

    @property
    def name(self) -> str:
        if self.weights is None:
            return str(self.metric)
        return " + ".join(f"{w:g}*{m}" for m, w in self.weights.items())

    def value(self, metrics: dict[str, float]) -> float:
        """The objective's value from a metrics dict; KeyError names a missing metric."""
        if self.weights is None:
            return _get(metrics, str(self.metric))
        return sum(w * _get(metrics, m) for m, w in self.weights.items())


def _get(metrics: dict[str, float], name: str) -> float:
    if name not in metrics:
        known = ", ".join(sorted(metrics))
        raise KeyError(f"metric '{name}' was not measured by this trial; measured: {known}")
    return float(metrics[name])


RUN_METRICS = (
    "params", "state_size", "memory_estimate_mb", "train_loss", "kernel_share", "compiled", "tokens",
    "tokens_per_s", "train_s", "eval_s", "data_s", "outside_step_share", "peak_mem_mb", "weights_mb",
    "saved_weights", "wall_s",
)
"""Metrics every trial can give, whatever its data (trial.runner): size, speed, time and memory."""


def data_metric_names(tasks: Sequence[str]) -> list[str]:
    """The evaluation metrics of a data mix whose sources have these ``tasks``, in mix order
    (trial.evaluate): ``loss/<label>`` per source, ``acc/<label>`` per synthetic source,
    ``bpb/<label>`` per text source, ``val_loss``; ``val_bpb`` with text, ``acc_mean`` with
    synthetic tasks, ``mad/<task>`` and ``mad_score`` with MAD tasks. A label is the task's name,
    or ``index:task`` when a task repeats (trial.evaluate.source_labels)."""
    labels = [t if tasks.count(t) == 1 else f"{i}:{t}" for i, t in enumerate(tasks)]
    names = ["val_loss"]
    for task, label in zip(tasks, labels, strict=True):
        names.append(f"loss/{label}")
        names.append(f"acc/{label}" if task in SYNTHETIC_TASKS else f"bpb/{label}")
    if any(t not in SYNTHETIC_TASKS for t in tasks):
        names.append("val_bpb")
    if any(t in SYNTHETIC_TASKS for t in tasks):
        names.append("acc_mean")
    mad = [t for t in dict.fromkeys(tasks) if t in MAD_TASKS]
    if mad:
        names += [f"mad/{t}" for t in mad] + ["mad_score"]
    return names


def metric_problem(name: str, known: Iterable[str], seeds: Sequence[int] = ()) -> str | None:
    """Why ``name`` is no metric of ``known`` (with a did-you-mean), or None when it is one.

    With several ``seeds`` a trial also gives each metric of each seed, as ``<metric>/seed<N>``
    (study.execute)."""
    known = sorted(set(known))
    per_seed = {f"{m}/seed{s}" for m in known for s in seeds} if len(seeds) > 1 else set()
    if name in known or name in per_seed:
        return None
    close = difflib.get_close_matches(name, [*known, *sorted(per_seed)], n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    also = " (and <metric>/seed<N> for each of the study's seeds)" if per_seed else ""
    return (f"'{name}' is not a metric a trial of this data measures; {hint}the metrics are: "
            f"{', '.join(known)}{also}")


def _default_data() -> list[Any]:
    return [TextCorpus()]


class TrialConfig(Schema):
    """How one point is trained and measured. Budget fields override the point's ``train``."""

    data: list[DataSpec] = Field(
        default_factory=_default_data, min_length=1,
        description=f"Data sources, or the name of a preset data list: {', '.join(PRESETS)}.",
    )
    tokens: int | None = Field(
        None, ge=1, le=MAX_TOKENS,
        description="Training tokens (default: point.train.tokens), rounded down to whole batches "
                    "(at most 10^13).",
    )
    batch_size: int | None = Field(None, ge=1, le=4096)
    seq_len: int | None = Field(None, ge=1, le=1_048_576)
    eval_batches: int = Field(4, ge=1, description="Held-out batches per data source.")
    eval_batch_size: int | None = Field(None, ge=1, le=4096, description="Default: the training batch size.")
    report_every: int = Field(
        10, ge=1,
        description="Steps between intermediate reports (pruning); the final step is reported too, never pruned.",
    )
    seed: int | None = Field(None, ge=0, description="Default: point.train.seed.")
    time_limit_s: float | None = Field(None, gt=0, description="Wall-clock limit of one trial.")
    max_loss: float = Field(20.0, gt=0, description="A training loss above this means divergence.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, le=256, description="torch CPU threads (default: torch's).")
    memory_limit_gb: float | None = Field(
        None, gt=0, description="Memory one trial may use; a point whose estimate is over it, or "
        "that allocates past it, fails as 'oom'. Default: 80% of the GPU's memory, or of the RAM "
        "shared by the trials running side by side.",
    )
    objective: Objective = Field(default_factory=Objective)

    @model_validator(mode="after")
    def _budget_covers_a_batch(self) -> TrialConfig:
        """``tokens`` cover one batch of every data source, where the config sets the batch
        (``batch_size``, and ``seq_len`` or a source's own): otherwise every trial would fail."""
        problem = self.budget_problem()
        if problem is not None:
            raise ValueError(f"tokens: {problem}")
        return self

    def budget_problem(self, batch_size: int | None = None, seq_len: int | None = None,
                       tokens: int | None = None) -> str | None:
        """Why the budget cannot train one batch of the longest data source (None when it can,
        or when what decides it is not known): ``tokens``, ``batch_size`` and ``seq_len`` are
        this config's, else the ones given (a point's, where the config leaves them to it)."""
        tokens = self.tokens if self.tokens is not None else tokens
        batch_size = self.batch_size if self.batch_size is not None else batch_size
        seq_len = self.seq_len if self.seq_len is not None else seq_len
        if tokens is None or batch_size is None:
            return None
        lengths = [(spec.seq_len, f" of trial.data.{index} ({spec.task})") if spec.seq_len is not None
                   else (seq_len, "") for index, spec in enumerate(self.data)]
        known = [(length, where) for length, where in lengths if length is not None]
        if not known:
            return None
        longest, where = max(known, key=lambda item: item[0])
        return batch_cover_problem(tokens, batch_size, longest, seq_len_of=where)

    @field_validator("data", mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        """A preset's name (``data: mad``) stands for its data list (data.mad_suite.PRESETS)."""
        if isinstance(value, str):
            if value not in PRESETS:
                raise ValueError(f"'{value}' is not a data preset; the presets are {', '.join(PRESETS)}, "
                                 "or give a list of data sources")
            return [dict(spec) for spec in PRESETS[value]]
        return value

    def relative_to(self, *folders: str | os.PathLike[str] | None) -> TrialConfig:
        """This config with its data's relative paths (``files`` paths, tokenizer files) read from
        ``folders``, the folder of the study or trial config file that names them and, when that
        file is a symbolic link, the folder of the file it points to (``paths.input_folders``;
        else from the
        working directory, as before they were read beside their file). The paths stay as written
        in the config (what a study stores and compares); ``located`` gives them absolute."""
        for spec in self.data:
            if isinstance(spec, _TextSpec):
                spec.relative_to(*folders)
        return self

    def located(self) -> TrialConfig:
        """A copy whose data paths are absolute (``relative_to``): what is sent to a worker, whose
        working directory may be another."""
        data = [spec.located() if isinstance(spec, _TextSpec) else spec for spec in self.data]
        return self.model_copy(update={"data": data})

    def metric_names(self) -> list[str]:
        """Every metric a trial of this config can measure: its data's and every run's."""
        return data_metric_names([spec.task for spec in self.data]) + list(RUN_METRICS)

    def apply(self, point: ModelPoint) -> ModelPoint:
        """``point`` with this config's budget and seed in its ``train`` section (re-validated)."""
        overrides = {
            key: value
            for key, value in {
                "tokens": self.tokens, "batch_size": self.batch_size,
                "seq_len": self.seq_len, "seed": self.seed,
            }.items()
            if value is not None
        }
        if not overrides:
            return point
        data = point.model_dump()
        data["train"].update(overrides)
        return ModelPoint.model_validate(data)
