"""Train every point on every rung of the ladder, storing each finished rung as a trial.

Each (point, rung, seed) is one trial of the study, added when it finishes (``study.add_trial``):
a crash or Ctrl-C loses only the rungs in flight, and a later run trains the rungs the study does
not hold yet. The rungs run on a ``Pool`` (Ray workers, or inline), as a study's trials do.

Stored per rung trial: the point and its ``point_key`` (the identity of the point being scaled,
not of the resized model), ``fidelity`` (study.fidelity; source "scale"), and ``scale``:
``{"rung": key, "index", "seed", "d_model", "n_layers", "n_heads", "seq_len", "tokens",
"flops_per_token", "compute", "params", "batch_size", "trained_point"}`` where ``compute`` = FLOPs
per token x the tokens the rung trained (scale.compute) and ``trained_point`` the model and budget
actually trained (the trial settings applied).

The training batch size is part of a rung's identity: a study holding rungs of a point trained
at another batch size is refused (``batch_size_mismatch``) rather than fitted with the new ones.
Rungs stored before the batch size was recorded count at their ``trained_point``'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from miras_search.errors import MirasError
from miras_search.scale.compute import flops_per_token
from miras_search.scale.points import ScalePoint, compute_proxy, on_rung
from miras_search.study.execute import TrialTask
from miras_search.study.interrupts import CtrlC
from miras_search.study.pools import Pool
from miras_search.study.records import REUSABLE_FAILURES, finite_metrics
from miras_search.study.scale_spec import Rung, ScaleSpec
from miras_search.trial import Objective, TrialConfig

RUNG_SOURCE = "scale"


@dataclass(frozen=True)
class RungRun:
    """One (point, rung, seed) to train."""

    target: ScalePoint
    rung: Rung
    index: int
    seed: int
    batch_size: int | None = None

    @property
    def done_key(self) -> tuple[str, str, int, int | None]:
        return (self.target.key, self.rung.key, self.seed, self.batch_size)


@dataclass
class ScaleSummary:
    planned: int = 0
    already: int = 0
    ran: int = 0
    failed: list[str] = field(default_factory=list)
    interrupted: bool = False
    exit_code: int = 130  # when interrupted: 128 + the signal (SIGINT, SIGTERM)
    wall_s: float = 0.0


def is_rung_trial(trial: FrozenTrial) -> bool:
    return isinstance(trial.user_attrs.get("scale"), dict)


def stored_batch_size(trial: FrozenTrial) -> int | None:
    """The batch size a stored rung trained at: recorded since it is part of a rung's identity;
    for a rung stored before, its trained point's ``train.batch_size``."""
    attrs = trial.user_attrs.get("scale") or {}
    value = attrs.get("batch_size")
    if value is None:
        value = ((attrs.get("trained_point") or {}).get("train") or {}).get("batch_size")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def rung_batch_size(target: ScalePoint, spec: ScaleSpec, config: TrialConfig) -> int:
    """The batch size ``target``'s rungs train at: --batch-size (scale.batch_size), else the
    study's trial.batch_size, else the point's own train.batch_size."""
    return int(spec.batch_size or config.batch_size or target.point.train.batch_size)


