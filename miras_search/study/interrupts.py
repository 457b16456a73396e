"""Ctrl-C for the study driver: heard wherever it lands, and never lost.

Python turns SIGINT into a KeyboardInterrupt wherever the main thread happens to be; inside a
library's blocking wait (Ray's, say) that exception can be caught and dropped, and the study
would run on. ``CtrlC`` records the request as well, so the driver can check it between steps.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any


class CtrlC:
    """While active (a ``with`` block in the main thread): SIGINT sets ``requested`` and raises
    KeyboardInterrupt; ``check()`` raises KeyboardInterrupt once a request was made.

    This holds even where the process inherited SIGINT as ignored (a shell's background job, or a
    parent that ignores it): there, ``kill -INT`` is a deliberate request to stop, and stopping
    gracefully (running trials marked, ``miras resume`` offered) beats running on.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise KeyboardInterrupt if Ctrl-C was pressed (even if a library swallowed it)."""
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
