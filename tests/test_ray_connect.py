"""Joining a Ray cluster that refuses us ends in one readable error with a hint, not Ray's own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from ray.exceptions import RayActorError

from miras_search.errors import MirasError
from miras_search.parallel import ray_pool


@pytest.mark.parametrize(("raised", "hint"), [
    (ConnectionError("Failed to connect to GCS: InvalidAuthToken"), "set RAY_AUTH_MODE=token"),
    (ConnectionError("Failed to connect to Ray cluster at 10.0.0.9:6379"), "`ray status` on the head node"),
])
def test_a_refused_join_names_the_address_and_what_to_check(monkeypatch, raised, hint):
    def refuse(**kwargs):
        raise raised

    monkeypatch.setattr(ray_pool.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_pool.ray, "init", refuse)
    monkeypatch.setattr(ray_pool, "check_cluster_answers", lambda address: None)  # "it answers"
    with pytest.raises(MirasError) as caught:
        ray_pool.connect("10.0.0.9:6379", workers=2)
    message = str(caught.value)
    assert message.startswith("could not start or join the Ray cluster at '10.0.0.9:6379'")
    assert str(raised) in message and hint in message


def _port_nothing_listens_on() -> int:
    """A port that was free a moment ago: bound, read and closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _must_not_join(**kwargs):
    raise AssertionError("ray.init was called: it retries a dead address for over 12 minutes")


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_nothing_listening_at_the_address_fails_at_once_with_what_to_do(monkeypatch, scheme):
    """Ray's own join retried 127.0.0.1:PORT with nothing there for over 12 minutes, printing
    only its C++ warnings; a TCP check says within seconds that nothing answers, and how to go on."""
    address = f"{scheme}127.0.0.1:{_port_nothing_listens_on()}"
    monkeypatch.setattr(ray_pool.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_pool.ray, "init", _must_not_join)
    start = time.monotonic()
    with pytest.raises(MirasError) as caught:
        ray_pool.connect(address, workers=1)
    assert time.monotonic() - start < 60
    message = str(caught.value)
    assert message.startswith(f"could not join the Ray cluster at '{address}': nothing answers at ")
    assert "`ray start --head`" in message and "leave --address out" in message
    assert "\n" not in message


def test_a_cluster_port_that_answers_passes_the_check():
    """Anything accepting connections there passes (Ray joins a local address through this
    machine's IP, so the port listens on every interface, as a head node's does)."""
    with socket.socket() as server:
        server.bind(("0.0.0.0", 0))
        server.listen()
        port = server.getsockname()[1]
        for address in (f"127.0.0.1:{port}", f"localhost:{port}", f"ray://127.0.0.1:{port}"):
            ray_pool.check_cluster_answers(address)


@pytest.mark.parametrize("address", ["user:s3cret@127.0.0.1:1", "ray://user:s3cret@127.0.0.1:10001"])
def test_an_address_with_a_password_is_refused_before_ray_sees_it(monkeypatch, address):
    monkeypatch.setattr(ray_pool.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_pool.ray, "init", _must_not_join)
    with pytest.raises(MirasError) as caught:
        ray_pool.connect(address, workers=1)
    message = str(caught.value)
    assert "s3cret" not in message and "user:***@127.0.0.1" in message
    assert "HOST:PORT" in message and "RAY_AUTH_TOKEN" in message


@pytest.mark.parametrize(("address", "target"), [
    ("10.0.0.9:6379", ("10.0.0.9", 6379)), ("ray://head.example", ("head.example", 10001)),
    ("ray://10.0.0.9:10002", ("10.0.0.9", 10002)), ("bogus", None), ("10.0.0.9:port", None),
])
def test_where_the_check_knocks(address, target):
    """The host and port ray.init would join first; none for an address Ray itself refuses at
    once ('bogus'), which is then left to ray.init's own error."""
    assert ray_pool._host_and_port(address) == target


def test_bogus_addresses_still_get_rays_own_error_at_once(monkeypatch):
    monkeypatch.setattr(ray_pool.ray, "is_initialized", lambda: False)
    with pytest.raises(MirasError, match="could not start or join the Ray cluster at 'bogus': Invalid address"):
        ray_pool.connect("bogus", workers=1)


def test_auto_is_checked_where_it_leads(monkeypatch):
    """'auto' joins what RAY_ADDRESS (or the running cluster's file) names: that is checked."""
    port = _port_nothing_listens_on()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    monkeypatch.setattr(ray_pool.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_pool.ray, "init", _must_not_join)
    with pytest.raises(MirasError, match=f"at 'auto': nothing answers at .*:{port} "):
        ray_pool.connect("auto", workers=1)


