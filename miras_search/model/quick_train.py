"""A short pretraining loop for one point: AdamW, warmup + decay schedule, grad clip, autocast."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from miras_search.errors import MirasError
from miras_search.model.compiling import (
    AUTO_PROBE_STEPS,
    auto_compiles,
    compile_layers,
    is_compiled,
)
from miras_search.model.factory import autocast_context, build_model, pick_device
from miras_search.schema import ModelPoint, Train


@dataclass(frozen=True)
class StepInfo:
    """What ``on_step`` receives after every optimiser step."""

    step: int  # 1-based
    steps: int
    loss: float
    lr: float
    tokens: int  # tokens trained on so far
    seconds: float  # wall time since the first step started


@dataclass
class TrainResult:
    """History of a run: per-step losses (nats/token), throughput and the trained model."""

    losses: list[float]
    tokens_per_s: float
    tokens: int
    seconds: float
    model: nn.Module = field(repr=False)

    @property
    def steps(self) -> int:
        return len(self.losses)


def lr_at(step: int, steps: int, train: Train) -> float:
    """The reference of ``make_scheduler``: the learning rate of 0-based ``step``: linear warmup over ``train.warmup * steps`` steps, then
    ``train.schedule`` (cosine / linear / constant) from train.lr down to train.lr * min_lr_ratio."""
    warmup = int(train.warmup * steps)
    if step < warmup:
        return train.lr * (step + 1) / warmup
    if train.schedule == "constant" or steps - warmup <= 1:
        return train.lr
    progress = (step - warmup) / (steps - warmup - 1)  # 0 -> 1
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if train.schedule == "cosine" else 1 - progress
    return train.lr * (train.min_lr_ratio + (1 - train.min_lr_ratio) * shape)


def make_scheduler(optimizer: torch.optim.Optimizer, steps: int,
                   train: Train) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule ``lr_at`` writes out (its readable reference, which the tests compare it
    with), from torch.optim.lr_scheduler: a LinearLR warmup over ``int(train.warmup * steps)``
    steps, then CosineAnnealingLR / LinearLR decay to train.lr * min_lr_ratio (ConstantLR for
    ``constant``). Step it once after each optimiser step."""
    from torch.optim import lr_scheduler

    warmup = int(train.warmup * steps)
    decay_steps = steps - warmup - 1  # steps after the first post-warmup one
    if train.schedule == "constant" or decay_steps < 1:
        decay = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    elif train.schedule == "cosine":
        decay = lr_scheduler.CosineAnnealingLR(optimizer, T_max=decay_steps, eta_min=train.lr * train.min_lr_ratio)
    else:
        decay = lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=train.min_lr_ratio,
                                      total_iters=decay_steps)
    if warmup == 0:
        return decay
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1)
    with warnings.catch_warnings():  # SequentialLR steps the decay with an epoch argument at the switch
        warnings.simplefilter("ignore", UserWarning)
        return lr_scheduler.SequentialLR(optimizer, [ramp, decay], milestones=[warmup])


def make_optimizer(model: nn.Module, train: Train, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices of the projections and embeddings only (not on norms, gate
    biases or the memory's initial state)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.dim() >= 2 and "memory_params" not in name else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=train.lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def train_tokens(
    point: ModelPoint,
    data_iter: Iterable[torch.Tensor],
    steps: int | None = None,
    on_step: Callable[[StepInfo], bool | None] | None = None,
    device: str | torch.device | None = None,
    model: nn.Module | None = None,
) -> TrainResult:
    """Train ``point`` (or the given ``model`` of it) for ``steps`` optimiser steps.

    Args:
        point: the design point; its ``train`` section sets lr, schedule, clip, precision, seed.
        data_iter: yields LongTensor batches [B, T+1] (inputs are [:, :-1], targets [:, 1:]) or
            (inputs [B, T], targets [B, T]) pairs whose targets may hold -100 (no loss there).
            If it runs out early, training stops there (``result.steps`` tells how far it got).
        steps: optimiser steps (default ``point.train.steps``, what the token budget buys).
        on_step: called with a StepInfo after every step; returning False stops training.
        device: default pick_device().
        model: an already built model (default: build_model(point) after seeding train.seed).

    With train.compile 'auto' the layers are compiled after AUTO_PROBE_STEPS eager steps when the
    steps left would take long enough for it to pay (``compiling.auto_compiles``).

    Returns a TrainResult; tokens_per_s leaves out the first step (allocation / compilation) when
    there is more than one, and the step that compiled under 'auto'. Raises NonFiniteError when the loss becomes NaN/inf.
    """
    train = point.train
    steps = train.steps if steps is None else steps
    if steps < 1:
        raise MirasError(f"steps must be at least 1, got {steps}")
    device = pick_device(device)
    if model is None:
        torch.manual_seed(train.seed)
        model = build_model(point, device)
    model.train()
    optimizer = make_optimizer(model, train, device)
    scheduler = make_scheduler(optimizer, steps, train)
    batches = iter(data_iter)
    losses: list[float] = []
    tokens = timed_tokens = 0
    compiled_at = -1  # the step that compiled (train.compile 'auto'), if any
    start = timed_start = time.perf_counter()
    for step in range(steps):
        try:
            batch = next(batches)
        except StopIteration:
            break
        if isinstance(batch, torch.Tensor):  # [B, T+1] token windows
            batch = (batch[:, :-1], batch[:, 1:])
        inputs, targets = (t.to(device, non_blocking=True) for t in batch)
        lr = optimizer.param_groups[0]["lr"]
        with autocast_context(point, device):
            _, loss = model(inputs, targets)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # SequentialLR's epoch argument at the switch
            scheduler.step()
        losses.append(loss.item())  # also synchronises the device, so the timing is honest
        tokens += targets.numel()
        if step == 0 or step == compiled_at:  # allocation / compilation: left out of the timing
            timed_start = time.perf_counter()
            timed_tokens = 0
        else:
            timed_tokens += targets.numel()
        if (train.compile == "auto" and step == AUTO_PROBE_STEPS and hasattr(model, "layers")
                and not is_compiled(model)
                and auto_compiles(device, (time.perf_counter() - timed_start) / step, steps - step - 1)):
            compile_layers(model.layers, device, eager_on_error=True)
            compiled_at = step + 1
        info = StepInfo(step + 1, steps, losses[-1], lr, tokens, time.perf_counter() - start)
        if on_step is not None and on_step(info) is False:
            break
    seconds = time.perf_counter() - start
    timed_seconds = time.perf_counter() - timed_start
    throughput = timed_tokens / timed_seconds if timed_tokens else tokens / max(seconds, 1e-9)
    return TrainResult(losses, throughput, tokens, seconds, model)