def _final(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.COMPLETE or (
        trial.state == TrialState.FAIL and trial.user_attrs.get("failure") in REUSABLE_FAILURES)


def finished_rungs(study: optuna.Study) -> set[tuple[str, str, int, int | None]]:
    """(point_key, rung key, seed, batch size) of the rung trials a re-run must not train again:
    complete ones, and failures that would repeat (nan, diverged, build errors...)."""
    done = set()
    for trial in study.get_trials(deepcopy=False):
        if is_rung_trial(trial) and _final(trial):
            attrs = trial.user_attrs["scale"]
            done.add((trial.user_attrs.get("point_key"), attrs.get("rung"), int(attrs.get("seed", 0)),
                      stored_batch_size(trial)))
    return done


def batch_size_mismatch(study: optuna.Study, points: list[ScalePoint], spec: ScaleSpec, config: TrialConfig,
                        keep_apart: str) -> None:
    """MirasError when the study holds finished rungs of a point trained at another batch size
    than this run's: those rungs would be fitted with the new ones as one curve. ``keep_apart``
    says how to give the run a study of its own (e.g. "another --name")."""
    wanted = {target.key: (target, rung_batch_size(target, spec, config)) for target in points}
    other: dict[str, dict[int | None, set[str]]] = {}
    for trial in study.get_trials(deepcopy=False):
        key = trial.user_attrs.get("point_key")
        if not (is_rung_trial(trial) and _final(trial) and key in wanted):
            continue
        size = stored_batch_size(trial)
        if size != wanted[key][1]:
            other.setdefault(key, {}).setdefault(size, set()).add(str(trial.user_attrs["scale"].get("rung")))
    if not other:
        return
    key, sizes = next(iter(other.items()))
    target, size = wanted[key]
    stored = "; ".join(f"batch size {s if s is not None else 'unknown'} ({', '.join(sorted(r))})"
                       for s, r in sizes.items())
    before = ", ".join(str(s) for s in sizes if s is not None)
    raise MirasError(
        f"the study '{study.study_name}' holds rungs of {target.label} trained at {stored}, and this run "
        f"trains at batch size {size}: rungs at different batch sizes are not one scaling curve and are "
        f"not reused or fitted together. Give --batch-size {before or 'as before'} to extend those rungs, "
        f"or {keep_apart} to keep this ladder apart")


def plan(study: optuna.Study, points: list[ScalePoint], spec: ScaleSpec,
         config: TrialConfig | None = None) -> tuple[list[RungRun], int]:
    """The rungs still to train (smallest rung first, point by point), and how many are stored."""
    done = finished_rungs(study)
    todo, already = [], 0
    for index, rung in enumerate(spec.rungs):
        for target in points:
            on_rung(target.point, rung, target.label)  # a rung the point cannot take: error now
            size = rung_batch_size(target, spec, config or TrialConfig())
            for seed in spec.seeds:
                run = RungRun(target, rung, index, int(seed), size)
                if run.done_key in done:
                    already += 1
                else:
                    todo.append(run)
    return todo, already


def _base_params(study: optuna.Study, target: ScalePoint) -> tuple[dict[str, Any], dict[str, BaseDistribution]]:
    """The Optuna parameters of the study trial the point came from (so that the rung trial is
    the same point to the sampler and the importances), else none."""
    if target.trial is None:
        return {}, {}
    trial = study.get_trials(deepcopy=False)[target.trial]
    return dict(trial.params), dict(trial.distributions)


def _level(run: RungRun, first: Rung) -> float:
    """The rung's fidelity level (study.fidelity): its size-and-budget over the point's own run in
    the study, or over the ladder's first rung for a point the study has no trial of (presets keep
    sizes of their own, so that every point's rung k gets the same level)."""
    rung = compute_proxy(run.rung.tokens, run.rung.d_model, run.rung.n_layers)
    if run.target.trial is None:
        return rung / compute_proxy(first.tokens, first.d_model, first.n_layers)
    base = run.target.point.block
    base_tokens = run.target.base_tokens or run.target.point.train.tokens
    return rung / compute_proxy(base_tokens, base.d_model, base.n_layers)


class ScaleRunner:
    """Runs the missing rungs of ``points`` on ``spec``'s ladder into ``study``."""

    def __init__(self, study: optuna.Study, spec: ScaleSpec, points: list[ScalePoint], config: TrialConfig,
                 objectives: list[Objective], pool_factory: Callable[[], Pool],
                 on_event: Callable[[str, RungRun, dict[str, Any] | None], None] | None = None):
        self.study, self.spec, self.points, self.config = study, spec, points, config
        self.objectives = objectives
        self.pool_factory = pool_factory
        self.on_event = on_event or (lambda kind, run, result: None)

    def rung_config(self, run: RungRun) -> TrialConfig:
        """The study's trial settings with the rung's budget and context; a per-trial time limit
        grows with the rung's size-and-budget over the point's own run (never shrinks)."""
        update: dict[str, Any] = {"tokens": run.rung.tokens, "seq_len": run.rung.seq_len, "seed": run.seed}
        if self.config.time_limit_s is not None:
            update["time_limit_s"] = self.config.time_limit_s * max(1.0, _level(run, self.spec.rungs[0]))
        if self.spec.batch_size is not None:
            update["batch_size"] = self.spec.batch_size
        return self.config.model_copy(update=update)

    def run(self) -> ScaleSummary:
        started = time.perf_counter()
        todo, already = plan(self.study, self.points, self.spec, self.config)
        summary = ScaleSummary(planned=len(todo), already=already)
        if not todo:
            return summary
        pool = self.pool_factory()
        ctrl_c = CtrlC()
        try:
            with ctrl_c:
                self._loop(pool, todo, summary, ctrl_c)
        except KeyboardInterrupt:
            summary.interrupted = True  # the rungs in flight are not stored: a re-run trains them
            summary.exit_code = ctrl_c.exit_code
        finally:
            pool.shutdown()
        summary.wall_s = time.perf_counter() - started
        return summary

    def _loop(self, pool: Pool, todo: list[RungRun], summary: ScaleSummary, ctrl_c: CtrlC) -> None:
        in_flight: dict[int, RungRun] = {}
        number = 0
        while todo or in_flight:
            while todo and len(in_flight) < pool.capacity:
                run = todo.pop(0)
                task = TrialTask(trial_id=-1, number=number, study_name=self.study.study_name, storage=None,
                                 point=on_rung(run.target.point, run.rung).model_dump(mode="json"),
                                 config=self.rung_config(run).model_dump(mode="json"))
                in_flight[number] = run
                number += 1
                pool.submit(task)
                self.on_event("started", run, None)
            for task, result in pool.wait():
                run = in_flight.pop(task.number)
                self._store(run, task, result, summary)
                self.on_event("finished", run, result)
            ctrl_c.check()  # a Ctrl-C that a blocking wait caught and dropped

    def _store(self, run: RungRun, task: TrialTask, result: dict[str, Any], summary: ScaleSummary) -> None:
        from miras_search.schema import ModelPoint

        trained = ModelPoint.model_validate(task.point)
        try:  # the model and budget actually trained (the rung's trial settings applied)
            trained_point = TrialConfig.model_validate(task.config).apply(trained).model_dump(mode="json")
        except ValidationError:
            trained_point = task.point
        metrics = {k: float(v) for k, v in (result.get("metrics") or {}).items() if isinstance(v, int | float)}
        per_token = flops_per_token(trained, run.rung.seq_len)
        tokens = int(metrics.get("tokens", run.rung.tokens))
        level = _level(run, self.spec.rungs[0])
        attrs: dict[str, Any] = {
            "point": run.target.point.model_dump(mode="json"), "point_key": run.target.key,
            "axes": run.target.point.axes, "anchor": run.target.anchor, "label": run.target.label,
            "metrics": finite_metrics(metrics),
            "curve": [[int(s), float(v)] for s, v in result.get("curve") or []],
            "fidelity": {"source": RUNG_SOURCE, "tokens": run.rung.tokens, "d_model": run.rung.d_model,
                         "n_layers": run.rung.n_layers, "seq_len": run.rung.seq_len, "seeds": 1, "level": level},
            "scale": {"rung": run.rung.key, "index": run.index, "seed": run.seed, "d_model": run.rung.d_model,
                      "n_layers": run.rung.n_layers, "n_heads": run.rung.heads, "seq_len": run.rung.seq_len,
                      "tokens": tokens, "flops_per_token": per_token, "compute": per_token * tokens,
                      "params": metrics.get("params"),
                      "batch_size": run.batch_size or trained_point["train"]["batch_size"],
                      "trained_point": trained_point},
            "constraints": [],
        }
        state, values = TrialState.FAIL, None
        if result.get("status") == "complete":
            try:
                values = [o.value(metrics) for o in self.objectives]
                state = TrialState.COMPLETE
            except KeyError as error:
                attrs.update(failure="error", reason=str(error.args[0]))
        else:
            attrs.update(failure=result.get("failure") or "error", reason=result.get("reason") or "")
        if state == TrialState.COMPLETE and any(v != v for v in values or []):
            state, values = TrialState.FAIL, None
            attrs.update(failure="nan", reason="an objective is not finite")
        params, distributions = _base_params(self.study, run.target)
        self.study.add_trial(optuna.trial.create_trial(
            state=state, values=values, params=params, distributions=distributions, user_attrs=attrs))
        summary.ran += 1
        if state != TrialState.COMPLETE:
            summary.failed.append(f"{run.target.label} on {run.rung.key} seed {run.seed}: "
                                  f"{attrs.get('failure')}: {attrs.get('reason')}")
