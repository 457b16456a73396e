"""The README's test command groups tests as conftest.py says: under ``--dist loadgroup`` every
test marked ``xdist_group(NAME)`` runs on one worker. pytest-xdist does it by suffixing the node
id with ``@NAME``; with pytest 9.2 and xdist 3.8 that suffix silently stopped taking (node ids
moved), so the Ray modules ran on two workers at once and the sm_90 compile fixture compiled
every case twice (pyproject pins pytest < 9.2). This fails when grouping is off again."""

from __future__ import annotations

import os

import pytest


@pytest.mark.xdist_group("suite_check")
def test_xdist_groups_reach_the_scheduler(request: pytest.FixtureRequest) -> None:
    if "PYTEST_XDIST_WORKER" not in os.environ or not request.config.getvalue("loadgroup"):
        pytest.skip("only under pytest-xdist with --dist loadgroup (the README's command)")
    assert request.node.nodeid.endswith("@suite_check"), (
        f"pytest-xdist did not group this test (node id {request.node.nodeid!r}): "
        f"pytest {pytest.__version__} with this pytest-xdist ignores xdist_group; install pytest < 9.2"
    )
