"""Shared test setup: small thread counts (CI has 2 cores) and paths to the shipped files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"


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
