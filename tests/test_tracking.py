"""W&B tracking in offline mode: one run per trial with its config and metrics, a summary run,
and a broken W&B never failing a study."""

from __future__ import annotations

import errno
import io
import json
import logging
from pathlib import Path
from typing import ClassVar

import optuna
import pytest
from optuna.trial import TrialState
from test_study import run_inline, trials_of, write_study

from miras_search.study import load_study_file, open_study
from miras_search.tracking import WandbTracker, live


def _offline_runs(folder):
    return sorted(folder.glob("offline-run-*"))  # in the tracker's folder, not a nested wandb/wandb


def test_offline_runs_hold_each_trials_config_and_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)  # restored (unset) after the test
    path = write_study(tmp_path, trials=2, sampler={"kind": "tpe", "anchors": ["gated_deltanet"]})
    spec = load_study_file(path)
    out = spec.out_dir() / "wandb"
    run_inline(path, tracker=WandbTracker(spec.name, out, "offline"))
    runs = _offline_runs(out)
    assert len(runs) == 3  # two trials + the study summary
    trials = {t.number: t for t in trials_of(path)}
    seen = set()
    for run in runs:
        log = next(run.glob("run-*.wandb")).read_bytes()  # W&B's own record of the run
        assert b"train_loss" in log or b"leaderboard" in log
        if not (run / "files" / "miras_trial.json").exists():
            assert b"leaderboard" in log and b"trials/complete" in log  # the summary run
            continue
        record = json.loads((run / "files" / "miras_trial.json").read_text())
        config, summary = record["config"], record["summary"]
        number = config["trial"]
        seen.add(number)
        trial = trials[number]
        point = trial.user_attrs["point"]
        assert config["memory.kind"] == point["memory"]["kind"]
        assert config["train.tokens"] == point["train"]["tokens"]
        assert summary["metrics/val_bpb"] == trial.user_attrs["metrics"]["val_bpb"]
        assert summary["objective/val_bpb"] == trial.values[0]
        assert record["curve"] == trial.user_attrs["curve"]
        assert b"metrics/val_bpb" in log and b"memory.kind" in log
    assert seen == {0, 1}
    # the summary's leaderboard table is staged beside the runs, not in the user's home
    assert any(staged.is_file() for staged in (out / "data").rglob("*"))


