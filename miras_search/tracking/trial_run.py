"""What a worker logs to a trial's live W&B run, as hooks of ``run_trial``.

Every optimiser step: training loss, learning rate, tokens/s; every ``SYSTEM_EVERY_S`` seconds
(and at the first step) the worker process's memory and CPU (``system/rss_mb``,
``system/cpu_percent``). At every report the study makes (``trial.report_every`` steps, when it
prunes): the objective on the quick validation pass the pruner reads (``objective/<name>``).
Logging never makes the trial compute anything it would not compute without it: a study that
does not prune has no reports, and its runs get the objective at the end. At the end: every
metric, the objectives, the state and, for a failed trial, why.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import psutil

from miras_search.tracking.live import LiveRun, flush_live_runs, start_error
from miras_search.trial import Objective, TrialResult

SYSTEM_EVERY_S = 2.0
"""Seconds between two samples of the worker's memory and CPU."""


class TrialRun:
    """A trial's live run (``study.execute.LiveRun``): hooks for ``run_trial`` and the summary."""

    flush = staticmethod(flush_live_runs)

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.run = LiveRun(settings)
        self.objectives = [Objective.model_validate(o) for o in settings.get("objectives", [])]
        self.process = psutil.Process()
        self.process.cpu_percent()  # the first call starts the interval
        self._sampled = -float("inf")

    def start_error(self) -> str | None:
        """Why a run of this study did not start in this process (then none is tried), if one did not."""
        return start_error(self.settings)

    def _system(self) -> dict[str, float]:
        self._sampled = time.perf_counter()
        return {"system/rss_mb": self.process.memory_info().rss / 2**20,
                "system/cpu_percent": self.process.cpu_percent()}

    def hooks(self, report):
        """(report, progress) for run_trial: ``report`` wraps the pruner's; None stays None."""
        name = self.objectives[0].name if self.objectives else "objective"
        logged_report = None
        if report is not None:
            def logged_report(step: int, value: float) -> bool | None:
                self.run.log({f"objective/{name}": value}, step)
                return report(step, value)

        def progress(info) -> None:
            row = {"train_loss": info.loss, "lr": info.lr, "tokens_per_s": info.tokens / max(info.seconds, 1e-9)}
            if time.perf_counter() - self._sampled >= SYSTEM_EVERY_S:
                row.update(self._system())
            self.run.log(row, info.step)

        return logged_report, progress

    def close(self, result: TrialResult) -> None:
        state = {"complete": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL"}[result.status]
        summary: dict[str, Any] = {f"metrics/{k}": v for k, v in result.metrics.items()}
        if result.ok:  # a pruned trial has no objective value (its last report is not one)
            for objective in self.objectives:
                with contextlib.suppress(KeyError):  # a metric this trial did not measure
                    summary[f"objective/{objective.name}"] = objective.value(result.metrics)
        summary.update(self._system())
        summary.update(state=state, failure=result.failure, reason=result.reason)
        record = {"config": self.settings["config"], "summary": summary,
                  "curve": [[int(s), float(v)] for s, v in result.curve]}
        self.run.finish(summary, record)
