"""The study driver: ask a trial, build its point, hand it to a worker, tell the result.

Ask-and-tell keeps every storage write in one process except the workers' intermediate
reports (pruning). Anchors are queued first; duplicates of a finished point reuse its result;
trials left running by an earlier driver are failed as "interrupted" and queued again; Ctrl-C
does the same for this run's trials before it returns.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from miras_search.errors import MirasError, first_line
from miras_search.model import param_count, state_size
from miras_search.presets import preset
from miras_search.redact import redact_url
from miras_search.schema import AXES, ModelPoint
from miras_search.space import InfeasiblePoint, SearchSpace
from miras_search.study.checkpoints import keep_best_checkpoints
from miras_search.study.execute import TrialTask
from miras_search.study.halving import pending as halving_pending
from miras_search.study.halving import run_halving
from miras_search.study.interrupts import CtrlC
from miras_search.study.lease import Lease, acquire, refuse_if_held
from miras_search.study.owner import this_driver
from miras_search.study.pools import Pool, WorkersLost
from miras_search.study.preflight import preflight
from miras_search.study.records import (
    INFRASTRUCTURE_FAILURES,
    REUSABLE_FAILURES,
    counts_toward_budget,
    finite_metrics,
    point_key,
    stored_key,
)
from miras_search.study.samplers import grid_size, grid_space
from miras_search.study.setup import (
    check_no_live_driver,
    create_study,
    enqueue_anchors,
    fail_running_trial,
    recover_interrupted,
    requeue,
    requeue_entry,
    set_aside_dropped_anchors,
    storage_of,
)
from miras_search.study.spec import PRE_TRAINING_METRICS, StudyFile, anchor_points
from miras_search.study.summary import FailureGroup, run_outcomes
from miras_search.trial import TrialConfig, TrialResult
from miras_search.validation import problems_from

log = logging.getLogger(__name__)
MAX_INFEASIBLE_STREAK = 200
_STATES = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}


def recovery_note(recovered: list[int], entries: list[dict[str, Any]]) -> str:
    """What resuming did with the trials a stopped driver left running (``recover_interrupted``):
    each queued again behind other work, or, where the point took the driver's own process down
    (``--inline``) a second time, failed as 'crashed'."""
    queued = [entry["number"] for entry in entries]
    crashed = [number for number in recovered if number not in queued]
    parts = []
    if queued:
        took_down = any(int(entry.get("driver_died") or 0) > 0 for entry in entries)
        parts.append(f"trial(s) {', '.join(map(str, queued))} were running when the last driver stopped: "
                     "marked failed and queued again behind other work" + (
                         " (a point that ran in the driver's own process when it died, e.g. out of "
                         "memory, is not run first; after a second time it is not run again)"
                         if took_down else ""))
    if crashed:
        parts.append(f"trial(s) {', '.join(map(str, crashed))} took the driver's process down a second "
                     "time: failed as 'crashed', not run again")
    return "; ".join(parts)

class TrialSettingsMisfit(InfeasiblePoint):
    """A point that the study's trial settings (budget, batch, length) do not fit: the cause is
    the study file's ``trial`` section, not the space's rules."""


def settings_misfit(config: TrialConfig, point: ModelPoint, error: ValueError) -> str:
    """One line for ``config.apply(point)`` failing with ``error``: the shared budget wording
    where it is the budget (``TrialConfig.budget_problem``), else the problems, never pydantic's
    text."""
    train = point.train
    problem = config.budget_problem(train.batch_size, train.seq_len, train.tokens)
    if problem is None and isinstance(error, ValidationError):
        data = point.model_dump(mode="json")
        problem = "; ".join(str(p) for p in problems_from(error, ModelPoint, data, {}))
    return f"the study's trial settings do not fit the point: {problem or first_line(error)}"


class Tracker(Protocol):
    """Receives finished trials (W&B lives behind this; it must never raise)."""

    def log_trial(self, study: optuna.Study, trial: FrozenTrial) -> None: ...
    def log_summary(self, study: optuna.Study) -> None: ...
    # optional: live_settings(study, number, point) -> dict | None, plain data for the worker,
    # and live_run, the class that logs with them (execute.LiveRun); the worker then logs the
    # trial while it runs and log_trial is not called for it; turn_off(reason), called when a
    # worker's run could not start (W&B unreachable): the tracker stops for the rest of the study


@dataclass
class Event:
    """What the driver tells its display: a trial started / finished, or a note."""

    kind: Literal["setup", "started", "finished", "note"]
    message: str = ""
    trial: FrozenTrial | None = None
    finished: int = 0
    target: int | None = None
    running: int = 0


@dataclass
class RunSummary:
    study_name: str
    storage: str
    finished: int
    target: int | None
    ran: int = 0  # trials run by this run (trained, or failed before training)
    reused: int = 0
    interrupted: bool = False
    interrupted_by: str = "Ctrl-C"  # or "SIGTERM" (kill, timeout, docker stop, a scheduler)
    exit_code: int = 130  # what the command exits with when interrupted: 128 + the signal
    stopped_because: str | None = None  # a study-level error that every trial would repeat
    lost: str | None = None  # the workers' cluster stopped answering (WorkersLost): why
    marked_interrupted: int = 0  # trials of this run failed as "interrupted" and queued again
    already_done: bool = False  # the study had reached its target before this run started
    promoted: int = 0  # successive halving: longer runs of promoted points stored by this run
    wall_s: float = 0.0
    overhead_s: list[float] = field(default_factory=list)  # per trained trial: time outside run_trial
    trial_s: list[float] = field(default_factory=list)
    # at the end, of the trials that count toward the budget (summary.run_outcomes)
    complete: int = 0
    pruned: int = 0
    failures: list[FailureGroup] = field(default_factory=list)


@dataclass
class _Running:
    trial: optuna.Trial
    key: str
    task: TrialTask
    started: float
    followers: list[optuna.Trial] = field(default_factory=list)


def _from_ctrl_c(error: BaseException) -> bool:
    """Whether ``error`` was raised while a KeyboardInterrupt was being handled."""
    seen: set[int] = set()
    cause = error.__context__
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__context__
    return False


def _stop_signal(stop: BaseException, ctrl_c: CtrlC) -> bool:
    """Whether ``stop``, raised while the pool started, is a request to stop: a KeyboardInterrupt
    (``ctrl_c``'s handler's, or Python's), or the ``sys.exit(SIGTERM)`` of the handler Ray puts in
    place as it starts (until RayPool puts ``ctrl_c``'s back). If so, ``ctrl_c`` records it as its
    handler would have."""
    if ctrl_c.requested:
        return isinstance(stop, KeyboardInterrupt)
    if isinstance(stop, KeyboardInterrupt):
        signum = signal.SIGINT
    elif isinstance(stop, SystemExit) and stop.code == signal.SIGTERM:
        signum = signal.SIGTERM
    else:
        return False
    ctrl_c.requested, ctrl_c.signum = True, signum
    return True


class StudyDriver:
    """Runs ``study`` until it has ``target`` finished trials or its time budget is spent."""

    def __init__(self, study: StudyFile, pool_factory: Callable[[], Pool], *,
                 storage: str | None = None, trials: int | None = None,
                 timeout_s: float | None = None, tracker: Tracker | None = None,
                 on_event: Callable[[Event], None] | None = None):
        self.spec = study
        self.space: SearchSpace = study.load_space()
        self.anchor_files = anchor_points(study)  # point-file anchors: label -> point
        self.storage = storage_of(study, storage)
        self.pool_factory = pool_factory
        self.timeout_s = timeout_s if timeout_s is not None else study.timeout_s
        self.tracker = tracker
        self.on_event = on_event or (lambda event: None)
        self.config = study.trial.located()  # data paths absolute: workers run elsewhere
        self.study = create_study(study, self.storage, self.space)
        self.target = trials or self._stored_target(study.trials) or self._default_target()
        self._done: dict[str, FrozenTrial] = {}  # point_key -> a finished trial whose outcome is reusable
        self._running: dict[int, _Running] = {}  # trial number -> in flight
        self._by_key: dict[str, _Running] = {}
        self._streak = 0
        self._deferred: list[dict[str, Any]] = []  # trials to queue again behind other work
        self._since_deferred = 0  # trials finished since the last was deferred
        self.finished = 0
        self.identity = this_driver()
        self._live_logged: set[int] = set()
        self._said_weights_too_large = False

    def _stored_target(self, from_file: int | None) -> int | None:
        """The file's ``trials``, or the last run's target when that was higher (a run with
        --trials N that was interrupted continues to N)."""
        run = self.study.user_attrs.get("run")
        stored = run.get("target") if isinstance(run, dict) else None
        if isinstance(stored, int) and (from_file is None or stored > from_file):
            return stored
        return from_file

    def _default_target(self) -> int | None:
        if self.spec.sampler.kind == "anchors":
            return len(self.spec.sampler.anchor_names)
        if self.spec.sampler.kind == "grid":
            return grid_size(grid_space(self.space, self.spec.source)) + len(self.spec.sampler.anchor_names)
        return None

    # ---- bookkeeping -------------------------------------------------------------------------
    def _finished(self) -> int:
        return sum(counts_toward_budget(t) for t in self.study.get_trials(deepcopy=False))

    def _pending(self) -> int:
        return sum(1 + len(r.followers) for r in self._running.values())

    def _emit(self, kind, message="", trial=None) -> None:
        self.on_event(Event(kind, message, trial, self.finished, self.target, len(self._running)))

    def _set(self, trial: optuna.Trial, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)

    def _frozen(self, trial: optuna.Trial) -> FrozenTrial:
        return self.study._storage.get_trial(trial._trial_id)

    # ---- main loop ---------------------------------------------------------------------------
    def check_free(self) -> None:
        """MirasError, changing nothing, when another live driver runs the study (``run`` checks
        again as it takes the lease: this early check lets a caller refuse before any output)."""
        refuse_if_held(self.study)
        check_no_live_driver(self.study)

    def run(self) -> RunSummary:
        lease = acquire(self.study)  # one driver per study, on any machine
        try:
            return self._run(lease)
        finally:
            lease.release()

    def _run(self, lease: Lease) -> RunSummary:
        started = time.perf_counter()
        check_no_live_driver(self.study)
        named = self.spec.sampler.anchor_names
        dropped = set_aside_dropped_anchors(self.study, named)
        enqueue_anchors(self.study, self.space, named, self.anchor_files)
        recovered, entries = recover_interrupted(self.study, "the driver stopped while this trial ran")
        stored = self._stored_deferred()
        self._deferred = [e for e in stored if e.get("anchor") in (None, *named)]
        dropped += [e["anchor"] for e in stored + entries if e.get("anchor") not in (None, *named)]
        if len(self._deferred) < len(stored):
            self._save_deferred()
        self._defer([e for e in entries if e.get("anchor") in (None, *named)])
        for trial in self.study.get_trials(deepcopy=False):
            self._remember(trial)
        self.finished = self._finished()
        summary = RunSummary(self.spec.name, self.storage, self.finished, self.target)
        self.summary = summary
        self._emit("setup", f"study '{self.spec.name}' in {redact_url(self.storage)}")
        if recovered:
            self._emit("note", recovery_note(recovered, entries))
        if dropped:
            self._emit("note", f"queued anchor(s) {', '.join(dict.fromkeys(dropped))} set aside: the study "
                       "file's sampler.anchors no longer names them (failed as 'dropped', not counted)")
        if self.target is not None and self.finished >= self.target and not halving_pending(self.study, self.spec):
            summary.already_done = True  # nothing to train: no pool is started
            summary.wall_s = time.perf_counter() - started
            return summary
        if self.finished == 0 or not any(t.state == TrialState.COMPLETE for t in self.study.get_trials(deepcopy=False)):
            preflight(self.spec, self.space, memory=False)  # before the first trial: data opens, gives batches
        deadline = None if self.timeout_s is None else started + self.timeout_s
        # the target is known before the pool starts (which may take seconds): status shows it
        self.study.set_user_attr("run", {"target": self.target, "workers": self.spec.parallel.workers})
        ctrl_c = CtrlC()
        try:
            with ctrl_c:  # while the pool starts too: RayPool puts this handler back over Ray's
                pool = self.pool_factory()
        except (KeyboardInterrupt, SystemExit) as stop:
            if not _stop_signal(stop, ctrl_c):
                raise
            self._stopped(summary, ctrl_c)  # no trial was handed out yet: nothing is lost
            summary.finished = self.finished
            summary.complete, summary.pruned, summary.failures = run_outcomes(self.study.get_trials(deepcopy=False))
            summary.wall_s = time.perf_counter() - started
            return summary
        if pool.capacity != self.spec.parallel.workers:
            self.study.set_user_attr("run", {"target": self.target, "workers": pool.capacity})
        try:
            with ctrl_c:
                while True:
                    while (len(self._running) < pool.capacity and summary.stopped_because is None
                           and (self.target is None or self.finished + self._pending() < self.target)
                           and (deadline is None or time.perf_counter() < deadline)):
                        self._release_deferred()
                        self._ask_one(pool)
                    if not self._running:
                        break
                    for task, result in pool.wait():
                        self._finish(pool, task, result)
                    ctrl_c.check()  # a Ctrl-C that a blocking wait caught and dropped
                    lease.check()
                if (self.spec.budget.schedule == "successive_halving" and summary.stopped_because is None
                        and (self.target is None or self.finished >= self.target)):
                    summary.promoted = run_halving(self.study, self.spec, pool, self.storage,
                                                   note=lambda text: self._emit("note", text))
        except KeyboardInterrupt:
            self._stopped(summary, ctrl_c)
        except WorkersLost as error:  # the trials in flight will never report: as if stopped
            summary.lost = str(error)
            summary.marked_interrupted = self._interrupt("the Ray node or cluster running this trial stopped answering")
        except Exception as error:
            # A Ctrl-C that landed in a library's cleanup comes out as that cleanup's error (Optuna's
            # journal lock, interrupted after it let go of the lock, fails to unlink it twice)
            if not (ctrl_c.requested and _from_ctrl_c(error)):
                raise
            self._stopped(summary, ctrl_c)
        finally:
            pool.shutdown()
            self._tracking_failed(getattr(pool, "tracking_error", None))  # found as workers flushed
        summary.finished = self.finished
        summary.complete, summary.pruned, summary.failures = run_outcomes(self.study.get_trials(deepcopy=False))
        summary.wall_s = time.perf_counter() - started
        if self.tracker is not None:
            self.tracker.log_summary(self.study)
        return summary

    def _stopped(self, summary: RunSummary, ctrl_c: CtrlC) -> None:
        """Ctrl-C or SIGTERM: mark this run's trials interrupted and say how the run was stopped."""
        summary.interrupted = True
        summary.interrupted_by, summary.exit_code = ctrl_c.what, ctrl_c.exit_code
        who = "the user (Ctrl-C)" if ctrl_c.what == "Ctrl-C" else "SIGTERM (kill, timeout, a scheduler)"
        summary.marked_interrupted = self._interrupt(f"stopped by {who} while this trial ran")

    def _tracking_failed(self, reason: str | None) -> None:
        """A worker's live run could not start: the tracker stops (no more runs, no summary run)."""
        turn_off = getattr(self.tracker, "turn_off", None)
        if reason and turn_off is not None:
            turn_off(reason)

    # ---- trials whose driver died: queued behind other work ----------------------------------
    def _stored_deferred(self) -> list[dict[str, Any]]:
        stored = self.study.user_attrs.get("deferred")
        return [e for e in stored if isinstance(e, dict) and "number" in e] if isinstance(stored, list) else []

    def _save_deferred(self) -> None:
        self.study.set_user_attr("deferred", self._deferred)

    def _defer(self, entries: list[dict[str, Any]]) -> None:
        if entries:
            self._deferred.extend(entries)
            self._since_deferred = 0
            self._save_deferred()

    def _release_deferred(self) -> None:
        """Queue the deferred trials (recovered after their driver died, or whose worker died) once
        another trial has finished since they were deferred, or when the target has no room left
        for other work (they are kept in the study until then)."""
        if not self._deferred:
            return
        no_room = self.target is not None and self.finished + self._pending() + len(self._deferred) >= self.target
        if self._since_deferred == 0 and not no_room:
            return
        for entry in self._deferred:
            requeue_entry(self.study, entry)
        self._deferred = []
        self._save_deferred()

    def _ask_one(self, pool: Pool) -> None:
        self._place(pool, self.study.ask())

    def _place(self, pool: Pool, trial: optuna.Trial) -> None:
        """Sample (or reuse, or refuse) the asked ``trial``'s point and hand it to a worker."""
        self._set(trial, {"driver": self.identity})  # who runs it (owner.alive_elsewhere)
        t0 = time.perf_counter()
        anchor = trial.user_attrs.get("anchor")
        try:
            point = self._point(trial, anchor)
        except InfeasiblePoint as error:
            self._streak += 1
            if self._streak >= MAX_INFEASIBLE_STREAK:
                self._close(trial, TrialState.FAIL, {"failure": "infeasible", "reason": str(error)})
                cause = ("did not fit the study's trial settings (its trial.tokens, batch_size and "
                         "seq_len), not the space's rules; fix those settings, or let the space's "
                         "points fit them" if isinstance(error, TrialSettingsMisfit)
                         else "broke the space's rules")
                raise MirasError(
                    f"{MAX_INFEASIBLE_STREAK} sampled points in a row {cause}; the last: {error}"
                ) from None
            self._close(trial, TrialState.FAIL, {"failure": "infeasible", "reason": str(error), "anchor": anchor})
            return
        self._streak = 0
        key = point_key(point)
        self._set(trial, {"point": point.model_dump(mode="json"), "point_key": key,
                          "axes": point.axes, "anchor": anchor})
        if self._check_limits(trial, point):
            return
        if key in self._done:
            self._reuse(trial, self._done[key])
            return
        if key in self._by_key:
            self._by_key[key].followers.append(trial)
            return
        self._submit(pool, trial, key, point, t0)

    def _point(self, trial: optuna.Trial, anchor: str | None) -> ModelPoint:
        # An anchor inside the space was queued with its encoded params (setup.enqueue_anchors):
        # it is built through the space so that the params are suggested and recorded, and the
        # sampler and importances see it. (trial.params is still empty right after ask().)
        if anchor in self.anchor_files and self.space.encode(self.anchor_files[anchor]) is None:
            point = self.anchor_files[anchor]  # the user's own point, as its file writes it
        elif anchor is not None and anchor not in self.anchor_files and (
                self.space.encode(preset(anchor), axes_only=True) is None):
            # a preset outside the space: its own axes on the space's block and training settings
            axes = preset(anchor).model_dump(mode="json", include=set(AXES))
            try:
                point = ModelPoint.model_validate({**self.space.base, **axes})
            except ValidationError as error:
                raise InfeasiblePoint(f"anchor {anchor} does not fit the space's block: {error}") from None
        else:
            point = self.space.point_from_trial(trial)
        try:
            point = self.config.apply(point)
        except ValueError as error:
            raise TrialSettingsMisfit(settings_misfit(self.config, point, error)) from None
        label = Path(anchor).stem if anchor in self.anchor_files else anchor
        return point.model_copy(update={"name": label or f"{self.spec.name}-{trial.number}"})

    def _check_limits(self, trial: optuna.Trial, point: ModelPoint) -> bool:
        """Prune a point at once when a limit on a metric known before training rules it out."""
        early = [lim for lim in self.spec.limits if lim.metric in PRE_TRAINING_METRICS]
        if not early:
            return False
        known = {"params": float(param_count(point)), "state_size": float(state_size(point))}
        broken = [lim for lim in early if lim.violation(known[lim.metric]) > 0]
        if not broken:
            return False
        reason = "; ".join(f"{lim.metric} = {known[lim.metric]:,.0f} breaks {lim.describe()}" for lim in broken)
        violations = [lim.violation(known[lim.metric]) if lim.metric in known else 0.0 for lim in self.spec.limits]
        self._close(trial, TrialState.PRUNED, {
            "metrics": known, "constraints": violations, "failure": "limit", "reason": reason, "curve": [],
        })
        return True

    def _submit(self, pool: Pool, trial: optuna.Trial, key: str, point: ModelPoint, t0: float) -> None:
        single = len(self.spec.objectives) == 1 and self.spec.pruner.kind != "none"
        task = TrialTask(
            trial_id=trial._trial_id, number=trial.number, study_name=self.spec.name,
            storage=self.storage, point=point.model_dump(mode="json"),
            config=self.config.model_dump(mode="json"), seeds=self.spec.seeds,
            pruner=self.spec.pruner.model_dump(mode="json") if single else None,
        )
        # what the worker reports to the pruner and W&B: the study's (first) objective, in its unit
        task.extra["objective"] = self.spec.objectives[0].model_dump(mode="json")
        settings = getattr(self.tracker, "live_settings", None)  # trackers that log from the worker
        live = settings(self.study, trial.number, point) if settings is not None else None
        if live is not None and getattr(self.tracker, "live_run", None) is not None:
            task.extra["wandb"], task.live = live, self.tracker.live_run
        if self.spec.checkpoints.keep:
            task.extra["checkpoint"] = str(self.spec.checkpoint_dir() / f"trial{trial.number}.pt")
            task.extra["checkpoint_max_mb"] = self.spec.checkpoints.max_mb
        worker = pool.submit(task)
        trial.set_user_attr("worker", worker)
        running = _Running(trial, key, task, t0)
        self._running[trial.number] = running
        self._by_key[key] = running
        self._emit("started", f"trial {trial.number} on {worker.get('host')}:{worker.get('pid')}",
                   self._frozen(trial))

    def _finish(self, pool: Pool, task: TrialTask, raw: dict[str, Any]) -> None:
        running = self._running.pop(task.number)
        self._by_key.pop(running.key, None)
        trial_s = float(raw.pop("trial_s", 0.0))
        if raw.pop("live_wandb", False):
            self._live_logged.add(task.number)
        self._tracking_failed(raw.pop("wandb_error", None))
        for note in raw.pop("storage_notes", None) or []:  # a worker repaired the journal
            self._emit("note", f"a worker set journal damage aside: {note}")
        result = TrialResult.from_dict({k: v for k, v in raw.items() if k in TrialResult.__dataclass_fields__})
        state, attrs, values = self._outcome(result)
        followers = running.followers
        retry = (result.failure in INFRASTRUCTURE_FAILURES and not followers
                 and "retry_of" not in running.trial.user_attrs)
        if retry:
            attrs["retried"] = True
        self._close(running.trial, state, attrs, values)
        self._since_deferred += 1
        if retry:  # the machine failed, or the point took its worker down: once more, not first
            frozen = self._frozen(running.trial)
            params = {**frozen.system_attrs.get("fixed_params", {}), **frozen.params}
            self._defer([{"params": params, "anchor": frozen.user_attrs.get("anchor"),
                          "number": frozen.number, "retry_of": frozen.number}])
            self._emit("note", f"trial {frozen.number}: {result.reason}; it runs once more, after "
                       "another trial")
        if self.spec.checkpoints.keep:
            self._note_weights_not_kept(task.number, result.metrics)
            keep_best_checkpoints(self.study, self.spec.checkpoint_dir(), self.spec.checkpoints.keep)
        self.summary.ran += 1
        self.summary.trial_s.append(trial_s)
        self.summary.overhead_s.append(time.perf_counter() - running.started - trial_s)
        frozen = self._frozen(running.trial)
        if followers:
            if self._reusable(frozen):
                for follower in followers:
                    self._reuse(follower, frozen)
            else:  # a failure that may not repeat (worker died, time limit...): run the next one
                leader, rest = followers[0], followers[1:]
                self._submit(pool, leader, running.key, ModelPoint.model_validate(task.point), time.perf_counter())
                self._by_key[running.key].followers.extend(rest)

    def _note_weights_not_kept(self, number: int, metrics: dict[str, float]) -> None:
        """Say once per run that a trial's weights were over ``checkpoints.max_mb`` (so not kept),
        rather than leave it to ``miras export --weights`` to find none."""
        if self._said_weights_too_large or metrics.get("saved_weights") != 0.0:
            return
        self._said_weights_too_large = True
        limit = self.spec.checkpoints.max_mb
        self._emit("note", f"trial {number}: its weights ({metrics.get('weights_mb', float('nan')):.3g} MiB) "
                   f"are over checkpoints.max_mb ({limit:g} MiB), so they are not kept, nor those of any "
                   "other trial over it; raise checkpoints.max_mb to keep them")

    def _outcome(self, result: TrialResult) -> tuple[TrialState, dict[str, Any], list[float] | None]:
        attrs: dict[str, Any] = {
            "metrics": finite_metrics(result.metrics),
            "curve": [[int(s), float(v)] for s, v in result.curve],
        }
        state = _STATES[result.status]
        values = None
        if result.status == "failed":
            attrs.update(failure=result.failure, reason=result.reason)
        elif result.status == "complete":
            try:
                values = [o.value(result.metrics) for o in self.spec.objectives]
                attrs["constraints"] = [lim.violation(result.metrics[lim.metric]) for lim in self.spec.limits]
            except KeyError as error:  # the study file names a metric its trials do not measure
                name = error.args[0]
                reason = name if " " in str(name) else f"limit metric '{name}' was not measured"
                self.summary.stopped_because = (
                    f"{reason}. Every trial would fail the same way, so no new trial was started: "
                    "fix the study's objectives / limits"
                )
                return TrialState.FAIL, {**attrs, "failure": "error", "reason": reason}, None
            bad = [o.name for o, v in zip(self.spec.objectives, values, strict=True) if not math.isfinite(v)]
            if bad:
                reason = f"objective {', '.join(bad)} is not finite ({values})"
                return TrialState.FAIL, {**attrs, "failure": "nan", "reason": reason}, None
        return state, attrs, values

    def _close(self, trial: optuna.Trial, state: TrialState, attrs: dict[str, Any],
               values: list[float] | None = None) -> None:
        try:
            self._set(trial, attrs)
        except UpdateFinishedTrialError:
            raise MirasError(
                f"trial {trial.number} was closed by another driver while this one ran it (a "
                f"`miras resume` of study '{self.spec.name}' on another host?): this driver stops "
                "and leaves the study to the other one"
            ) from None
        if attrs.get("constraints") and hasattr(trial, "set_constraint"):  # Optuna >= 5
            for limit, value in zip(self.spec.limits, attrs["constraints"], strict=True):
                trial.set_constraint(limit.describe(), value if math.isfinite(value) else math.inf)
        try:
            self.study.tell(trial, values if state == TrialState.COMPLETE else None, state=state)
        except RuntimeError as error:  # GridSampler stops the study when its grid is used up
            if "Study.stop" not in str(error):
                raise
        frozen = self._frozen(trial)
        self._remember(frozen)
        if counts_toward_budget(frozen):
            self.finished += 1
        if (self.tracker is not None and frozen.user_attrs.get("failure") != "infeasible"
                and frozen.number not in self._live_logged):  # a worker logged it while it ran
            self.tracker.log_trial(self.study, frozen)
        self._emit("finished", "", frozen)

    def _reusable(self, trial: FrozenTrial) -> bool:
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            return True
        return trial.state == TrialState.FAIL and trial.user_attrs.get("failure") in REUSABLE_FAILURES

    def _remember(self, trial: FrozenTrial) -> None:
        key = stored_key(trial.user_attrs)  # a study stored by an earlier version: its points' keys now
        if "fidelity" in trial.user_attrs:
            return  # a longer or larger run: a duplicate at the study's budget must not take its result
        if key and key not in self._done and self._reusable(trial):
            self._done[key] = trial

    def _reuse(self, trial: optuna.Trial, source: FrozenTrial) -> None:
        """Close a duplicate with its source's outcome (no training)."""
        keep = ("metrics", "curve", "constraints", "failure", "reason")
        attrs = {k: source.user_attrs[k] for k in keep if k in source.user_attrs}
        attrs["reused_from"] = source.user_attrs.get("reused_from", source.number)
        self.summary.reused += 1
        self._close(trial, source.state, attrs, source.values if source.state == TrialState.COMPLETE else None)

    def _interrupt(self, reason: str) -> int:
        """Mark this run's unfinished trials failed ("interrupted") and queue them again; how many.

        The study's lease lets one driver run it, so every trial still RUNNING in storage is this
        run's: in flight, asked but not yet handed to a worker, or between its worker's result
        and its record when the Ctrl-C came. Reading storage rather than the driver's own books
        leaves no window in which a trial escapes.
        """
        self._running.clear()
        self._by_key.clear()
        marked = 0
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            try:
                params = fail_running_trial(self.study, frozen, "interrupted", reason)
                requeue(self.study, params, frozen.user_attrs.get("anchor"), frozen.number)
                marked += 1
            except Exception as error:  # the next resume repairs whatever is left RUNNING
                log.warning("could not mark trial %d as interrupted: %s", frozen.number, error)
        return marked


def run_study(study: StudyFile, pool_factory: Callable[[], Pool], **kwargs: Any) -> RunSummary:
    """Run (or resume: it is the same) ``study`` with workers from ``pool_factory``."""
    return StudyDriver(study, pool_factory, **kwargs).run()
