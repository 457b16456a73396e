"""Plain-PyTorch reference of the chunked (minibatch) matrix-memory update.

Per batch b and head h the memory is W [V, K]. Inside a chunk of C tokens all gradients are
taken at the chunk-start state W_0, retained to token i (the paper's minibatch form, in Gated
DeltaNet's "retain, then learn" order, ``gradient_at='retained'``) or not (``'previous'``,
Titans' order: e_i = W_0 k_i - v_i), as miras_search.memory does:

    beta_t = prod_{s <= j <= t} alpha_j,   e_i = beta_i W_0 k_i - v_i,   g_i = phi(e_i)
    gd:        U_t = beta_t W_0 - sum_{i <= t} (beta_t / beta_i) eta_i g_i k_i^T
    momentum:  S_t = theta_t S_{t-1} - eta_t g_t k_t^T  (S carried across chunks)
               U_t = beta_t W_0 + sum_{j <= t} (beta_t / beta_j) m_j S_j
    o_t = U_t q_t;  the next chunk starts from W_0 := U_last.

Channel-wise alpha [K] decays the key dimension (W diag(alpha)); a channel-wise eta [K] steps
each key channel on its own: the step writes with eta_i * k_i (elementwise) and g_i unscaled,
while the errors still read with k_i. A channel-wise delta [V] is one Huber threshold per value
channel.

lq retention (Moneta's, ``retention='lq'``): the state carried is the accumulator A, and the
memory is W = r(A) A with r(A) = 1 / max(||A||_q, floor)^(q - 2) (the norm over the whole
matrix). Inside a chunk A runs the linear update above (with A for W) and every gradient is taken
at W_0 = r(A_0) A_0; token t reads r(A_0) A_t q_t, except the chunk's last token, which reads the
exact new memory r(A_C) A_C q: the normalisation at chunk ends (miras_search.memory's chunked form).

The momentum mask m (1 without one) lets S join the memory only at the tokens where it is 1:
Atlas's Omega window runs as several entries per token (kernels.omega), whose momentum reaches
W once per token, at its last entry.

chunk_size = 1 is the exact
token-by-token recurrence. This file is written to be read; the Triton kernel in chunk.py
must match it.
"""

from __future__ import annotations

import math

import torch

from miras_search.primitives import decay_matrix, lq_log_scale

from ..bias import BiasConfig, as_bias, phi
from ..segments import segments


