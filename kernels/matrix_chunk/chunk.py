"""Triton forward and backward of the chunked (minibatch) matrix-memory update.

Same semantics as ``naive.py`` (see its docstring). One program per (V-tile, batch x head)
walks the chunks in order and keeps the state W [BV, K] (and the momentum S) in registers:
per chunk it forms the errors E = (beta * K) W^T - V (gradients at the chunk-start state
retained to each token, beta_i W_0: "retain, then learn"; with RETAIN_FIRST off, Titans' order,
at W_0 itself: E = K W^T - V), their transform G = phi(E), the
gate-weighted causal sums that give the outputs, and the chunk-end state, in one kernel. Element-wise biases
make the rows of W independent, so V is split into tiles; the row-norm biases (huber_norm,
huber_switch, robust) need the whole row and use one tile.

The forward stores the chunk-start states (one [V, K] per chunk). The backward walks the chunks
in reverse, recomputes each chunk from its stored start state, and carries dL/dW (and dL/dS)
of the chunk end to the chunk start. Gradients that sum over V (q, k, the gates) are written
per V-tile and summed afterwards.

Notation inside the kernels (per chunk, C tokens, t = row, i = column):
    lb_t = sum_{j <= t} log alpha_j,   Lb[t, i] = exp(lb_t - lb_i) (i <= t)
    E  = exp(lb) * (K W^T) - V         (the errors at the retained state beta_i W_0)
    lt_t = sum_{j <= t} log theta_j,   Lt[j, i] = exp(lt_j - lt_i) (i <= j)
    gd:       D = Lb,        c = 0
    momentum: D = Lb @ Lt,   c = Lb @ exp(lt)   (with a momentum mask m, MASKED: Lb diag(m))
    O  = exp(lb) * (Q W^T) + c * (Q S^T) - ((Q K^T) * D) @ P,   P = eta * phi(E)
    W' = exp(lb_C) W + c_C S - (D[C] * P)^T K
    S' = exp(lt_C) S - (Lt[C] * P)^T K
Channel-wise alpha uses q * exp(lb) and k * exp(-lb) instead of the matrix Lb, or, for a chunk
that decays past e^-60, a column-by-column sum with differences of exponents. With momentum the
decay between token i's write and token t's read is per channel, D[t, i] = sum_{i <= j <= t}
(Theta_j / Theta_i) exp(lb_t - lb_j) [K], which no product of two factors gives without
cancellation; the scores are summed step by step instead, A = sum_j ((Q * E_j) Kw^T) * w_j with
E_j = exp(lb - lb_j) below row j and w_j = Theta_j / Theta_i left of column j (one product per
step, O(C^3 K) per chunk, no exponent positive), and the chunk end writes with Kw * D[C]
(_channel_momentum, _momentum_ends_ch).
A channel-wise eta ([B, T, H, K], ETA_CH) steps each key channel on its own: P = phi(E) and every
write (the scores Q Kw^T, the state updates) takes Kw = eta * K, while the errors read with K.
A channel-wise Huber threshold ([B, T, H, V], DELTA_CH; coordinate and switch variants) is one
per value channel. lq retention (LQ) carries the accumulator A as the state W above: the errors
read the memory r0 A_0 (r0 = 1 / max(||A_0||_q, floor)^(q-2), the whole matrix's norm, so one
V-tile), every output is scaled by r0 but the chunk's last token's, which reads the exact new
memory r(A_end) A_end. kl retention has its own kernels (kl.py).
A momentum mask m ([B, T, H] of 0 / 1, MASKED; momentum with alpha per head or none) lets S join W
only at the tokens where it is 1, W_t = alpha_t W_{t-1} + m_t S_t: Atlas's Omega window with
momentum (kernels.omega), whose c' entries per token carry S to W once, at the token's last one.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from ..bias import BiasConfig, KernelInputError, as_bias
from ..channel_momentum import (
    _channel_momentum,
    _channel_momentum_bwd,
    _momentum_end_ch,
    _momentum_end_ch_bwd,
    _momentum_ends_ch_bwd,
)
from ..common import (
    _bias_args,
    _bias_grad,
    _bias_grad_bwd,
    _check,
    _lq_scale,
    _lq_scale_vjp,
    _mm,
    _slot,
)
from ..fallback import reference_grads, warn_fallback
from ..launch import on_device
from ..limits import CHUNK_SIZES, matrix_shape_problem, token_tensor_problem
from ..precision import matrix_precision, products
from .naive import naive_chunk_matrix_memory

_ALPHA_NONE, _ALPHA_HEAD, _ALPHA_CHANNEL = 0, 1, 2
SAFE_LOG_DECAY = tl.constexpr(60.0)
"""Channel-wise decay of a chunk past which the kernel stops factoring exp(lb_t - lb_i) into
exp(lb_t) exp(-lb_i) (e^60 ~ 1e26 stays finite in fp32 and bf16; a saturated gate, alpha ~
1e-6 for a few tokens, goes past it)."""


@triton.jit
def _key_and_decays(kc, lb, i, C: tl.constexpr):
    """Row i of k [K] and exp(lb_t - lb_i) for every row t >= i, 0 above ([C, K]); the
    exponent is a difference, at most 0, so it cannot overflow."""
    oc = tl.arange(0, C)
    here = (oc == i)[:, None]
    k_i = tl.sum(tl.where(here, kc, 0.0), 0)
    lb_i = tl.sum(tl.where(here, lb, 0.0), 0)
    return k_i, tl.exp(tl.where((oc >= i)[:, None], lb - lb_i[None, :], float("-inf")))


@triton.jit
def _channel_scores(qc, kc, lb, lbl, C: tl.constexpr, PREC: tl.constexpr):
    """A[t, i] = sum_k q_tk k_ik exp(lb_tk - lb_ik) for i <= t (channel-wise decay); [C, C].

    While the chunk's decay stays above e^-SAFE_LOG_DECAY, one product of q exp(lb) and
    k exp(-lb) gives it; past that exp(-lb) would overflow, and the chunk is summed column by
    column with each exponent taken as a difference (at most 0), which cannot overflow.
    """
    oc = tl.arange(0, C)
    causal = oc[:, None] >= oc[None, :]
    if tl.min(lbl, 0) > -SAFE_LOG_DECAY:
        A = _mm(qc * tl.exp(lb), tl.trans(kc * tl.exp(-lb)), PREC)
    else:
        A = tl.zeros([C, C], dtype=tl.float32)
        for i in range(C):
            k_i, decay = _key_and_decays(kc, lb, i, C)
            col = tl.sum(qc * k_i[None, :] * decay, 1)
            A += tl.where((oc == i)[None, :], col[:, None], 0.0)
    return tl.where(causal, A, 0.0)


@triton.jit
def _channel_scores_bwd(dA, qc, kc, lb, lbl, C: tl.constexpr, PREC: tl.constexpr):
    """(dq, dk) [C, K] from dA [C, C] (zero above the diagonal) through _channel_scores."""
    oc = tl.arange(0, C)
    if tl.min(lbl, 0) > -SAFE_LOG_DECAY:
        dq = _mm(dA, kc * tl.exp(-lb), PREC) * tl.exp(lb)
        dk = _mm(tl.trans(dA), qc * tl.exp(lb), PREC) * tl.exp(-lb)
    else:
        dq = tl.zeros_like(qc)
        dk = tl.zeros_like(kc)
        for i in range(C):
            here = oc == i
            k_i, decay = _key_and_decays(kc, lb, i, C)
            dA_i = tl.sum(tl.where(here[None, :], dA, 0.0), 1)  # column i: dA[:, i]
            dq += dA_i[:, None] * k_i[None, :] * decay
            dk_i = tl.sum(dA_i[:, None] * qc * decay, 0)
            dk += tl.where(here[:, None], dk_i[None, :], 0.0)
    return dq, dk


@triton.jit
def _momentum_logs(theta, row, mt):
    """(lt [C], ltl): the cumulative log momentum gates of the chunk and their total (padded
    tokens take theta = 1)."""
    lth = tl.log(tl.load(theta + row, mask=mt, other=1.0).to(tl.float32))
    return tl.cumsum(lth, 0), tl.sum(lth, 0)


@triton.jit
def _joins(mmask, row, mt, Lb, wb, MASKED: tl.constexpr):
    """(Lb diag(m), wb * m): the decays of the steps into W, zero from the tokens whose momentum
    does not join the memory (the momentum mask m; D = Lb diag(m) Lt); as given without one."""
    if MASKED:
        m = tl.load(mmask + row, mask=mt, other=0.0).to(tl.float32)
        return Lb * m[None, :], wb * m
    else:
        return Lb, wb


@triton.jit
def _steps(eta, row, mt, m_ck, ok, kc, K, ETA_CH: tl.constexpr):
    """(et [C], kw [C, BK]): the factor of each token's phi and the key it writes with. A
    per-head eta [B, T, H] gives (eta, k); a channel-wise one [B, T, H, K] steps each key channel
    on its own, (1 on live tokens, eta * k): the errors still read with k."""
    if ETA_CH:
        ec = tl.load(eta + row[:, None] * K + ok[None, :], mask=m_ck, other=0.0).to(tl.float32)
        et = mt.to(tl.float32)
        kw = kc * ec
    else:
        et = tl.load(eta + row, mask=mt, other=0.0).to(tl.float32)
        kw = kc
    return et, kw


@triton.jit
def _thresholds(delta, row, mt, m_cv, ov, V, et, BIAS: tl.constexpr, DELTA_CH: tl.constexpr):
    """The Huber thresholds: [C] per token, or [C, BV] per value channel with DELTA_CH; the
    other biases take none (et stands in)."""
    if (BIAS >= 3) and (BIAS <= 5):
        if DELTA_CH:
            dl = tl.load(delta + row[:, None] * V + ov[None, :], mask=m_cv, other=1.0).to(tl.float32)
        else:
            dl = tl.load(delta + row, mask=mt, other=1.0).to(tl.float32)
    else:
        dl = et
    return dl


@triton.jit
def _lq_start(W, QX, LQ: tl.constexpr):
    """(r0, Wr): lq's read scale r0 = r(A_0) of the chunk-start accumulator W = A_0 and the
    memory the errors read, Wr = r0 A_0; without lq (1, W)."""
    if LQ:
        r0 = _lq_scale(W, QX)
        Wr = W * r0
    else:
        r0 = 1.0
        Wr = W
    return r0, Wr


@triton.jit
def _lq_read(out, W_end, r0, last, QX):
    """lq's outputs: every token's linear read ``out`` [C, BV] scaled by r0, the chunk's last
    token's (``last`` [C]) by r(A_end): it reads the exact new memory."""
    return out * tl.where(last, _lq_scale(W_end, QX), r0)[:, None]


