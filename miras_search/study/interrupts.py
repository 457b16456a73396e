"""Ctrl-C (and SIGTERM) for the study driver: heard wherever it lands, and never lost.

Python turns SIGINT into a KeyboardInterrupt wherever the main thread happens to be; inside a
library's blocking wait (Ray's, say) that exception can be caught and dropped, and the study
would run on. ``CtrlC`` records the request as well, so the driver can check it between steps.

SIGTERM (``kill PID``, ``timeout``, ``docker stop``, a batch scheduler ending a job) is a request
to stop too, and is handled the same way. Ray installs its own SIGTERM handler in the driver
(Python's at ``ray.init``, then its C++ core's when it connects, which dumps a stack and aborts),
so ``CtrlC`` must be entered after the pool has connected: its handler then replaces Ray's, and
Ray's is restored on exit.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class CtrlC:
    """While active (a ``with`` block in the main thread): SIGINT or SIGTERM sets ``requested``
    (and ``signum``) and raises KeyboardInterrupt; ``check()`` raises KeyboardInterrupt once a
    request was made.

    This holds even where the process inherited SIGINT as ignored (a shell's background job, or a
    parent that ignores it): there, ``kill -INT`` is a deliberate request to stop, and stopping
    gracefully (running trials marked, ``miras resume`` offered) beats running on.
    """

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if self.signum is None:
            self.signum = signum
        raise KeyboardInterrupt

    @property
    def what(self) -> str:
        """How the stop was asked for, for messages: 'Ctrl-C' or 'SIGTERM'."""
        return "SIGTERM" if self.signum == signal.SIGTERM else "Ctrl-C"

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal: 130 (SIGINT), 143 (SIGTERM)."""
        return 128 + (self.signum or signal.SIGINT)

    def check(self) -> None:
        """Raise KeyboardInterrupt if Ctrl-C was pressed (even if a library swallowed it)."""
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            # None: a handler set outside Python (Ray's C++ one), which Python cannot put back
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
