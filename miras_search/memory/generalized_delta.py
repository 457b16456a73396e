"""The exact chunked generalized delta rule: channel-wise decay, a vector in-context learning rate
and a write key of its own (RWKV-7), for a matrix memory with the l2 bias.

Recurrence per head (W: [V, K], every product row-vector style as in the RWKV-7 paper):
    W_t = W_{t-1} D_t + p_t b_t^T + v_t u_t^T,     p_t = -W_{t-1} rho_t,
with D_t = diag(alpha_t) (alpha per key channel or per head), b_t = eta_t * k_t (the removal
direction; eta_t per channel is RWKV-7's in-context learning rate a_t), u_t the write key (b_t
when tied: the plain delta rule) and rho_t = k_t when the gradient is taken at W_{t-1}
(``gradient_at: previous``, RWKV-7's S_{t-1} (diag(w_t) - k^T (a * k)) + v^T kw) or
rho_t = alpha_t * k_t at the retained alpha_t W_{t-1} (Gated DeltaNet's order).

Inside a chunk, with L_t = sum_{j<=t} log alpha_j per channel (within the chunk), gamma = exp(L):
    W_t = W_0 diag(gamma_t) + sum_{i<=t} [p_i (b_i * gamma_t / gamma_i)^T + v_i (u_i * gamma_t / gamma_i)^T]
and p_t = -W_{t-1} rho_t expands into a unit lower-triangular system (I + A) P = -R W_0^T - A_u V
with A[t, i] = sum_c rho_tc b_ic exp(L_{t-1,c} - L_ic) and A_u the same with u (i < t), R_t =
rho_t * gamma_{t-1}. While every chunk's decay stays above exp(SEPARABLE_LOG_FLOOR) the channel
sums are products of (rho * gamma_{t-1}) or (q * gamma_t) with (b / gamma_i): [b, b] scores
without the [b, b, K] ratios; past it the ratios are formed per channel from differences of L
(never gamma_t / gamma_i), so strong decays do not overflow. One triangular solve per chunk
gives every p_t: exact for any chunk size; ``recurrent`` (the token-by-token rule) is its
reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from miras_search.memory.chunked import separable
from miras_search.memory.exact_delta import unit_lower_solve
from miras_search.memory.inputs import MemoryInputs
from miras_search.primitives import prefix_sum


def _blocks(x: Tensor, size: int, pad: int) -> Tensor:
    """[B, H, N, d] -> [B, H, n_chunks, size, d], zero-padded at the end."""
    x = F.pad(x, (0, 0, 0, pad))
    return x.view(*x.shape[:2], -1, size, x.shape[-1])


def _pair_decay(log_to: Tensor, log_from: Tensor, strict: bool) -> Tensor:
    """exp(log_to[t] - log_from[i]) per channel where i < t (strict) or i <= t, else 0:
    [..., b, K] x [..., b, K] -> [..., b, b, K]."""
    b = log_to.shape[-2]
    mask = torch.ones(b, b, dtype=torch.bool, device=log_to.device).tril(-1 if strict else 0)
    diff = log_to.unsqueeze(-2) - log_from.unsqueeze(-3)
    # mask before exp: no inf (and no NaN gradient) above the diagonal
    return torch.where(mask[:, :, None], diff, float("-inf")).exp()


def generalized_delta(x: MemoryInputs, w: Tensor, chunk_size: int, retains_first: bool) -> Tensor:
    """Outputs at every token [B, H, N, V] (each read after its token's update).

    x: q, k [B, H, N, K], v [B, H, N, V], eta [B, H, N, 1 | K], alpha [B, H, N, 1 | K] | None,
    write [B, H, N, K] | None (None: the tied key eta * k); w: the initial state [B, H, V, K];
    ``retains_first``: the gradient at alpha_t W_{t-1} (True) or at W_{t-1} (False).
    Padding tokens have k = v = write = 0 and alpha = 1: they leave the state unchanged.
    """
    if x.steps != 1:
        raise ValueError("the generalized delta rule takes one step per token (no multistep)")
    length, size = x.length, chunk_size
    pad = -length % size
    key_dim = x.k.shape[-1]
    log_alpha = torch.zeros_like(x.k) if x.alpha is None else torch.log(x.alpha).expand_as(x.k)
    remove = x.eta * x.k  # b_t
    write = remove if x.write is None else x.write  # u_t
    rho = x.k * x.alpha if (retains_first and x.alpha is not None) else x.k
    q, v, b, u, rho = (_blocks(t, size, pad) for t in (x.q, x.v, remove, write, rho))
    log_step = _blocks(log_alpha, size, pad)
    log_cum = prefix_sum(log_step, 3)  # L_t: [B, H, n, b, K]
    log_prev = log_cum - log_step  # L_{t-1}

    rho_decayed = rho * log_prev.exp()  # R_t = rho_t * gamma_{t-1}
    q_decayed = q * log_cum.exp()
    if separable(log_cum):
        inverse = (-log_cum).exp()  # 1 / gamma_i, at most exp(-floor)
        b_in, u_in = b * inverse, u * inverse
        a_bb = (rho_decayed @ b_in.mT).tril(-1)
        a_bu = (rho_decayed @ u_in.mT).tril(-1)
        # the diagonal's ratio is exactly 1: formed as gamma_t / gamma_t it would pass the decay
        # a gradient of two cancelling terms (rounding, where the true one is 0)
        q_b = (q_decayed @ b_in.mT).tril(-1) + torch.diag_embed((q * b).sum(-1))
        q_u = (q_decayed @ u_in.mT).tril(-1) + torch.diag_embed((q * u).sum(-1))
    else:
        before = _pair_decay(log_prev, log_cum, strict=True)  # exp(L_{t-1} - L_i), i < t
        a_bb = torch.einsum("...tc,...ic,...tic->...ti", rho, b, before)
        a_bu = torch.einsum("...tc,...ic,...tic->...ti", rho, u, before)
        upto = _pair_decay(log_cum, log_cum, strict=False)  # exp(L_t - L_i), i <= t
        q_b = torch.einsum("...tc,...ic,...tic->...ti", q, b, upto)
        q_u = torch.einsum("...tc,...ic,...tic->...ti", q, u, upto)
    rhs = torch.cat([rho_decayed, a_bu @ v], dim=-1)
    (solved,) = unit_lower_solve(a_bb, rhs)
    p_of_w, p_rest = solved.split([key_dim, v.shape[-1]], dim=-1)  # P = -p_of_w W^T - p_rest
    to_end = (log_cum[..., -1:, :] - log_cum).exp()  # exp(L_b - L_i): [B, H, n, b, K]
    end_decay = log_cum[..., -1:, :].exp()  # gamma_b: [B, H, n, 1, K]
    b_end, u_end = b * to_end, u * to_end

    # the chunks taken with unbind: indexing the full-length tensors per chunk would make every
    # chunk's backward fill a full-size zero gradient (quadratic work in the length)
    per_chunk = (t.unbind(2) for t in (p_of_w, p_rest, q_decayed, q_b, q_u, v, end_decay, b_end, u_end))
    outputs = []
    for pw, pr, qd, qb, qu, vc, decay, b_c, u_c in zip(*per_chunk, strict=True):
        p = -pw @ w.mT - pr  # [B, H, b, V]
        outputs.append(qd @ w.mT + qb @ p + qu @ vc)
        w = w * decay + p.mT @ b_c + vc.mT @ u_c
    return torch.cat(outputs, dim=2)[:, :, :length]