@triton.jit
def _lq_read_bwd(dO, out, W_end, r0, dW, last, QX):
    """Back through _lq_read: (dL/d(linear reads) [C, BV], dL/dr0 from the reads (a scalar),
    dL/dA_end with r(A_end)'s share added to dW)."""
    ds = tl.sum(dO * out, 1)  # dL/d(each token's scale)
    dr_end = tl.sum(tl.where(last, ds, 0.0), 0)
    dr0 = tl.sum(tl.where(last, 0.0, ds), 0)
    dO = dO * tl.where(last, _lq_scale(W_end, QX), r0)[:, None]
    return dO, dr0, dW + _lq_scale_vjp(W_end, QX, dr_end)


@triton.jit
def _fwd_kernel(
    q, k, v, eta, alpha, theta, mmask, delta, w0, o, saved_w, saved_s,
    T, H, K, V, NC, P_EXP, SHARP, EPS, RADIUS, QX,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, BIAS: tl.constexpr,
    ALPHA: tl.constexpr, MOMENTUM: tl.constexpr, HAS_W0: tl.constexpr,
    SAVE: tl.constexpr, PREC: tl.constexpr, NEPS: tl.constexpr, SMOOTH: tl.constexpr,
    RETAIN_FIRST: tl.constexpr, ETA_CH: tl.constexpr, DELTA_CH: tl.constexpr, LQ: tl.constexpr,
    MASKED: tl.constexpr,
):
    i_v = tl.program_id(0)
    i_bh = tl.program_id(1)
    b = i_bh // H
    h = i_bh % H
    oc = tl.arange(0, C)
    ok = tl.arange(0, BK)
    ov = i_v * BV + tl.arange(0, BV)
    mk = ok < K
    mv = ov < V
    m_vk = mv[:, None] & mk[None, :]
    causal = oc[:, None] >= oc[None, :]

    if HAS_W0:
        W = tl.load(w0 + h * V * K + ov[:, None] * K + ok[None, :], mask=m_vk, other=0.0).to(tl.float32)
    else:
        W = tl.zeros([BV, BK], dtype=tl.float32)
    S = tl.zeros([BV, BK], dtype=tl.float32)

    for n in range(NC):
        t = n * C + oc
        mt = t < T
        row = (b * T + t) * H + h  # [C] token-head index
        m_ck = mt[:, None] & mk[None, :]
        m_cv = mt[:, None] & mv[None, :]
        qc = tl.load(q + row[:, None] * K + ok[None, :], mask=m_ck, other=0.0).to(tl.float32)
        kc = tl.load(k + row[:, None] * K + ok[None, :], mask=m_ck, other=0.0).to(tl.float32)
        vc = tl.load(v + row[:, None] * V + ov[None, :], mask=m_cv, other=0.0).to(tl.float32)
        et, kwc = _steps(eta, row, mt, m_ck, ok, kc, K, ETA_CH)
        dl = _thresholds(delta, row, mt, m_cv, ov, V, et, BIAS, DELTA_CH)
        if SAVE:
            base = _slot(i_bh, n, NC, V * K)
            tl.store(saved_w + base + ov[:, None] * K + ok[None, :], W, mask=m_vk)
            if MOMENTUM:
                tl.store(saved_s + base + ov[:, None] * K + ok[None, :], S, mask=m_vk)
        r0, Wr = _lq_start(W, QX, LQ)
        last = t == tl.minimum(T, n * C + C) - 1  # the chunk's last token

        if ALPHA == 2:  # channel-wise decay of the key dimension
            la = tl.log(tl.load(alpha + row[:, None] * K + ok[None, :], mask=m_ck, other=1.0).to(tl.float32))
            lb = tl.cumsum(la, 0)  # [C, BK]
            lbl = tl.sum(la, 0)  # [BK] log decay of the whole chunk
            if RETAIN_FIRST:
                E = _mm(kc * tl.exp(lb), tl.trans(W), PREC) - vc  # errors at beta_i W_0
            else:
                E = _mm(kc, tl.trans(Wr), PREC) - vc  # errors at W_0
            G = _bias_grad(E, vc, dl, P_EXP, SHARP, EPS, RADIUS, BIAS, NEPS, SMOOTH, DELTA_CH)
            P = G * et[:, None]
            qt = qc * tl.exp(lb)
            if MOMENTUM:
                lt, ltl = _momentum_logs(theta, row, mt)
                A, cv = _channel_momentum(qc, kwc, lb, lt, C, PREC)
                out = _mm(qt, tl.trans(W), PREC) - _mm(A, P, PREC) + _mm(qc * cv, tl.trans(S), PREC)
                W, S, _Dl, _cl, _tlast = _momentum_end_ch(W, S, P, kwc, lb, lbl, lt, ltl, mt, C, PREC)
            else:
                kw = kwc * tl.exp(lbl[None, :] - lb)
                A = _channel_scores(qc, kwc, lb, lbl, C, PREC)
                out = _mm(qt, tl.trans(W), PREC) - _mm(A, P, PREC)
                W = W * tl.exp(lbl)[None, :] - _mm(tl.trans(P), kw, PREC)
        else:
            if ALPHA == 1:
                la = tl.log(tl.load(alpha + row, mask=mt, other=1.0).to(tl.float32))
            else:
                la = tl.zeros([C], dtype=tl.float32)
            lb = tl.cumsum(la, 0)
            lbl = tl.sum(la, 0)
            if RETAIN_FIRST:
                E = tl.exp(lb)[:, None] * _mm(kc, tl.trans(W), PREC) - vc  # errors at beta_i W_0
            else:
                E = _mm(kc, tl.trans(Wr), PREC) - vc  # errors at W_0
            G = _bias_grad(E, vc, dl, P_EXP, SHARP, EPS, RADIUS, BIAS, NEPS, SMOOTH, DELTA_CH)
            P = G * et[:, None]
            Lb = tl.exp(tl.where(causal, lb[:, None] - lb[None, :], float("-inf")))
            # Lb[C, :] of the live tokens: a final chunk's padded tokens (theta 1) would carry
            # the momentum on past its last token, whose state the chunk ends in (lq reads it)
            wb = tl.where(mt, tl.exp(lbl - lb), 0.0)
            if MOMENTUM:
                lt, ltl = _momentum_logs(theta, row, mt)
                Lt = tl.exp(tl.where(causal, lt[:, None] - lt[None, :], float("-inf")))
                Lbm, wbm = _joins(mmask, row, mt, Lb, wb, MASKED)
                D = tl.dot(Lbm, Lt, input_precision="ieee")
                cv = tl.sum(Lbm * tl.exp(lt)[None, :], 1)
                dlast = tl.sum(wbm[:, None] * Lt, 0)  # D[C, :]
                clast = tl.sum(wbm * tl.exp(lt), 0)
                tlast = tl.exp(ltl - lt)  # Lt[C, :]
            else:
                D = Lb
                dlast = wb
            A = _mm(qc, tl.trans(kwc), PREC) * D
            out = tl.exp(lb)[:, None] * _mm(qc, tl.trans(W), PREC) - _mm(A, P, PREC)
            W_new = tl.exp(lbl) * W - _mm(tl.trans(P * dlast[:, None]), kwc, PREC)
            if MOMENTUM:
                out += cv[:, None] * _mm(qc, tl.trans(S), PREC)
                W_new += clast * S
                S = tl.exp(ltl) * S - _mm(tl.trans(P * tlast[:, None]), kwc, PREC)
            W = W_new
        if LQ:
            out = _lq_read(out, W, r0, last, QX)
        tl.store(o + row[:, None] * V + ov[None, :], out.to(o.dtype.element_ty), mask=m_cv)


