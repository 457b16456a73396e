"""The Ray node or cluster under a study dies (raylet killed, GCS gone): the driver notices within a
bounded time, marks the running trials interrupted (queued again), says so in one paragraph and
exits non-zero, instead of waiting forever in ``ray.wait``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from types import SimpleNamespace

import pytest
from optuna.trial import TrialState
from test_study import trials_of, write_study
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.parallel import ray_pool
from miras_search.parallel.ray_pool import ClusterHealth, RayPool
from miras_search.study import InlinePool, load_study_file, run_study
from miras_search.study.pools import WorkersLost

NODE = "a" * 56


def _alive(*ids: str, dead: tuple[str, ...] = ()) -> list[dict]:
    return [{"NodeID": i, "Alive": True} for i in ids] + [{"NodeID": i, "Alive": False} for i in dead]


def test_a_live_cluster_listing_this_node_is_healthy():
    assert ClusterHealth(NODE, lambda: _alive(NODE, "b" * 56)).check_now() is None
    assert ClusterHealth(None, lambda: _alive("b" * 56)).check_now() is None  # Ray Client: any node


def test_this_node_marked_dead_or_no_live_node_is_a_problem():
    problem = ClusterHealth(NODE, lambda: _alive("b" * 56, dead=(NODE,))).check_now()
    assert problem is not None and "this machine's node (aaaaaaaa) dead" in problem
    assert "no live node" in ClusterHealth(None, lambda: _alive(dead=(NODE,))).check_now()


def test_an_error_asking_the_gcs_is_a_problem():
    def fails():
        raise ConnectionError("GCS unreachable\ndetails")

    assert "failed: GCS unreachable" in ClusterHealth(NODE, fails).check_now()


def test_a_gcs_that_never_answers_is_a_problem_after_the_bound_and_nothing_blocks(monkeypatch):
    monkeypatch.setattr(ray_pool, "ANSWER_S", 0.3)
    monkeypatch.setattr(ray_pool, "CHECK_EVERY_S", 0.0)
    forever = threading.Event()
    health = ClusterHealth(NODE, lambda: forever.wait() or [])
    started = time.monotonic()
    assert health.problem() is None  # asks on a thread: returns at once
    assert time.monotonic() - started < 0.2
    time.sleep(0.4)
    assert "did not answer within" in health.problem()
    forever.set()


def test_problem_asks_only_every_few_seconds(monkeypatch):
    calls = []
    health = ClusterHealth(NODE, lambda: calls.append(1) or _alive(NODE))
    for _ in range(50):
        assert health.problem() is None
    assert calls == []  # the first question waits CHECK_EVERY_S: the normal path asks nothing
    monkeypatch.setattr(ray_pool, "CHECK_EVERY_S", 0.0)
    health.problem()
    health._asking.join(5)
    assert calls == [1] and health.problem() is None


class _Lost(RuntimeError):
    pass


def test_the_pools_wait_raises_workers_lost_when_ray_wait_would_wait_forever(monkeypatch):
    """RayPool.wait with a ray.wait that never returns a result (the node is gone) and a cluster
    whose GCS says this node is dead: WorkersLost, not a hang."""
    monkeypatch.setattr(ray_pool, "POLL_S", 0.01)
    monkeypatch.setattr(ray_pool.ray, "wait", lambda refs, num_returns, timeout: ([], list(refs)))
    pool = object.__new__(RayPool)
    pool._health = ClusterHealth(NODE, lambda: _alive(dead=(NODE,)))
    monkeypatch.setattr(ray_pool, "CHECK_EVERY_S", 0.0)
    pool.lost, pool._owns_ray, pool._in_flight = None, False, 0
    pool._busy = {"ref": (None, SimpleNamespace(number=3))}
    pool._idle, pool._infos = [], {}
    started = time.monotonic()
    with pytest.raises(WorkersLost) as raised:
        pool.wait()
    assert time.monotonic() - started < 5
    text = str(raised.value)
    assert "stopped answering" in text and "1 trial(s) that were running are lost" in text
    assert "run the same command again" in text and "\n" not in text
    assert pool.lost is not None
    pool.shutdown()  # asks the dead workers nothing (it would wait minutes)


class _LosingPool(InlinePool):
    """Starts its trials, then loses its cluster once two are in flight."""

    capacity = 2

    def wait(self):
        raise WorkersLost("the Ray node or cluster that runs the trials stopped answering (test); "
                          "run the same command again")


def test_the_driver_marks_the_running_trials_interrupted_and_queues_them_again(tmp_path):
    path = write_study(tmp_path, trials=4, sampler={"kind": "random", "anchors": []})
    summary = run_study(load_study_file(path), lambda: _LosingPool(threads=1))
    assert summary.lost is not None and "stopped answering" in summary.lost
    trials = trials_of(path)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 2 and all(t.user_attrs["failure"] == "interrupted" for t in failed)
    assert all("stopped answering" in t.user_attrs["reason"] for t in failed)
    queued = [t for t in trials if t.state == TrialState.WAITING]
    assert sorted(t.user_attrs["requeued_from"] for t in queued) == [0, 1]  # queued again
    assert not any(t.state == TrialState.RUNNING for t in trials)
    # the next run trains them: nothing is lost
    again = run_study(load_study_file(path), lambda: InlinePool(threads=1))
    assert again.lost is None and again.finished == 4


def test_the_cli_says_it_in_one_paragraph_and_exits_non_zero(tmp_path, monkeypatch):
    path = write_study(tmp_path, trials=2, sampler={"kind": "random", "anchors": []})
    from miras_search.study import pools

    monkeypatch.setattr(pools.InlinePool, "wait", _LosingPool.wait)
    result = CliRunner().invoke(app, ["run", str(path), "--inline", "--wandb", "off"])
    assert result.exit_code == 1, result.output
    assert "stopped answering" in result.output and "miras resume" in result.output
    assert "Traceback" not in result.output


# ---- a real local Ray whose raylet is killed ------------------------------------------------
_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    import psutil
    from miras_search.parallel import ray_pool
    from miras_search.study.pools import WorkersLost

    class Sleeper:  # stands in for TrialWorker (no torch to import): its trial sleeps
        def __init__(self, device, threads, warm_up=None, per_gpu=1):
            pass
        def info(self):
            return {"host": "h", "pid": os.getpid(), "device": "cpu", "threads": 1}
        def run(self, task):
            time.sleep(task.sleep)
            return {"status": "complete"}

    ray_pool.TrialWorker = Sleeper
    pool = ray_pool.RayPool(2)
    for number in range(pool.capacity):
        pool.submit(ray_pool.SimpleNamespace(number=number, sleep=300))
    raylets = [p for p in psutil.Process().children(recursive=True) if p.name() == "raylet"]
    for raylet in raylets:
        raylet.kill()
    started = time.monotonic()
    try:
        pool.wait()
        outcome = "returned"
    except WorkersLost as error:
        outcome = str(error)
    took = time.monotonic() - started
    pool.shutdown()
    time.sleep(1)
    left = [p.name() for p in psutil.Process().children(recursive=True) if p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE]
    print(json.dumps({"capacity": pool.capacity, "raylets": len(raylets), "outcome": outcome, "took": took, "left": left}))
""")


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # one Ray cluster at a time (conftest)
def test_killing_the_raylet_ends_the_wait_within_the_bound_and_leaves_no_ray_process(tmp_path):
    script = tmp_path / "lose.py"
    script.write_text(_SCRIPT.replace("ray_pool.SimpleNamespace", "__import__('types').SimpleNamespace"))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, start_new_session=True)
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["raylets"] == 1
    assert "stopped answering" in found["outcome"], found
    assert f"the {found['capacity']} trial(s) that were running are lost" in found["outcome"], found
    assert found["took"] < 40, found
    assert found["left"] == [], found
