"""Read a study back: counts by state, best trials per objective, the Pareto front, an ETA."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from miras_search.study.fidelity import is_fidelity_trial, level, seeds
from miras_search.study.lease import holder_of
from miras_search.study.owner import alive_elsewhere
from miras_search.study.records import counts_toward_budget, is_feasible


@dataclass
class StudyStatus:
    name: str
    finished: int
    target: int | None
    complete: int
    pruned: int
    failed: int
    interrupted: int
    running: int
    waiting: int
    reused: int
    objectives: list[dict[str, str]]
    best: list[FrozenTrial | None] = field(default_factory=list)  # per objective
    eta_s: float | None = None
    mean_trial_s: float | None = None
    failures: list[FailureGroup] = field(default_factory=list)  # most frequent first
    fidelity: int = 0  # longer or larger runs of points (confirm, scale, halving), not in the counts above
    driver_stopped: bool = False  # the running trials' driver is gone: no live driver holds the study
    driver_live: bool = False  # a live driver holds the study (its lease, or a RUNNING trial's driver)
    not_finite: int = 0  # complete trials whose objective value is not finite (never ranked)


@dataclass
class FailureGroup:
    """Trials that failed, or were pruned by a limit, for one reason kind ("time_limit", "nan",
    "limit", ...): how many, and the latest one's reason."""

    kind: str
    count: int
    latest: str


def failure_groups(trials: list[FrozenTrial]) -> list[FailureGroup]:
    """Why trials did not complete, grouped by kind, most frequent first. Interrupted trials
    (shown apart, and queued again) and pruning by the pruner (a normal outcome) are left out."""
    groups: dict[str, FailureGroup] = {}
    for trial in trials:
        kind = trial.user_attrs.get("failure")
        failed = trial.state == TrialState.FAIL or (trial.state == TrialState.PRUNED and kind == "limit")
        if not failed or kind == "interrupted":
            continue
        kind = str(kind or "error")
        group = groups.setdefault(kind, FailureGroup(kind, 0, ""))
        group.count += 1
        group.latest = str(trial.user_attrs.get("reason") or kind)
    return sorted(groups.values(), key=lambda g: -g.count)


def run_outcomes(trials: list[FrozenTrial]) -> tuple[int, int, list[FailureGroup]]:
    """Of the trials that count toward the budget: (complete, pruned, the failed ones grouped by
    kind as ``failure_groups`` groups them)."""
    counted = [t for t in trials if counts_toward_budget(t)]
    complete = sum(t.state == TrialState.COMPLETE for t in counted)
    pruned = sum(t.state == TrialState.PRUNED for t in counted)
    return complete, pruned, failure_groups([t for t in counted if t.state == TrialState.FAIL])


def objective_records(study: optuna.Study) -> list[dict[str, str]]:
    stored = study.user_attrs.get("objectives")
    if stored:
        return stored
    return [{"name": f"value{i}", "direction": d.name.lower()} for i, d in enumerate(study.directions)]


def _better(direction: str):
    return min if direction == "minimize" else max


def has_finite_values(trial: FrozenTrial) -> bool:
    """Whether every objective value of the trial is a finite number. The driver fails a trial
    whose objective is not finite, but a study written by other tools (or an older version) may
    hold an inf: ranked, it would be "best" of a maximised objective and break every figure."""
    return trial.values is not None and all(math.isfinite(v) for v in trial.values)