def naive_chunk_matrix_memory(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    alpha: torch.Tensor | None = None,
    theta: torch.Tensor | None = None,
    delta: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    bias: BiasConfig | str = "l2",
    chunk_size: int = 64,
    gradient_at: str = "retained",
    retention: str = "l2",
    lq_exponent: float = 4.0,
    momentum_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Chunked matrix memory, one chunk at a time, in the dtype of ``q``.

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V]; eta: [B, T, H] or [B, T, H, K] (> 0).
        alpha: [B, T, H] or [B, T, H, K] in (0, 1], or None (no retention).
        theta: [B, T, H] in (0, 1) for momentum, or None (gd).
        delta: [B, T, H] or [B, T, H, V] (> 0), the Huber threshold (huber biases only).
        initial_state: [H, V, K] or None (zeros).
        bias: a BiasConfig or its kind name.
        chunk_size: tokens per chunk (1 = exact recurrence).
        gradient_at: 'retained' (errors at beta_i W_0) or 'previous' (at W_0).
        retention: 'l2' (linear: with alpha, or none without) or 'lq' (the exponent ``lq_exponent``;
            errors at W_0, initial_state the accumulator A_0).
        momentum_mask: [B, T, H] of 0 / 1, where S joins the memory (momentum only), or None.
    Returns:
        o: [B, T, H, V].
    """
    bias = as_bias(bias)
    lq = retention == "lq"
    B, T, H, K = k.shape
    V = v.shape[-1]
    C = chunk_size
    n_chunks = -(-T // C)
    dt = q.dtype
    channel = alpha is not None and alpha.dim() == 4
    eta_channel = eta.dim() == 4

    log_a = None if alpha is None else alpha.log()
    log_th = None if theta is None else theta.log()

    W = q.new_zeros(B, H, V, K) if initial_state is None else initial_state.to(dt).expand(B, H, V, K)
    S = q.new_zeros(B, H, V, K)
    outs = []
    for n in range(n_chunks):
        sl = slice(n * C, min((n + 1) * C, T))  # the last chunk may be shorter
        qc, kc, vc = (x[:, sl].transpose(1, 2) for x in (q, k, v))  # (B, H, C, K|V)
        etac = eta[:, sl].transpose(1, 2)  # (B, H, C), or (B, H, C, K) channel-wise
        deltac = None if delta is None else delta[:, sl].transpose(1, 2)

        # lb: cumulative log-decay inside the chunk, (B, H, C) or (B, H, C, K)
        lb = q.new_zeros(B, H, qc.shape[2]) if log_a is None else log_a[:, sl].transpose(1, 2).cumsum(2)
        r0 = _lq_read_scale(W, lq_exponent) if lq else 1.0  # W holds the accumulator A_0 under lq
        if lq:
            k_retained = kc * r0  # errors at W_0 = r0 A_0
        elif gradient_at == "retained":
            k_retained = kc * (lb.exp() if channel else lb.exp().unsqueeze(-1))  # beta_i W_0 k_i
        else:
            k_retained = kc
        e = torch.einsum("bhck,bhvk->bhcv", k_retained, W) - vc
        if eta_channel:  # a step per key channel: written with eta * k, phi unscaled
            p, kw = phi(e, vc, deltac, bias), kc * etac  # (B, H, C, V), (B, H, C, K)
        else:
            p, kw = etac.unsqueeze(-1) * phi(e, vc, deltac, bias), kc
        if theta is not None:
            lt = log_th[:, sl].transpose(1, 2).cumsum(2)  # (B, H, C)
            l_th = decay_matrix(lt)  # Theta_j / Theta_i, (B, H, C, C)
            joins = (lt.new_ones(lt.shape) if momentum_mask is None
                     else momentum_mask[:, sl].transpose(1, 2).to(lt.dtype))  # m_j, (B, H, C)

        if not channel:
            l_b = decay_matrix(lb)  # beta_t / beta_j, (B, H, C, C)
            if theta is None:
                d = l_b
            else:
                d = (l_b * joins.unsqueeze(-2)) @ l_th
                c = l_b @ (joins * lt.exp()).unsqueeze(-1)  # (B, H, C, 1)
            scores = torch.einsum("bhtk,bhik->bhti", qc, kw) * d
            o = lb.exp().unsqueeze(-1) * torch.einsum("bhtk,bhvk->bhtv", qc, W)
            o = o - scores @ p
            w_end = d[:, :, -1].unsqueeze(-1) * p  # (B, H, C, V)
            W_new = lb[..., -1, None, None].exp() * W - torch.einsum("bhiv,bhik->bhvk", w_end, kw)
            if theta is not None:
                o = o + c * torch.einsum("bhtk,bhvk->bhtv", qc, S)
                W_new = W_new + c[:, :, -1, :, None] * S
        else:
            l_b = decay_matrix(lb.transpose(-1, -2)).permute(0, 1, 3, 4, 2)  # (B, H, C, C, K)
            if theta is None:
                d = l_b
            else:
                d = torch.einsum("bhtjk,bhj,bhji->bhtik", l_b, joins, l_th)
                c = torch.einsum("bhtjk,bhj->bhtk", l_b, joins * lt.exp())  # (B, H, C, K)
            o = torch.einsum("bhtk,bhvk->bhtv", qc * lb.exp(), W)
            o = o - torch.einsum("bhtk,bhik,bhtik,bhiv->bhtv", qc, kw, d, p)
            W_new = W * lb[:, :, -1].exp().unsqueeze(-2)
            W_new = W_new - torch.einsum("bhiv,bhik,bhik->bhvk", p, kw, d[:, :, -1])
            if theta is not None:
                o = o + torch.einsum("bhtk,bhvk->bhtv", qc * c, S)
                W_new = W_new + S * c[:, :, -1].unsqueeze(-2)
        if theta is not None:
            th_end = l_th[:, :, -1]  # Theta_C / Theta_i, (B, H, C)
            S = lt[:, :, -1, None, None].exp() * S - torch.einsum("bhi,bhiv,bhik->bhvk", th_end, p, kw)
        if lq:  # the chunk's last token reads the exact new memory r(A_C) A_C
            o = o * r0
            o[:, :, -1] = torch.einsum("bhk,bhvk->bhv", qc[:, :, -1], W_new) * _lq_read_scale(W_new, lq_exponent)[..., 0]
        W = W_new
        outs.append(o)
    return torch.cat(outs, dim=2).transpose(1, 2)  # (B, T, H, V)


def _lq_read_scale(a: torch.Tensor, lq_exponent: float) -> torch.Tensor:
    """r(A) = 1 / max(||A||_q, floor)^(q - 2) of each [V, K] state: [B, H, 1, 1]."""
    return (-lq_log_scale(a, lq_exponent)).exp()


def recurrent_matrix_memory(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    alpha: torch.Tensor | None = None,
    theta: torch.Tensor | None = None,
    delta: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    bias: BiasConfig | str = "l2",
    chunk_size: int = 1,
    retention: str = "l2",
    lq_exponent: float = 4.0,
    momentum_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The same update, written as a loop over tokens (gradients still at chunk starts).

    Shapes as in ``naive_chunk_matrix_memory``. Slow; used to check the chunked algebra. Under lq
    W is the accumulator A: the gradients at r(A_0) A_0, and token t reads r(A_0) A_t q_t, the
    last of each chunk r(A_t) A_t q_t.
    """
    bias = as_bias(bias)
    lq = retention == "lq"
    B, T, H, K = k.shape
    V = v.shape[-1]
    W = q.new_zeros(B, H, V, K) if initial_state is None else initial_state.to(q.dtype).expand(B, H, V, K)
    S = q.new_zeros(B, H, V, K)
    outs = []
    for t in range(T):
        if alpha is None:
            decay = torch.ones_like(W[:, :, :1, :1])
        elif alpha.dim() == 4:
            decay = alpha[:, t].unsqueeze(-2)  # (B, H, 1, K)
        else:
            decay = alpha[:, t, :, None, None]
        if t % chunk_size == 0:
            W0, beta = W, decay  # gradients of this chunk are taken at beta_t W0
            r0 = _lq_read_scale(W0, lq_exponent) if lq else None
        else:
            beta = beta * decay
        kt, vt, qt = k[:, t], v[:, t], q[:, t]  # (B, H, K|V)
        at = r0 * W0 if lq else beta * W0  # lq: at W_0 = r(A_0) A_0
        e = torch.einsum("bhvk,bhk->bhv", at, kt) - vt
        g = phi(e, vt, None if delta is None else delta[:, t], bias)
        # eta [B, H] scales the whole step, a channel-wise eta [B, H, K] each key column of it
        eta_t = eta[:, t].unsqueeze(-2) if eta.dim() == 4 else eta[:, t, :, None, None]
        step = -eta_t * g.unsqueeze(-1) * kt.unsqueeze(-2)
        S = step if theta is None else theta[:, t, :, None, None] * S + step
        joins = 1.0 if momentum_mask is None or theta is None else momentum_mask[:, t, :, None, None]
        W = decay * W + joins * S
        o = torch.einsum("bhvk,bhk->bhv", W, qt)
        if lq:
            chunk_end = t % chunk_size == chunk_size - 1 or t == T - 1
            o = o * (_lq_read_scale(W, lq_exponent) if chunk_end else r0)[..., 0]
        outs.append(o)
    return torch.stack(outs, dim=1)