def test_ray_tries_a_cluster_that_answers_a_bounded_number_of_times(monkeypatch):
    """Once the port answers, ray.init tries the GCS JOIN_ATTEMPTS times (each ~40 s), not 20:
    a port that belongs to something else fails in minutes. A value the user set is kept."""
    name = "RAY_gcs_server_port_wait_time_s"
    seen = []
    monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(ray_pool, "check_cluster_answers", lambda address: None)
    monkeypatch.setattr(ray_pool.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_pool.ray, "init", lambda **kwargs: seen.append(os.environ.get(name)))
    assert ray_pool.connect("10.0.0.9:6379", workers=1)
    assert seen == [str(ray_pool.JOIN_ATTEMPTS)] and name not in os.environ
    monkeypatch.setenv(name, "30")
    ray_pool.connect("10.0.0.9:6379", workers=1)
    assert seen[-1] == "30" and os.environ[name] == "30"
    ray_pool.connect(None, workers=1)  # a local instance: Ray's own setting
    assert seen[-1] == "30"


def test_miras_run_against_a_dead_address_ends_in_seconds_with_one_paragraph(tmp_path):
    """The reported run: `miras run ... --address 127.0.0.1:PORT` with nothing there, as a user
    runs it (a real Ray, its own process). It hung for 9+ minutes; now it ends with the error
    (the bound is generous: it includes starting Python, torch and Ray on a busy machine)."""
    from test_study import write_study

    path = write_study(tmp_path, trials=2)
    address = f"127.0.0.1:{_port_nothing_listens_on()}"
    miras = Path(sys.executable).parent / "miras"
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    start = time.monotonic()
    result = subprocess.run([str(miras), "run", str(path), "--address", address, "--storage",
                             str(tmp_path / "s.journal"), "--wandb", "off"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert time.monotonic() - start < 120, "the run waited on Ray's own retries"
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"error: could not join the Ray cluster at '{address}': nothing answers" in result.stderr
    assert "Failed to connect to GCS" not in result.stderr


class _Actor:
    """A TrialWorker handle whose ``info`` call gives ``ref``."""

    def __init__(self, ref: str):
        self.info = type("Method", (), {"remote": staticmethod(lambda: ref)})


def _start_pool(monkeypatch, outcomes: dict[str, object], killed: list) -> ray_pool.RayPool:
    """A RayPool of len(outcomes) workers on a mocked Ray; ``outcomes``: each actor's info ref ->
    its answer, an exception (the actor died), or None (it never answers); what the pool stops
    (actors, "ray") is appended to ``killed``."""
    refs = iter(outcomes)
    actor_cls = type("Cls", (), {"remote": staticmethod(lambda *args: _Actor(next(refs)))})

    def wait(refs, num_returns, timeout=None):
        assert timeout is not None, "a wait for the workers' start must be bounded"
        return [r for r in refs if outcomes[r] is not None], [r for r in refs if outcomes[r] is None]

    def get(ref, timeout=None):
        refs = ref if isinstance(ref, list) else [ref]
        if timeout is None and any(outcomes[r] is None for r in refs):
            raise AssertionError("the run would wait forever for a worker that never answers")
        for r in refs:
            if isinstance(outcomes[r], Exception):
                raise outcomes[r]
        return [outcomes[r] for r in refs] if isinstance(ref, list) else outcomes[ref]

    plan = SimpleNamespace(num_gpus=0, threads=1, device="cpu", per_gpu=1, workers=len(outcomes), num_cpus=1)
    monkeypatch.setattr(ray_pool, "connect", lambda address, workers: True)
    monkeypatch.setattr(ray_pool, "plan_actors", lambda *args: plan)
    monkeypatch.setattr(ray_pool.ray, "nodes", lambda: [{"NodeID": "node", "Alive": True, "Resources": {"CPU": 2.0}}])  # a live cluster
    monkeypatch.setattr(ray_pool, "START_TIMEOUT_S", 0.5)  # the fake wait returns at once: the pool waits in slices until then
    monkeypatch.setattr(ray_pool.ray, "remote", lambda cls: SimpleNamespace(options=lambda **kw: actor_cls))
    monkeypatch.setattr(ray_pool.ray, "wait", wait)
    monkeypatch.setattr(ray_pool.ray, "get", get)
    monkeypatch.setattr(ray_pool.ray, "kill", killed.append)
    monkeypatch.setattr(ray_pool.ray, "shutdown", lambda: killed.append("ray"))
    return ray_pool.RayPool(len(outcomes))


@pytest.mark.parametrize("outcome", [
    RayActorError(error_msg="The actor died unexpectedly before finishing this task."), None,
])
def test_workers_that_cannot_start_stop_the_run_with_one_paragraph(monkeypatch, outcome):
    """Under `ulimit -v` a TrialWorker dies as it starts (or never answers): the run must not
    wait forever, but say why and what to try."""
    killed: list = []
    with pytest.raises(MirasError) as caught:
        _start_pool(monkeypatch, {"a": outcome, "b": outcome}, killed)
    message = str(caught.value)
    assert message.startswith("the Ray workers could not start: of 2, 2 ")
    assert "ulimit -v" in message and "--inline" in message and "--workers 1" in message
    assert "nothing stored was lost" in message
    assert killed[-1] == "ray" and len(killed) == 3  # both actors and the local Ray instance


def test_a_pool_goes_on_with_the_workers_that_started(monkeypatch):
    died = RayActorError(error_msg="The actor died unexpectedly before finishing this task.")
    killed: list = []
    pool = _start_pool(monkeypatch, {"a": {"host": "h", "pid": 1}, "b": died}, killed)
    assert pool.capacity == 1 and len(pool._idle) == 1 and killed == [killed[0]] != ["ray"]


def test_ray_address_in_the_environment_is_joined_and_said(monkeypatch):
    """Under `ray job submit` RAY_ADDRESS names the cluster: it is joined (not a local instance
    started without a word), and the note names it with its password masked."""
    monkeypatch.setenv("RAY_ADDRESS", "ray://user:s3cret@127.0.0.1:10001")
    joined, notes = [], []

    def connect(address, workers):
        joined.append(address)
        raise MirasError("stop here")

    monkeypatch.setattr(ray_pool.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_pool, "connect", connect)
    with pytest.raises(MirasError, match="stop here"):
        ray_pool.RayPool(2, None, note=notes.append)
    assert joined == ["ray://user:s3cret@127.0.0.1:10001"]
    assert len(notes) == 1 and "ray://user:***@127.0.0.1:10001" in notes[0] and "RAY_ADDRESS" in notes[0]
    assert "s3cret" not in notes[0]
    with pytest.raises(MirasError):  # --address wins, and needs no note
        ray_pool.RayPool(2, "10.0.0.9:6379", note=notes.append)
    assert joined[-1] == "10.0.0.9:6379" and len(notes) == 1


@pytest.mark.parametrize(("value", "expected", "noted"), [
    ("", None, False), ("local", None, False), ("10.0.0.9:6379", "10.0.0.9:6379", True),
    ("http://127.0.0.1:8265", None, True),  # a dashboard address (ray job submit): not joined
])
def test_which_ray_address_the_environment_gives(monkeypatch, value, expected, noted):
    monkeypatch.setenv("RAY_ADDRESS", value)
    address, note = ray_pool.resolve_address(None)
    assert address == expected and (note is not None) == noted


def test_a_local_ray_under_ulimit_v_gets_an_object_store_it_can_map(monkeypatch):
    """Ray sizes its object store from the RAM (30 %): over a `ulimit -v` it aborts the driver in
    ray.init (mmap failed) or kills the workers as they start. Under a limit it is a quarter of it."""
    import resource

    limit = 8_000_000 * 1024  # ulimit -v 8000000 (KiB)
    seen = {}
    monkeypatch.setattr(resource, "getrlimit", lambda which: (limit, resource.RLIM_INFINITY))
    monkeypatch.setattr(ray_pool.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_pool.ray, "init", lambda **kwargs: seen.update(kwargs))
    assert ray_pool.connect(None, workers=2)
    assert seen["address"] == "local" and seen["object_store_memory"] == limit // 4
    seen.clear()
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY,) * 2)
    ray_pool.connect(None, workers=2)
    assert "object_store_memory" not in seen  # no limit: Ray's own size


def test_rays_token_notice_is_dropped_and_its_other_warnings_kept(monkeypatch):
    """Ray logs 'Token authentication is enabled ...' on every local start: connect filters that
    line only (authentication stays on; 'is disabled' and other warnings still show)."""
    import logging

    def start(**kwargs):
        log = logging.getLogger("ray._private.authentication.authentication_token_setup")
        log.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled ...")
        log.warning("Token authentication is disabled for this Ray cluster. Anyone with network access ...")

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    handler = Keep()
    log.addHandler(handler)
    monkeypatch.setattr(ray_pool.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_pool.ray, "init", start)
    try:
        assert ray_pool.connect(None, workers=1)
        ray_pool.connect(None, workers=1)  # a second start adds no second filter
    finally:
        log.removeHandler(handler)
    assert seen == ["Token authentication is disabled for this Ray cluster. Anyone with network access ..."] * 2
    assert log.filters.count(ray_pool._TOKEN_NOTICE_FILTER) == 1
