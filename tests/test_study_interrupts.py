"""CtrlC: the driver hears Ctrl-C even when a blocking library call swallows the KeyboardInterrupt."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest
from optuna.trial import TrialState

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


def test_ray_starting_puts_back_the_callers_handlers_not_the_defaults():
    """Ray's start replaces the SIGINT / SIGTERM handlers (its SIGTERM one aborted the driver with a
    C++ stack dump while the workers started); a handler the caller set (CtrlC) is put back."""
    from miras_search.parallel.ray_pool import _callers_signal_handlers

    def ray_like(signum, frame):  # pragma: no cover - never called
        raise SystemExit(signum)

    sigterm_before = signal.getsignal(signal.SIGTERM)  # Ray's, when an earlier test left Ray running
    with CtrlC() as ctrl_c:
        with _callers_signal_handlers():
            signal.signal(signal.SIGTERM, ray_like)
            signal.signal(signal.SIGINT, ray_like)
        assert signal.getsignal(signal.SIGTERM) == ctrl_c._handle == signal.getsignal(signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) == sigterm_before
    before = signal.getsignal(signal.SIGINT)
    try:  # no handler of the caller's: Ray's stay
        with _callers_signal_handlers():
            signal.signal(signal.SIGINT, ray_like)
        assert signal.getsignal(signal.SIGINT) is ray_like
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize(("stop", "code", "words"), [
    (KeyboardInterrupt(), 130, "Ctrl-C"), (SystemExit(signal.SIGTERM), 143, "SIGTERM"),
])
def test_a_stop_while_the_pool_starts_is_an_interrupted_run_that_resume_finishes(tmp_path, stop, code, words):
    """Ctrl-C, or SIGTERM through Ray's own handler (``sys.exit(15)``), while the workers start:
    not a raw exit 15 or a traceback, but a stopped run (exit 130 / 143) with nothing lost."""
    from test_study import run_inline, trials_of, write_study

    from miras_search.study import load_study_file, run_study

    path = write_study(tmp_path, trials=2, sampler={"kind": "random", "anchors": ["gated_deltanet"]})

    def stopped_pool():
        raise stop

    summary = run_study(load_study_file(path), stopped_pool)
    assert summary.interrupted and summary.exit_code == code and summary.interrupted_by == words
    assert summary.marked_interrupted == 0  # no trial had been asked
    trials = trials_of(path)
    assert [t.state for t in trials] == [TrialState.WAITING]  # the anchor, queued once
    summary = run_inline(path)
    trials = trials_of(path)
    assert summary.finished == 2 and [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert [t.user_attrs.get("anchor") for t in trials].count("gated_deltanet") == 1


def test_another_exit_while_the_pool_starts_is_not_taken_for_a_stop(tmp_path):
    from test_study import write_study

    from miras_search.study import load_study_file, run_study

    path = write_study(tmp_path, trials=1, sampler={"kind": "random", "anchors": []})

    def failing_pool():
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        run_study(load_study_file(path), failing_pool)
