"""What a worker logs to a trial's live W&B run, as hooks of ``run_trial``.

Every optimiser step: training loss, learning rate, tokens/s. At every pruning report (every
``report_every`` steps; with W&B on, a trial reports even without a pruner, so the curve exists):
the objective on a quick validation pass (``objective/<name>``), and the worker process's memory
and CPU (``system/rss_mb``, ``system/cpu_percent``). At the end: every metric, the objectives,
the state and, for a failed trial, why.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psutil

from miras_search.tracking.live import LiveRun
from miras_search.trial import Objective, TrialResult


class TrialRun:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.run = LiveRun(settings)
        self.objectives = [Objective.model_validate(o) for o in settings.get("objectives", [])]
        self.process = psutil.Process()
        self.process.cpu_percent()  # the first call starts the interval

    def hooks(self, report):
        """(report, progress) for run_trial: ``report`` wraps the pruner's (or stands alone)."""
        name = self.objectives[0].name if self.objectives else "objective"

        def logged_report(step: int, value: float) -> bool | None:
            self.run.log({f"objective/{name}": value, "system/rss_mb": self.process.memory_info().rss / 2**20,
                          "system/cpu_percent": self.process.cpu_percent()}, step)
            return True if report is None else report(step, value)

        def progress(info) -> None:
            self.run.log({"train_loss": info.loss, "lr": info.lr,
                          "tokens_per_s": info.tokens / max(info.seconds, 1e-9)}, info.step)

        return logged_report, progress

    def close(self, result: TrialResult) -> None:
        state = {"complete": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL"}[result.status]
        summary: dict[str, Any] = {f"metrics/{k}": v for k, v in result.metrics.items()}
        if result.ok:  # a pruned trial has no objective value (its last report is not one)
            for objective in self.objectives:
                with contextlib.suppress(KeyError):  # a metric this trial did not measure
                    summary[f"objective/{objective.name}"] = objective.value(result.metrics)
        summary.update(state=state, failure=result.failure, reason=result.reason)
        record = {"config": self.settings["config"], "summary": summary,
                  "curve": [[int(s), float(v)] for s, v in result.curve]}
        self.run.finish(summary, record)
