"""The memory network's hand-written backward pieces against autograd, float64, including their
own derivatives (the outer backward differentiates them)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from miras_search.primitives import LN_EPS, abs_pow, layer_norm_back
from miras_search.primitives import activation as _activation

TOL = 1e-12


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _leaves(length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    z, g, w = (torch.randn(2, 3, length, 9, generator=gen, dtype=torch.float64) for _ in range(3))
    return z.requires_grad_(), g.requires_grad_(), w


def _same_with_derivatives(fast, slow, z, g, w) -> None:
    """fast(z, g) == slow(z, g) and so are the gradients of sum(w * .) in z and g."""
    a, b = fast(z, g), slow(z, g)
    assert _rel(a, b) <= TOL
    for ga, gb in zip(torch.autograd.grad((a * w).sum(), (z, g)),
                      torch.autograd.grad((b * w).sum(), (z, g)), strict=True):
        assert ga.abs().max() == gb.abs().max() == 0 or _rel(ga, gb) <= TOL


@pytest.mark.parametrize("length", [1, 7, 63, 100])
@pytest.mark.parametrize("name", ["gelu", "silu", "relu"])
def test_activation_backward_is_autograds(name: str, length: int) -> None:
    act, act_back = _activation(name)

    def autograd_back(z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(act(z), z, g, create_graph=True)[0]

    _same_with_derivatives(lambda z, g: act_back(g, z), autograd_back, *_leaves(length, seed=length))


@pytest.mark.parametrize("length", [1, 7, 63, 100])
def test_layer_norm_backward_is_autograds(length: int) -> None:
    def autograd_back(z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(z, z.shape[-1:], eps=LN_EPS)
        return torch.autograd.grad(y, z, g, create_graph=True)[0]

    _same_with_derivatives(layer_norm_back, autograd_back, *_leaves(length, seed=length))


@pytest.mark.parametrize("q", [2.0, 3.0, 4.0, 5.5, 6.0])
def test_abs_pow_is_pow(q: float) -> None:
    x = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    fast, slow = abs_pow(x, q), x.abs().pow(q)
    assert _rel(fast, slow) <= TOL
    w = torch.randn(4, 7, dtype=torch.float64)
    (g_fast,), (g_slow,) = (torch.autograd.grad((y * w).sum(), x) for y in (fast, slow))
    assert _rel(g_fast, g_slow) <= TOL


@pytest.mark.parametrize("length", [1, 7, 63, 100])
@pytest.mark.parametrize("broadcast", [False, True])
def test_product_with_weight_matches_autograd_and_keeps_the_weights_layout(length: int, broadcast: bool) -> None:
    from miras_search.memory.networks import times_weight

    gen = torch.Generator().manual_seed(length)
    z = torch.randn(2, 3, length, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1 if broadcast else 2, 3, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(2, 3, length, 4, generator=gen, dtype=torch.float64)
    fast = times_weight(z, w)
    slow = z @ w.mT
    assert fast.grad_fn is not None and "ProductWithWeight" in type(fast.grad_fn).__name__
    assert _rel(fast, slow) <= TOL
    fast_grads = torch.autograd.grad((fast * probe).sum(), (z, w), create_graph=True)
    slow_grads = torch.autograd.grad((slow * probe).sum(), (z, w), create_graph=True)
    for a, b in zip(fast_grads, slow_grads, strict=True):
        assert _rel(a, b) <= TOL
    assert fast_grads[1].is_contiguous()  # autograd's own is a transposed view for w's [out, in]
    # the outer backward may differentiate it again
    second = [torch.autograd.grad(sum(g.square().sum() for g in grads), (z, w))
              for grads in (fast_grads, slow_grads)]
    for a, b in zip(*second, strict=True):
        assert _rel(a, b) <= TOL


@pytest.mark.parametrize("length", [1, 7, 63, 100])
def test_minus_grad_matches_autograd_and_keeps_the_layouts(length: int) -> None:
    from miras_search.memory.networks import LinearLayer

    gen = torch.Generator().manual_seed(length)
    base, delta, x = (torch.randn(2, 3, *shape, generator=gen, dtype=torch.float64, requires_grad=True)
                      for shape in ((4, 5), (length, 4), (length, 5)))
    probe = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    fast = LinearLayer.minus_grad(base, delta, x)
    slow = base - delta.mT @ x
    assert "MinusOuterSum" in type(fast.grad_fn).__name__
    assert _rel(fast, slow) <= TOL
    fast_grads = torch.autograd.grad((fast * probe).sum(), (base, delta, x), create_graph=True)
    slow_grads = torch.autograd.grad((slow * probe).sum(), (base, delta, x), create_graph=True)
    for a, b in zip(fast_grads, slow_grads, strict=True):
        assert _rel(a, b) <= TOL
        assert a.is_contiguous()
    second = [torch.autograd.grad(sum(g.square().sum() for g in grads[1:]), (delta, x))
              for grads in (fast_grads, slow_grads)]
    for a, b in zip(*second, strict=True):
        assert _rel(a, b) <= TOL
    with torch.no_grad():  # no graph to keep: the plain product
        assert _rel(LinearLayer.minus_grad(base, delta, x), slow) <= TOL
