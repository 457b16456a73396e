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


def test_sigterm_is_a_request_to_stop_like_ctrl_c():
    """kill PID, timeout, docker stop and batch schedulers send SIGTERM: the driver stops as on
    Ctrl-C, and the command exits 143 (128 + 15) where Ctrl-C exits 130."""
    before = signal.getsignal(signal.SIGTERM)
    with CtrlC() as ctrl_c:
        with contextlib.suppress(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        assert ctrl_c.requested and ctrl_c.signum == signal.SIGTERM
        assert ctrl_c.what == "SIGTERM" and ctrl_c.exit_code == 143
        with pytest.raises(KeyboardInterrupt):
            ctrl_c.check()
    assert signal.getsignal(signal.SIGTERM) is before


def test_ctrl_c_keeps_its_exit_code():
    with CtrlC() as ctrl_c, contextlib.suppress(KeyboardInterrupt):
        _press_ctrl_c()
    assert ctrl_c.what == "Ctrl-C" and ctrl_c.exit_code == 130
