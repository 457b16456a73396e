"""KL retention inside a chunk: the first-order expansion of the mirror step around W_0.

The chunked form's reads for kl retention must be the linearisation of W = c softmax_row(log W_0 + D)
in D (miras_search.memory.mirror_read): their error against the exact map shrinks as the square
of the step, and they agree with the materialised weights (``KLRetention.linearised``).
"""

from __future__ import annotations

import math

import pytest
import torch

from miras_search.schema.retention import KLRetention


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_linearised_weights_are_the_first_order_expansion_of_the_softmax(scale: float):
    gen = torch.Generator().manual_seed(0)
    rule = KLRetention(scale=scale)
    w0, log_w0 = rule.from_param(0.5 * torch.randn(2, 3, 6, 5, generator=gen, dtype=torch.float64))
    direction = torch.randn(2, 3, 6, 5, generator=gen, dtype=torch.float64)
    errors = []
    for step in (1e-2, 1e-3):
        exact = scale * torch.softmax(log_w0 + step * direction, dim=-1)
        first_order = rule.linearised(w0, log_w0, log_w0 + step * direction)
        errors.append((exact - first_order).norm().item() / w0.norm().item())
    # second order: a 10x smaller step leaves a 100x smaller error
    assert math.isclose(errors[0] / errors[1], 100.0, rel_tol=0.05)
    # and every row of U_t still sums to c (the expansion keeps the simplex's plane)
    torch.testing.assert_close(rule.linearised(w0, log_w0, log_w0 + direction).sum(-1),
                               torch.full((2, 3, 6), scale, dtype=torch.float64))


def test_a_step_moves_each_weight_in_proportion_to_itself():
    """Unlike adding the step to W_0: a weight near 0 barely moves (the mirror step's geometry)."""
    rule = KLRetention(scale=1.0)
    w0, log_w0 = rule.from_param(torch.tensor([[[[0.0, -10.0, 0.0]]]], dtype=torch.float64))
    step = torch.tensor([[[[0.0, 1.0, 0.0]]]], dtype=torch.float64)
    moved = rule.linearised(w0, log_w0, log_w0 + step) - w0
    assert abs(moved[..., 1].item()) < 1e-4 * abs(step[..., 1].item())
