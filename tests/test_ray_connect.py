"""Joining a Ray cluster that refuses us ends in one readable error with a hint, not Ray's own."""

from __future__ import annotations

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
    with pytest.raises(MirasError) as caught:
        ray_pool.connect("10.0.0.9:6379", workers=2)
    message = str(caught.value)
    assert message.startswith("could not start or join the Ray cluster at '10.0.0.9:6379'")
    assert str(raised) in message and hint in message


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
    monkeypatch.setattr(ray_pool.ray, "nodes", lambda: [])
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