def test_a_failing_wandb_never_fails_the_study(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the W&B folder should go")
    path = write_study(tmp_path, trials=2)
    tracker = WandbTracker("tiny", blocker / "wandb", "offline")
    summary = run_inline(path, tracker=tracker)
    assert summary.finished == 2
    assert all(t.state == TrialState.COMPLETE for t in trials_of(path))
    assert tracker.error is not None and not tracker.enabled


def test_a_pruned_trial_logs_no_objective(tmp_path, monkeypatch):
    """Optuna stores a pruned trial's last training loss as its value: not an objective."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    path = write_study(tmp_path, trials=1)
    run_inline(path)
    study = open_study(load_study_file(path))
    pruned = optuna.trial.create_trial(state=TrialState.PRUNED, value=1.5, user_attrs={
        "curve": [[2, 1.5]], "failure": "pruned", "metrics": {}})
    study.add_trial(pruned)
    tracker = WandbTracker("tiny", tmp_path / "wandb", "offline")
    tracker.log_trial(study, study.trials[-1])
    tracker.log_trial(study, study.trials[0])
    assert tracker.error is None
    summaries = {}
    for run in _offline_runs(tmp_path / "wandb"):
        record = json.loads((run / "files" / "miras_trial.json").read_text())
        summaries[record["summary"]["state"]] = record["summary"]
    assert "objective/val_bpb" not in summaries["PRUNED"]
    assert summaries["COMPLETE"]["objective/val_bpb"] == study.trials[0].values[0]


def test_the_worker_logs_the_trial_while_it_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    path = write_study(tmp_path, trials=1, sampler={"kind": "random", "anchors": []})
    spec = load_study_file(path)
    out = spec.out_dir() / "wandb"
    run_inline(path, tracker=WandbTracker(spec.name, out, "offline"))
    assert not (out / "wandb").exists()  # runs/<study>/wandb/offline-run-*, not wandb/wandb
    trial_runs = [r for r in _offline_runs(out) if (r / "files" / "miras_trial.json").exists()]
    assert len(trial_runs) == 1
    log = next(trial_runs[0].glob("run-*.wandb")).read_bytes()
    # per step: loss, lr, throughput; per report: the objective on validation and system stats
    for key in (b"train_loss", b"lr", b"tokens_per_s", b"objective/val_bpb", b"system/rss_mb",
                b"system/cpu_percent", b"metrics/peak_mem_mb"):
        assert key in log, key


class _Recorder:
    """Stands in for tracking.live.LiveRun: keeps what a trial's run would log."""

    runs: ClassVar[list[_Recorder]] = []

    def __init__(self, settings):
        self.settings, self.rows, self.summary = settings, [], None
        _Recorder.runs.append(self)

    def log(self, row, step):
        self.rows.append((step, row))

    def finish(self, summary, record):
        self.summary = summary


def test_live_rows_follow_the_studys_reports(tmp_path, monkeypatch):
    """Every step: loss, lr, tokens/s; at every pruning report: the objective on validation;
    system stats at the first step; at the end every metric and the objective."""
    import miras_search.tracking.trial_run as trial_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(trial_run, "LiveRun", _Recorder)
    _Recorder.runs = []
    path = write_study(tmp_path, trials=1, sampler={"kind": "random", "anchors": []},
                       pruner={"kind": "median", "n_startup_trials": 5})
    spec = load_study_file(path)
    run_inline(path, tracker=WandbTracker(spec.name, spec.out_dir() / "wandb", "offline"))
    (run,) = _Recorder.runs
    trial = trials_of(path)[0]
    steps = [step for step, row in run.rows if "train_loss" in row]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) > 2
    assert all({"lr", "tokens_per_s"} <= set(row) for _, row in run.rows if "train_loss" in row)
    reported = {step: row["objective/val_bpb"] for step, row in run.rows if "objective/val_bpb" in row}
    assert reported == trial.intermediate_values  # what the pruner saw, at the same steps
    assert "system/rss_mb" in dict(run.rows)[1] and run.summary["system/rss_mb"] > 0
    assert run.summary["objective/val_bpb"] == trial.values[0] and run.summary["state"] == "COMPLETE"
    assert run.summary["metrics/tokens_per_s"] == trial.user_attrs["metrics"]["tokens_per_s"]


def test_tracking_runs_no_validation_pass_of_its_own(tmp_path, monkeypatch):
    """Without a pruner a trial reports nothing, with W&B on or off: logging does not change what
    a trial computes (nor its time, tokens/s)."""
    import miras_search.tracking.trial_run as trial_run
    import miras_search.trial.runner as runner

    monkeypatch.setattr(trial_run, "LiveRun", _Recorder)
    calls = []
    original = runner.evaluate
    monkeypatch.setattr(runner, "evaluate", lambda *a, **k: calls.append(1) or original(*a, **k))
    counts = {}
    for mode in ("off", "offline"):
        folder = tmp_path / mode
        folder.mkdir()
        path = write_study(folder, trials=1, sampler={"kind": "random", "anchors": []})
        spec = load_study_file(path)
        calls.clear()
        tracker = None if mode == "off" else WandbTracker(spec.name, spec.out_dir() / "wandb", mode)
        run_inline(path, tracker=tracker)
        counts[mode] = len(calls)
    assert counts["off"] == counts["offline"] == 1  # the final evaluation only