@triton.jit
def _chunk_bwd(
    q, k, v, eta, alpha, theta, mmask, delta, saved_w, saved_s, do,
    dq, dk, dv, deta, dla, dlth, ddelta, dW, dS, n, i_v, i_bh,
    T, H, K, V, NC, BH, P_EXP, SHARP, EPS, RADIUS, QX,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, BIAS: tl.constexpr,
    ALPHA: tl.constexpr, MOMENTUM: tl.constexpr, PREC: tl.constexpr, NEPS: tl.constexpr,
    SMOOTH: tl.constexpr, STORE: tl.constexpr, RETAIN_FIRST: tl.constexpr, ETA_CH: tl.constexpr,
    DELTA_CH: tl.constexpr, LQ: tl.constexpr, MASKED: tl.constexpr,
):
    """Chunk n of the backward from dL/d(its end state) dW (and dS): writes the chunk's token
    gradients when STORE and returns dL/d(its start state). Without STORE only the state
    gradient is live and the compiler drops the rest."""
    b = i_bh // H
    h = i_bh % H
    oc = tl.arange(0, C)
    ok = tl.arange(0, BK)
    ov = i_v * BV + tl.arange(0, BV)
    mk = ok < K
    mv = ov < V
    m_vk = mv[:, None] & mk[None, :]
    causal = oc[:, None] >= oc[None, :]
    is_last = oc == C - 1
    part = i_v * BH * T  # per-V-tile partial buffers: offset of this tile
    part_k = _slot(i_v, 0, BH * T, K)  # ... of the [B, T, H, K] ones (NV x B x T x H x K: int64)
    t = n * C + oc
    mt = t < T
    row = (b * T + t) * H + h
    m_ck = mt[:, None] & mk[None, :]
    m_cv = mt[:, None] & mv[None, :]
    qc = tl.load(q + row[:, None] * K + ok[None, :], mask=m_ck, other=0.0).to(tl.float32)
    kc = tl.load(k + row[:, None] * K + ok[None, :], mask=m_ck, other=0.0).to(tl.float32)
    vc = tl.load(v + row[:, None] * V + ov[None, :], mask=m_cv, other=0.0).to(tl.float32)
    dO = tl.load(do + row[:, None] * V + ov[None, :], mask=m_cv, other=0.0).to(tl.float32)
    et, kwc = _steps(eta, row, mt, m_ck, ok, kc, K, ETA_CH)
    dl = _thresholds(delta, row, mt, m_cv, ov, V, et, BIAS, DELTA_CH)
    base = _slot(i_bh, n, NC, V * K)
    W = tl.load(saved_w + base + ov[:, None] * K + ok[None, :], mask=m_vk, other=0.0)
    r0, Wr = _lq_start(W, QX, LQ)
    last = t == tl.minimum(T, n * C + C) - 1

    if ALPHA == 2:
        a_ptr = alpha + row[:, None] * K + ok[None, :]
        la = tl.log(tl.load(a_ptr, mask=m_ck, other=1.0).to(tl.float32))
        lb = tl.cumsum(la, 0)
        lbl = tl.sum(la, 0)
        eb = tl.exp(lb)
        if RETAIN_FIRST:
            kb = kc * eb  # retained keys: errors at beta_i W_0
        else:
            kb = kc  # errors at W_0
        E = _mm(kb, tl.trans(Wr), PREC) - vc
        G = _bias_grad(E, vc, dl, P_EXP, SHARP, EPS, RADIUS, BIAS, NEPS, SMOOTH, DELTA_CH)
        P = G * et[:, None]
        qt = qc * eb
        if MOMENTUM:
            S = tl.load(saved_s + base + ov[:, None] * K + ok[None, :], mask=m_vk, other=0.0)
            lt, ltl = _momentum_logs(theta, row, mt)
            A, cv = _channel_momentum(qc, kwc, lb, lt, C, PREC)
            W_end, _S, Dl, clast, tlast = _momentum_end_ch(W, S, P, kwc, lb, lbl, lt, ltl, mt, C, PREC)
            out = _mm(qt, tl.trans(W), PREC) - _mm(A, P, PREC) + _mm(qc * cv, tl.trans(S), PREC)
        else:
            kw = kwc * tl.exp(lbl[None, :] - lb)
            A = _channel_scores(qc, kwc, lb, lbl, C, PREC)
            if LQ:
                W_end = W * tl.exp(lbl)[None, :] - _mm(tl.trans(P), kw, PREC)
                out = _mm(qt, tl.trans(W), PREC) - _mm(A, P, PREC)
        if LQ:
            dO, dr0, dW = _lq_read_bwd(dO, out, W_end, r0, dW, last, QX)
        dA = tl.where(causal, -_mm(dO, tl.trans(P), PREC), 0.0)
        if MOMENTUM:
            dqW = _mm(dO, W, PREC)  # through the read of the chunk-start state
            dPe, dkwe, dDl, dcl, dtl = _momentum_end_ch_bwd(dW, dS, S, P, kwc, Dl, tlast, PREC)
            dP = dPe - _mm(tl.trans(A), dO, PREC)
            dOS = _mm(dO, S, PREC)
            dqA, dkA, dlb, dlt = _channel_momentum_bwd(dA, dOS * qc, qc, kwc, lb, lt, C, PREC)
            dlbe, dlbl, dlte, dltl = _momentum_ends_ch_bwd(dDl, dcl, dtl, lb, lbl, lt, ltl, mt, C)
            dlb += dlbe + dqW * qt
            dqA += dOS * cv
            dkwc = dkA + dkwe
            dltl += tl.exp(ltl) * tl.sum(tl.sum(dS * S, 1), 0)
            if STORE:
                tl.store(dlth + part + row, tl.cumsum(dlt + dlte, 0, reverse=True) + dltl, mask=mt)
            dS = tl.exp(ltl) * dS + dW * clast[None, :] + _mm(tl.trans(dO), qc * cv, PREC)
        else:
            dP = -_mm(tl.trans(A), dO, PREC) - _mm(kw, tl.trans(dW), PREC)
            dqA, dkA = _channel_scores_bwd(dA, qc, kwc, lb, lbl, C, PREC)
            dqW = _mm(dO, W, PREC)
            dkw = -_mm(P, dW, PREC)
            dlb = dqW * qt + dqA * qc - dkA * kwc - dkw * kw
            dlbl = tl.sum(dkw * kw, 0)
            dkwc = dkA + dkw * tl.exp(lbl[None, :] - lb)  # through the write key
        dG = dP * et[:, None]
        dE, dd = _bias_grad_bwd(E, dG, dl, P_EXP, SHARP, EPS, RADIUS, BIAS, NEPS, SMOOTH, DELTA_CH)
        dkb = _mm(dE, Wr, PREC)
        dqc = dqW * eb + dqA
        if RETAIN_FIRST:
            dkc = dkb * eb
            dlb += dkb * kb
        else:
            dkc = dkb
        dlbl += tl.exp(lbl) * tl.sum(dW * W, 0)
        # lb_t sums log alpha_j for j <= t; lbl sums them all
        g_la = tl.cumsum(dlb, 0, reverse=True) + dlbl[None, :]
        if STORE:
            tl.store(dla + part_k + row[:, None] * K + ok[None, :], g_la, mask=m_ck)
        dEK = _mm(tl.trans(dE), kb, PREC)
        dW = dW * tl.exp(lbl)[None, :] + _mm(tl.trans(dO), qt, PREC)
        if LQ:  # the errors read r0 A_0
            dW += r0 * dEK + _lq_scale_vjp(W, QX, dr0 + tl.sum(tl.sum(dEK * W, 1), 0))
        else:
            dW += dEK
    else:
        if ALPHA == 1:
            la = tl.log(tl.load(alpha + row, mask=mt, other=1.0).to(tl.float32))
        else:
            la = tl.zeros([C], dtype=tl.float32)
        lb = tl.cumsum(la, 0)
        lbl = tl.sum(la, 0)
        eb = tl.exp(lb)
        # as in the forward, the padded tokens of a final chunk take no part in its end state
        # (D[C, :] = Lb[C, :] @ Lt over live tokens): their columns of Lb are 0
        Lb = tl.exp(tl.where(causal & mt[None, :], lb[:, None] - lb[None, :], float("-inf")))
        wb = tl.where(mt, tl.exp(lbl - lb), 0.0)
        if MOMENTUM:
            S = tl.load(saved_s + base + ov[:, None] * K + ok[None, :], mask=m_vk, other=0.0)
            lt, ltl = _momentum_logs(theta, row, mt)
            et_ = tl.exp(lt)
            Lt = tl.exp(tl.where(causal, lt[:, None] - lt[None, :], float("-inf")))
            Lbm, wbm = _joins(mmask, row, mt, Lb, wb, MASKED)
            D = tl.dot(Lbm, Lt, input_precision="ieee")
            cv = tl.sum(Lbm * et_[None, :], 1)
            dlast = tl.sum(wbm[:, None] * Lt, 0)
            clast = tl.sum(wbm * et_, 0)
            tlast = tl.exp(ltl - lt)
        else:
            D = Lb
            dlast = wb
        KW = _mm(kc, tl.trans(Wr), PREC)
        if RETAIN_FIRST:
            E = eb[:, None] * KW - vc  # errors at beta_i W_0
        else:
            E = KW - vc  # errors at W_0
        G = _bias_grad(E, vc, dl, P_EXP, SHARP, EPS, RADIUS, BIAS, NEPS, SMOOTH, DELTA_CH)
        P = G * et[:, None]
        QK = _mm(qc, tl.trans(kwc), PREC)
        A = QK * D
        QW = _mm(qc, tl.trans(W), PREC)
        if LQ:
            out = eb[:, None] * QW - _mm(A, P, PREC)
            W_end = tl.exp(lbl) * W - _mm(tl.trans(P * dlast[:, None]), kwc, PREC)
            if MOMENTUM:
                out += cv[:, None] * _mm(qc, tl.trans(S), PREC)
                W_end += clast * S
            dO, dr0, dW = _lq_read_bwd(dO, out, W_end, r0, dW, last, QX)
        dA = -_mm(dO, tl.trans(P), PREC)
        R = _mm(kwc, tl.trans(dW), PREC)  # R[i] = dW kw_i
        dP = -_mm(tl.trans(A), dO, PREC) - dlast[:, None] * R
        if MOMENTUM:
            Rs = _mm(kwc, tl.trans(dS), PREC)
            dP -= tlast[:, None] * Rs
        dG = dP * et[:, None]
        dE, dd = _bias_grad_bwd(E, dG, dl, P_EXP, SHARP, EPS, RADIUS, BIAS, NEPS, SMOOTH, DELTA_CH)
        dAD = tl.where(causal, dA * D, 0.0)
        dqc = eb[:, None] * _mm(dO, W, PREC) + _mm(dAD, kwc, PREC)
        dkwc = _mm(tl.trans(dAD), qc, PREC) - dlast[:, None] * _mm(P, dW, PREC)  # the write key's
        # dD (the last row also carries the chunk-end term -sum_v P R)
        dD = tl.where(causal, dA * QK, 0.0)
        dD += tl.where(is_last[:, None], -tl.sum(P * R, 1)[None, :], 0.0)
        if RETAIN_FIRST:
            dlb = eb * (tl.sum(dO * QW, 1) + tl.sum(dE * KW, 1))
        else:
            dlb = eb * tl.sum(dO * QW, 1)
        dlb += tl.where(is_last, tl.exp(lbl) * tl.sum(tl.sum(dW * W, 1), 0), 0.0)
        if MOMENTUM:
            dqc += cv[:, None] * _mm(dO, S, PREC)
            dkwc -= tlast[:, None] * _mm(P, dS, PREC)
            dc = tl.sum(dO * _mm(qc, tl.trans(S), PREC), 1)
            dc += tl.where(is_last, tl.sum(tl.sum(dW * S, 1), 0), 0.0)
            # dLb: of Lb diag(m) (Lbm), whose log-derivatives are Lbm's own entries
            dLb = tl.dot(dD, tl.trans(Lt), input_precision="ieee") + dc[:, None] * et_[None, :]
            dLt = tl.dot(tl.trans(Lbm), dD, input_precision="ieee")
            dLt += tl.where(is_last[:, None], -tl.sum(P * Rs, 1)[None, :], 0.0)
            X = tl.where(causal, dLb * Lbm, 0.0)
            Y = tl.where(causal, dLt * Lt, 0.0)
            dlt = tl.sum(Y, 1) - tl.sum(Y, 0) + tl.sum(Lbm * dc[:, None], 0) * et_
            dlt += tl.where(is_last, tl.exp(ltl) * tl.sum(tl.sum(dS * S, 1), 0), 0.0)
            g_lth = tl.cumsum(dlt, 0, reverse=True)
            if STORE:
                tl.store(dlth + part + row, g_lth, mask=mt)
        else:
            X = tl.where(causal, dD * Lb, 0.0)
        dlb += tl.sum(X, 1) - tl.sum(X, 0)
        if STORE and (ALPHA == 1):
            tl.store(dla + part + row, tl.cumsum(dlb, 0, reverse=True), mask=mt)
        dW_prev = tl.exp(lbl) * dW + _mm(tl.trans(dO * eb[:, None]), qc, PREC)
        if RETAIN_FIRST:
            dkc = eb[:, None] * _mm(dE, W, PREC)
            dW_prev += _mm(tl.trans(dE * eb[:, None]), kc, PREC)
        else:
            dkc = _mm(dE, Wr, PREC)
            dEK = _mm(tl.trans(dE), kc, PREC)
            if LQ:  # the errors read r0 A_0
                dW_prev += r0 * dEK + _lq_scale_vjp(W, QX, dr0 + tl.sum(tl.sum(dEK * W, 1), 0))
            else:
                dW_prev += dEK
        if MOMENTUM:
            dS = clast * dW + tl.exp(ltl) * dS + _mm(tl.trans(dO * cv[:, None]), qc, PREC)
        dW = dW_prev

    dvc = -dE
    if BIAS == 0:
        dvc -= dG
    if STORE:
        tl.store(dv + row[:, None] * V + ov[None, :], dvc.to(dv.dtype.element_ty), mask=m_cv)
        tl.store(dq + part_k + row[:, None] * K + ok[None, :], dqc, mask=m_ck)
        if ETA_CH:  # kw = eta * k
            ec = tl.load(eta + row[:, None] * K + ok[None, :], mask=m_ck, other=0.0).to(tl.float32)
            tl.store(dk + part_k + row[:, None] * K + ok[None, :], dkc + dkwc * ec, mask=m_ck)
            tl.store(deta + part_k + row[:, None] * K + ok[None, :], dkwc * kc, mask=m_ck)
        else:
            tl.store(dk + part_k + row[:, None] * K + ok[None, :], dkc + dkwc, mask=m_ck)
            tl.store(deta + part + row, tl.sum(dP * G, 1), mask=mt)
    if STORE and ((BIAS >= 3) and (BIAS <= 5)):  # Triton < 3.3 refuses a chain of three
        if DELTA_CH:  # each V-tile owns its channels: no partial sums
            tl.store(ddelta + row[:, None] * V + ov[None, :], dd, mask=m_cv)
        else:
            tl.store(ddelta + part + row, dd, mask=mt)
    return dW, dS


