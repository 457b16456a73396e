"""The driver killed with SIGKILL, or stopped with Ctrl-C, mid-study; then ``miras resume``."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import FrozenTrial, TrialState
from test_study import TINY_TRIAL, trials_of, write_study

from miras_search.errors import MirasError

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]  # one Ray cluster at a time (conftest)
MIRAS = str(Path(sys.executable).parent / "miras")


def _start(path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [MIRAS, "run", str(path), "--workers", "2", "--wandb", "off", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def _wait_for(path: Path, condition, process: subprocess.Popen, limit: float = 240):
    journal = path.parent / "runs" / "tiny" / "study.journal"
    deadline = time.time() + limit
    while time.time() < deadline:
        assert process.poll() is None, process.stdout.read()
        if journal.exists():
            try:
                trials = trials_of(path)
            except MirasError:  # the driver has created the journal but not yet the study in it
                trials = None
            if trials is not None and condition(trials):
                return trials
        time.sleep(0.3)
    raise AssertionError("the study did not get there in time")


def _end_group(process: subprocess.Popen) -> None:
    """Whatever the driver's session left behind (Ray processes), ended by its group id."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _resume(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([MIRAS, "resume", str(path), "--workers", "2", "--wandb", "off"],
                          capture_output=True, text=True, timeout=600)


def _complete(trials) -> dict[int, list[float]]:
    return {t.number: t.values for t in trials if t.state == TrialState.COMPLETE}


def test_kill_9_of_the_driver_then_resume(tmp_path):
    path = write_study(tmp_path, trials=7, sampler={"kind": "random", "anchors": ["gated_deltanet"]},
                       trial={**TINY_TRIAL, "tokens": 6144})
    driver = _start(path)
    try:
        _wait_for(path, lambda ts: len(_complete(ts)) >= 2 and any(t.state == TrialState.RUNNING for t in ts),
                  driver)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        time.sleep(1)
        before = trials_of(path)
    finally:
        _end_group(driver)
    done_before = _complete(before)
    running = [t.number for t in before if t.state == TrialState.RUNNING]
    assert len(done_before) >= 2 and running

    result = _resume(path)
    assert result.returncode == 0, result.stdout + result.stderr
    after = trials_of(path)
    numbers = [t.number for t in after]
    assert numbers == list(range(len(after)))  # no number reused or skipped
    assert {n: v for n, v in _complete(after).items() if n in done_before} == done_before
    for number in running:
        dead = after[number]
        assert dead.state == TrialState.FAIL and dead.user_attrs["failure"] == "interrupted"
        assert sum(t.user_attrs.get("requeued_from") == number for t in after) == 1
    assert not any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in after)
    counted = [t for t in after if not (t.state == TrialState.FAIL and t.user_attrs.get("failure") == "interrupted")]
    assert len(counted) == 7 and all(t.state == TrialState.COMPLETE for t in counted)
    assert [t.user_attrs.get("anchor") for t in after].count("gated_deltanet") == 1 + (0 in running)


def test_ctrl_c_marks_running_trials_and_resume_finishes(tmp_path):
    # enough trials that Ctrl-C lands mid-study, with many still to run, on a loaded machine
    path = write_study(tmp_path, trials=10, sampler={"kind": "random", "anchors": []},
                       trial={**TINY_TRIAL, "tokens": 6144})
    driver = _start(path)
    try:
        _wait_for(path, lambda ts: len(_complete(ts)) >= 1 and any(t.state == TrialState.RUNNING for t in ts),
                  driver)
        os.kill(driver.pid, signal.SIGINT)
        output, _ = driver.communicate(timeout=120)
    finally:
        _end_group(driver)
    assert driver.returncode == 130, output
    assert "miras resume" in output
    stopped = trials_of(path)
    assert not any(t.state == TrialState.RUNNING for t in stopped)  # storage is consistent
    interrupted = [t for t in stopped if t.user_attrs.get("failure") == "interrupted"]
    assert interrupted and all(t.state == TrialState.FAIL for t in interrupted)
    assert sum(t.state == TrialState.WAITING for t in stopped) == len(interrupted)  # queued again

    result = _resume(path)
    assert result.returncode == 0, result.stdout + result.stderr
    after = trials_of(path)
    assert sum(t.state == TrialState.COMPLETE for t in after) == 10
    done = _complete(stopped)
    assert {n: v for n, v in _complete(after).items() if n in done} == done


