"""Fast paths of the small layers against their obviously-right forms: ShortConv (hand-written
backward) against nn.Conv1d, rotary (cached tables, hand-written backward) written out,
l2_normalize against F.normalize."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from miras_search.model.layers import ShortConv, l2_normalize, rotary, rotary_reference

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


@pytest.mark.parametrize("length", [1, 7, 63, 100])
@pytest.mark.parametrize("dim", [1, 2, 7, 16])
def test_rotary_matches_the_written_out_form(length: int, dim: int) -> None:
    """Cached tables and the hand-written backward (a rotation by the opposite angle) against
    tables rebuilt per call and autograd; odd K leaves its last channel alone."""
    torch.manual_seed(length + dim)
    rotary(torch.zeros(1, 128, 1, dim, dtype=torch.float64))  # the cache now holds a longer table
    x = torch.randn(2, length, 3, dim, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, length, 3, dim, dtype=torch.float64)
    fast = rotary(x)
    slow = rotary_reference(x)
    assert _rel(fast, slow) <= TOL
    if dim > 1:
        (fast_grad,) = torch.autograd.grad(fast, x, upstream)
        (slow_grad,) = torch.autograd.grad(slow, x, upstream)
        assert _rel(fast_grad, slow_grad) <= TOL


def test_rotary_takes_extra_axes_and_second_derivatives() -> None:
    """x: [B, T, 2, H, K] rotates like each [B, T, H, K] slice; the backward is differentiable."""
    x = torch.randn(2, 9, 2, 3, 8, dtype=torch.float64, requires_grad=True)
    both = rotary(x)
    for i in range(2):
        assert _rel(both[:, :, i], rotary_reference(x[:, :, i])) <= TOL
    assert torch.autograd.gradcheck(rotary, (x[:, :4].detach().requires_grad_(),))
    assert torch.autograd.gradgradcheck(rotary, (x[:, :4].detach().requires_grad_(),))


def test_rotary_tables_made_under_inference_mode_do_not_reach_training() -> None:
    """Inference tensors cannot be saved for backward: the cache keeps those tables apart."""
    with torch.inference_mode():
        rotary(torch.randn(1, 300, 2, 8))
    x = torch.randn(1, 300, 2, 8, requires_grad=True)
    rotary(x).sum().backward()  # would raise if an inference-mode table were saved
    assert _rel(rotary(x).detach(), rotary_reference(x).detach()) <= 1e-6


@pytest.mark.parametrize("length", [1, 7, 63, 100])
def test_l2_normalize_matches_f_normalize(length: int) -> None:
    """Forward and gradient against F.normalize, rows of zeros (the eps clamp) included."""
    torch.manual_seed(length)
    x = torch.randn(2, length, 3, 5, dtype=torch.float64)
    x[0, 0, 1] = 0.0
    x[1, -1, 2] = 1e-14  # below eps: clamped
    x.requires_grad_()
    upstream = torch.randn_like(x)
    fast, slow = l2_normalize(x), F.normalize(x, dim=-1)
    assert _rel(fast, slow) <= TOL
    (fast_grad,) = torch.autograd.grad(fast, x, upstream)
    (slow_grad,) = torch.autograd.grad(slow, x, upstream)
    assert _rel(fast_grad, slow_grad) <= TOL