@triton.jit
def _bwd_kernel(
    q, k, v, eta, alpha, theta, mmask, delta, saved_w, saved_s, do,
    dq, dk, dv, deta, dla, dlth, ddelta, dw0,
    T, H, K, V, NC, BH, P_EXP, SHARP, EPS, RADIUS, QX,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, BIAS: tl.constexpr,
    ALPHA: tl.constexpr, MOMENTUM: tl.constexpr, PREC: tl.constexpr, NEPS: tl.constexpr,
    SMOOTH: tl.constexpr, RETAIN_FIRST: tl.constexpr, ETA_CH: tl.constexpr, DELTA_CH: tl.constexpr,
    LQ: tl.constexpr, MASKED: tl.constexpr,
):
    """The fused backward: one program per (V-tile, batch x head) walks the chunks in reverse."""
    i_v = tl.program_id(0)
    i_bh = tl.program_id(1)
    ok = tl.arange(0, BK)
    ov = i_v * BV + tl.arange(0, BV)
    m_vk = (ov < V)[:, None] & (ok < K)[None, :]
    dW = tl.zeros([BV, BK], dtype=tl.float32)  # dL / d(chunk-end state)
    dS = tl.zeros([BV, BK], dtype=tl.float32)
    for i_n in range(NC):
        dW, dS = _chunk_bwd(
            q, k, v, eta, alpha, theta, mmask, delta, saved_w, saved_s, do,
            dq, dk, dv, deta, dla, dlth, ddelta, dW, dS, NC - 1 - i_n, i_v, i_bh,
            T, H, K, V, NC, BH, P_EXP, SHARP, EPS, RADIUS, QX, C, BK, BV, BIAS, ALPHA, MOMENTUM,
            PREC, NEPS, SMOOTH, True, RETAIN_FIRST, ETA_CH, DELTA_CH, LQ, MASKED,
        )
    tl.store(dw0 + i_bh * V * K + ov[:, None] * K + ok[None, :], dW, mask=m_vk)


