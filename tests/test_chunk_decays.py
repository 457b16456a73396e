"""All full chunks' decays at once (``chunk_decays``) against one chunk at a time (``chunk_decay``)."""

from __future__ import annotations

import pytest
import torch

from miras_search.memory.chunked import chunk_decay, chunk_decays
from miras_search.memory.inputs import MemoryInputs

B, H, K = 2, 3, 4


def _inputs(length: int, channels: int, momentum: bool, low: float) -> MemoryInputs:
    gen = torch.Generator().manual_seed(length * 31 + channels)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, dtype=torch.float64)

    alpha = low + (1 - low) * rand(B, H, length, channels)
    return MemoryInputs(
        q=rand(B, H, length, K), k=rand(B, H, length, K), v=rand(B, H, length, K),
        eta=rand(B, H, length, channels), alpha=alpha.requires_grad_(),
        theta=rand(B, H, length, 1).requires_grad_() if momentum else None, delta=None,
    )


@pytest.mark.parametrize("length", [1, 7, 63, 100])
@pytest.mark.parametrize("size", [4, 16])
@pytest.mark.parametrize("skip", [0, 1])
@pytest.mark.parametrize(
    ("channels", "momentum", "low"),
    [(1, False, 0.5), (K, False, 0.5), (K, True, 0.5), (K, False, 1e-300)],  # the last: not separable
)
def test_all_chunks_at_once_equal_one_at_a_time(length: int, size: int, skip: int, channels: int,
                                                momentum: bool, low: float) -> None:
    x = _inputs(length, channels, momentum, low)
    together = chunk_decays(x, size, skip)
    assert len(together) == length // size
    alone = [chunk_decay(p.alpha, p.theta, p.k) for p in
             (x.slice(c * size + skip, (c + 1) * size) for c in range(len(together)))]
    fields = ("beta", "coef", "m", "theta_last", "theta_ratio")
    for c, (decay, single) in enumerate(zip(together, alone, strict=True)):
        for name in fields:
            got, want = getattr(decay, name), getattr(single, name)
            assert (got is None) == (want is None), f"chunk {c}: {name}"
            if want is not None:
                torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-300)
    if together:  # and so are the gradients to the gates, none reaching past the full chunks
        gates = [t for t in (x.alpha, x.theta) if t is not None]

        def total(decays: list) -> torch.Tensor:
            weights = torch.arange(1.0, 1.0 + len(decays), dtype=torch.float64)
            return sum(w * (d.beta.sum() + (0 if d.coef is None else d.coef.sum()))
                       for w, d in zip(weights, decays, strict=True))

        got = torch.autograd.grad(total(together), gates)
        want = torch.autograd.grad(total(alone), gates)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-300)
            assert g[:, :, len(together) * size:].abs().sum() == 0
