"""A journal file on the driver's disk is refused on a cluster of several nodes (workers on the
other nodes could not report to it), unless the user says the path is shared: a real second Ray
node, started on this machine."""

from __future__ import annotations

import pytest

from miras_search.errors import MirasError

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]  # one Ray cluster at a time (conftest)


@pytest.fixture(scope="module")
def two_nodes():
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


def test_a_local_journal_is_refused_with_the_fix(two_nodes, tmp_path):
    from miras_search.parallel import RayPool

    journal = str(tmp_path / "study.journal")
    with pytest.raises(MirasError) as error:
        RayPool(1, two_nodes.address, storage=journal)
    message = str(error.value)
    assert "2 nodes" in message and journal in message
    assert "postgresql" in message and "--shared-storage" in message
    assert not ray.is_initialized()  # the refused pool leaves nothing connected


def test_a_shared_path_or_a_database_is_accepted(two_nodes, tmp_path):
    from miras_search.parallel import RayPool

    for storage, shared in ((str(tmp_path / "study.journal"), True),
                            ("postgresql+psycopg://miras@db.invalid/studies", False)):
        pool = RayPool(1, two_nodes.address, storage=storage, shared_storage=shared)
        try:
            assert pool.capacity == 1
        finally:
            pool.shutdown()
            ray.shutdown()
