"""Shared test setup: small thread counts (CI has 2 cores), the number of pytest-xdist workers,
and paths to the shipped files.

The README runs the suite with ``-n auto --dist loadgroup``: the modules that start Ray (a local
cluster, a head node, a study on Ray workers) share the xdist group "ray", so one worker runs
them one after another and at most one Ray cluster is up at a time."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# `python -m pytest` puts the current folder (the repository root) first on sys.path, where the
# top-level kernels/ folder would shadow Hugging Face's `kernels` package, which transformers
# imports when it is installed (transformers 5.25 installs it). miras_search and its kernels come
# from the install (editable in CI), as for a user; the tests import nothing from the root.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != ROOT]

# rich reads COLUMNS / LINES once, when a Console is made (the CLI's, at import), which would pin
# the CLI's width for the whole test process and defeat the tests that set COLUMNS per call; a
# shell may export them, and pytest-xdist's workers start with 80 x 24. The tests that care set
# the width themselves.
for _size in ("COLUMNS", "LINES"):
    os.environ.pop(_size, None)

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# Without CUDA the Triton kernels run in Triton's interpreter, which Triton reads when a kernel is
# decorated (the kernels' first import) and when it picks its driver: set once here, before any
# test module imports them, so that no test's outcome depends on which module ran first.
if not _cuda():
    os.environ.setdefault("TRITON_INTERPRET", "1")
if os.environ.get("TRITON_INTERPRET") == "1":
    try:
        import triton_interpreter
    except ImportError:  # no Triton: the kernel tests skip
        pass
    else:
        triton_interpreter.install()

DATA = Path(__file__).resolve().parent / "data"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (the README's test command): one worker per core, at most 4. Every test runs
    at one thread (``_few_threads``), so a 2-core machine runs two at once; past 4 workers the
    per-worker start (torch, Triton) and the serial Ray group outweigh the gain."""
    return max(1, min(os.cpu_count() or 1, 4))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def _few_threads():
    try:
        import torch
    except ImportError:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class _RefusedLaunch:
    """Stands in for a Triton kernel whose launch the GPU refuses: ``kernel[grid](...)`` raises
    OutOfResources, as a launch needing more shared memory than the GPU has does."""

    def __getitem__(self, grid):
        from triton.runtime.errors import OutOfResources

        def launch(*args, **kwargs):
            raise OutOfResources(300_000, 232_448, "shared memory")
        return launch


@pytest.fixture
def refused_launch() -> _RefusedLaunch:
    return _RefusedLaunch()


@pytest.fixture
def bf16_interpreter(monkeypatch):
    """Triton's interpreter as a GPU treats bf16: it truncates fp32 -> bf16 casts (a GPU rounds
    to nearest even) and multiplies bf16 dot operands as their raw 16-bit patterns (it widens
    only fp8 ones), which made every bf16 kernel path untestable on a CPU. Patched here for the
    test's duration; on a GPU (no interpreter) this does nothing."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        yield
        return
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    cast, dot = builder.cast_impl, builder.create_dot

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            bits = np.ascontiguousarray(src.data, dtype=np.float32).view(np.uint32)
            nearest_even = (bits >> np.uint32(16)) & np.uint32(1)
            rounded = ((bits + np.uint32(0x7FFF) + nearest_even) >> np.uint32(16)).astype(np.uint16)
            return interpreter.TensorHandle(rounded, tl.bfloat16)
        return cast(self, src, dst_type)

    def create_dot(self, a, b, *rest):
        a, b = (cast(self, x, tl.float32) if x.dtype.scalar == tl.bfloat16 else x for x in (a, b))
        return dot(self, a, b, *rest)

    monkeypatch.setattr(builder, "cast_impl", cast_impl)
    monkeypatch.setattr(builder, "create_dot", create_dot)
    yield
