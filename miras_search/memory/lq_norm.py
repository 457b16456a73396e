"""lq retention's log-normaliser at q = 4 (Moneta) with a hand-written backward.

log n(A) = 2 log max(||A||_4, LQ_FLOOR) over the last two dims, as ``primitives.lq_log_scale``
computes it (through m = max |A|, so that |A|^4 never overflows): the weights are normalised by
it once per chunk and layer, and autograd through that form's abs, division, two squarings and
sum makes about eight passes over the state each way; this makes four forward and two backward.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from miras_search.primitives import LQ_FLOOR, tiny


class _Lq4LogScale(torch.autograd.Function):
    """a: [..., out, in] -> log n(a): [..., 1, 1], q = 4."""

    @staticmethod
    def forward(ctx, a: Tensor) -> Tensor:
        low, high = torch.aminmax(a.detach().flatten(-2), dim=-1, keepdim=True)
        m = torch.maximum(high, -low).clamp_min(tiny(a)).unsqueeze(-1)  # max |a|: [..., 1, 1]
        r = a / m
        s = r.square()
        # sum (a / m)^4 = ||s||_2^2, in [1, numel]
        ratio = torch.linalg.vector_norm(s, dim=(-2, -1), keepdim=True).square()
        log_norm = m.log() + ratio.log() / 4.0
        floor = math.log(LQ_FLOOR)
        ctx.save_for_backward(r, s, m, ratio, log_norm > floor)
        return 2.0 * log_norm.clamp_min(floor)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        # d log ||A||_4 / dA = A^3 / ||A||_4^4 = (A / m)^3 / (m * ratio)
        r, s, m, ratio, above_floor = ctx.saved_tensors
        coefficient = torch.where(above_floor, 2.0 * grad / (m * ratio), 0.0)  # 0 at the floor
        return (s * r).mul_(coefficient)


def lq4_log_scale(a: Tensor) -> Tensor:
    """log n(A) for lq retention with q = 4: a [..., out, in] -> [..., 1, 1]."""
    return _Lq4LogScale.apply(a)
