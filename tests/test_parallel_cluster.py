"""A study joins a real Ray cluster started with ``ray start --head`` on localhost, by address."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState
from test_study import trials_of, write_study

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]  # one Ray cluster at a time (conftest)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_the_node(ray_cli: Path, address: str, env: dict, limit: float = 180) -> None:
    """Until the head's node has registered its CPUs (it does so after the GCS port opens; a
    fixed sleep was too short on a busy machine)."""
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            status = subprocess.run([str(ray_cli), "status", f"--address={address}"], env=env,
                                    capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            continue
        if status.returncode == 0 and "CPU" in status.stdout:
            return
        time.sleep(1)


@pytest.fixture(scope="module")
def cluster():
    """``ray start --head --block`` in its own process group; stopping it stops its processes.

    Ray enables token authentication for clusters: the head and the driver share a fresh token
    through the environment (Ray reads it when it is imported, hence a driver subprocess).
    """
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    port = _free_port()
    ray_cli = Path(sys.executable).parent / "ray"
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert head.poll() is None, "ray start --head exited"
        time.sleep(0.5)
    _wait_for_the_node(ray_cli, f"127.0.0.1:{port}", env)
    yield f"127.0.0.1:{port}", env
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()


def _miras(env, *args: str) -> subprocess.CompletedProcess:
    miras = Path(sys.executable).parent / "miras"
    return subprocess.run([str(miras), *args], env=env, capture_output=True, text=True, timeout=400)


def test_a_study_joins_a_running_cluster_by_address(tmp_path, cluster):
    address, env = cluster
    path = write_study(tmp_path, trials=3, sampler={"kind": "random", "anchors": ["gated_deltanet"]})
    result = _miras(env, "run", str(path), "--workers", "2", "--address", address, "--wandb", "off")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3/3 finished" in result.stdout
    trials = trials_of(path)
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2
    # the cluster outlives the driver: a second run joins it again and adds a trial
    result = _miras(env, "run", str(path), "--address", address, "--trials", "4", "--wandb", "off")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(trials_of(path)) == 4
