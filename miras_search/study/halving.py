"""Successive halving over token budgets and model sizes, after a study's points ran at the trial budget.

Level 1 is the study's own trials. The study file's ``budget`` lists the promotions
(budget_spec.BudgetSpec.schedule_of: ``rungs: R`` gives eta^k x the tokens; ``promotions`` may grow
the width and depth too). For promotion k = 1, 2, ..., the points with a complete result at
promotion k - 1 (k - 1 = 0: the base trials), ranked by it (``summary.ranked``'s order: the
objective, or Pareto rank then the first objective), give their best ``floor(n / eta)``; each is
trained again at promotion k's size and budget (x its own base run: tokens x ``tokens_x``,
d_model and heads x ``d_model_x``, each head keeping its width, layers x ``n_layers_x``; the
per-trial time limit x the level) and stored when it finishes as a fidelity result of its point
(study.fidelity, source "halving", level = tokens_x x n_layers_x x d_model_x^2, the same for every
point). The promotions run one after the other (synchronous halving: a promotion is ranked once
all of it is in), each promotion's runs in parallel on the pool.

Optuna's SuccessiveHalvingPruner stops a trial's learning curve at rungs of steps; here a promoted
point trains a new run at the larger budget or size (its learning-rate schedule spans that budget),
so this small scheduler stands beside the pruner instead. A crash or Ctrl-C loses only the runs in
flight: the next ``miras resume`` trains the promotions the study does not hold yet. A stored run
belongs to the promotion whose growth it records, so a promotion edited in the file later trains
anew.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from miras_search.errors import MirasError
from miras_search.schema import ModelPoint
from miras_search.study.budget_spec import Promotion
from miras_search.study.execute import TrialTask
from miras_search.study.fidelity import fidelity_of, is_fidelity_trial
from miras_search.study.pools import Pool
from miras_search.study.records import REUSABLE_FAILURES, finite_metrics, is_feasible
from miras_search.study.spec import StudyFile
from miras_search.study.summary import Score, _ranked_by_values

SOURCE = "halving"


def _base_tokens(spec: StudyFile, trial: FrozenTrial) -> int:
    point = trial.user_attrs.get("point") or {}
    return int(spec.trial.tokens or (point.get("train") or {}).get("tokens") or 0)


def _growth(record: dict[str, Any]) -> tuple[str, int, int]:
    """A halving record's growth over its base run (records of older versions grew tokens only)."""
    grow = record.get("grow")
    if isinstance(grow, dict):
        return (f"{float(grow.get('tokens_x', 1)):.6g}", int(grow.get("d_model_x", 1)),
                int(grow.get("n_layers_x", 1)))
    return (f"{float(record.get('level', 1)):.6g}", 1, 1)


def _key(step: Promotion) -> tuple[str, int, int]:
    return (f"{step.tokens_x:.6g}", step.d_model_x, step.n_layers_x)


def _promotion_trials(study: optuna.Study, step: Promotion) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if (fidelity_of(t) or {}).get("source") == SOURCE
            and _growth(fidelity_of(t) or {}) == _key(step)]


def _results_at(study: optuna.Study, step: Promotion | None) -> dict[str, list[FrozenTrial]]:
    """point_key -> the complete, feasible results of promotion ``step`` (None: the base trials)."""
    if step is None:
        trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if not is_fidelity_trial(t)]
    else:
        trials = [t for t in _promotion_trials(study, step) if t.state == TrialState.COMPLETE]
    out: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        key = trial.user_attrs.get("point_key")
        if key and "reused_from" not in trial.user_attrs and is_feasible(trial):
            out.setdefault(key, []).append(trial)
    return out


def _attempted_at(study: optuna.Study, step: Promotion) -> set[str]:
    """Points whose run at promotion ``step`` is stored: complete, or a failure that would repeat."""
    return {t.user_attrs.get("point_key") for t in _promotion_trials(study, step)
            if t.state == TrialState.COMPLETE or (
                t.state == TrialState.FAIL and t.user_attrs.get("failure") in REUSABLE_FAILURES)}


