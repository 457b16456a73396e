"""Parallel execution of a study's trials on Ray (local instance or a cluster by address)."""

from miras_search.parallel.ray_pool import RayPool, TrialWorker, connect

__all__ = ["RayPool", "TrialWorker", "connect"]
