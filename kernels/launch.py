"""The device a kernel launches on: Triton launches on the current CUDA device, whatever device
the tensors live on, so inputs on another GPU (a model on cuda:1) fail with "Pointer argument
cannot be accessed from Triton". Every launch runs inside ``on_device(inputs)``."""

from __future__ import annotations

import contextlib

import torch


def on_device(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make x's GPU the current device for the launches inside (nothing on the CPU)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()
