"""CtrlC: the driver hears Ctrl-C even when a blocking library call swallows the KeyboardInterrupt."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest

from miras_search.study.interrupts import CtrlC


def _press_ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)  # the handler runs at the next bytecode boundary


def test_a_swallowed_ctrl_c_is_still_reported():
    before = signal.getsignal(signal.SIGINT)
    with CtrlC() as ctrl_c:
        with contextlib.suppress(KeyboardInterrupt):  # what a library's blocking wait might do
            _press_ctrl_c()
        assert ctrl_c.requested
        with pytest.raises(KeyboardInterrupt):
            ctrl_c.check()
    assert signal.getsignal(signal.SIGINT) is before


def test_no_request_no_interrupt():
    with CtrlC() as ctrl_c:
        ctrl_c.check()
    assert not ctrl_c.requested


def test_an_inherited_ignore_does_not_hide_a_request():
    """A driver started with SIGINT ignored (a background job) still stops on kill -INT."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with CtrlC() as ctrl_c, contextlib.suppress(KeyboardInterrupt):
            _press_ctrl_c()
        assert ctrl_c.requested
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # restored on exit
    finally:
        signal.signal(signal.SIGINT, previous)