def feasible_complete(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials inside every limit, with finite objective values: the ones a study ranks."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if is_feasible(t) and has_finite_values(t)]


def ranked(study: optuna.Study, fidelity: str = "highest") -> list[FrozenTrial]:
    """Feasible complete trials, best first: by the objective (single) or Pareto rank then the
    first objective (multi). Duplicates that reused a result are left out (their source counts).

    ``fidelity="highest"`` (``miras best``, the report) gives one trial per point: its result at
    the highest fidelity level it reached (study.fidelity; the mean over the trials at that level,
    seeds of a confirm or scale run), and ranks points that reached a higher level first, then by
    the objective among points at the same level (successive halving's order). ``"base"`` ranks the
    study's own trials only (what the short trials said; the proxy check compares against it).
    ``ranked_scores`` gives the values each was ranked by.
    """
    return [score.trial for score in ranked_scores(study, fidelity)]


@dataclass(frozen=True)
class Score:
    """A ranked point: the trial that stands for it, the values it was ranked by (the mean over
    ``runs`` trials at its highest fidelity: several seeds of a `miras scale` rung, a `confirm`
    run twice) and how many runs that mean is over."""

    trial: FrozenTrial
    values: tuple[float, ...]
    runs: int = 1


def ranked_scores(study: optuna.Study, fidelity: str = "highest") -> list[Score]:
    """``ranked``'s order, each trial with the values it was ranked by (what to show beside it)."""
    trials = [t for t in feasible_complete(study) if "reused_from" not in t.user_attrs]
    base = [t for t in trials if not is_fidelity_trial(t)]
    if fidelity == "base" or len(base) == len(trials):
        scores = [Score(t, tuple(t.values)) for t in base]
        return _ranked_by_values(study, scores)
    by_point: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        by_point.setdefault(str(trial.user_attrs.get("point_key") or f"#{trial.number}"), []).append(trial)
    scores, tiers = [], []
    for group in by_point.values():
        top = max((level(t), seeds(t)) for t in group)
        at_top = sorted((t for t in group if (level(t), seeds(t)) == top), key=lambda t: t.number)
        mean = tuple(sum(v) / len(at_top) for v in zip(*(t.values for t in at_top), strict=True))
        scores.append(Score(at_top[-1], mean, len(at_top)))
        tiers.append(top)
    order: list[Score] = []
    for tier in sorted(set(tiers), reverse=True):
        order.extend(_ranked_by_values(study, [s for s, t in zip(scores, tiers, strict=True) if t == tier]))
    return order


def _ranked_by_values(study: optuna.Study, scores: list[Score]) -> list[Score]:
    records = objective_records(study)
    signs = [1.0 if r["direction"] == "minimize" else -1.0 for r in records]
    keyed = [[s * v for s, v in zip(signs, score.values, strict=True)] for score in scores]
    rank = _pareto_ranks(keyed) if len(records) > 1 else [0] * len(scores)
    order = sorted(range(len(scores)), key=lambda i: (rank[i], keyed[i][0], scores[i].trial.number))
    return [scores[i] for i in order]


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The ranked trials no other ranked one dominates (by the values they were ranked by); for
    one objective, the best trial."""
    scores = ranked_scores(study)
    if len(objective_records(study)) == 1:
        return [s.trial for s in scores[:1]]
    records = objective_records(study)
    signs = [1.0 if r["direction"] == "minimize" else -1.0 for r in records]
    keyed = [[sign * v for sign, v in zip(signs, s.values, strict=True)] for s in scores]
    ranks = _pareto_ranks(keyed)
    return [s.trial for s, r in zip(scores, ranks, strict=True) if r == 0]


def _pareto_ranks(points: list[list[float]]) -> list[int]:
    """Non-domination rank of each point (0 = Pareto front), all objectives minimised."""
    remaining = set(range(len(points)))
    ranks = [0] * len(points)
    level = 0
    while remaining:
        front = {
            i for i in remaining
            if not any(_dominates(points[j], points[i]) for j in remaining if j != i)
        }
        for i in front:
            ranks[i] = level
        remaining -= front
        level += 1
    return ranks


def _dominates(a: list[float], b: list[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def driver_live(study: optuna.Study, running: list[FrozenTrial]) -> bool:
    """Whether a live driver runs the study: one holds its lease, or a RUNNING trial's driver
    still runs on this host. Without one nothing advances, however the last driver stopped
    (finished, Ctrl-C, kill -9): no ETA."""
    return holder_of(study) is not None or any(alive_elsewhere(t.user_attrs.get("driver")) for t in running)


def driver_stopped(study: optuna.Study, running: list[FrozenTrial]) -> bool:
    """Whether trials are left RUNNING with no driver to finish them: no live driver holds the
    study's lease (it expired, was released, or its holder's process on this host is gone) and
    none of their drivers still runs on this host."""
    if not running or holder_of(study) is not None:
        return False
    return not any(alive_elsewhere(t.user_attrs.get("driver")) for t in running)


def status(study: optuna.Study) -> StudyStatus:
    every = study.get_trials(deepcopy=False)
    trials = [t for t in every if not is_fidelity_trial(t)]
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    interrupted = sum(1 for t in by_state[TrialState.FAIL] if t.user_attrs.get("failure") == "interrupted")
    run = study.user_attrs.get("run") or {}
    records = objective_records(study)
    feasible = [t for t in feasible_complete(study) if not is_fidelity_trial(t)]  # base fidelity
    best = []
    for i, record in enumerate(records):
        pick = _better(record["direction"])
        best.append(pick(feasible, key=lambda t, i=i: t.values[i]) if feasible else None)
    trained = [
        (t.datetime_complete - t.datetime_start).total_seconds() for t in trials
        if counts_toward_budget(t) and t.datetime_start and t.datetime_complete
        and "reused_from" not in t.user_attrs and t.user_attrs.get("failure") != "limit"
    ]
    finished = sum(counts_toward_budget(t) for t in trials)
    target = run.get("target")
    mean = sum(trained) / len(trained) if trained else None
    eta = None
    running = [t for t in every if t.state == TrialState.RUNNING]
    live = driver_live(study, running)
    if mean is not None and target is not None and live:  # no driver, no progress: no ETA
        workers = max(1, int(run.get("workers", 1)))
        eta = max(0, target - finished) * mean / workers
    return StudyStatus(
        name=study.study_name, finished=finished, target=target,
        complete=len(by_state[TrialState.COMPLETE]), pruned=len(by_state[TrialState.PRUNED]),
        failed=len(by_state[TrialState.FAIL]) - interrupted, interrupted=interrupted,
        running=len(by_state[TrialState.RUNNING]), waiting=len(by_state[TrialState.WAITING]),
        reused=sum(1 for t in trials if "reused_from" in t.user_attrs), objectives=records,
        best=best, eta_s=eta if eta is None or math.isfinite(eta) else None, mean_trial_s=mean,
        failures=failure_groups(trials), fidelity=len(every) - len(trials),
        driver_stopped=driver_stopped(study, running), driver_live=live,
        not_finite=sum(not has_finite_values(t) for t in by_state[TrialState.COMPLETE]),
    )
