"""Which branch of Yaad's Huber switch the tokens of a batch take, layer by layer.

The switch (``bias: {kind: huber, variant: switch}``) takes the l2 step where ``||e|| <= delta_t``
and the l1 step elsewhere. A threshold that every error exceeds (or none does) leaves one branch
unused, and then the threshold gets no gradient: the point is an l1 (or l2) memory under a
Huber name. This module counts the shares, as the PyTorch memory forms see them (in the chunked
form, errors are taken at each chunk's start memory, as in training).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from miras_search.memory.biases import HuberGrad


@dataclass(frozen=True)
class _CountingSwitch(HuberGrad):
    """HuberGrad that also counts, per call, the tokens on the l2 branch and all tokens."""

    counts: list[tuple[int, int]] = field(default_factory=list, compare=False)

    def grad(self, pred: Tensor, v: Tensor, delta: Tensor | None) -> Tensor:
        if delta is not None:
            small, _ = self.inside(pred - v, delta)
            self.counts.append((int(small.sum()), small.numel()))
        return super().grad(pred, v, delta)


def _switch_mixers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules()
            if isinstance(getattr(getattr(m, "rule", None), "bias", None), HuberGrad)
            and m.rule.bias.variant == "switch"]


@contextmanager
def _counting(mixers: list[nn.Module]):
    originals = [m.rule.bias for m in mixers]
    counters = []
    try:
        for mixer, bias in zip(mixers, originals, strict=True):
            counter = _CountingSwitch(bias.variant, bias.smooth, bias.sharpness, bias.relative_sharpness)
            mixer.rule.bias = counter
            counters.append(counter)
        yield counters
    finally:
        for mixer, bias in zip(mixers, originals, strict=True):
            mixer.rule.bias = bias


def l2_branch_shares(model: nn.Module, ids: Tensor) -> list[float]:
    """The share of tokens on the switch's l2 branch (``||e|| <= delta``) in each Huber-switch
    layer of ``model`` for token ids [B, T] (one forward, no gradients, PyTorch memory forms);
    empty for a model without such layers. The l1 share is 1 minus it."""
    mixers = _switch_mixers(model)
    kernels = [getattr(m, "kernel", None) for m in mixers]
    for mixer in mixers:
        mixer.kernel = "torch"  # the kernels do not call the bias rule; count on the PyTorch path
    try:
        with _counting(mixers) as counters, torch.no_grad():
            model(ids)
    finally:
        for mixer, kernel in zip(mixers, kernels, strict=True):
            mixer.kernel = kernel
    return [sum(small for small, _ in c.counts) / max(sum(n for _, n in c.counts), 1) for c in counters]
