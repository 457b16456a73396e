"""How the driver hands trials to workers: the Pool interface, and the in-process pool.

Ray's pool (``miras_search.parallel``) implements the same interface; the driver sees only this.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Protocol

import optuna

from miras_search.errors import MirasError
from miras_search.study.execute import TrialTask, execute


class WorkersLost(MirasError):
    """Raised by ``Pool.wait`` when the pool's workers can no longer be reached at all (the Ray
    node or cluster stopped answering): the trials in flight are lost, none of their results will
    come. ``str(error)`` says what happened; the driver marks those trials interrupted."""


class Pool(Protocol):
    """Runs one trial per slot. ``wait`` returns at least one finished (task, result) pair."""

    capacity: int

    def submit(self, task: TrialTask) -> dict[str, Any]:
        """Start ``task``; returns facts about the worker that took it (host, pid, device)."""
        ...

    def wait(self) -> list[tuple[TrialTask, dict[str, Any]]]:
        """Block until a trial ends; its result is ``TrialResult.to_dict()`` (+ ``trial_s``).
        Raises WorkersLost, within a bounded time, when the workers can no longer be reached."""
        ...

    def shutdown(self) -> None: ...


class InlinePool:
    """Runs trials one at a time in the driver's own process (no Ray; for debugging and tests)."""

    capacity = 1

    def __init__(self, study: optuna.Study | None = None, device: str | None = None,
                 threads: int | None = None):
        self.study, self.device, self.threads = study, device, threads
        self._queue: list[TrialTask] = []

    def submit(self, task: TrialTask) -> dict[str, Any]:
        self._queue.append(task)
        return {"host": socket.gethostname(), "pid": os.getpid(), "device": self.device or "auto"}

    def wait(self) -> list[tuple[TrialTask, dict[str, Any]]]:
        task = self._queue.pop(0)
        return [(task, execute(task, self.device, self.threads, study=self.study))]

    def shutdown(self) -> None:
        self._queue.clear()
