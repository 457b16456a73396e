"""The per-trial memory limit: checked against a point's estimate before it is built, and enforced
on the worker process while it trains, so that a trial past it fails as ``oom`` instead of taking
its worker (or, inline, the driver) down with the machine's out-of-memory killer.

The limit is ``trial.memory_limit_gb`` when given, else a share of the machine: 80 % of the GPU's
memory divided by the trials that share the GPU (a fractional ``gpus_per_trial``), 80 % of the RAM
divided by the trials that run side by side on a CPU.
Enforcing it uses ``RLIMIT_DATA`` (Linux counts every private writable mapping against it, which is
where torch's CPU tensors live): an allocation past it fails inside the trial (``MemoryError`` or
torch's "can't allocate memory"), the trial's tensors are freed as its frames unwind, and the
worker goes on with the next trial.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Iterator

import torch

from miras_search.model.memory_estimate import MemoryEstimate, estimate_memory, gb
from miras_search.schema import ModelPoint
from miras_search.trial.result import TrialFailed

MACHINE_SHARE = 0.8
"""Share of the machine's RAM (or GPU memory) that trials may use together by default."""


def with_index(device: torch.device) -> torch.device:
    """``device`` with its index: a bare ``cuda`` is the current GPU (torch's per-device calls, such
    as the memory fraction, refuse a device without one)."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def machine_memory(device: torch.device) -> int:
    """Bytes of the GPU (cuda) or of the machine's RAM (cpu)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(with_index(device)).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def trial_memory_limit(limit_gb: float | None, device: torch.device, concurrent: int = 1) -> int:
    """Bytes one trial may use: ``limit_gb`` when given, else the machine's share (see the module
    docstring); ``concurrent`` trials share the device's memory (the RAM, or one GPU)."""
    if limit_gb is not None:
        return int(limit_gb * 1e9)
    return int(machine_memory(device) * MACHINE_SHARE / max(1, concurrent))


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed (CPU or GPU), not another error."""
    if isinstance(error, MemoryError | torch.cuda.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


TOO_LARGE_ADVICE = "lower the batch size, sequence length, eval_batch_size or the model's size"
"""What a trial config can change for a point over its memory limit."""


def too_large(estimate: MemoryEstimate, limit: int, source: str, advice: str = TOO_LARGE_ADVICE) -> str | None:
    """The reason a point with ``estimate`` does not fit ``limit`` bytes (``source`` says where the
    limit comes from; ``advice``, what the caller's user can change), or None."""
    if estimate.total <= limit:
        return None
    return (f"the point needs {estimate.describe()}, over the per-trial memory limit of {gb(limit)} "
            f"({source}); {advice}")


def limit_source(configured: bool) -> str:
    return "trial.memory_limit_gb" if configured else (
        f"the default, {MACHINE_SHARE:.0%} of this machine's memory per trial; set trial.memory_limit_gb")


def check_fits(point: ModelPoint, eval_batch_size: int | None, limit: int, configured: bool) -> MemoryEstimate:
    """TrialFailed('oom') before anything is built when the point's estimate is over ``limit``."""
    estimate = estimate_memory(point, eval_batch_size)
    reason = too_large(estimate, limit, limit_source(configured))
    if reason is not None:
        raise TrialFailed("oom", reason)
    return estimate


def _data_bytes() -> int | None:
    """What RLIMIT_DATA counts for this process now (VmData), or None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@contextlib.contextmanager
def gpu_memory_limit(limit: int, device: torch.device) -> Iterator[None]:
    """Hold this process to ``limit`` bytes of the GPU's memory for the block's length (the
    caching allocator then raises torch.cuda.OutOfMemoryError past it, caught as 'oom')."""
    device = with_index(device)
    total = machine_memory(device)
    torch.cuda.set_per_process_memory_fraction(min(1.0, limit / total), device)
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)


@contextlib.contextmanager
def process_memory_limit(limit: int | None) -> Iterator[None]:
    """Allow this process ``limit`` more bytes of data than it holds now, for the block's length.

    Meant for worker processes (a Ray actor): the driver itself is never limited. Does nothing
    where the current size is unknown or the hard limit is lower."""
    current = _data_bytes() if limit is not None else None
    if current is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    wanted = current + limit
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def default_device() -> torch.device:
    """Where trials on this machine run by default (what the limit's share is taken of)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


ABSURD_BYTES = 256 * 10**9
"""What validation calls absurd for one trial: more than a large node or GPU offers. A study file
is written for any machine, so validation does not hold it to this one's smaller memory (a run
does: each trial over the limit fails as 'oom' before it is built)."""


def memory_problem(point: ModelPoint, eval_batch_size: int | None = None,
                   limit_gb: float | None = None) -> str | None:
    """Why a trial of ``point`` cannot fit any machine (validation), or None: its estimate is over
    ``trial.memory_limit_gb`` when given, else over ABSURD_BYTES (or this machine's memory, if larger)."""
    estimate = estimate_memory(point, eval_batch_size)
    if limit_gb is not None:
        limit, source = int(limit_gb * 1e9), "trial.memory_limit_gb"
    else:
        limit = max(ABSURD_BYTES, machine_memory(default_device()))
        source = "more than a large machine or GPU offers; a search trial is meant to be small"
    reason = too_large(estimate, limit, source)
    if reason is not None and estimate.evaluation > limit and estimate.training <= limit:
        return f"trial.eval_batch_size: {reason}"
    return reason
