"""Hand-written fast paths of the memory's chunked forms against their obviously-right forms,
float64 on CPU, forward and gradients (relative error <= 1e-10)."""

from __future__ import annotations

import pytest
import torch

from miras_search.memory import exact_delta
from miras_search.memory.exact_delta import _ChunkRecurrence, chunk_recurrence, unit_lower_solve
from miras_search.primitives import lq4_log_scale, lq_log_scale_reference, prefix_sum

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
    other = torch.randn(3, 2, size, 2, dtype=torch.float64, requires_grad=True)
    other_upstream = torch.randn(3, 2, size, 2, dtype=torch.float64)
    eye = torch.eye(size, dtype=torch.float64)
    fast, fast_other = unit_lower_solve(a, rhs, other)
    slow, slow_other = (torch.linalg.solve_triangular(eye + a.tril(-1), r, upper=False, unitriangular=True)
                        for r in (rhs, other))
    assert _rel(fast, slow) <= TOL and _rel(fast_other, slow_other) <= TOL
    leaves = (a, rhs, other)
    for g_fast, g_slow in zip(torch.autograd.grad((fast, fast_other), leaves, (upstream, other_upstream)),
                              torch.autograd.grad((slow, slow_other), leaves, (upstream, other_upstream),
                                                  retain_graph=True), strict=True):
        assert _rel(g_fast, g_slow) <= TOL
    # an unused right-hand side gets no gradient and leaves the others' as they are
    (fast_only,) = torch.autograd.grad(unit_lower_solve(a, rhs, other)[0], (a,), upstream)
    (slow_only,) = torch.autograd.grad(slow, (a,), upstream)
    assert _rel(fast_only, slow_only) <= TOL


@pytest.mark.parametrize("block_chunks", [None, 1, 3])
@pytest.mark.parametrize(("chunks", "size"), [(1, 1), (1, 7), (3, 7), (7, 4), (4, 16)])
def test_chunk_recurrence_backward_matches_autograd(chunks: int, size: int, block_chunks: int | None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The exact delta rule's state recurrence: hand-written loops (states saved per chunk, the
    non-sequential gradients batched) against autograd through the written-out loop; with the
    states in one block and in blocks of ``block_chunks`` chunks (long sequences)."""
    if block_chunks is not None:  # one state here: 3 groups x 4 x 5 float64
        monkeypatch.setattr(exact_delta, "STATE_BLOCK_BYTES", block_chunks * 3 * 4 * 5 * 8)
        assert len(exact_delta.state_blocks(chunks, 3 * 4 * 5 * 8)) == -(-chunks // block_chunks)
    torch.manual_seed(chunks * 100 + size)
    groups, k, v = 3, 5, 4

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    inputs = [rand(groups, chunks, size, k), rand(groups, chunks, size, k), rand(groups, chunks, size, v),
              rand(groups, chunks, size, size), rand(groups, chunks, size, k),
              torch.rand(groups, chunks, dtype=torch.float64, requires_grad=True), rand(groups, v, k)]
    upstream = torch.randn(groups, chunks, size, v, dtype=torch.float64)
    fast = _ChunkRecurrence.apply(*inputs)
    slow = chunk_recurrence(*inputs)
    assert _rel(fast, slow) <= TOL
    for g_fast, g_slow in zip(torch.autograd.grad(fast, inputs, upstream),
                              torch.autograd.grad(slow, inputs, upstream, materialize_grads=True),
                              strict=True):  # with one chunk the last state is never read
        assert _rel(g_fast, g_slow) <= TOL


@pytest.mark.parametrize("channels", [1, 5])
@pytest.mark.parametrize("size", [1, 7, 63, 100])
@pytest.mark.parametrize("shape, dim", [((2, 3, None, "c"), 2), ((2, 3, 4, None, "c"), 3), ((2, None, "c"), -2)])
def test_prefix_sum_matches_cumsum(size: int, channels: int, shape: tuple, dim: int) -> None:
    """Cumulative log-decays (slice by slice when channel-wise) against cumsum, forward and
    gradient, along an inner axis of 3-, 4- and 5-d tensors."""
    torch.manual_seed(size)
    full = tuple(size if d is None else channels if d == "c" else d for d in shape)
    x = torch.randn(full, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(full, dtype=torch.float64)
    slow = x.cumsum(dim)
    (g_slow,) = torch.autograd.grad(slow, x, upstream, retain_graph=True)
    fast = prefix_sum(x, dim)
    assert _rel(fast, slow) <= TOL
    (g_fast,) = torch.autograd.grad(fast, x, upstream)
    assert _rel(g_fast, g_slow) <= TOL


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (63, 5), (100, 2)])
def test_lq4_log_scale_matches_autograd(shape: tuple[int, int]) -> None:
    """Moneta's normaliser log n(A) (q = 4) with its hand-written backward against the written-out
    form through autograd; also at scales where |A|^4 would overflow float32 and below the floor."""
    torch.manual_seed(shape[0])
    for scale in (1.0, 1e12, 1e-9):
        a = (scale * torch.randn(3, 2, *shape, dtype=torch.float64)).requires_grad_()
        upstream = torch.randn(3, 2, 1, 1, dtype=torch.float64)
        fast, slow = lq4_log_scale(a), lq_log_scale_reference(a, 4.0)
        assert _rel(fast, slow) <= TOL
        (g_fast,) = torch.autograd.grad(fast, a, upstream)
        (g_slow,) = torch.autograd.grad(slow, a, upstream)
        assert _rel(g_fast, g_slow) <= TOL
    big = torch.full((2, 3, 4), 1e15, requires_grad=True)  # float32: 1e60 would overflow
    assert torch.isfinite(lq4_log_scale(big)).all()
    zero = torch.zeros(2, 3, 4, requires_grad=True)  # at the floor: a zero gradient, not NaN
    (g_zero,) = torch.autograd.grad(lq4_log_scale(zero).sum(), zero)
    assert (g_zero == 0).all()