@triton.jit
def _bwd_state_kernel(
    q, k, v, eta, alpha, theta, mmask, delta, saved_w, saved_s, do, saved_dw, saved_ds, dw0,
    T, H, K, V, NC, BH, P_EXP, SHARP, EPS, RADIUS, QX,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, BIAS: tl.constexpr,
    ALPHA: tl.constexpr, MOMENTUM: tl.constexpr, PREC: tl.constexpr, NEPS: tl.constexpr,
    SMOOTH: tl.constexpr, RETAIN_FIRST: tl.constexpr, ETA_CH: tl.constexpr, DELTA_CH: tl.constexpr,
    LQ: tl.constexpr, MASKED: tl.constexpr,
):
    """Split backward, pass 1 (sequential): only the state gradient, walked in reverse; stores
    dL/d(end state) of every chunk for pass 2."""
    i_v = tl.program_id(0)
    i_bh = tl.program_id(1)
    ok = tl.arange(0, BK)
    ov = i_v * BV + tl.arange(0, BV)
    m_vk = (ov < V)[:, None] & (ok < K)[None, :]
    tile = ov[:, None] * K + ok[None, :]
    dW = tl.zeros([BV, BK], dtype=tl.float32)
    dS = tl.zeros([BV, BK], dtype=tl.float32)
    for i_n in range(NC):
        n = NC - 1 - i_n
        base = _slot(i_bh, n, NC, V * K)
        tl.store(saved_dw + base + tile, dW, mask=m_vk)
        if MOMENTUM:
            tl.store(saved_ds + base + tile, dS, mask=m_vk)
        dW, dS = _chunk_bwd(
            q, k, v, eta, alpha, theta, mmask, delta, saved_w, saved_s, do,  # no token gradients:
            dw0, dw0, dw0, dw0, dw0, dw0, dw0, dW, dS, n, i_v, i_bh,  # placeholders, never written
            T, H, K, V, NC, BH, P_EXP, SHARP, EPS, RADIUS, QX, C, BK, BV, BIAS, ALPHA, MOMENTUM,
            PREC, NEPS, SMOOTH, False, RETAIN_FIRST, ETA_CH, DELTA_CH, LQ, MASKED,
        )
    tl.store(dw0 + i_bh * V * K + tile, dW, mask=m_vk)


