"""Model factory: a design point -> a language model, plus its size and state size."""

from __future__ import annotations

import contextlib
import itertools
import math
import re
from collections.abc import Mapping
from typing import Any

import torch

from miras_search.errors import MirasError, UnsupportedPoint
from miras_search.memory.rule import require_network
from miras_search.model.compiling import compile_layers
from miras_search.model.lm import MirasLM
from miras_search.points import as_point
from miras_search.schema import ModelPoint

DEVICES = ("auto", "cpu", "cuda")
"""Device names a point trains on (``cuda:N`` picks GPU N)."""


def pick_device(device: str | torch.device | None = None, name: str = "device") -> torch.device:
    """``device`` (one of DEVICES or ``cuda:N``) if given, else CUDA when available, else CPU.

    MirasError, naming ``name`` (e.g. '--device'), for another name or a GPU this machine does
    not have: checked here, not left to fail inside torch with an unrelated message.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = str(device)
    if text == "cpu":
        return torch.device(text)
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise MirasError(f"{name} {text}: allowed: {', '.join(DEVICES)}")
    if not torch.cuda.is_available():
        raise MirasError(f"{name} {text}: no CUDA GPU is visible here; use cpu")
    count = torch.cuda.device_count()
    if match.group(1) is not None and int(match.group(1)) >= count:
        raise MirasError(f"{name} {text}: only {count} CUDA GPU(s) are visible (cuda:0 to cuda:{count - 1})")
    return torch.device(text)


def autocast_context(point: ModelPoint, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA when train.precision is 'auto' or 'bf16'; float32 otherwise
    (always float32 on CPU)."""
    if device.type == "cuda" and point.train.precision in ("auto", "bf16"):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_model(point: ModelPoint | str | Mapping[str, Any], device: str | torch.device | None = None) -> MirasLM:
    """Build the language model of ``point`` (a ModelPoint, a preset name, a point file or a
    mapping of a point's fields: ``points.as_point``) on ``device`` (default: pick_device()).

    Raises UnsupportedPoint (naming the axis) for combinations the memory ops do not build.
    With train.compile true its layers are compiled in place (``model.compiling.compile_layers``:
    the same module and state dict; eager, with a CompileFallbackWarning, where inductor cannot
    run); 'auto' leaves the choice to the training loop (``train_tokens``).
    """
    point = as_point(point)
    device = pick_device(device)
    model = _construct(point).to(device)
    if point.train.compile is True:
        compile_layers(model.layers, device)
    return model


def _construct(point: ModelPoint) -> MirasLM:
    """MirasLM(point), with shape/op errors of an unbuildable combination as UnsupportedPoint."""
    try:
        return MirasLM(point)
    except (ValueError, NotImplementedError) as error:
        axes = ", ".join(f"{axis} '{kind}'" for axis, kind in point.axes.items())
        raise UnsupportedPoint(f"the model factory cannot build the point ({axes}): {error}") from error


def param_count(point: ModelPoint | str | Mapping[str, Any]) -> int:
    """Exact number of parameters of ``build_model(point)`` (tied embeddings counted once).

    Built on the meta device: no memory is allocated and nothing is initialised."""
    point = as_point(point)
    with torch.device("meta"):
        model = _construct(point)
    return sum(p.numel() for p in model.parameters())


def memory_key_width(point: ModelPoint) -> int:
    """The memory's key width per head: block.head_k, or its feature map's width (Atlas)."""
    feature_map = getattr(point.memory, "feature_map", None)
    return point.block.head_k if feature_map is None else feature_map.width(point.block.head_k)


def _mlp_memory_floats(point: ModelPoint) -> int:
    """Weights of one head's MLP memory: depth linear maps K -> eK -> ... -> eK -> V."""
    memory, k, v = point.memory, memory_key_width(point), point.block.head_v
    widths = [k] + [memory.expansion * v] * (memory.depth - 1) + [v]
    return sum(a * b for a, b in itertools.pairwise(widths))


def memory_state_size(point: ModelPoint, context: int | None = None) -> int:
    """Floats of state one memory mixer of ``point`` carries from token t to token t+1 (one
    sequence, all H heads), with K = block.head_k, V = block.head_v, H = block.n_heads:

    - vector memory: H*K;   matrix memory: H*K*V;
    - mlp memory: H * (sum of the weight sizes of one head's MLP: K*eK + eK*eK*(depth-2) + eK*V);
    - with a feature map (Atlas) K is the feature width;
    - an algorithm with a buffer (momentum, muon) doubles it (S_t has the memory's shape);
    - an Omega window of c (bias.window) adds the c - 1 past keys and values, H*(c-1)*(K+V);
    - lq retention carries A_t (W_t = A_t / ||A_t||_q^(q-2) is a function of it): no extra;
    - memory 'none' (softmax attention): the key/value cache, H*(K+V)*T_ctx with
      T_ctx = min(memory.window, context) (context defaults to train.seq_len).

    Not counted: the short-conv cache (conv_size - 1 past q/k/v rows) and the gates (no state).
    """
    block = point.block
    h, k, v = block.n_heads, block.head_k, block.head_v
    context = point.train.seq_len if context is None else context
    kind = point.memory.kind
    if kind == "none":
        return attention_state_size(point, point.memory.window, context)
    require_network(kind)
    per_head = {"vector": k, "matrix": memory_key_width(point) * v}.get(kind) or _mlp_memory_floats(point)
    size = h * per_head
    if point.algorithm.buffered:
        size *= 2
    if point.bias.window > 1:  # the Omega window's c - 1 past keys and values
        size += h * (point.bias.window - 1) * (k + v)
    return size


def attention_state_size(point: ModelPoint, window: int | None, context: int | None = None) -> int:
    """Key/value cache of one softmax-attention mixer: H*(K+V)*min(window, context)."""
    block = point.block
    context = point.train.seq_len if context is None else context
    span = context if window is None else min(window, context)
    return block.n_heads * (block.head_k + block.head_v) * span


def layer_state_sizes(point: ModelPoint | str | Mapping[str, Any], context: int | None = None) -> list[int]:
    """State floats of each of the n_layers layers (see memory_state_size; a samba memory layer
    adds its sliding-window cache; swa layers: window block.window; attention: full context)."""
    point = as_point(point)
    if context is not None and (isinstance(context, bool) or not isinstance(context, int) or context < 1):
        raise MirasError(f"context: a number of tokens >= 1 (or None: the whole sequence), not {context!r}")
    sizes = []
    for kind in point.block.layer_kinds():
        if kind == "swa":
            sizes.append(attention_state_size(point, point.block.window, context))
        elif kind == "attention":
            sizes.append(attention_state_size(point, None, context))
        else:
            size = memory_state_size(point, context)
            if point.block.hybrid == "samba":
                size += attention_state_size(point, point.block.window, context)
            sizes.append(size)
    return sizes


def state_size(point: ModelPoint | str | Mapping[str, Any], context: int | None = None) -> int:
    """Floats of recurrent state per layer at one token position of one sequence: the mean over
    layers of ``layer_state_sizes`` (rounded up), i.e. the state of one memory layer for a point
    without hybrid layers. See memory_state_size for the formula of each memory kind."""
    sizes = layer_state_sizes(point, context)
    return math.ceil(sum(sizes) / len(sizes))
