"""Which driver owns a running trial, and whether it is still alive.

Every trial a driver asks for carries its driver's identity (user attr ``driver``: host, pid and
the process's start time, so that a reused pid is not taken for the old driver). Before
a run or resume fails the trials left RUNNING, it checks that their drivers are gone: a driver
still alive on this host means another ``miras run`` is working on the study.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import psutil


def _start_time(pid: int) -> str | None:
    """The process's start time (psutil's create time, to the 1/100 s), or None if it is gone."""
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def this_driver() -> dict[str, Any]:
    """The identity of the calling process, as stored on the trials it asks for."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": _start_time(pid)}


def alive_elsewhere(driver: dict[str, Any] | None) -> bool:
    """Whether ``driver`` (a trial's ``driver`` attr) is another process still running on this
    host. Unknown (older trials), other hosts and this very process count as not alive: their
    trials are left to the usual recovery."""
    if not driver or driver.get("host") != socket.gethostname():
        return False
    pid = int(driver.get("pid", -1))
    if pid <= 0 or pid == os.getpid() or not psutil.pid_exists(pid):
        return False
    recorded = driver.get("started")
    return recorded is None or _start_time(pid) in (None, recorded)