@triton.jit
def _bwd_chunk_kernel(
    q, k, v, eta, alpha, theta, mmask, delta, saved_w, saved_s, do, saved_dw, saved_ds,
    dq, dk, dv, deta, dla, dlth, ddelta,
    T, H, K, V, NC, BH, P_EXP, SHARP, EPS, RADIUS, QX,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, BIAS: tl.constexpr,
    ALPHA: tl.constexpr, MOMENTUM: tl.constexpr, PREC: tl.constexpr, NEPS: tl.constexpr,
    SMOOTH: tl.constexpr, RETAIN_FIRST: tl.constexpr, ETA_CH: tl.constexpr, DELTA_CH: tl.constexpr,
    LQ: tl.constexpr, MASKED: tl.constexpr,
):
    """Split backward, pass 2 (one program per V-tile, chunk and batch x head, all at once): the
    token gradients of one chunk from its stored start state and end-state gradient."""
    n = tl.program_id(0)  # on the grid's x axis: y and z stop at 65535
    i_v = tl.program_id(1)
    i_bh = tl.program_id(2)
    ok = tl.arange(0, BK)
    ov = i_v * BV + tl.arange(0, BV)
    m_vk = (ov < V)[:, None] & (ok < K)[None, :]
    base = _slot(i_bh, n, NC, V * K)
    tile = ov[:, None] * K + ok[None, :]
    dW = tl.load(saved_dw + base + tile, mask=m_vk, other=0.0)
    if MOMENTUM:
        dS = tl.load(saved_ds + base + tile, mask=m_vk, other=0.0)
    else:
        dS = dW
    _chunk_bwd(
        q, k, v, eta, alpha, theta, mmask, delta, saved_w, saved_s, do,
        dq, dk, dv, deta, dla, dlth, ddelta, dW, dS, n, i_v, i_bh,
        T, H, K, V, NC, BH, P_EXP, SHARP, EPS, RADIUS, QX, C, BK, BV, BIAS, ALPHA, MOMENTUM,
        PREC, NEPS, SMOOTH, True, RETAIN_FIRST, ETA_CH, DELTA_CH, LQ, MASKED,
    )


def _launch_config(K: int, V: int, bias: BiasConfig, backward: bool,
                   lq: bool = False) -> tuple[int, int, int]:
    """(BK, BV, num_warps): the whole key dim in one block; V tiled unless the bias needs rows
    or lq retention (``lq``) the whole matrix's norm.

    Launched with num_stages=1: the chunk loop carries the state, so prefetching more chunks
    buys little and overflows shared memory at C = 64, K = V = 128.
    """
    BK = max(16, triton.next_power_of_2(K))
    full_v = max(16, triton.next_power_of_2(V))
    if bias.row_norm or lq:
        BV = full_v
    else:
        cap = 32 if (backward and BK >= 128) else 64
        BV = min(full_v, cap)
    num_warps = 8 if BK * BV >= 128 * 64 else 4
    return BK, BV, num_warps


def compile_specs(bias: BiasConfig, K: int, V: int, chunk_size: int, alpha: str = "head",
                  momentum: bool = False, dtype: torch.dtype = torch.bfloat16,
                  backward: str = "fused", gradient_at: str = "retained", eta: str = "head",
                  delta: str = "head", retention: str = "l2", masked: bool = False) -> list[tuple]:
    """(name, kernel, scalars, pointer types, num_warps) of the launches for
    kernels.compile_check (compiling for a GPU without one); alpha: none / head / channel; eta
    and delta: head / channel; retention: l2 (or none) / lq; masked: a momentum mask (the Omega
    window with momentum).
    'fused': the forward and the backward; 'split': the backward's state and chunk passes."""
    mode = {"none": _ALPHA_NONE, "head": _ALPHA_HEAD, "channel": _ALPHA_CHANNEL}[alpha]
    element = "*bf16" if dtype == torch.bfloat16 else "*fp32"
    pointers = {name: element for name in ("q", "k", "v", "o", "do", "dv")}
    launches = [("forward", _fwd_kernel, False), ("backward", _bwd_kernel, True)]
    if backward == "split":
        launches = [("backward state pass", _bwd_state_kernel, True),
                    ("backward chunk pass", _bwd_chunk_kernel, True)]
    specs = []
    for name, kernel, is_backward in launches:
        lq = retention == "lq"
        BK, BV, warps = _launch_config(K, V, bias, is_backward, lq)
        scalars = {"T": 1024, "H": 8, "K": K, "V": V, "NC": 1024 // chunk_size, "C": chunk_size,
                   "BK": BK, "BV": BV, "ALPHA": mode, "MOMENTUM": momentum,
                   "RETAIN_FIRST": gradient_at == "retained" and not lq, "ETA_CH": eta == "channel",
                   "DELTA_CH": delta == "channel", "LQ": lq, "QX": 4.0, "MASKED": masked,
                   "PREC": matrix_precision(dtype, bias.kind), **_bias_args(bias)}
        if is_backward:
            scalars["BH"] = 32
        else:
            scalars |= {"HAS_W0": True, "SAVE": True}
        specs.append((name, kernel, scalars, pointers, warps))
    return specs


def _reference(bias: BiasConfig, chunk_size: int, gradient_at: str, lq_exp: float | None,
               momentum_mask: torch.Tensor | None = None):
    """The PyTorch reference in float32 (or wider), output in q's dtype: the fallback of a launch
    that does not fit this GPU."""
    def run(q, k, v, eta, alpha, theta, delta, w0):
        wide = [x if x is None else x.to(torch.promote_types(x.dtype, torch.float32))
                for x in (q, k, v, eta, alpha, theta, delta, w0)]
        retention = {"retention": "lq", "lq_exponent": lq_exp} if lq_exp is not None else {}
        return naive_chunk_matrix_memory(*wide, bias=bias, chunk_size=chunk_size, gradient_at=gradient_at,
                                         momentum_mask=momentum_mask, **retention).to(q.dtype)
    return run


