"""Hand-written fast paths of the memory's chunked forms against their obviously-right forms,
float64 on CPU, forward and gradients (relative error <= 1e-10)."""

from __future__ import annotations

import pytest
import torch

from miras_search.memory.chunked import prefix_sum
from miras_search.memory.exact_delta import unit_lower_solve

TOL = 1e-10


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("size", [1, 2, 7, 16, 63, 100])
def test_unit_lower_solve_matches_solve_triangular(size: int) -> None:
    """The inverse applied with a matmul (and its solve-free backward) against torch's triangular
    solve of I + A; entries above a's diagonal are ignored by both."""
    torch.manual_seed(size)
    a = (0.5 * torch.randn(3, 2, size, size, dtype=torch.float64) / size**0.5).requires_grad_()
    rhs = torch.randn(3, 2, size, 5, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, 2, size, 5, dtype=torch.float64)
    fast = unit_lower_solve(a, rhs)
    eye = torch.eye(size, dtype=torch.float64)
    slow = torch.linalg.solve_triangular(eye + a.tril(-1), rhs, upper=False, unitriangular=True)
    assert _rel(fast, slow) <= TOL
    for g_fast, g_slow in zip(torch.autograd.grad(fast, (a, rhs), upstream),
                              torch.autograd.grad(slow, (a, rhs), upstream), strict=True):
        assert _rel(g_fast, g_slow) <= TOL


@pytest.mark.parametrize("size", [1, 7, 63, 100])
def test_prefix_sum_matches_cumsum(size: int) -> None:
    """The chunk decays' cumulative log-decay as a triangular product against cumsum."""
    torch.manual_seed(size)
    x = torch.randn(2, 3, size, 5, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 3, size, 5, dtype=torch.float64)
    fast, slow = prefix_sum(x), x.cumsum(2)
    assert _rel(fast, slow) <= TOL
    (g_fast,) = torch.autograd.grad(fast, x, upstream)
    (g_slow,) = torch.autograd.grad(slow, x, upstream)
    assert _rel(g_fast, g_slow) <= TOL