def test_sigterm_marks_running_trials_like_ctrl_c(tmp_path):
    """SIGTERM (kill, timeout, docker stop, Slurm) to a driver on Ray: no abort with Ray's C++
    stack dump, but the Ctrl-C path: running trials marked interrupted, the resume hint, exit 143."""
    path = write_study(tmp_path, trials=6, sampler={"kind": "random", "anchors": []},
                       trial={**TINY_TRIAL, "tokens": 6144})
    driver = _start(path)
    try:
        _wait_for(path, lambda ts: any(t.state == TrialState.RUNNING for t in ts), driver)
        os.kill(driver.pid, signal.SIGTERM)
        output, _ = driver.communicate(timeout=120)
    finally:
        _end_group(driver)
    assert driver.returncode == 143, output
    text = " ".join(output.split())
    assert "stopped by SIGTERM" in text and "miras resume" in text, text
    assert re.search(r"\b\d+ running trials? (was|were) marked interrupted", text), text
    assert "SIGTERM received" not in output  # Ray's C++ handler did not run
    stopped = trials_of(path)
    assert not any(t.state == TrialState.RUNNING for t in stopped)
    interrupted = [t for t in stopped if t.user_attrs.get("failure") == "interrupted"]
    assert interrupted and all("SIGTERM" in t.user_attrs["reason"] for t in interrupted)


def _interrupted_inline_run(path: Path) -> FrozenTrial:
    """Run the study at ``path`` inline (a method patched to raise KeyboardInterrupt once); check
    that nothing is left RUNNING and exactly one trial was failed as interrupted and queued again.
    Returns that trial."""
    from miras_search.study import InlinePool, load_study_file, run_study

    summary = run_study(load_study_file(path), lambda: InlinePool(threads=1))
    assert summary.interrupted and summary.marked_interrupted == 1
    trials = trials_of(path)
    assert not any(t.state == TrialState.RUNNING for t in trials)
    stopped = [t for t in trials if t.user_attrs.get("failure") == "interrupted"]
    assert len(stopped) == 1 and stopped[0].state == TrialState.FAIL
    assert sum(t.state == TrialState.WAITING for t in trials) == 1  # queued again
    return stopped[0]


def test_a_ctrl_c_between_ask_and_hand_over_leaves_no_running_trial(tmp_path, monkeypatch):
    """A Ctrl-C after Optuna created the trial but before a worker took it (sampling, the
    pool's submit): that trial is failed as interrupted and queued again, like those in flight."""
    from miras_search.study.driver import StudyDriver

    path = write_study(tmp_path, trials=3, sampler={"kind": "random", "anchors": []})
    place = StudyDriver._place
    calls = []

    def interrupted_second(self, pool, trial):
        calls.append(trial.number)
        if len(calls) == 2:
            raise KeyboardInterrupt
        place(self, pool, trial)

    monkeypatch.setattr(StudyDriver, "_place", interrupted_second)
    assert _interrupted_inline_run(path).number == calls[1]


def test_a_ctrl_c_between_a_result_and_its_record_leaves_no_running_trial(tmp_path, monkeypatch):
    """A Ctrl-C after a worker's result came back but before the trial was told (the driver had
    already taken it off its books): storage, not the driver's books, says what was in flight."""
    from miras_search.study.driver import StudyDriver

    path = write_study(tmp_path, trials=3, sampler={"kind": "random", "anchors": []})
    outcome = StudyDriver._outcome

    def interrupted_first(self, result):
        if not getattr(self, "_interrupted_once", False):
            self._interrupted_once = True
            raise KeyboardInterrupt
        return outcome(self, result)

    monkeypatch.setattr(StudyDriver, "_outcome", interrupted_first)
    _interrupted_inline_run(path)


def test_the_resume_note_says_what_happened_to_each_recovered_trial():
    from miras_search.study.driver import recovery_note

    on_ray = recovery_note([3, 4], [{"number": 3, "driver_died": 0}, {"number": 4, "driver_died": 0}])
    assert on_ray.startswith("trial(s) 3, 4 were running") and "queued again" in on_ray
    assert "not run first" not in on_ray and "crashed" not in on_ray  # a Ray trial took nothing down
    inline = recovery_note([5], [{"number": 5, "driver_died": 1}])
    assert "is not run first; after a second time it is not run again" in inline
    mixed = recovery_note([5, 6], [{"number": 6, "driver_died": 0}])
    assert "trial(s) 6 were running" in mixed and "trial(s) 5 took the driver's process down a second time" in mixed
