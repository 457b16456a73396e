"""W&B tracking: one run per trial, written by the worker while the trial runs
(``tracking.live``; trials that did not run there, such as reused duplicates, are logged from the
driver when they finish), and one summary run with the leaderboard and every metric.

Offline by default (``WANDB_MODE=offline``: no login, no network; runs land under
``<run_dir>/<study>/wandb``, with W&B's staged files and logs, and can be uploaded later with
``wandb sync``). Nothing here can fail a study: the first W&B error (of the driver's runs, a
worker's live run, or a W&B log file that can no longer be written, such as on a full disk) turns
tracking off, every run still being written stops, and the CLI says why once, at the study's end.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from miras_search.redact import command_line_redacted, redact_tree
from miras_search.schema import AXES, ModelPoint
from miras_search.study.records import flatten, is_feasible
from miras_search.tracking.live import (
    ONLINE_INIT_TIMEOUT_S,
    TRIAL_RUN_SETTINGS,
    flush_live_runs,
    folder_write_error,
    init_settings,
    quiet_wandb_logging,
    record_start_error,
    start_error,
    wandb_session,
    warm_up,
)
from miras_search.tracking.trial_run import TrialRun

log = logging.getLogger(__name__)


class WandbTracker:
    """Logs trials of one study to W&B (``mode``: offline, online); see the module docstring."""

    live_run = TrialRun  # what a worker logs a trial with, from ``live_settings``

    def __init__(self, study_name: str, out_dir: str | Path, mode: str = "offline",
                 project: str = "miras-search", entity: str | None = None):
        self.study_name, self.mode, self.project, self.entity = study_name, mode, project, entity
        self.dir = Path(out_dir)
        self.enabled = mode != "off"
        self.error: str | None = None
        self._wandb: Any = None
        unwritable = folder_write_error(self.dir) if self.enabled else None
        if unwritable is not None:  # off before W&B starts: its service would print to the terminal
            self.enabled, self.error = False, unwritable
        if self.enabled:  # W&B's service starts while the study sets up (inline trials reuse it)
            record_start_error(self._session_settings, None)  # a new study: its runs may start
            warm_up(self._session_settings)

    @property
    def worker_warm_up(self) -> Callable[[], None] | None:
        """What a Ray worker calls as it starts: W&B's start on a background thread (picklable)."""
        return functools.partial(warm_up, self._session_settings) if self.enabled else None

    @property
    def _session_settings(self) -> dict[str, Any]:
        return {"mode": self.mode, "dir": str(self.dir.resolve())}

    def _module(self):
        if self._wandb is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            # offline: W&B stages tables under the user's data dir until a sync; they (and its
            # logs) stay with the study's offline runs instead of piling up in $HOME
            self._wandb = wandb_session(self._session_settings)
        return self._wandb

    def _guard(self, what: str, action: Callable[[], None]) -> None:
        """Run ``action`` unless tracking is off; its error (or one a W&B log file met meanwhile,
        see ``quiet_wandb_logging``) turns tracking off for the study, live runs included."""
        if not self.enabled:
            return
        failed = start_error(self._session_settings)  # a live run, or W&B's log file, failed
        if failed is None:
            try:
                action()
            except Exception as error:  # W&B missing, offline dir unwritable, network down, disk full...
                record_start_error(self._session_settings, error)  # inline live runs stop too
            failed = start_error(self._session_settings)
        if failed is not None:
            self.turn_off(failed)
            log.debug("W&B tracking is off for the rest of this run (%s: %s)", what, self.error)

    def turn_off(self, reason: str) -> None:
        """No more W&B runs in this study (the summary run included): ``reason``, one line, is
        what ``error`` says (the CLI prints it once, with the study's end)."""
        if not self.enabled:
            return
        self.enabled = False
        hint = (f" (W&B did not answer within {ONLINE_INIT_TIMEOUT_S:.0f} s: no network, or no "
                "login? `--wandb offline` keeps the runs for a later `wandb sync`)"
                if self.mode == "online" else "")
        self.error = f"{reason}{hint}"

    @property
    def _init_dir(self) -> Path:
        """W&B puts runs in ``<dir>/wandb``: for a folder already named wandb, its parent, so that
        runs land in runs/<study>/wandb/, not runs/<study>/wandb/wandb/."""
        return self.dir.parent if self.dir.name == "wandb" else self.dir

    def _init(self, **kwargs: Any):
        wandb = self._module()
        with command_line_redacted():  # W&B stores the command line (a --storage URL) with the run
            run = wandb.init(
                project=self.project, entity=self.entity, group=self.study_name, dir=str(self._init_dir),
                mode=self.mode, reinit="create_new", config=redact_tree(kwargs.pop("config", {})),
                **kwargs,
            )
        quiet_wandb_logging()  # the run's debug.log handler, added by wandb.init
        return run

    def live_settings(self, study: optuna.Study, number: int, point: ModelPoint) -> dict[str, Any] | None:
        """What a worker needs to log trial ``number`` while it runs (``tracking.live``): plain
        data; None when tracking is off."""
        if not self.enabled:
            return None
        config = flatten(point.model_dump(mode="json"))
        config.update({"trial": number, "anchor": None if point.name.startswith(f"{self.study_name}-") else point.name})
        tags = [f"{axis}:{getattr(point, axis).kind}" for axis in AXES]
        spec = study.user_attrs.get("study_file") or {}
        return {"mode": self.mode, "project": self.project, "entity": self.entity,
                "dir": str(self.dir.resolve()), "group": self.study_name,
                "name": f"{self.study_name}-trial-{number}", "config": config, "tags": tags,
                "objectives": spec.get("objectives") or []}

    def log_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._guard(f"logging trial {trial.number}", lambda: self._log_trial(study, trial))

    def _log_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        attrs = trial.user_attrs
        axes = attrs.get("axes") or {}
        config = flatten(attrs.get("point") or {})
        config.update({"trial": trial.number, "anchor": attrs.get("anchor"), "state": trial.state.name,
                       "reused_from": attrs.get("reused_from")})
        tags = [f"{axis}:{axes[axis]}" for axis in AXES if axis in axes]
        if attrs.get("anchor"):
            tags.append(f"anchor:{attrs['anchor']}")
        run = self._init(name=f"{self.study_name}-trial-{trial.number}", job_type="trial",
                         config=config, tags=tags,
                         settings=self._module().Settings(**init_settings(self.mode, **TRIAL_RUN_SETTINGS)))
        try:
            for step, loss in attrs.get("curve") or []:
                run.log({"train_loss": loss}, step=int(step))
            summary = {f"metrics/{k}": v for k, v in (attrs.get("metrics") or {}).items()}
            records = study.user_attrs.get("objectives") or []
            if trial.state == TrialState.COMPLETE:  # a pruned trial's value is a training loss
                for record, value in zip(records, trial.values or [], strict=False):
                    summary[f"objective/{record['name']}"] = value
            summary.update(state=trial.state.name, failure=attrs.get("failure"), reason=attrs.get("reason"))
            run.summary.update(summary)
            # A readable copy next to W&B's binary log (synced with the run's files).
            record = {"config": config, "summary": summary, "curve": attrs.get("curve") or []}
            (Path(run.dir) / "miras_trial.json").write_text(json.dumps(record, indent=1, default=str))
        finally:
            run.finish()

    def log_summary(self, study: optuna.Study) -> None:
        flush_live_runs()  # runs of trials that ran in this process (--inline) are complete (or failed)
        self._guard("the study summary", lambda: self._log_summary(study))

    def _log_summary(self, study: optuna.Study) -> None:
        wandb = self._module()
        records = study.user_attrs.get("objectives") or []
        names = [r["name"] for r in records]
        complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        metrics = sorted({m for t in complete for m in (t.user_attrs.get("metrics") or {})} - set(names))
        columns = ["trial", "anchor", *AXES, *names, "feasible", "reused_from", *metrics]
        rows = []
        sign = 1.0 if not records or records[0]["direction"] == "minimize" else -1.0
        for trial in sorted(complete, key=lambda t: sign * t.values[0]):
            axes = trial.user_attrs.get("axes") or {}
            measured = trial.user_attrs.get("metrics") or {}
            rows.append([trial.number, trial.user_attrs.get("anchor"), *(axes.get(a) for a in AXES),
                         *trial.values, is_feasible(trial), trial.user_attrs.get("reused_from"),
                         *(measured.get(m) for m in metrics)])
        counts = {state.name.lower(): 0 for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        for trial in study.get_trials(deepcopy=False):
            if trial.state.name.lower() in counts:
                counts[trial.state.name.lower()] += 1
        run = self._init(name=f"{self.study_name}-summary", job_type="summary",
                         config={"study": study.user_attrs.get("study_file") or {}},
                         # no console capture: it would outlive a failing run and feed on its errors
                         settings=wandb.Settings(**init_settings(self.mode, console="off")))
        try:
            run.log({"leaderboard": wandb.Table(columns=columns, data=rows)})
            run.summary.update({f"trials/{k}": v for k, v in counts.items()})
        finally:
            run.finish()