class TokenGradients:
    """The backward kernels' gradient buffers, float32: per V-tile partials (NV of them, summed
    by ``finish``) of q, k, eta and the log of each decay gate (alpha, theta: a kernel stores
    dL/dlog(gate)), and dv; the Huber threshold's are partials too when it is per token, but one
    writer per channel (its V-tile) when it is per value channel. A gate that is None gets a
    one-element placeholder (the kernels take a pointer)."""

    def __init__(self, NV: int, q: torch.Tensor, v: torch.Tensor, eta: torch.Tensor,
                 delta: torch.Tensor | None, gates: tuple[torch.Tensor | None, ...]) -> None:
        f32 = {"dtype": torch.float32, "device": q.device}
        self.q, self.k = torch.empty(NV, *q.shape, **f32), torch.empty(NV, *q.shape, **f32)
        self.v = torch.empty_like(v)
        self.eta = torch.empty(NV, *eta.shape, **f32)
        self.gates = [torch.empty((NV, *g.shape) if g is not None else (1,), **f32) for g in gates]
        self.delta_channel = delta is not None and delta.dim() == 4
        self.delta = torch.empty(delta.shape if self.delta_channel else (NV, *delta.shape)
                                 if delta is not None else (1,), **f32)

    def buffers(self) -> tuple[torch.Tensor, ...]:
        """(dq, dk, dv, deta, d log gate..., ddelta) in the kernels' argument order."""
        return (self.q, self.k, self.v, self.eta, *self.gates, self.delta)

    def finish(self, q: torch.Tensor, k: torch.Tensor, eta: torch.Tensor, delta: torch.Tensor | None,
               gates: tuple[torch.Tensor | None, ...]) -> tuple[torch.Tensor | None, ...]:
        """(dq, dk, dv, deta, d gate..., ddelta) summed over the V-tiles, in the inputs' dtypes."""
        g_gates = [None if g is None else (d.sum(0) / g.float()).to(g.dtype) for d, g in zip(self.gates, gates, strict=True)]
        g_delta = None if delta is None else (self.delta if self.delta_channel else self.delta.sum(0)).to(delta.dtype)
        return (self.q.sum(0).to(q.dtype), self.k.sum(0).to(k.dtype), self.v,
                self.eta.sum(0).to(eta.dtype), *g_gates, g_delta)


class ChunkMatrixMemory(torch.autograd.Function):
    """autograd wrapper around the two kernels (inputs checked by chunk_matrix_memory).

    A launch that does not fit the GPU (Triton's OutOfResources) falls back to the PyTorch
    reference for that call, with a KernelFallbackWarning.
    """

    @staticmethod
    def forward(ctx, q, k, v, eta, alpha, theta, delta, w0, mask, bias, chunk_size, split, gradient_at,
                lq_exp):
        B, T, H, K = k.shape
        V = v.shape[-1]
        NC = triton.cdiv(T, chunk_size)
        mode = _ALPHA_NONE if alpha is None else (_ALPHA_CHANNEL if alpha.dim() == 4 else _ALPHA_HEAD)
        lq = lq_exp is not None
        BK, BV, warps = _launch_config(K, V, bias, backward=False, lq=lq)
        save = any(ctx.needs_input_grad)
        o = torch.empty(B, T, H, V, dtype=q.dtype, device=q.device)
        n_saved = B * H * NC * V * K if save else 1
        saved_w = torch.empty(n_saved, dtype=torch.float32, device=q.device)
        saved_s = torch.empty(n_saved if theta is not None else 1, dtype=torch.float32, device=q.device)
        dummy = eta
        grid = (triton.cdiv(V, BV), B * H)
        ctx.bias, ctx.chunk_size, ctx.mode, ctx.split = bias, chunk_size, mode, split
        ctx.gradient_at, ctx.lq_exp = gradient_at, lq_exp
        ctx.fallback = False
        try:
            with on_device(q):
                _fwd_kernel[grid](
                    q, k, v, eta, dummy if alpha is None else alpha, dummy if theta is None else theta,
                    dummy if mask is None else mask,
                    dummy if delta is None else delta, dummy if w0 is None else w0, o, saved_w, saved_s,
                    T, H, K, V, NC, QX=lq_exp or 2.0, C=chunk_size, BK=BK, BV=BV, ALPHA=mode,
                    MOMENTUM=theta is not None, LQ=lq, MASKED=mask is not None,
                    HAS_W0=w0 is not None, SAVE=save, PREC=matrix_precision(q.dtype, bias.kind),
                    RETAIN_FIRST=gradient_at == "retained", ETA_CH=eta.dim() == 4,
                    DELTA_CH=delta is not None and delta.dim() == 4, num_warps=warps, num_stages=1,
                    **_bias_args(bias),
                )
        except OutOfResources as error:
            warn_fallback("matrix-memory forward", error)
            ctx.fallback = True
            o = _reference(bias, chunk_size, gradient_at, lq_exp, mask)(q, k, v, eta, alpha, theta, delta, w0)
        ctx.save_for_backward(q, k, v, eta, alpha, theta, delta, w0, mask, saved_w, saved_s)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, eta, alpha, theta, delta, w0, mask, saved_w, saved_s = ctx.saved_tensors
        bias, C, mode = ctx.bias, ctx.chunk_size, ctx.mode
        inputs = [q, k, v, eta, alpha, theta, delta, w0]
        reference = _reference(bias, C, ctx.gradient_at, ctx.lq_exp, mask)
        no_grads = (None,) * 6  # the mask and the options
        if ctx.fallback:
            return (*reference_grads(reference, inputs, do), *no_grads)
        B, T, H, K = k.shape
        V = v.shape[-1]
        NC = triton.cdiv(T, C)
        lq = ctx.lq_exp is not None
        BK, BV, warps = _launch_config(K, V, bias, backward=True, lq=lq)
        NV = triton.cdiv(V, BV)
        f32 = {"dtype": torch.float32, "device": q.device}
        token_grads = TokenGradients(NV, q, v, eta, delta, (alpha, theta))
        dw0 = torch.empty(B, H, V, K, **f32)
        dummy = eta
        launch = (q, k, v, eta, dummy if alpha is None else alpha, dummy if theta is None else theta,
                  dummy if mask is None else mask, dummy if delta is None else delta, saved_w, saved_s,
                  do.contiguous())
        grads = token_grads.buffers()
        scalars = dict(
            T=T, H=H, K=K, V=V, NC=NC, BH=B * H, QX=ctx.lq_exp or 2.0, LQ=lq, C=C, BK=BK, BV=BV, ALPHA=mode,
            MOMENTUM=theta is not None, PREC=matrix_precision(q.dtype, bias.kind), num_warps=warps,
            num_stages=1, RETAIN_FIRST=ctx.gradient_at == "retained", ETA_CH=eta.dim() == 4,
            DELTA_CH=token_grads.delta_channel, MASKED=mask is not None, **_bias_args(bias),
        )
        try:
            with on_device(q):
                if ctx.split:  # a sequential pass for the state gradient, then every chunk at once
                    saved_dw = torch.empty(B * H * NC * V * K, **f32)
                    saved_ds = torch.empty(B * H * NC * V * K if theta is not None else 1, **f32)
                    _bwd_state_kernel[(NV, B * H)](*launch, saved_dw, saved_ds, dw0, **scalars)
                    _bwd_chunk_kernel[(NC, NV, B * H)](*launch, saved_dw, saved_ds, *grads, **scalars)
                else:
                    _bwd_kernel[(NV, B * H)](*launch, *grads, dw0, **scalars)
        except OutOfResources as error:
            warn_fallback("matrix-memory backward", error)
            return (*reference_grads(reference, inputs, do), *no_grads)
        g_w0 = None if w0 is None else dw0.sum(0).to(w0.dtype)
        return (*token_grads.finish(q, k, eta, delta, (alpha, theta)), g_w0, *no_grads)


SPLIT_MIN_CHUNKS = 128
SPLIT_MIN_VALUE_DIM = 128


