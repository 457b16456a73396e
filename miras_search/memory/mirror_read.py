"""KL retention (Memora) inside a chunk: the first-order expansion of its update around W_0.

Memora's update is a mirror step, ``W_t = c softmax_row(alpha_t log W_{t-1} - eta_t G_t)``, so
within a chunk whose gradients are all taken at the chunk-start W_0 its log-space change is linear:

    log W_t = log W_0 + D_t + (a constant per row),
    D_t = diag-decayed log W_0 - log W_0 + m_t S_0 - sum_{i<=t} C_ti eta_i delta_i x_i^T

with the usual chunk coefficients (``beta_t``, ``C``, ``m_t``; the decay acts on each row's
entries, per input channel when alpha is channel-wise). The paper runs "its linear version inside
each chunk" and the exact map across chunks; the linear version here is the first-order
expansion of the softmax around W_0 (p_0 = W_0 / c, each row a distribution):

    U_t = W_0 * (1 + D_t - rho_t 1^T),    rho_t[r] = sum_j p_0[r, j] D_t[r, j]

so a step moves each weight in proportion to the weight itself, as the mirror step does. Adding
the step to W_0 instead (the plain linear form of the other retentions) moves entries of size
about c / in by steps of size eta |G|: in / c times (32 to 128 here) the step the exact update
takes, and a decay that shrinks W_0 inside the chunk where the exact one only flattens its rows.

Reads never form U_t: with ex_i = eta_i x_i and P_ti = C_ti * ex_i * z_t (per input channel),

    U_t z_t = W_0 z_t + ((W_0 * log W_0) ((beta_t - 1) * z_t) + (W_0 * S_0) (m_t * z_t)
              - sum_i delta_i * (W_0 P_ti)) - (W_0 z_t) * rho_t,

the last sum a [b, b, in] x [in, out] product per chunk (b times a plain read: the price of the
weight-proportional step).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _pair_coefficients(beta: Tensor, coef: Tensor | None) -> Tensor:
    """C[t, i] per channel, [B, H, b, b, c]: ``coef`` itself, or beta_t / beta_i below the
    diagonal and exactly 1 on it when the chunk passed it as separable (None)."""
    if coef is not None:
        return coef
    b = beta.shape[2]
    ratio = beta.unsqueeze(3) / beta.unsqueeze(2)
    below = torch.ones(b, b, dtype=torch.bool, device=beta.device).tril(-1)[:, :, None]
    eye = torch.eye(b, dtype=torch.bool, device=beta.device)[:, :, None]
    return torch.where(below, ratio, eye.to(beta.dtype))


def mirror_chunk_read(
    w0: Tensor, log_w0: Tensor, scale: float, beta: Tensor, s0: Tensor | None, m: Tensor | None,
    coef: Tensor | None, delta: Tensor, ex: Tensor, z: Tensor,
) -> Tensor:
    """U_t z_t for a matrix weight under kl retention (see the module docstring).

    w0, log_w0 (its log), s0: [B, H, out, in]; beta, m: [B, H, b, c]; coef: [B, H, b, b, c] or
    None (C_ti = beta_t / beta_i); delta: [B, H, b, out]; ex = eta * x, z: [B, H, b, in];
    c in {1, in}; ``scale``: c of the softmax (rows of W_0 sum to it). Returns [B, H, b, out].
    """
    p0 = w0 / scale
    read0 = z @ w0.mT  # W_0 z_t
    change = ((beta - 1.0) * z) @ (w0 * log_w0).mT  # (W_0 * D_t) z_t: the decay part
    rho = _row_weighted(beta - 1.0, p0 * log_w0)
    if s0 is not None and m is not None:
        change = change + (m * z) @ (w0 * s0).mT
        rho = rho + _row_weighted(m, p0 * s0)
    batch, heads, b, width = z.shape
    scaled = _pair_coefficients(beta, coef) * ex.unsqueeze(2)  # C_ti * ex_i: [B, H, t, i, in]
    # the step part: sum_i delta_i * (W_0 (C_ti * ex_i * z_t)) and sum_i delta_i * (p_0 (C_ti * ex_i))
    through = ((scaled * z.unsqueeze(3)).reshape(batch, heads, b * b, width) @ w0.mT).view(batch, heads, b, b, -1)
    spread = (scaled.reshape(batch, heads, b * b, width) @ p0.mT).view(batch, heads, b, b, -1)
    change = change - (through * delta.unsqueeze(2)).sum(3)
    rho = rho - (spread * delta.unsqueeze(2)).sum(3)
    return read0 + change - read0 * rho


def _row_weighted(gate: Tensor, weights: Tensor) -> Tensor:
    """sum_j weights[r, j] gate_t[j] for every t: gate [B, H, b, c] (c = 1 or in), weights
    [B, H, out, in] -> [B, H, b, out]."""
    if gate.shape[-1] == 1:
        return gate * weights.sum(-1).unsqueeze(-2)
    return gate @ weights.mT


def mirror_diagonal_read(
    w0: Tensor, log_w0: Tensor, scale: float, beta: Tensor, s0: Tensor | None, m: Tensor | None,
    coef: Tensor | None, delta: Tensor, ex: Tensor, z: Tensor,
) -> Tensor:
    """The vector memory's analogue (w0: [B, H, 1, K], one distribution over K): U_t is formed
    per token ([B, H, b, K], as small as the inputs) and read element-wise."""
    pair = _pair_coefficients(beta, coef)
    change = (beta - 1.0) * log_w0 - (pair * (ex * delta).unsqueeze(2)).sum(3)
    if s0 is not None and m is not None:
        change = change + m * s0
    rho = (w0 / scale * change).sum(-1, keepdim=True)
    return w0 * (1.0 + change - rho) * z
