"""Studies on a real local Ray instance with 2 workers: both workers used, pruning decided from
intermediate values the workers write to the shared storage, a killed worker fails only its trial."""

from __future__ import annotations

import math
import os
import signal
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState
from test_study import TINY_TRIAL, trials_of, write_study

from miras_search.errors import MirasError
from miras_search.parallel.ray_pool import START_TIMEOUT_S
from miras_search.study import load_study_file, run_study
from miras_search.study.setup import create_study, storage_of

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]  # one Ray cluster at a time (conftest)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def ray_pool(workers: int = 2):
    from miras_search.parallel import RayPool

    return lambda: RayPool(workers)


def test_two_workers_run_a_study_on_local_ray(tmp_path):
    path = write_study(tmp_path, trials=4, sampler={"kind": "random", "anchors": ["gated_deltanet"]})
    summary = run_study(load_study_file(path), ray_pool(2))
    trials = trials_of(path)
    assert summary.finished == 4 and len(trials) == 4
    assert all(t.state == TrialState.COMPLETE and t.values == [t.user_attrs["metrics"]["val_bpb"]] for t in trials)
    pids = {t.user_attrs["worker"]["pid"] for t in trials if "reused_from" not in t.user_attrs}
    assert len(pids) == 2 and os.getpid() not in pids
    assert all(t.user_attrs["worker"]["device"] == "cpu" and t.user_attrs["worker"]["threads"] == 1 for t in trials)