def promotions(study: optuna.Study, spec: StudyFile, k: int) -> list[FrozenTrial]:
    """The base trials of the points to train at promotion k (1-based) that the study does not hold yet."""
    schedule = spec.budget.schedule_of()
    below = _results_at(study, schedule[k - 2] if k > 1 else None)
    groups = list(below.values())
    scores = [Score(g[0], tuple(sum(v) / len(g) for v in zip(*(t.values for t in g), strict=True)), len(g))
              for g in groups]
    order = [score.trial for score in _ranked_by_values(study, scores)]
    keep = order[: len(order) // spec.budget.eta]
    done = _attempted_at(study, schedule[k - 1])
    base = _results_at(study, None)
    return [base[t.user_attrs["point_key"]][0] for t in keep
            if t.user_attrs["point_key"] not in done and t.user_attrs["point_key"] in base]


def pending(study: optuna.Study, spec: StudyFile) -> bool:
    """Whether a promotion is still to train (what a resume of a finished study looks for)."""
    if spec.budget.schedule != "successive_halving":
        return False
    return any(promotions(study, spec, k) for k in range(1, len(spec.budget.schedule_of()) + 1))


def run_halving(study: optuna.Study, spec: StudyFile, pool: Pool, storage: str,
                note: Callable[[str], None] = lambda text: None) -> int:
    """Train every missing promotion, one promotion after the other; returns how many runs were stored."""
    stored = 0
    for k, step in enumerate(spec.budget.schedule_of(), start=1):
        todo = promotions(study, spec, k)
        if not todo:
            continue
        note(f"successive halving: {len(todo)} point(s) promoted to {step.describe()}")
        queue = list(todo)
        in_flight: dict[int, FrozenTrial] = {}
        while queue or in_flight:
            while queue and len(in_flight) < pool.capacity:
                base = queue.pop(0)
                number = 1_000_000 * k + base.number
                try:
                    task = _task(spec, storage, base, step, number)
                except MirasError as error:  # the grown block is no valid model (too many heads...)
                    _store(study, spec, base, k, step, _failed_task(spec, storage, base, step, number),
                           {"status": "failed", "failure": "build", "reason": str(error)})
                    stored += 1
                    continue
                pool.submit(task)
                in_flight[number] = base
            if not in_flight:
                break
            for task, result in pool.wait():
                _store(study, spec, in_flight.pop(task.number), k, step, task, result)
                stored += 1
    return stored


def grown_point(point: dict[str, Any], step: Promotion, tokens: int) -> dict[str, Any]:
    """The stored point (a ModelPoint's JSON) at the promotion's width, depth and budget: d_model and
    heads x ``d_model_x`` (per-head key and value widths unchanged), layers x ``n_layers_x``.
    MirasError names the promotion when the grown block is no valid model."""
    data = copy.deepcopy(point)
    block = data.setdefault("block", {})
    if step.d_model_x > 1 or step.n_layers_x > 1:
        defaults = ModelPoint.model_validate(point).block
        block.update(d_model=defaults.d_model * step.d_model_x, n_heads=defaults.n_heads * step.d_model_x,
                     n_layers=defaults.n_layers * step.n_layers_x)
    data["train"] = {**data.get("train", {}), "tokens": tokens}
    try:
        ModelPoint.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise MirasError(f"the point grown to {step.describe()} is no valid model: {where}: {first['msg']} "
                         "(change budget.promotions)") from None
    return data


def _failed_task(spec: StudyFile, storage: str, base: FrozenTrial, step: Promotion, number: int) -> TrialTask:
    tokens = round(_base_tokens(spec, base) * step.tokens_x)
    return TrialTask(trial_id=-1, number=number, study_name=spec.name, storage=storage,
                     point=dict(base.user_attrs["point"]), config={**spec.trial.located().model_dump(mode="json"),
                                                                    "tokens": tokens})


def _task(spec: StudyFile, storage: str, base: FrozenTrial, step: Promotion, number: int) -> TrialTask:
    tokens = round(_base_tokens(spec, base) * step.tokens_x)
    limit = spec.trial.time_limit_s * step.level if spec.trial.time_limit_s is not None else None
    config = spec.trial.located().model_copy(update={"tokens": tokens, "time_limit_s": limit})
    point = grown_point(base.user_attrs["point"], step, tokens)
    return TrialTask(trial_id=-1, number=number, study_name=spec.name, storage=storage, point=point,
                     config=config.model_dump(mode="json"), seeds=spec.seeds)


def _store(study: optuna.Study, spec: StudyFile, base: FrozenTrial, rung: int, step: Promotion,
           task: TrialTask, result: dict[str, Any]) -> None:
    metrics = {k: float(v) for k, v in (result.get("metrics") or {}).items() if isinstance(v, int | float)}
    block = (task.point or {}).get("block") or {}
    attrs: dict[str, Any] = {key: base.user_attrs[key] for key in ("point", "point_key", "axes", "anchor")
                             if key in base.user_attrs}
    attrs.update(metrics=finite_metrics(metrics), curve=[[int(s), float(v)] for s, v in result.get("curve") or []],
                 halving_of=base.number, fidelity={
                     "source": SOURCE, "tokens": task.config["tokens"], "d_model": block.get("d_model"),
                     "n_layers": block.get("n_layers"), "seq_len": task.config.get("seq_len"),
                     "seeds": len(spec.seeds or [0]), "level": float(step.level), "rung": rung,
                     "grow": step.model_dump(mode="json")})
    if step.d_model_x > 1 or step.n_layers_x > 1:
        attrs["trained_point"] = task.point
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
