"""ShortConv's fast path (hand-written backward) against nn.Conv1d, forward and gradients."""

from __future__ import annotations

import pytest
import torch

from miras_search.model.layers import ShortConv

TOL = 1e-12


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("length", [1, 2, 7, 63, 100])
@pytest.mark.parametrize("kernel_size", [0, 1, 2, 4, 5])
def test_short_conv_matches_conv1d(length: int, kernel_size: int) -> None:
    torch.manual_seed(length * 10 + kernel_size)
    conv = ShortConv(6, kernel_size).double()
    x = torch.randn(3, length, 6, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, length, 6, dtype=torch.float64)
    leaves = [x, *conv.parameters()]
    fast = conv(x)
    fast_grads = torch.autograd.grad(fast, leaves, upstream)
    slow = conv.reference(x)
    slow_grads = torch.autograd.grad(slow, leaves, upstream)
    for a, b in zip((fast, *fast_grads), (slow, *slow_grads), strict=True):
        assert _rel(a, b) <= TOL


def test_short_conv_is_causal() -> None:
    """Changing token t changes no output before t, and outputs t .. t+K-1 only."""
    conv = ShortConv(4, 3).double()
    x = torch.randn(2, 12, 4, dtype=torch.float64)
    bumped = x.clone()
    bumped[:, 5] += 1.0
    changed = (conv(bumped) - conv(x)).abs().amax(dim=(0, 2)) > 0
    assert changed.tolist() == [t in (5, 6, 7) for t in range(12)]
