"""One driver per study: a lease in the study's storage (so it holds across machines) keeps a
second `miras run` of a running study from running its target again."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from test_study import trials_of, write_study
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.errors import MirasError
from miras_search.study import load_study_file, open_study
from miras_search.study.lease import LEASE_ATTR, acquire, holder_of
from miras_search.study.storage import make_storage

ROOT = Path(__file__).resolve().parents[1]


def _study(tmp_path) -> optuna.Study:
    return optuna.create_study(study_name="s", storage=make_storage(str(tmp_path / "study.journal")))


def _foreign(study: optuna.Study, expires_in: float) -> None:
    """A lease written by a driver on another machine."""
    study.set_user_attr(LEASE_ATTR, {"token": "theirs", "since": time.time(),
                                     "expires": time.time() + expires_in,
                                     "holder": {"host": "another-machine", "pid": 4242, "started": None}})


def test_a_held_lease_refuses_a_second_driver_until_released(tmp_path):
    study = _study(tmp_path)
    first = acquire(study, settle_s=0.05)
    try:
        _foreign_free = holder_of(study)
        assert _foreign_free is None  # this very process never blocks itself
    finally:
        first.release()
    _foreign(study, expires_in=60)
    with pytest.raises(MirasError, match=r"being run by another driver \(host another-machine, pid 4242"):
        acquire(study, settle_s=0.05)
    _foreign(study, expires_in=-1)  # the other machine's driver died a while ago
    acquire(study, settle_s=0.05).release()
    assert open_lease(study)["released"] is True


def open_lease(study: optuna.Study) -> dict:
    return optuna.load_study(study_name="s", storage=study._storage).user_attrs[LEASE_ATTR]


def test_drivers_that_start_together_leave_exactly_one_holder(tmp_path):
    """Written at nearly the same time from two connections to the storage: after the settle
    time, both read the same last write, so one goes on and the other refuses."""
    path = str(tmp_path / "study.journal")
    optuna.create_study(study_name="s", storage=make_storage(path))
    for _ in range(3):
        outcomes: list[str] = []
        barrier = threading.Barrier(2)

        def start(outcomes=outcomes, barrier=barrier):
            study = optuna.load_study(study_name="s", storage=make_storage(path))
            barrier.wait()
            try:
                lease = acquire(study, settle_s=2.0)  # far above a busy machine's read-to-write gap
            except MirasError:
                outcomes.append("refused")
                return
            outcomes.append("held")
            time.sleep(0.5)
            lease.release()

        threads = [threading.Thread(target=start) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["held", "refused"]


def test_a_lease_is_renewed_while_held(tmp_path):
    study = _study(tmp_path)
    lease = acquire(study, ttl_s=2.0, renew_s=0.2, settle_s=0.05)
    try:
        first = open_lease(study)["expires"]
        deadline = time.time() + 30  # generous: the machine may be busy
        while open_lease(study)["expires"] == first and time.time() < deadline:
            time.sleep(0.1)
        assert open_lease(study)["expires"] > first
    finally:
        lease.release()


def test_a_lease_taken_over_stops_the_driver_that_lost_it(tmp_path):
    study = _study(tmp_path)
    lease = acquire(study, ttl_s=60, renew_s=0.1, settle_s=0.05)
    _foreign(study, expires_in=60)
    deadline = time.time() + 30
    while lease.lost is None and time.time() < deadline:
        time.sleep(0.05)
    with pytest.raises(MirasError, match="no longer this driver's: host another-machine"):
        lease.check()
    lease.release()
    assert open_lease(study)["token"] == "theirs"  # the release leaves the new holder alone


def test_run_refuses_a_study_held_by_a_driver_on_another_machine(tmp_path):
    path = write_study(tmp_path, trials=1)
    result = CliRunner().invoke(app, ["run", str(path), "--inline"])
    assert result.exit_code == 0, result.output
    _foreign(open_study(load_study_file(path)), expires_in=60)
    result = CliRunner().invoke(app, ["resume", str(path), "--inline", "--trials", "2"])
    assert result.exit_code == 1 and "being run by another driver" in result.output
    assert "running 0" not in result.output  # refused before the progress bar shows
    assert len(trials_of(path)) == 1


_SLOW_DRIVER = """
import importlib, os, sys, time
from pathlib import Path
execute = importlib.import_module("miras_search.study.execute")
real = execute.run_trial
def run_trial(*args, **kwargs):
    Path(os.environ["STARTED"]).touch()
    deadline = time.time() + 300
    while not Path(os.environ["GO"]).exists() and time.time() < deadline:
        time.sleep(0.1)
    return real(*args, **kwargs)
execute.run_trial = run_trial
from miras_search.cli import app
app(sys.argv[1:])
"""


def test_a_second_run_of_a_running_study_does_not_run_its_target_again(tmp_path):
    path = write_study(tmp_path, trials=2)
    script = tmp_path / "slow_driver.py"
    script.write_text(_SLOW_DRIVER)
    started, go = tmp_path / "started", tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "STARTED": str(started), "GO": str(go)}
    first = subprocess.Popen([sys.executable, str(script), "run", str(path), "--inline"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not started.exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert started.exists(), first.communicate()
        second = CliRunner().invoke(app, ["run", str(path), "--inline"])
        assert second.exit_code == 1, second.output
        assert "being run by another driver" in " ".join(second.output.split())
        go.touch()
        _, err = first.communicate(timeout=600)
    finally:
        go.touch()
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err[-2000:]
    trials = trials_of(path)
    assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


def test_status_says_when_running_trials_have_no_driver_left(tmp_path):
    """A driver killed mid-study leaves its trials RUNNING in storage: once no live driver holds
    the lease, status says they stopped with it (and how to continue), not that they run."""
    import socket

    path = write_study(tmp_path, trials=1)
    assert CliRunner().invoke(app, ["run", str(path), "--inline"]).exit_code == 0
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid of this host whose process has ended
    study = open_study(load_study_file(path))
    for _ in range(2):
        study.ask().set_user_attr("driver", {"host": socket.gethostname(), "pid": gone.pid, "started": "1.00"})
    text = " ".join(CliRunner().invoke(app, ["status", str(path)]).output.split())
    assert "2 were running when its driver stopped" in text and "miras resume" in text, text
    assert "2 running" not in text
    _foreign(study, expires_in=60)  # a live driver on another machine holds the study: they run
    text = " ".join(CliRunner().invoke(app, ["status", str(path)]).output.split())
    assert "2 running" in text and "driver stopped" not in text, text


def test_status_gives_no_eta_when_no_driver_holds_the_study(tmp_path):
    """However its driver stopped (Ctrl-C releases the lease, kill -9 lets it lapse), a study
    that no driver holds makes no progress: no ETA; while a live driver holds it, an ETA."""
    path = write_study(tmp_path, trials=3)
    assert CliRunner().invoke(app, ["run", str(path), "--inline", "--trials", "1"]).exit_code == 0
    study = open_study(load_study_file(path))
    study.set_user_attr("run", {**study.user_attrs["run"], "target": 3})  # as a run stopped early
    text = " ".join(CliRunner().invoke(app, ["status", str(path)]).output.split())
    assert "1/3 finished" in text and "ETA -" in text, text
    _foreign(study, expires_in=60)  # a live driver (on another machine) holds it
    text = " ".join(CliRunner().invoke(app, ["status", str(path)]).output.split())
    assert "1/3 finished" in text and "ETA 0:" in text, text
