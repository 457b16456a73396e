"""Successive halving over token budgets, after a study's points have run at the trial budget.

Level 1 is the study's own trials. For k = 1 .. rungs - 1, the points with a complete result at
level eta^(k-1), ranked by it (``summary.ranked``'s order: the objective, or Pareto rank then the
first objective), give their best ``floor(n / eta)``; each is trained again with eta^k x the
tokens (and eta^k x the per-trial time limit) and stored when it finishes as a fidelity result of
its point (study.fidelity, source "halving"). The levels run one after the other (synchronous
halving: a level is ranked once all of it is in), each level's runs in parallel on the pool.

Optuna's SuccessiveHalvingPruner stops a trial's learning curve at rungs of steps; here a promoted
point trains a new run at the longer budget (its learning-rate schedule spans that budget), so
this small scheduler stands beside the pruner instead. A crash or Ctrl-C loses only the runs in
flight: the next ``miras resume`` trains the promotions the study does not hold yet.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from miras_search.study.execute import TrialTask
from miras_search.study.fidelity import is_fidelity_trial, level
from miras_search.study.pools import Pool
from miras_search.study.records import REUSABLE_FAILURES, finite_metrics, is_feasible
from miras_search.study.spec import StudyFile
from miras_search.study.summary import _ranked_by_values

SOURCE = "halving"


def _base_tokens(spec: StudyFile, trial: FrozenTrial) -> int:
    point = trial.user_attrs.get("point") or {}
    return int(spec.trial.tokens or (point.get("train") or {}).get("tokens") or 0)


def _results_at(study: optuna.Study, value: float) -> dict[str, list[FrozenTrial]]:
    """point_key -> the complete, feasible results at fidelity level ``value`` (base trials at 1)."""
    out: dict[str, list[FrozenTrial]] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        key = trial.user_attrs.get("point_key")
        if not key or "reused_from" in trial.user_attrs or not is_feasible(trial):
            continue
        if (value == 1 and not is_fidelity_trial(trial)) or (value != 1 and is_fidelity_trial(trial)
                                                               and level(trial) == value):
            out.setdefault(key, []).append(trial)
    return out


def _attempted_at(study: optuna.Study, value: float) -> set[str]:
    """Points whose run at ``value`` is stored: complete, or a failure that would repeat."""
    done = set()
    for trial in study.get_trials(deepcopy=False):
        if not is_fidelity_trial(trial) or level(trial) != value:
            continue
        final = trial.state == TrialState.COMPLETE or (
            trial.state == TrialState.FAIL and trial.user_attrs.get("failure") in REUSABLE_FAILURES)
        if final:
            done.add(trial.user_attrs.get("point_key"))
    return done


def promotions(study: optuna.Study, spec: StudyFile, k: int) -> list[FrozenTrial]:
    """The base trials of the points to train at level eta^k that the study does not hold yet."""
    eta = spec.budget.eta
    below = _results_at(study, float(f"{eta ** (k - 1):.4g}"))
    groups = list(below.values())
    reps = [g[0] for g in groups]
    values = [[sum(v) / len(g) for v in zip(*(t.values for t in g), strict=True)] for g in groups]
    order = _ranked_by_values(study, reps, values)
    keep = order[: len(order) // eta]
    done = _attempted_at(study, float(f"{eta ** k:.4g}"))
    base = _results_at(study, 1.0)
    return [base[t.user_attrs["point_key"]][0] for t in keep
            if t.user_attrs["point_key"] not in done and t.user_attrs["point_key"] in base]


def pending(study: optuna.Study, spec: StudyFile) -> bool:
    """Whether a promotion is still to train (what a resume of a finished study looks for)."""
    if spec.budget.schedule != "successive_halving":
        return False
    return any(promotions(study, spec, k) for k in range(1, spec.budget.rungs))


def run_halving(study: optuna.Study, spec: StudyFile, pool: Pool, storage: str,
                note: Callable[[str], None] = lambda text: None) -> int:
    """Train every missing promotion, level by level; returns how many runs were stored."""
    stored = 0
    for k in range(1, spec.budget.rungs):
        todo = promotions(study, spec, k)
        if not todo:
            continue
        factor = spec.budget.eta ** k
        note(f"successive halving: {len(todo)} point(s) promoted to {factor}x the tokens")
        queue = list(todo)
        in_flight: dict[int, FrozenTrial] = {}
        while queue or in_flight:
            while queue and len(in_flight) < pool.capacity:
                base = queue.pop(0)
                number = 1_000_000 * k + base.number
                pool.submit(_task(spec, storage, base, factor, number))
                in_flight[number] = base
            for task, result in pool.wait():
                _store(study, spec, in_flight.pop(task.number), factor, task, result)
                stored += 1
    return stored


def _task(spec: StudyFile, storage: str, base: FrozenTrial, factor: int, number: int) -> TrialTask:
    tokens = _base_tokens(spec, base) * factor
    limit = spec.trial.time_limit_s * factor if spec.trial.time_limit_s is not None else None
    config = spec.trial.model_copy(update={"tokens": tokens, "time_limit_s": limit})
    point = dict(base.user_attrs["point"])
    point["train"] = {**point.get("train", {}), "tokens": tokens}
    return TrialTask(trial_id=-1, number=number, study_name=spec.name, storage=storage, point=point,
                     config=config.model_dump(mode="json"), seeds=spec.seeds)


def _store(study: optuna.Study, spec: StudyFile, base: FrozenTrial, factor: int, task: TrialTask,
           result: dict[str, Any]) -> None:
    metrics = {k: float(v) for k, v in (result.get("metrics") or {}).items() if isinstance(v, int | float)}
    block = (base.user_attrs.get("point") or {}).get("block") or {}
    attrs: dict[str, Any] = {key: base.user_attrs[key] for key in ("point", "point_key", "axes", "anchor")
                             if key in base.user_attrs}
    attrs.update(metrics=finite_metrics(metrics), curve=[[int(s), float(v)] for s, v in result.get("curve") or []],
                 halving_of=base.number, fidelity={
                     "source": SOURCE, "tokens": task.config["tokens"], "d_model": block.get("d_model"),
                     "n_layers": block.get("n_layers"), "seq_len": task.config.get("seq_len"),
                     "seeds": len(spec.seeds or [0]), "level": float(factor)})
    state, values = TrialState.FAIL, None
    if result.get("status") == "complete":
        try:
            values = [o.value(metrics) for o in spec.objectives]
            attrs["constraints"] = [lim.violation(metrics[lim.metric]) for lim in spec.limits]
            state = TrialState.COMPLETE if all(math.isfinite(v) for v in values) else TrialState.FAIL
        except KeyError as error:
            attrs.update(failure="error", reason=str(error.args[0]))
        if state == TrialState.FAIL and "failure" not in attrs:
            values = None
            attrs.update(failure="nan", reason="an objective is not finite")
    else:
        attrs.update(failure=result.get("failure") or "error", reason=result.get("reason") or "")
    study.add_trial(optuna.trial.create_trial(state=state, values=values if state == TrialState.COMPLETE else None,
                                              user_attrs=attrs))
