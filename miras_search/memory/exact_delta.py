"""The exact chunked delta rule (WY / UT form) for a matrix memory with the l2 bias.

Recurrence per head (W: [V, K]): W_t = alpha_t W_{t-1} - eta_t (W_{t-1} k_t - v_t) k_t^T.
Inside a chunk, with gamma_t = prod_{j<=t} alpha_j, the state is
    W_t = gamma_t W_0 + sum_{i<=t} (gamma_t / gamma_i) r_i k_i^T,
    r_t = eta_t (v_t - gamma_{t-1} W_0 k_t - sum_{i<t} (gamma_{t-1} / gamma_i) (k_i . k_t) r_i),
so (I + A) R = eta * (V - gamma_prev K W_0^T) with A strictly lower triangular: one unit-
triangular solve per chunk gives every r_t, for any chunk size, with no approximation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from miras_search.memory.inputs import MemoryInputs


def _masked_exp(diff: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, diff, float("-inf")).exp()


def exact_delta(x: MemoryInputs, w: Tensor, chunk_size: int) -> Tensor:
    """Outputs at every micro-step [B, H, N, V]; ``w``: initial state [B, H, V, K]."""
    outputs = []
    for start in range(0, x.length, chunk_size):
        c = x.slice(start, min(start + chunk_size, x.length))
        b = c.length
        lower = torch.ones(b, b, dtype=torch.bool, device=w.device).tril()
        strict = lower.tril(-1)
        log_alpha = torch.zeros_like(c.eta) if c.alpha is None else torch.log(c.alpha)
        log_gamma = log_alpha.cumsum(2)[..., 0]  # [B, H, b]
        log_gamma_prev = log_gamma - log_alpha[..., 0]
        eta = c.eta  # [B, H, b, 1]

        # A[t, i] = eta_t (gamma_{t-1} / gamma_i) (k_t . k_i), i < t
        decay_prev = _masked_exp(log_gamma_prev.unsqueeze(-1) - log_gamma.unsqueeze(-2), strict)
        a = eta * decay_prev * (c.k @ c.k.mT)
        eye = torch.eye(b, dtype=w.dtype, device=w.device)
        rhs = torch.cat([eta * c.v, eta * log_gamma_prev.exp().unsqueeze(-1) * c.k], dim=-1)
        solved = torch.linalg.solve_triangular(eye + a, rhs, upper=False, unitriangular=True)
        u, wk = solved.split([c.v.shape[-1], c.k.shape[-1]], dim=-1)
        r = u - wk @ w.mT  # [B, H, b, V]

        decay = _masked_exp(log_gamma.unsqueeze(-1) - log_gamma.unsqueeze(-2), lower)
        y = log_gamma.exp().unsqueeze(-1) * (c.q @ w.mT) + (decay * (c.q @ c.k.mT)) @ r
        outputs.append(y)

        ratio_last = decay[:, :, -1].unsqueeze(-1)  # gamma_b / gamma_i: [B, H, b, 1]
        w = log_gamma[:, :, -1:].exp().unsqueeze(-1) * w + (r * ratio_last).mT @ c.k
    return torch.cat(outputs, dim=2)
