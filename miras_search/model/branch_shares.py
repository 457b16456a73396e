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

from miras_search.schema.bias import HuberBias


@dataclass
class _CountingSwitch:
    """Stands in for a Huber switch bias: the same gradient, and per call the count of tokens on
    the l2 branch and of all tokens."""

    bias: HuberBias
    counts: list[tuple[int, int]] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.bias.kind

    def grad(self, pred: Tensor, v: Tensor, delta: Tensor | None) -> Tensor:
        if delta is not None:
            small, _ = self.bias.inside(pred - v, delta)
            self.counts.append((int(small.sum()), small.numel()))
        return self.bias.grad(pred, v, delta)


def _switch_mixers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules()
            if isinstance(getattr(getattr(m, "rule", None), "bias", None), HuberBias)
            and m.rule.bias.variant == "switch"]


@contextmanager
def _counting(mixers: list[nn.Module]):
    originals = [m.rule.bias for m in mixers]
    counters = []
    try:
        for mixer, bias in zip(mixers, originals, strict=True):
            counter = _CountingSwitch(bias)
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
