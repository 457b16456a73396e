"""A trained model's weights with the point that builds it: save, read, load, continue.

A checkpoint is one ``torch.save`` file holding plain data only (so ``torch.load(...,
weights_only=True)`` reads it, and loading one never runs code): ``format``, ``point`` (the
ModelPoint as JSON data), ``state_dict`` (the model's tensors) and ``metrics`` (what the trial
measured). ``load_checkpoint`` rebuilds the model from its point and loads the weights.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from miras_search import __version__
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
    refuse_non_regular(path)
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


def refuse_non_regular(path: Path) -> None:
    """MirasError when ``path`` exists but is not a regular file (a folder, a device, a pipe, a
    socket): saving renames the new file over ``path``, which would replace the node itself."""
    if path.exists() and not path.is_file():
        what = "a folder" if path.is_dir() else "not a regular file (a device, pipe or socket)"
        raise MirasError(f"{path} is {what}; a checkpoint is saved only as a regular file, and nothing was "
                         "written: give another path")


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a regular file holding a miras checkpoint of any format (a mapping with
    ``format`` and ``state_dict``): one a new checkpoint may replace. Reads no tensor data."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip written by torch.save, damaged, or not readable
        return False
    return isinstance(payload, dict) and "format" in payload and "state_dict" in payload


NOT_A_CHECKPOINT = "is not a miras checkpoint (not a file saved by `miras train --save` or a study)"
_LISTED = 3  # keys named per kind of mismatch; the rest are counted


def _readable_file(path: Path) -> None:
    """MirasError unless ``path`` is an existing, non-empty regular file."""
    if path.is_dir():
        raise MirasError(f"{path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise MirasError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise MirasError(f"{path} {NOT_A_CHECKPOINT}: the file is empty")


def _point_problem(error: ValidationError) -> str:
    """The point's validation errors in one line: 'block.d_model: Input should be ...'."""
    parts = [f"{'.'.join(map(str, e['loc'])) or 'point'}: {e['msg']}" for e in error.errors()]
    more = f" (+{len(parts) - _LISTED} more)" if len(parts) > _LISTED else ""
    return "; ".join(parts[:_LISTED]) + more


_DAMAGED = ("{path} is truncated or damaged: it begins as a checkpoint (a torch.save zip archive) but "
            "is not a complete one (a copy or a save cut short?); save it again or use another copy")


def _damaged(path: Path) -> bool:
    """Whether ``path`` begins as a zip archive (what torch.save writes) but is not a whole one."""
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError:
        return False
    return head == b"PK\x03\x04"


def _check_format(path: Path, found: object) -> None:
    """MirasError unless ``found`` is the checkpoint format this version reads."""
    if found == CHECKPOINT_FORMAT:
        return
    if found is None:
        raise MirasError(f"{path} {NOT_A_CHECKPOINT}: it names no format (this version of miras-search "
                         f"reads checkpoint format {CHECKPOINT_FORMAT})")
    if isinstance(found, int) and not isinstance(found, bool) and found > CHECKPOINT_FORMAT:
        raise MirasError(f"{path} was written by a newer version of miras-search (checkpoint format {found}); "
                         f"this version ({__version__}) reads format {CHECKPOINT_FORMAT} only: upgrade "
                         "miras-search to load it")
    raise MirasError(f"{path} {NOT_A_CHECKPOINT}: its format is {found!r}; this version of miras-search "
                     f"reads checkpoint format {CHECKPOINT_FORMAT}")


def _check_finite(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    """MirasError naming the tensors that hold NaN or infinite values (a few named, all counted)."""
    bad = [name for name, value in state_dict.items()
           if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all())]
    if bad:
        raise MirasError(f"{path}: {len(bad)} of the checkpoint's {len(state_dict)} tensors hold NaN or "
                         f"infinite values ({_listed(bad)}); these weights cannot be trained on or "
                         "evaluated: use a checkpoint saved before the values went bad")