def test_pruning_uses_intermediate_values_reported_by_the_workers(tmp_path):
    path = write_study(tmp_path, trials=5, sampler={"kind": "random", "anchors": []},
                       pruner={"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 0})
    spec = load_study_file(path)
    study = create_study(spec, storage_of(spec), spec.load_space())
    for _ in range(3):  # earlier trials whose curve no tiny model can match: every new one is pruned
        study.add_trial(optuna.trial.create_trial(
            values=[0.0], intermediate_values={step: 0.0 for step in range(1, 20)},
            user_attrs={"anchor": None, "point_key": "fake"},
        ))
    run_study(spec, ray_pool(2))
    new = [t for t in trials_of(path) if t.number >= 3]
    assert len(new) == 2 and all(t.state == TrialState.PRUNED for t in new), [t.state for t in new]
    for trial in new:
        assert list(trial.intermediate_values) == [2]  # reported by the worker at step 2, then stopped
        # in the objective's unit (val_bpb, on a quick validation pass), not nats of training
        # loss: near an untrained byte model's log2(vocab) bits, so well above the loss in nats
        loss_nats = trial.user_attrs["curve"][0][1]
        assert trial.intermediate_values[2] == pytest.approx(loss_nats / math.log(2), rel=0.15)
        assert trial.intermediate_values[2] > 1.2 * loss_nats
        assert trial.user_attrs["worker"]["pid"] != os.getpid()


def test_a_killed_worker_fails_its_trial_which_runs_once_more_and_the_study_goes_on(tmp_path):
    path = write_study(tmp_path, trials=3, sampler={"kind": "random", "anchors": []},
                       trial={**TINY_TRIAL, "tokens": 40960})
    spec = load_study_file(path)
    outcome = {}
    driver = threading.Thread(target=lambda: outcome.setdefault("summary", run_study(spec, ray_pool(2))))
    driver.start()
    victim = None
    # as long as the pool gives its workers to start (a CI machine loaded by other work took
    # over 120 s for a worker to import torch), and no longer than the driver runs
    deadline = time.time() + START_TIMEOUT_S
    while victim is None and time.time() < deadline and driver.is_alive():
        time.sleep(0.2)
        try:
            trials = trials_of(path)
        except MirasError:  # the driver thread has not created the study yet
            continue
        for trial in trials:
            if trial.state == TrialState.RUNNING and "worker" in trial.user_attrs:
                victim = trial
                break
    assert victim is not None, "no trial started"
    os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)
    driver.join(timeout=START_TIMEOUT_S + 600)  # a replacement worker starts as slowly as the first
    assert not driver.is_alive()
    trials = {t.number: t for t in trials_of(path)}
    dead = trials[victim.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["failure"] == "worker_died"
    assert "died" in dead.user_attrs["reason"] and dead.user_attrs["retried"] is True
    assert outcome["summary"].finished == 3
    (again,) = [t for t in trials.values() if t.user_attrs.get("retry_of") == victim.number]
    assert again.params == dead.params and again.state == TrialState.COMPLETE
    others = [t for n, t in trials.items() if n != victim.number]
    assert len(others) == 3 and all(t.state == TrialState.COMPLETE for t in others)


def test_only_rays_memory_monitor_counts_as_oom():
    from miras_search.parallel.ray_pool import _says_out_of_memory

    assert _says_out_of_memory("Task was killed due to the node running low on memory. Memory on the node ...")
    assert not _says_out_of_memory("The actor died unexpectedly. The process may have been killed by the OOM "
                                   "killer (e.g. out of memory), or by SIGKILL.")


def test_ray_workers_write_each_trials_wandb_run_while_it_runs(tmp_path, monkeypatch):
    """W&B offline on Ray: each worker starts W&B once (warm_up at worker start) and writes the
    runs of its trials itself; the driver adds only the summary run."""
    import json

    from miras_search.parallel import RayPool
    from miras_search.tracking import WandbTracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    path = write_study(tmp_path, trials=2, sampler={"kind": "random", "anchors": []},
                       pruner={"kind": "median", "n_startup_trials": 5})
    spec = load_study_file(path)
    out = spec.out_dir() / "wandb"
    tracker = WandbTracker(spec.name, out, "offline")
    logged_by_driver = []
    monkeypatch.setattr(tracker, "log_trial", lambda study, trial: logged_by_driver.append(trial.number))
    summary = run_study(spec, lambda: RayPool(2, warm_up=tracker.worker_warm_up), tracker=tracker)
    assert summary.finished == 2 and logged_by_driver == []
    records = [json.loads(p.read_text()) for p in out.glob("offline-run-*/files/miras_trial.json")]
    trials = {t.number: t for t in trials_of(path)}
    assert sorted(r["config"]["trial"] for r in records) == [0, 1]
    for record in records:
        trial = trials[record["config"]["trial"]]
        assert record["summary"]["objective/val_bpb"] == trial.values[0]
        assert record["curve"] == trial.user_attrs["curve"]
    assert len(list(out.glob("offline-run-*"))) == 3  # + the summary run


def test_asking_for_a_gpu_on_a_machine_without_one_is_an_error_not_a_hang(tmp_path):
    from typer.testing import CliRunner

    from miras_search.cli import app
    from miras_search.parallel import RayPool

    started = time.monotonic()
    with pytest.raises(MirasError, match="no GPU"):
        RayPool(1, gpus_per_trial=0.5)
    path = write_study(tmp_path, trials=1)
    result = CliRunner().invoke(app, ["run", str(path), "--gpus-per-trial", "0.5"], env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    assert "0.5 GPU(s)" in result.output and "Traceback" not in result.output
    assert time.monotonic() - started < 120  # refused up front (a pending actor would wait for ever)
    if (tmp_path / "runs").exists():  # the study may be opened before the pool: no trial ran
        assert trials_of(path) == []


def test_a_pool_with_no_worker_left_says_so_instead_of_popping_an_empty_list():
    from miras_search.errors import MirasError
    from miras_search.parallel.ray_pool import RayPool

    pool = RayPool.__new__(RayPool)  # its state after every worker died and none was replaced
    pool._idle, pool._busy, pool._infos = [], {}, {}
    with pytest.raises(MirasError, match=r"no Ray worker is left to run trials.*miras resume"):
        pool.submit(None)