def naive_chunk_matrix_kl(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    alpha: torch.Tensor | None = None,
    delta: torch.Tensor | None = None,
    log_w0: torch.Tensor | None = None,
    bias: BiasConfig | str = "l2",
    chunk_size: int = 64,
    scale: float = 1.0,
    theta: torch.Tensor | None = None,
) -> torch.Tensor:
    """kl retention (Memora's) on a matrix memory, in the dtype of ``q``: the state carried is the
    log-weights X = log W, each row of W = c softmax_row(raw) summing to c = ``scale``.

    The sequence is walked in segments (``kernels.segments``: each chunk split after its first
    token, which takes the exact step). In a segment every gradient is taken at its start memory
    W = exp(X), e_i = W k_i - v_i, and token t reads its own exact map of the log-space state
    (miras_search.memory.mirror_read):

        raw_t = b_t * X - sum_{i<=t} (b_t / b_i) eta_i g_i k_i^T,   o_t = c softmax_row(raw_t) q_t

    with b the cumulative decay over the segment (per key channel for a channel-wise alpha); a
    channel-wise eta writes with eta * k. The next segment starts from X = log(c softmax_row(raw)).
    With momentum (theta) the log-space step S is carried too, S starting at 0:

        raw_t = b_t X + m_t S - sum_{i<=t} D_ti eta_i g_i k_i^T,   D = D_alpha D_theta,
        m_t = sum_{j<=t} (b_t / b_j) Theta_j,   S' = Theta_last S - sum_i (Theta_last / Theta_i) eta_i g_i k_i^T

    Args: as ``naive_chunk_matrix_memory``; log_w0: [H, V, K] the initial log-weights, None for
    uniform rows (log(c / K)).
    Returns: o [B, T, H, V].
    """
    bias = as_bias(bias)
    B, T, H, K = k.shape
    V = v.shape[-1]
    X = (q.new_full((B, H, V, K), math.log(scale / K)) if log_w0 is None
         else log_w0.to(q.dtype).expand(B, H, V, K))
    S = torch.zeros_like(X)
    outs = []
    for start, stop in segments(T, chunk_size, lag_token=True):
        qc, kc, vc = (x[:, start:stop].transpose(1, 2) for x in (q, k, v))  # (B, H, c, K|V)
        etac = eta[:, start:stop].transpose(1, 2)
        deltac = None if delta is None else delta[:, start:stop].transpose(1, 2)
        e = torch.einsum("bhck,bhvk->bhcv", kc, X.exp()) - vc
        if etac.dim() == 4:
            p, kw = phi(e, vc, deltac, bias), kc * etac
        else:
            p, kw = etac.unsqueeze(-1) * phi(e, vc, deltac, bias), kc
        if alpha is None:
            lb = q.new_zeros(B, H, stop - start, 1)
        else:
            a = alpha[:, start:stop].transpose(1, 2)
            lb = (a if a.dim() == 4 else a.unsqueeze(-1)).log().cumsum(2)  # (B, H, c, K or 1)
        l_b = decay_matrix(lb.transpose(-1, -2)).permute(0, 1, 3, 4, 2)  # b_t / b_i: (B, H, t, i, K or 1)
        decay = l_b
        raw = lb.exp().unsqueeze(-2) * X.unsqueeze(2)  # (B, H, c, V, K)
        if theta is not None:  # D = D_alpha D_theta and the carried step's weights m
            lt = theta[:, start:stop].transpose(1, 2).log().cumsum(2)  # (B, H, c)
            l_th = decay_matrix(lt)  # Theta_j / Theta_i
            decay = torch.einsum("bhtjk,bhji->bhtik", l_b, l_th)
            m = torch.einsum("bhtjk,bhj->bhtk", l_b, lt.exp())
            raw = raw + m.unsqueeze(-2) * S.unsqueeze(2)
            S = lt[:, :, -1, None, None].exp() * S - torch.einsum("bhi,bhiv,bhik->bhvk", l_th[:, :, -1], p, kw)
        raw = raw - torch.einsum("bhiv,bhtik->bhtvk", p, kw.unsqueeze(2) * decay)
        outs.append(scale * torch.einsum("bhtvk,bhtk->bhtv", raw.softmax(-1), qc))
        X = math.log(scale) + raw[:, :, -1].log_softmax(-1)
    return torch.cat(outs, dim=2).transpose(1, 2)  # (B, T, H, V)