def pick_backward(T: int, chunk_size: int, V: int) -> str:
    """The backward that ``backward='auto'`` runs: 'split' on long sequences of wide heads,
    where it was timed faster, else 'fused'.

    The fused backward walks every chunk in order in each of B x H x V-tiles programs, about a
    dozen matrix products a chunk; the split one walks them carrying only the state gradient and
    then takes the chunks in parallel, at the cost of one [V, K] fp32 gradient a chunk. Measured
    (H200, B=4, H=8, bf16, chunk 64, fwd+bwd): at T=8192, K=V=128 split 3.55 ms, fused 5.42 ms
    (fla's chunk_gated_delta_rule 2.54 ms). Shorter or narrower: fused (at T <= 2048, and at
    T=8192 with D=64, fused was already as fast as fla or faster; split was not timed there).
    """
    long_walk = -(-T // chunk_size) >= SPLIT_MIN_CHUNKS
    return "split" if long_walk and V >= SPLIT_MIN_VALUE_DIM else "fused"


def chunk_matrix_memory(
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
    backward: str = "auto",
    gradient_at: str = "retained",
    retention: str = "l2",
    lq_exponent: float = 4.0,
    kl_scale: float = 1.0,
    momentum_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Chunked matrix memory with Triton kernels (forward and backward).

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V] (float32 or bfloat16; K, V in 16..256, see
            kernels.limits.matrix_shape_problem; at most 2^31 - 1 elements, see
            kernels.limits.token_tensor_problem).
        eta: [B, T, H] (> 0), the inner learning rate, or [B, T, H, K]: one per key channel
            (the step writes with eta * k; the errors read with k).
        alpha: [B, T, H] or [B, T, H, K] in (0, 1], or None (no retention).
        theta: [B, T, H] in (0, 1) for momentum, or None (gd).
        delta: [B, T, H] (> 0), the Huber threshold, or [B, T, H, V]: one per value channel
            (huber_coordinate and huber_switch); required by the huber biases only.
        initial_state: [H, V, K] or None (zeros).
        bias: a BiasConfig or its kind name (see kernels.bias.BIAS_KINDS).
        chunk_size: 16, 32 or 64.
        backward: 'fused' (one sequential kernel per batch x head and V-tile), 'split' (a
            sequential pass that carries only the state gradient, then one program per chunk
            for the token gradients; more memory: one [V, K] gradient per chunk) or 'auto'
            (``pick_backward``: split on long sequences of wide heads, where it is faster).
        gradient_at: 'retained' (errors at beta_i W_0: Gated DeltaNet's order) or 'previous'
            (errors at W_0: Titans' order); they differ only with alpha.
        retention: 'l2' (a linear decay by alpha; none without alpha) or 'lq' (Moneta's: the
            memory is W = A / max(||A||_q, floor)^(q - 2) of the accumulator A that decays by
            alpha, normalised at chunk ends, see naive.py; q = ``lq_exponent``). Under lq the
            errors read the chunk-start memory itself (gradient_at does not apply) and
            initial_state is the accumulator A_0. Or 'kl' (Memora's; momentum with a per-head alpha: W = c
            softmax_row(raw) with c = ``kl_scale``, every token reading its own exact map, see
            naive.naive_chunk_matrix_kl; initial_state the raw parameter whose row softmax,
            times c, is W_0, uniform rows without one; head dims powers of two).
        momentum_mask: [B, T, H] of 0 / 1 (momentum, alpha per head or none, l2 / none / lq
            retention): S joins the memory only where it is 1, W_t = alpha_t W_{t-1} + m_t S_t
            (the Omega window's entries, kernels.omega); None: at every token.
    Returns:
        o: [B, T, H, V] in the dtype of q.
    """
    bias = as_bias(bias)
    if bias.kind == "lp" and not bias.smooth:
        raise KernelInputError("bias 'lp' has a Triton kernel only with smooth=True (tanh / sqrt surrogates)")
    if q.dim() != 4:
        raise KernelInputError(f"q must be [B, T, H, K], got a tensor of shape {list(q.shape)}")
    B, T, H, K = q.shape
    V = v.shape[-1] if v.dim() == 4 else -1
    floats = (torch.float32, torch.bfloat16)
    for name, x, shape in (
        ("k", k, (B, T, H, K)), ("v", v, (B, T, H, V)),
        ("eta", eta, (B, T, H) if eta.dim() != 4 else (B, T, H, K)), ("theta", theta, (B, T, H)),
        ("delta", delta, (B, T, H) if delta is None or delta.dim() != 4 else (B, T, H, V)),
        ("initial_state", initial_state, (H, V, K)),
    ):
        _check(name, x, shape, floats)
    _check("q", q, (B, T, H, K), floats)
    if alpha is not None:
        _check("alpha", alpha, (B, T, H) if alpha.dim() == 3 else (B, T, H, K), floats)
    if chunk_size not in CHUNK_SIZES:
        raise KernelInputError(f"chunk_size must be 16, 32 or 64 for the Triton kernel, got {chunk_size}")
    kl = retention == "kl"
    problem = matrix_shape_problem(K, V, products(matrix_precision(q.dtype, bias.kind, kl)), bias.row_norm,
                                   lq=retention == "lq", kl=kl)
    problem = problem or token_tensor_problem(B, T, H, max(K, V))
    if problem is not None:
        raise KernelInputError(problem)
    if bias.needs_delta and delta is None:
        raise KernelInputError(f"bias {bias.kind!r} needs the Huber threshold tensor delta [B, T, H]")
    if bias.needs_delta and delta.dim() == 4 and bias.kind not in ("huber_coordinate", "huber_switch"):
        raise KernelInputError(f"bias {bias.kind!r} takes one Huber threshold per token [B, T, H]; "
                               "a threshold per value channel [B, T, H, V] is for huber_coordinate "
                               "and huber_switch")
    if momentum_mask is not None:
        _check("momentum_mask", momentum_mask, (B, T, H), floats)
        if theta is None or kl or (alpha is not None and alpha.dim() == 4):
            raise KernelInputError("momentum_mask is for momentum (theta) with alpha per head or none, "
                                   "and retention l2, none or lq")
        momentum_mask = momentum_mask.contiguous()
    args = [x.contiguous() if x is not None else None for x in (q, k, v, eta, alpha, theta, delta, initial_state)]
    if not bias.needs_delta:
        args[6] = None
    if backward not in ("auto", "fused", "split"):
        raise KernelInputError(f"backward must be 'auto', 'fused' or 'split', got {backward!r}")
    if backward == "auto":
        backward = pick_backward(T, chunk_size, V)
    if gradient_at not in ("retained", "previous"):
        raise KernelInputError(f"gradient_at must be 'retained' or 'previous', got {gradient_at!r}")
    lq_exp = _lq_exponent(retention, lq_exponent)
    if kl:
        if not math.isfinite(kl_scale) or kl_scale <= 0:
            raise KernelInputError(f"kl_scale must be a finite c > 0, got {kl_scale!r}")
        from .kl import chunk_matrix_kl  # kl.py builds on this file's helpers

        return chunk_matrix_kl(*args, bias, chunk_size, kl_scale)
    if lq_exp is not None:
        gradient_at = "previous"  # lq takes every gradient at the chunk-start memory r(A_0) A_0
    return ChunkMatrixMemory.apply(*args, momentum_mask, bias, chunk_size, backward == "split", gradient_at, lq_exp)


def _lq_exponent(retention: str, lq_exponent: float) -> float | None:
    """lq's exponent q for the kernel, None for the other retentions; KernelInputError for one
    the matrix kernel does not know."""
    if retention in ("l2", "none", "kl"):
        return None
    if retention != "lq":
        raise KernelInputError(f"retention must be 'l2', 'none', 'lq' or 'kl' for the matrix kernel, got {retention!r}")
    if not math.isfinite(lq_exponent) or lq_exponent < 1.0:
        raise KernelInputError(f"lq_exponent must be a finite q >= 1, got {lq_exponent!r}")
    return float(lq_exponent)