def test_an_unreachable_wandb_is_tried_once_with_a_short_timeout(tmp_path, monkeypatch):
    """`--wandb online` with no network: a run waits a short start timeout (not W&B's 90 s, once
    per run and again for the summary run), then W&B is off for the rest of the study, said once."""
    import wandb

    tried = []

    def init(**kwargs):
        tried.append(kwargs.get("settings"))
        raise wandb.errors.CommError("Timed out while retrying: Post \"https://api.wandb.ai/graphql\": "
                                     "no such host\nConsider increasing the init_timeout setting")

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    path = write_study(tmp_path, trials=3)
    spec = load_study_file(path)
    tracker = WandbTracker(spec.name, spec.out_dir() / "wandb", "online")
    summary = run_inline(path, tracker=tracker)
    assert summary.finished == 3 and all(t.state == TrialState.COMPLETE for t in trials_of(path))
    assert len(tried) == 1, tried  # the first trial's run; no other trial's, no summary run
    assert tried[0] is not None and tried[0].init_timeout <= 30
    assert not tracker.enabled and tracker.error is not None
    assert "no such host" in tracker.error and "--wandb offline" in tracker.error
    assert "init_timeout" not in tracker.error  # W&B's advice to wait longer is not passed on


class _FullDisk(io.StringIO):
    """A log file on a full disk: every write fails."""

    def write(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["run", "log file"])
def test_a_full_disk_turns_wandb_off_in_one_line(tmp_path, monkeypatch, capfd, where):
    """W&B's runs on a full disk: the first failed write (a row logged, or a line of W&B's own
    debug.log, which Python's logging would print a traceback for, per line) turns W&B off:
    no later run starts, the run being written stops, no summary run, no traceback."""
    import wandb

    started, handlers = [], []

    class Run:
        summary: ClassVar[dict] = {}

        def __init__(self, folder):
            self.dir = str(folder)

        def log(self, row, step):
            logging.getLogger("wandb.sdk.wandb_run").info("logging step %s", step)
            if where == "run":
                raise OSError(errno.ENOSPC, "No space left on device")

        def finish(self):
            logging.getLogger("wandb.sdk.wandb_run").info("finishing")

    def init(**kwargs):
        folder = Path(kwargs["dir"]) / "wandb" / f"offline-run-{len(started)}"
        handler = logging.StreamHandler(_FullDisk() if where == "log file" else io.StringIO())
        handler.baseFilename = str(folder / "logs" / "debug.log")  # as W&B's FileHandler
        logging.getLogger("wandb").addHandler(handler)
        handlers.append(handler)
        started.append(kwargs["name"])
        return Run(folder)

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(live, "LOG_EVERY_S", 0.01)
    path = write_study(tmp_path, trials=3)
    spec = load_study_file(path)
    tracker = WandbTracker(spec.name, spec.out_dir() / "wandb", "offline")
    try:
        summary = run_inline(path, tracker=tracker)
    finally:
        for handler in handlers:
            logging.getLogger("wandb").removeHandler(handler)
    assert summary.finished == 3 and all(t.state == TrialState.COMPLETE for t in trials_of(path))
    assert started == ["tiny-trial-0"], started  # no later trial's run, no summary run
    assert not tracker.enabled and tracker.error == "OSError: [Errno 28] No space left on device"
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "Logging error" not in out + err, (out + err)[-3000:]


def test_an_unwritable_wandb_folder_turns_tracking_off_before_wandb_starts(tmp_path, monkeypatch):
    """W&B's wandb-core service inherits the terminal and, when it cannot make its log folder,
    logs there (Go log lines under the run's output): an unwritable folder is found first (here
    a path through a file, which even root cannot write), and W&B is never started."""
    from miras_search.tracking import wandb_tracker

    started = []
    monkeypatch.setattr(wandb_tracker, "warm_up", lambda settings: started.append(settings))
    (tmp_path / "a-file").write_text("")
    tracker = WandbTracker("tiny", tmp_path / "a-file" / "wandb", "offline")
    assert not tracker.enabled and started == [] and tracker.worker_warm_up is None
    assert tracker.error is not None and tracker.error.startswith(
        f"cannot write the W&B folder {tmp_path / 'a-file' / 'wandb'}: ")
    assert live.folder_write_error(tmp_path / "writable") is None and (tmp_path / "writable").is_dir()
    assert list((tmp_path / "writable").iterdir()) == []  # the check leaves nothing behind
