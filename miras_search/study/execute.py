"""The worker side of a trial: run a point (once per seed), reporting to the study for pruning.

Runs the same way inside the driver (inline) and in a Ray worker; it only needs the storage URL
to report intermediate values, so pruning decisions see every worker's curves.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna

from miras_search.model import pick_device
from miras_search.schema import ModelPoint
from miras_search.study.samplers import make_pruner
from miras_search.study.spec import PrunerSpec
from miras_search.study.storage import make_storage
from miras_search.trial import Objective, TrialConfig, TrialResult, run_trial
from miras_search.trial.memory_limit import (
    gpu_memory_limit,
    process_memory_limit,
    trial_memory_limit,
)
from miras_search.trial.result import merge_seeds
from miras_search.trial.runner import Weights

log = logging.getLogger(__name__)
_STUDIES: dict[tuple[str, str], optuna.Study] = {}


class LiveRun(Protocol):
    """A trial's live log (W&B: ``tracking.trial_run.TrialRun``), written while the trial runs.

    The tracker hands its class to the driver, which puts it on the task (a class crosses process
    lines as its import path), so this layer never imports the tracking one.
    """

    def __init__(self, settings: dict[str, Any]) -> None: ...
    def hooks(self, report): ...  # -> (report, progress) for run_trial
    def close(self, result: TrialResult) -> None: ...
    def start_error(self) -> str | None: ...  # why the study's runs could not start here, if so
    @staticmethod
    def flush() -> None: ...  # wait for the runs this process is still writing


_LIVE_KINDS: set[type] = set()  # live-run classes used in this process (flush_live_runs)
_LAST_LIVE: list[LiveRun] = []  # the latest live run of this process: its start_error after a flush


@dataclass
class TrialTask:
    """Everything a worker needs to run one asked trial (plain data: it crosses process lines)."""

    trial_id: int
    number: int
    study_name: str
    storage: str | None
    point: dict[str, Any]
    config: dict[str, Any]
    seeds: list[int] | None = None
    pruner: dict[str, Any] | None = None  # None: no intermediate reports (multi-objective)
    extra: dict[str, Any] = field(default_factory=dict)
    live: type[LiveRun] | None = None  # logs the trial while it runs, with settings extra['wandb']


def _study(task: TrialTask) -> optuna.Study:
    key = (str(task.storage), task.study_name)
    if key not in _STUDIES:
        _STUDIES[key] = optuna.load_study(
            study_name=task.study_name, storage=make_storage(str(task.storage)),
            pruner=make_pruner(PrunerSpec(**task.pruner or {})),
        )
    return _STUDIES[key]


def _reporter(task: TrialTask, study: optuna.Study | None):
    if task.pruner is None or (study is None and task.storage is None):
        return None
    trial = optuna.Trial(study or _study(task), task.trial_id)
    warned = []

    def report(step: int, loss: float) -> bool:
        try:
            trial.report(loss if math.isfinite(loss) else float("inf"), step)
            return not trial.should_prune()
        except optuna.exceptions.UpdateFinishedTrialError:
            return False  # the driver already closed this trial (interrupted run): stop
        except Exception as error:  # a storage hiccup must not end the trial
            if not warned:
                log.warning("trial %d: intermediate report failed: %s", task.number, error)
                warned.append(True)
            return True

    return report


def execute(task: TrialTask, device: str | None = None, threads: int | None = None,
            study: optuna.Study | None = None, concurrent: int = 1,
            limit_process: bool = False) -> dict[str, Any]:
    """Run the task's point; returns ``TrialResult.to_dict()`` (never raises for the point).

    With several ``seeds`` the point is trained once per seed; metrics are the mean over seeds
    (``<metric>/seed<k>`` keeps each), the curve and pruning reports come from the first seed.
    ``concurrent`` trials share this machine's memory; ``limit_process`` (a worker process, never
    the driver) holds this process to the trial's memory limit while it runs, so that a trial past
    it fails as 'oom' and the worker lives on.
    """
    point = ModelPoint.model_validate(task.point)
    config = TrialConfig.model_validate(task.config)
    if threads is not None and config.threads is None:
        config = config.model_copy(update={"threads": threads})
    seeds = task.seeds or [None]
    results: list[TrialResult] = []
    live = _live_run(task)
    objective = Objective.model_validate(task.extra["objective"]) if task.extra.get("objective") else None
    try:
        report = _reporter(task, study)
        progress = None
        if live is not None:
            report, progress = live.hooks(report)
        with _limited(config, device, concurrent, limit_process):
            for index, seed in enumerate(seeds):
                run_config = config if seed is None else config.model_copy(update={"seed": seed})
                weights = Weights(save=Path(task.extra["checkpoint"]), max_mb=task.extra.get("checkpoint_max_mb")) if (
                    index == 0 and task.extra.get("checkpoint")) else None  # the first seed's weights
                result = run_trial(point, run_config, report=report if index == 0 else None, device=device,
                                   concurrent=concurrent, weights=weights,
                                   progress=progress if index == 0 else None, report_objective=objective)
                results.append(result)
                if not result.ok:
                    break
    except Exception as error:  # a bad data source or a bug: the trial fails, the study goes on
        failed = TrialResult("failed", failure="error", reason=f"{type(error).__name__}: {error}")
        if live is not None:
            live.close(failed)
        return {**failed.to_dict(), "trial_s": sum(r.metrics.get("wall_s", 0.0) for r in results),
                "live_wandb": live is not None, "wandb_error": _start_error(live)}
    merged = merge_seeds(results, seeds)
    if live is not None:
        live.close(merged)
    out = merged.to_dict()
    out["trial_s"] = sum(r.metrics.get("wall_s", 0.0) for r in results)  # time inside run_trial
    out["live_wandb"] = live is not None
    out["wandb_error"] = _start_error(live)  # the driver then stops asking for live runs
    return out


def _start_error(live: LiveRun | None) -> str | None:
    method = getattr(live, "start_error", None)  # a live-run class without it never fails to start
    return method() if method is not None else None


def _limited(config: TrialConfig, device: str | None, concurrent: int, enabled: bool):
    """The process's memory limit for one trial (see trial.memory_limit): RLIMIT_DATA on a CPU,
    the caching allocator's share of the GPU on a GPU."""
    if not enabled:
        return contextlib.nullcontext()
    chosen = pick_device(device)
    limit = trial_memory_limit(config.memory_limit_gb, chosen, concurrent)
    if chosen.type == "cuda":
        return gpu_memory_limit(limit, chosen)
    return process_memory_limit(limit) if chosen.type == "cpu" else contextlib.nullcontext()


def _live_run(task: TrialTask) -> LiveRun | None:
    """The trial's live W&B run when the study tracks (``task.extra['wandb']``), else None."""
    settings = task.extra.get("wandb")
    if not settings or task.live is None:
        return None
    _LIVE_KINDS.add(task.live)
    live = task.live(settings)
    _LAST_LIVE[:] = [live]
    return live


def flush_live_runs() -> str | None:
    """Wait for the live runs this process is still writing (a worker, before it is stopped);
    returns why the study's runs could not start here, if they could not."""
    for kind in list(_LIVE_KINDS):
        kind.flush()
    return _start_error(_LAST_LIVE[0]) if _LAST_LIVE else None
