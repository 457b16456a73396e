"""Joining a Ray cluster that refuses us ends in one readable error with a hint, not Ray's own."""

from __future__ import annotations

import pytest

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
