"""A trained model's weights with the point that builds it: save, read, load, continue.

A checkpoint is one ``torch.save`` file holding plain data only (so ``torch.load(...,
weights_only=True)`` reads it, and loading one never runs code): ``format``, ``point`` (the
ModelPoint as JSON data), ``state_dict`` (the model's tensors) and ``metrics`` (what the trial
measured). ``load_checkpoint`` rebuilds the model from its point and loads the weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from miras_search.errors import MirasError
from miras_search.schema import ModelPoint

CHECKPOINT_FORMAT = 1


@dataclass
class Checkpoint:
    point: ModelPoint
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    metrics: dict[str, float] = field(default_factory=dict)


def weights_mb(model: nn.Module) -> float:
    """Size of the model's parameters and buffers in MiB (what a checkpoint of it holds)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20


def save_checkpoint(path: str | Path, point: ModelPoint, model: nn.Module,
                    metrics: dict[str, float] | None = None, max_mb: float | None = None) -> bool:
    """Write ``model``'s weights and ``point`` to ``path`` (atomically: a temporary file, then a
    rename, so a crash leaves no half file). False, and nothing written, when the weights exceed
    ``max_mb``."""
    if max_mb is not None and weights_mb(model) > max_mb:
        return False
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "point": point.model_dump(mode="json"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
    }
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    torch.save(payload, partial)
    partial.replace(path)
    return True


def read_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path``; MirasError (one readable line) when it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise MirasError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle / zip errors of a file that is not a checkpoint
        raise MirasError(f"{path} is not a miras checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise MirasError(f"{path} is not a miras checkpoint (format {CHECKPOINT_FORMAT} expected)")
    try:
        point = ModelPoint.model_validate(payload["point"])
    except (KeyError, ValidationError) as error:
        raise MirasError(f"{path}: the checkpoint's point does not validate: {error}") from None
    return Checkpoint(point, payload["state_dict"], dict(payload.get("metrics") or {}))


def load_weights(model: nn.Module, checkpoint: Checkpoint, source: str = "checkpoint") -> None:
    """Load the checkpoint's weights into ``model`` (built from the same point); MirasError if
    they do not fit."""
    try:
        model.load_state_dict(checkpoint.state_dict)
    except RuntimeError as error:
        raise MirasError(f"{source}: the weights do not fit the point's model: "
                         f"{str(error).splitlines()[0]}") from None


def load_checkpoint(path: str | Path, device: str | torch.device | None = None) -> tuple[ModelPoint, nn.Module]:
    """The checkpoint's point and its model with the saved weights, on ``device`` (default: CUDA
    when present, else CPU), in eval mode."""
    from miras_search.model import build_model, pick_device

    checkpoint = read_checkpoint(path)
    model = build_model(checkpoint.point, pick_device(device))
    load_weights(model, checkpoint, str(path))
    model.eval()
    return checkpoint.point, model
