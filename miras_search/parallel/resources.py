"""What each trial actor asks Ray for: GPUs (a fraction lets small trials share one), CPUs, threads.

Planned from the alive nodes' resources before any actor is created, so that a request no node
can grant (GPUs on a machine without any) is refused with a reason instead of leaving the actors
pending for ever.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from miras_search.errors import MirasError
from miras_search.study.spec import gpus_per_trial_problem


@dataclass(frozen=True)
class ActorPlan:
    """``workers`` actors, each with ``num_cpus`` / ``num_gpus`` Ray resources, ``threads`` torch
    threads, trials on ``device``; ``per_gpu``: trials that share one GPU (1 on CPUs)."""

    workers: int
    threads: int
    num_cpus: float
    num_gpus: float
    device: str
    per_gpu: int


def plan_actors(workers: int, gpus_per_trial: float | None,
                nodes: Sequence[Mapping[str, float]]) -> ActorPlan:
    """The actors for ``workers`` trials at once on ``nodes`` (each alive node's Ray resources).

    ``gpus_per_trial`` None: 1 when the cluster has a GPU, else 0. With GPUs, the workers are at
    most the trials the nodes hold side by side (a node with 1 GPU holds 4 trials at 0.25).
    MirasError when the request is not one Ray grants or no node has that many GPUs.
    """
    total_gpus = sum(node.get("GPU", 0.0) for node in nodes)
    total_cpus = sum(node.get("CPU", 0.0) for node in nodes) or 1.0
    largest_cpus = max((node.get("CPU", 1.0) for node in nodes), default=total_cpus)
    gpus = gpus_per_trial if gpus_per_trial is not None else (1.0 if total_gpus >= 1 else 0.0)
    problem = gpus_per_trial_problem(gpus)
    if problem is not None:
        raise MirasError(f"--gpus-per-trial (parallel.gpus_per_trial): {problem}")
    if gpus > 0:
        most = max((node.get("GPU", 0.0) for node in nodes), default=0.0)
        if most < gpus:
            seen = ("Ray sees no GPU on this machine or cluster (no CUDA device, or its driver is "
                    "not visible to Ray)" if total_gpus == 0
                    else f"the node with the most GPUs has {most:g}")
            raise MirasError(
                f"each trial asks for {gpus:g} GPU(s) (--gpus-per-trial / parallel.gpus_per_trial), "
                f"but {seen}: no trial could start. Ask for at most {most:g} GPU(s) per trial, or "
                "for 0 to run the trials on CPUs"
            )
        slots = sum(math.floor(node.get("GPU", 0.0) / gpus + 1e-9) for node in nodes)
        workers = max(1, min(workers, slots))
    threads = max(1, int(min(total_cpus / workers, largest_cpus)))
    per_gpu = max(1, math.floor(1.0 / gpus + 1e-9)) if 0 < gpus < 1 else 1
    return ActorPlan(
        workers=workers, threads=threads, num_cpus=threads if gpus == 0 else 1, num_gpus=gpus,
        device="cuda" if gpus > 0 else "cpu", per_gpu=per_gpu,
    )