def read_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path``; MirasError (one readable line) when it is missing or not one."""
    path = Path(path)
    _readable_file(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # a zip of torch.save holding more than plain data (code, objects)
        raise MirasError(f"{path} {NOT_A_CHECKPOINT}") from None
    except Exception as error:  # OSError / zip errors (torch's text is pages long)
        if _damaged(path):
            raise MirasError(_DAMAGED.format(path=path)) from None
        if isinstance(error, OSError):
            raise MirasError(f"{path}: cannot be read ({error.strerror or error})") from None
        raise MirasError(f"{path} {NOT_A_CHECKPOINT}") from None
    if not isinstance(payload, dict):
        raise MirasError(f"{path} {NOT_A_CHECKPOINT}: it holds a {type(payload).__name__}, not a mapping")
    _check_format(path, payload.get("format"))
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise MirasError(f"{path} {NOT_A_CHECKPOINT}: its state_dict is not a mapping of tensors")
    _check_finite(path, state_dict)
    if "point" not in payload:
        raise MirasError(f"{path} {NOT_A_CHECKPOINT}: it holds no point")
    try:
        point = ModelPoint.model_validate(payload["point"])
    except ValidationError as error:
        raise MirasError(f"{path}: the checkpoint's point does not validate: {_point_problem(error)}") from None
    return Checkpoint(point, state_dict, dict(payload.get("metrics") or {}))


def _listed(names: list[str]) -> str:
    more = f" (+{len(names) - _LISTED} more)" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more


def _shape(value: torch.Tensor) -> str:
    return "[" + ", ".join(map(str, value.shape)) + "]"


def weights_mismatch(expected: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]) -> str | None:
    """How the ``saved`` tensors do not fit a model whose state dict is ``expected``, in one
    short line (a few keys named, the rest counted); None when they fit."""
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    shapes = [f"{k} {_shape(saved[k])} (the model's: {_shape(v)})"
              for k, v in expected.items() if k in saved and saved[k].shape != v.shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {_listed(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {_listed(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} of another shape: {_listed(shapes)}")
    return "; ".join(parts) or None


def _does_not_fit(source: str, reason: str) -> MirasError:
    return MirasError(f"{source}: the weights do not fit the point's model ({reason})")


def check_weights(checkpoint: Checkpoint, source: str = "checkpoint") -> None:
    """MirasError when the checkpoint's weights do not fit the model its point builds: checked
    on the meta device (no memory, nothing run), so a command can refuse before it starts."""
    from miras_search.model import MirasLM

    try:
        with torch.device("meta"):
            expected = MirasLM(checkpoint.point).state_dict()
    except (ValueError, NotImplementedError):  # an unbuildable point: the trial says so when it builds it
        return
    reason = weights_mismatch(expected, checkpoint.state_dict)
    if reason is not None:
        raise _does_not_fit(source, reason)


def load_weights(model: nn.Module, checkpoint: Checkpoint, source: str = "checkpoint") -> None:
    """Load the checkpoint's weights into ``model`` (built from the same point); MirasError if
    they do not fit, naming the keys and shapes that do not."""
    reason = weights_mismatch(model.state_dict(), checkpoint.state_dict)
    if reason is not None:
        raise _does_not_fit(source, reason)
    try:
        model.load_state_dict(checkpoint.state_dict)
    except RuntimeError as error:
        raise _does_not_fit(source, str(error).splitlines()[0]) from None


def load_checkpoint(path: str | Path, device: str | torch.device | None = None) -> tuple[ModelPoint, nn.Module]:
    """The checkpoint's point and its model with the saved weights, on ``device`` (default: CUDA
    when present, else CPU), in eval mode."""
    from miras_search.model import build_model, pick_device

    checkpoint = read_checkpoint(path)
    model = build_model(checkpoint.point, pick_device(device))
    load_weights(model, checkpoint, str(path))
    model.eval()
    return checkpoint.point, model
