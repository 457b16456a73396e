"""Triton forward and backward of the chunked 2-layer MLP memory, looping over hidden tiles.

Same math as ``chunk.py`` (and ``naive.py``, see its docstring), for the shapes whose weights do
not fit on chip: the named models at K = 64, hidden 256 with their LayerNorm take fp32-accurate
(tf32x3) products, and one [hidden, K] fp32 operand is already 64 KiB of shared memory; chunk.py
keeps W1, W2, their gradients and the [chunk, hidden] activations on chip at once (290 to 328
KiB).

Why this layout. A memory's hidden units couple only through sums over the hidden dim: the key
pass's a2 = sum_j W2[:, j] h_j, the layer-2 read, the scores of the layer-2 read (hq hk^T), and
the layer-1 read's backward; the LayerNorm acts on the K outputs, never across hidden units. So
one program per (batch, head) keeps every [chunk, K] and [chunk, chunk] tile on chip and walks
the hidden dim in tiles of HT units, accumulating those sums, then finishes what needs them
(the LayerNorm, the bias, the second layer) before the next walk. The state (W1, W2 and the
momentum, a few hundred KiB per head) stays in global memory, L2-resident at these sizes, and
on-chip room is per tile: [chunk, HT], [HT, K], [K, HT], independent of the hidden dim. Splitting
the hidden dim across programs instead would need a grid-wide reduction per segment (a2 and the
LayerNorm sit between the two layers), i.e. a launch per segment.

Forward, per segment: (A) the key pass's a2 over tiles; the LayerNorm, the bias and d2 on chip;
(B) per tile d1, the layer-1 read (hq), the layer-2 read's sums and the tile's segment-end state,
written to the next state slot; (C, lq and kl) the whole-matrix norm / the row softmax over
the hidden dim of W2 and the last token's exact read of the new memory. With ``SAVE`` every
segment's start state gets its own slot (the backward reads it), else one slot is updated in
place.

Backward, per segment in reverse: the recomputation (A, B) from the stored start state; for lq
and kl the exact read's VJP and the end map's (C1-C3, from the stored end state, into a
``draw`` scratch); (D) per tile the end map's, the reads' and the key pass's first VJP, with
the tile's dd1 and partial dh kept in a [chunk, hidden] scratch; the LayerNorm and bias VJP on
chip; (E) the key pass's second half per tile; (F, lq) the read scale's VJP, which needs the
whole gradient's dot product with the state. Gradients of the carried state live in global
buffers updated in place. Every walk over tiles that reads what another wrote is separated
from it by a barrier (threads of a program do not otherwise see each other's global writes
in order), and so is every read-then-write of the same block.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..common import _mm, _phi, _slot
from .tl_ops import (
    _act,
    _act_grad,
    _act_grad2,
    _bias_vjp,
    _decays,
    _load_segment,
    _log_softmax_rows,
    _lq_norm_tiles,
    _lq_scale_of,
    _lq_scale_vjp_of,
    _norm,
    _norm_back,
    _norm_end,
    _norm_start,
    _norm_update,
    _read_base,
)


@triton.jit
def _start_scales(state1, state2, base, QX, K: tl.constexpr, HD: tl.constexpr, HT: tl.constexpr,
                  RET: tl.constexpr):
    """(r1, r2, n1, n2): lq's read scales and q-norms of the state at ``base``; 1 otherwise."""
    if RET == 2:
        n1 = _lq_norm_tiles(state1 + base, QX, K, HD, HT)
        n2 = _lq_norm_tiles(state2 + base, QX, K, HD, HT)
        r1 = _lq_scale_of(n1, QX)
        r2 = _lq_scale_of(n2, QX)
    else:
        n1 = tl.zeros([], dtype=tl.float32) + 1.0
        n2 = n1
        r1 = n1
        r2 = n1
    return r1, r2, n1, n2


@triton.jit
def _tile(state1, state2, p1, p2, r1, r2, RET: tl.constexpr):
    """One hidden tile of the state: X1 [HT, K], X2 [K, HT], the reads' base V and weights W."""
    X1 = tl.load(state1 + p1)
    X2 = tl.load(state2 + p2)
    V1 = _read_base(X1, RET)
    V2 = _read_base(X2, RET)
    return X1, X2, V1, V2, r1 * V1, r2 * V2


@triton.jit
def _tile_keys(W1, W2, ks, s, d2, ACT: tl.constexpr, PREC: tl.constexpr):
    """The key pass on one hidden tile: a1, h = act(a1), act'(a1), t1 = d2 W2, d1 [C, HT]."""
    a1 = _mm(ks, tl.trans(W1), PREC)
    hk = _act(a1, ACT)
    f1 = _act_grad(a1, ACT)
    t1 = _mm(d2, W2, PREC)
    return a1, hk, f1, t1, t1 * f1 * s[:, None]


@triton.jit
def _tile_read1(V1, S1, r1, qc, A1, d1, bt, m, ACT: tl.constexpr, MOM: tl.constexpr,
                PREC: tl.constexpr):
    """The layer-1 read on one hidden tile: q V1^T, q S1^T, u1 / r1, u1, hq = act(u1) [C, HT]."""
    qV = _mm(qc, tl.trans(V1), PREC)
    u1p = bt[:, None] * qV - _mm(A1, d1, PREC)
    if MOM:
        qS = _mm(qc, tl.trans(S1), PREC)
        u1p += m[:, None] * qS
    else:
        qS = qV
    u1 = r1 * u1p
    return qV, qS, u1p, u1, _act(u1, ACT)


@triton.jit
def _key_sums(state1, state2, base, o1, o2, r1, r2, ks, s, C: tl.constexpr, K: tl.constexpr,
              HD: tl.constexpr, HT: tl.constexpr, ACT: tl.constexpr, RET: tl.constexpr,
              PREC: tl.constexpr):
    """Walk A: a2 = (s h) W2^T [C, K], the key pass's second layer summed over hidden tiles."""
    a2 = tl.zeros([C, K], dtype=tl.float32)
    for j in range(HD // HT):
        _X1, _X2, _V1, _V2, W1, W2 = _tile(state1, state2, base + j * HT * K + o1,
                                           base + j * HT + o2, r1, r2, RET)
        hs = _act(_mm(ks, tl.trans(W1), PREC), ACT) * s[:, None]
        a2 += _mm(hs, tl.trans(W2), PREC)
    return a2


@triton.jit
def _read_sums(state1, state2, mom1, mom2, base, o1, o2, r1, r2, ks, s, d2, qc, A1, bt, m,
               C: tl.constexpr, K: tl.constexpr, HD: tl.constexpr, HT: tl.constexpr,
               ACT: tl.constexpr, RET: tl.constexpr, MOM: tl.constexpr, PREC: tl.constexpr):
    """The backward's walk B: the layer-2 read's sums hq V2^T, hq S2^T [C, K], hq hk^T [C, C]."""
    PV = tl.zeros([C, K], dtype=tl.float32)
    PS = tl.zeros([C, K], dtype=tl.float32)
    HH = tl.zeros([C, C], dtype=tl.float32)
    for j in range(HD // HT):
        p1 = base + j * HT * K + o1
        p2 = base + j * HT + o2
        _X1, _X2, V1, V2, W1, W2 = _tile(state1, state2, p1, p2, r1, r2, RET)
        if MOM:
            S1 = tl.load(mom1 + p1)
            S2 = tl.load(mom2 + p2)
        else:
            S1 = V1
            S2 = V2
        _a1, hk, _f1, _t1, d1 = _tile_keys(W1, W2, ks, s, d2, ACT, PREC)
        _qV, _qS, _u1p, _u1, hq = _tile_read1(V1, S1, r1, qc, A1, d1, bt, m, ACT, MOM, PREC)
        PV += _mm(hq, tl.trans(V2), PREC)
        if MOM:
            PS += _mm(hq, tl.trans(S2), PREC)
        HH += _mm(hq, tl.trans(hk), PREC)
    return PV, PS, HH


@triton.jit
def _end_tile(state1, state2, p1, p2, r1n, r2n, lse2, SCALE, RET: tl.constexpr):
    """(X1', X2', W1', W2') of one tile of the segment-end state as stored (lq: the accumulator,
    whose weights are r' X'; kl: X1' already log-normalised, X2' still raw: its rows normalise over
    the whole hidden dim, log-sum-exp lse2 [K])."""
    X1n = tl.load(state1 + p1)
    X2n = tl.load(state2 + p2)
    if RET == 3:
        X2n = X2n - lse2[:, None] + tl.log(SCALE)
        W1n = tl.exp(X1n)
        W2n = tl.exp(X2n)
    else:
        W1n = r1n * X1n
        W2n = r2n * X2n
    return X1n, X2n, W1n, W2n


@triton.jit
def _fwd_kernel(
    q, k, v, eta, alpha, theta, delta, seg_start, seg_size, o, state1, state2, mom1, mom2,
    T, H, NS, P_EXP, SHARP, EPS, RADIUS, QX, SCALE,
    C: tl.constexpr, K: tl.constexpr, HD: tl.constexpr, HT: tl.constexpr, BIAS: tl.constexpr,
    NEPS: tl.constexpr, SMOOTH: tl.constexpr, ACT: tl.constexpr, LN: tl.constexpr,
    RET: tl.constexpr, RETAIN_FIRST: tl.constexpr, HAS_ALPHA: tl.constexpr, MOM: tl.constexpr,
    NEEDS_DELTA: tl.constexpr, SAVE: tl.constexpr, PREC: tl.constexpr,
):
    """One program per (batch, head). state1 [B*H, slots, HD, K], state2 [B*H, slots, K, HD]
    (mom1, mom2 alike for momentum) hold the carried state; slot 0 is the initial state. With
    SAVE, slot n + 1 receives the end state of segment n (slots = NS + 1); else slots = 1."""
    i_bh = tl.program_id(0)
    b = i_bh // H
    h = i_bh % H
    oc = tl.arange(0, C)
    ok = tl.arange(0, K)
    oht = tl.arange(0, HT)
    o1 = oht[:, None] * K + ok[None, :]  # [HT, K] block of a [HD, K] matrix
    o2 = ok[:, None] * HD + oht[None, :]  # [K, HT] block of a [K, HD] matrix
    for n in range(NS):
        start = tl.load(seg_start + n)
        size = tl.load(seg_size + n)
        if SAVE:
            cur = _slot(i_bh, n, NS + 1, HD * K)
            nxt = cur + HD * K
        else:
            cur = _slot(i_bh, 0, 1, HD * K)
            nxt = cur
        qc, kc, vc, et, la, lth, dl, _row, ptr, mt = _load_segment(
            q, k, v, eta, alpha, theta, delta, b, h, start, size, T, H, C, K, HAS_ALPHA, MOM,
            NEEDS_DELTA)
        bt, s, _D, Dt, _coef, m, De = _decays(la, lth, et, C, RETAIN_FIRST, MOM)
        r1, r2, _n1, _n2 = _start_scales(state1, state2, cur, QX, K, HD, HT, RET)
        ks = kc * s[:, None]

        # ---- walk A: the key pass's output; the bias's gradient on chip
        a2 = _key_sums(state1, state2, cur, o1, o2, r1, r2, ks, s, C, K, HD, HT, ACT, RET, PREC)
        E = kc + _norm(a2, K, LN) - vc
        G = _phi(E, vc, dl, BIAS, P_EXP, SHARP, EPS, RADIUS, NEPS, SMOOTH)
        d2 = _norm_back(a2, G, K, LN)
        A1 = _mm(qc, tl.trans(kc), PREC) * De
        is_last = oc == size - 1
        c = tl.sum(tl.where(is_last[:, None], De, 0.0), 0)  # coef[last, i] eta_i
        b_last = tl.exp(tl.sum(la, 0))
        if MOM:
            m_last = tl.sum(tl.where(is_last, m, 0.0), 0)
            step = tl.sum(tl.where(is_last[:, None], Dt, 0.0), 0) * et  # Theta_C / Theta_i eta_i
            theta_all = tl.exp(tl.sum(lth, 0))

        # ---- walk B: layer-1 read, layer-2 read's sums, the tile's segment end
        PV = tl.zeros([C, K], dtype=tl.float32)
        PS = tl.zeros([C, K], dtype=tl.float32)
        HH = tl.zeros([C, C], dtype=tl.float32)
        nm1, ns1 = _norm_start()  # lq: the running norms of the new state
        nm2, ns2 = _norm_start()
        rmax = tl.full([K], float("-inf"), tl.float32)  # kl: the running row log-sum-exp of raw2
        rsum = tl.zeros([K], dtype=tl.float32)
        for j in range(HD // HT):
            p1 = cur + j * HT * K + o1
            p2 = cur + j * HT + o2
            X1, X2, V1, V2, W1, W2 = _tile(state1, state2, p1, p2, r1, r2, RET)
            if MOM:
                S1 = tl.load(mom1 + p1)
                S2 = tl.load(mom2 + p2)
            else:
                S1 = V1
                S2 = V2
            _a1, hk, _f1, _t1, d1 = _tile_keys(W1, W2, ks, s, d2, ACT, PREC)
            _qV, _qS, _u1p, _u1, hq = _tile_read1(V1, S1, r1, qc, A1, d1, bt, m, ACT, MOM, PREC)
            PV += _mm(hq, tl.trans(V2), PREC)
            if MOM:
                PS += _mm(hq, tl.trans(S2), PREC)
            HH += _mm(hq, tl.trans(hk), PREC)
            raw1 = b_last * X1 - _mm(tl.trans(d1), kc * c[:, None], PREC)
            raw2 = b_last * X2 - _mm(tl.trans(d2), hk * c[:, None], PREC)
            if MOM:
                raw1 += m_last * S1
                raw2 += m_last * S2
                S1 = theta_all * S1 - _mm(tl.trans(d1), kc * step[:, None], PREC)
                S2 = theta_all * S2 - _mm(tl.trans(d2), hk * step[:, None], PREC)
            if RET == 3:  # rows of W1 run over K (this tile); those of W2 over the hidden dim
                raw1 = _log_softmax_rows(raw1, SCALE)
                new = tl.maximum(rmax, tl.max(raw2, 1))
                rsum = rsum * tl.exp(rmax - new) + tl.sum(tl.exp(raw2 - new[:, None]), 1)
                rmax = new
            if RET == 2:
                nm1, ns1 = _norm_update(raw1, nm1, ns1, QX)
                nm2, ns2 = _norm_update(raw2, nm2, ns2, QX)
            tl.debug_barrier()  # without SAVE the tile is updated in place
            tl.store(state1 + nxt - cur + p1, raw1)
            tl.store(state2 + nxt - cur + p2, raw2)
            if MOM:
                tl.store(mom1 + nxt - cur + p1, S1)
                tl.store(mom2 + nxt - cur + p2, S2)
        u2p = bt[:, None] * PV - _mm(HH * De, d2, PREC)
        if MOM:
            u2p += m[:, None] * PS
        out = qc + _norm(r2 * u2p, K, LN)

        # ---- walk C (lq, kl): the end map over whole matrices; the last token's exact read
        if RET >= 2:
            tl.debug_barrier()
            if RET == 2:
                r1n = _lq_scale_of(_norm_end(nm1, ns1, QX), QX)
                r2n = _lq_scale_of(_norm_end(nm2, ns2, QX), QX)
                lse2 = rmax
            else:
                r1n = b_last
                r2n = b_last
                lse2 = rmax + tl.log(rsum)
            z2 = tl.zeros([C, K], dtype=tl.float32)
            for j in range(HD // HT):
                p1 = nxt + j * HT * K + o1
                p2 = nxt + j * HT + o2
                _X1n, X2n, W1n, W2n = _end_tile(state1, state2, p1, p2, r1n, r2n, lse2, SCALE, RET)
                if RET == 3:
                    tl.debug_barrier()
                    tl.store(state2 + p2, X2n)
                z2 += _mm(_act(_mm(qc, tl.trans(W1n), PREC), ACT), tl.trans(W2n), PREC)
            out = tl.where(is_last[:, None], qc + _norm(z2, K, LN), out)
        tl.store(o + ptr, out.to(o.dtype.element_ty), mask=mt[:, None])
        tl.debug_barrier()  # the next segment reads this one's end state



@triton.jit
def _bwd_kernel(
    q, k, v, eta, alpha, theta, delta, seg_start, seg_size, state1, state2, mom1, mom2, do,
    dq, dk, dv, deta, dla, dlth, ddelta, gx1, gx2, gs1, gs2, draw1, draw2, sdd1, sdh,
    T, H, NS, P_EXP, SHARP, EPS, RADIUS, QX, SCALE,
    C: tl.constexpr, K: tl.constexpr, HD: tl.constexpr, HT: tl.constexpr, BIAS: tl.constexpr,
    NEPS: tl.constexpr, SMOOTH: tl.constexpr, ACT: tl.constexpr, LN: tl.constexpr,
    RET: tl.constexpr, RETAIN_FIRST: tl.constexpr, HAS_ALPHA: tl.constexpr, MOM: tl.constexpr,
    NEEDS_DELTA: tl.constexpr, PREC: tl.constexpr,
):
    """One program per (batch, head), segments in reverse. state*, mom*: the forward's NS + 1
    slots. gx1 [B*H, HD, K], gx2 [B*H, K, HD] (gs1, gs2 alike): dL/d(carried state) at the
    current segment end, zero at the start and the initial state's gradient at the end.
    Scratch: draw1, draw2 like gx (lq, kl), sdd1, sdh [B*H, C, HD]."""
    i_bh = tl.program_id(0)
    b = i_bh // H
    h = i_bh % H
    oc = tl.arange(0, C)
    ok = tl.arange(0, K)
    oht = tl.arange(0, HT)
    o1 = oht[:, None] * K + ok[None, :]
    o2 = ok[:, None] * HD + oht[None, :]
    ocd = oc[:, None] * HD + oht[None, :]  # [C, HT] block of a [C, HD] scratch
    causal = oc[:, None] >= oc[None, :]
    g0 = _slot(i_bh, 0, 1, HD * K)  # this program's gradient buffers
    c0 = _slot(i_bh, 0, 1, C * HD)  # and its [C, HD] scratch
    for i_n in range(NS):
        n = NS - 1 - i_n
        start = tl.load(seg_start + n)
        size = tl.load(seg_size + n)
        cur = _slot(i_bh, n, NS + 1, HD * K)
        nxt = cur + HD * K
        qc, kc, vc, et, la, lth, dl, row, ptr, mt = _load_segment(
            q, k, v, eta, alpha, theta, delta, b, h, start, size, T, H, C, K, HAS_ALPHA, MOM,
            NEEDS_DELTA)
        dy = tl.load(do + ptr, mask=mt[:, None], other=0.0).to(tl.float32)
        is_last = oc == size - 1
        # D, coef (and E, G, q k^T below) are recomputed where needed again rather than kept
        # alive across the walks: registers, not arithmetic, are what this kernel runs short of
        bt, s, _D, Dt, _coef, m, De = _decays(la, lth, et, C, RETAIN_FIRST, MOM)
        r1, r2, n1, n2 = _start_scales(state1, state2, cur, QX, K, HD, HT, RET)
        ks = kc * s[:, None]

        # ---- recompute: walks A and B
        a2 = _key_sums(state1, state2, cur, o1, o2, r1, r2, ks, s, C, K, HD, HT, ACT, RET, PREC)
        d2 = _norm_back(a2, _phi(kc + _norm(a2, K, LN) - vc, vc, dl, BIAS, P_EXP, SHARP, EPS, RADIUS,
                                 NEPS, SMOOTH), K, LN)
        A1 = _mm(qc, tl.trans(kc), PREC) * De
        c = tl.sum(tl.where(is_last[:, None], De, 0.0), 0)
        b_last = tl.exp(tl.sum(la, 0))
        if MOM:
            m_last = tl.sum(tl.where(is_last, m, 0.0), 0)
            t_last = tl.sum(tl.where(is_last[:, None], Dt, 0.0), 0)  # Theta_C / Theta_i
            step = t_last * et
            theta_all = tl.exp(tl.sum(lth, 0))
        PV, PS, HH = _read_sums(state1, state2, mom1, mom2, cur, o1, o2, r1, r2, ks, s, d2, qc, A1,
                                bt, m, C, K, HD, HT, ACT, RET, MOM, PREC)
        A2 = HH * De
        u2p = bt[:, None] * PV - _mm(A2, d2, PREC)
        if MOM:
            u2p += m[:, None] * PS
        u2 = r2 * u2p

        # ---- the segment end (lq, kl): the last token's exact read and the end map -> draw
        dqc = dy  # the memory's residual
        if RET >= 2:
            if RET == 2:
                m1n = _lq_norm_tiles(state1 + nxt, QX, K, HD, HT)
                m2n = _lq_norm_tiles(state2 + nxt, QX, K, HD, HT)
                r1n = _lq_scale_of(m1n, QX)
                r2n = _lq_scale_of(m2n, QX)
            else:  # (unused by kl)
                m1n = n1
                m2n = n2
                r1n = n1
                r2n = n2
            lse2 = tl.zeros([K], dtype=tl.float32) + tl.log(SCALE)  # kl: X' stored normalised
            z2 = tl.zeros([C, K], dtype=tl.float32)
            for j in range(HD // HT):  # walk C1
                _X1n, _X2n, W1n, W2n = _end_tile(state1, state2, nxt + j * HT * K + o1,
                                                 nxt + j * HT + o2, r1n, r2n, lse2, SCALE, RET)
                z2 += _mm(_act(_mm(qc, tl.trans(W1n), PREC), ACT), tl.trans(W2n), PREC)
            dz2 = _norm_back(z2, tl.where(is_last[:, None], dy, 0.0), K, LN)
            dyr = tl.where(is_last[:, None], 0.0, dy)
            dot1 = tl.zeros([], dtype=tl.float32)  # lq: <dW', X'> of each layer
            dot2 = tl.zeros([], dtype=tl.float32)
            rs2 = tl.zeros([K], dtype=tl.float32)  # kl: row sums of dL2 over the hidden dim
            for j in range(HD // HT):  # walk C2: dW' per tile
                p1 = j * HT * K + o1
                p2 = j * HT + o2
                X1n, X2n, W1n, W2n = _end_tile(state1, state2, nxt + p1, nxt + p2, r1n, r2n, lse2,
                                               SCALE, RET)
                z1 = _mm(qc, tl.trans(W1n), PREC)
                dW2n = _mm(tl.trans(dz2), _act(z1, ACT), PREC)
                dz1 = _mm(dz2, W2n, PREC) * _act_grad(z1, ACT)
                dW1n = _mm(tl.trans(dz1), qc, PREC)
                dqc += _mm(dz1, W1n, PREC)
                if RET == 2:  # draw = dX' + r' dW' + vjp of r'; the vjp's scalar comes after
                    dot1 += tl.sum(tl.sum(dW1n * X1n, 1), 0)
                    dot2 += tl.sum(tl.sum(dW2n * X2n, 1), 0)
                    e1 = tl.load(gx1 + g0 + p1) + r1n * dW1n
                    e2 = tl.load(gx2 + g0 + p2) + r2n * dW2n
                else:  # X' = log c + log_softmax_row(raw), W' = exp(X')
                    dL1 = tl.load(gx1 + g0 + p1) + dW1n * W1n
                    e1 = dL1 - W1n * (tl.sum(dL1, 1)[:, None] / SCALE)
                    e2 = tl.load(gx2 + g0 + p2) + dW2n * W2n
                    rs2 += tl.sum(e2, 1)
                tl.store(draw1 + g0 + p1, e1)
                tl.store(draw2 + g0 + p2, e2)
            tl.debug_barrier()
            for j in range(HD // HT):  # walk C3: what needs the sums over the whole matrix
                p1 = j * HT * K + o1
                p2 = j * HT + o2
                X1n, X2n, _W1n, W2n = _end_tile(state1, state2, nxt + p1, nxt + p2, r1n, r2n, lse2,
                                                SCALE, RET)
                e2 = tl.load(draw2 + g0 + p2)
                if RET == 2:
                    e1 = tl.load(draw1 + g0 + p1) + _lq_scale_vjp_of(X1n, m1n, QX, dot1)
                    e2 += _lq_scale_vjp_of(X2n, m2n, QX, dot2)
                    tl.debug_barrier()
                    tl.store(draw1 + g0 + p1, e1)
                else:  # kl's rows of W1' run over K: draw1 is complete
                    e2 -= W2n * (rs2[:, None] / SCALE)
                    tl.debug_barrier()
                tl.store(draw2 + g0 + p2, e2)
            tl.debug_barrier()
        else:
            dyr = dy

        # ---- the layer-2 read's VJP on chip (u2 = r2 (b hq V2^T + m hq S2^T - A2 d2))
        du2 = _norm_back(u2, dyr, K, LN)
        dA2 = -r2 * _mm(du2, tl.trans(d2), PREC)
        G2 = dA2 * De
        dd2 = -r2 * _mm(tl.trans(A2), du2, PREC)
        dr2 = tl.sum(tl.sum(du2 * u2p, 1), 0)
        db = r2 * tl.sum(du2 * PV, 1)
        if MOM:
            dm = r2 * tl.sum(du2 * PS, 1)
        dDe = dA2 * HH

        # ---- walk D: per tile the end map's VJP, both reads' and the key pass's first half
        R2 = tl.zeros([C, K], dtype=tl.float32)  # h draw2^T
        Q2 = tl.zeros([C, K], dtype=tl.float32)  # momentum: h dS2'^T
        dA1 = tl.zeros([C, C], dtype=tl.float32)
        dkc = tl.zeros([C, K], dtype=tl.float32)
        dc = tl.zeros([C], dtype=tl.float32)
        ds = tl.zeros([C], dtype=tl.float32)
        dstep = tl.zeros([C], dtype=tl.float32)
        e_dot = tl.zeros([], dtype=tl.float32)  # <X, draw>: d b_last
        s_dot = tl.zeros([], dtype=tl.float32)  # momentum: <S, draw>: d m_last
        lt_dot = tl.zeros([], dtype=tl.float32)  # momentum: theta_all <S, dS'>
        dr1 = tl.zeros([], dtype=tl.float32)
        dw2_dot = tl.zeros([], dtype=tl.float32)  # lq: <dW2, X2>
        for j in range(HD // HT):
            p1 = j * HT * K + o1
            p2 = j * HT + o2
            pc = c0 + j * HT + ocd
            X1, X2, V1, V2, W1, W2 = _tile(state1, state2, cur + p1, cur + p2, r1, r2, RET)
            if MOM:
                S1 = tl.load(mom1 + cur + p1)
                S2 = tl.load(mom2 + cur + p2)
                dS1n = tl.load(gs1 + g0 + p1)
                dS2n = tl.load(gs2 + g0 + p2)
            else:
                S1 = V1
                S2 = V2
            a1, hk, f1, t1, d1 = _tile_keys(W1, W2, ks, s, d2, ACT, PREC)
            qV, qS, u1p, u1, hq = _tile_read1(V1, S1, r1, qc, A1, d1, bt, m, ACT, MOM, PREC)
            if RET >= 2:
                e1 = tl.load(draw1 + g0 + p1)
                e2 = tl.load(draw2 + g0 + p2)
            else:
                e1 = tl.load(gx1 + g0 + p1)
                e2 = tl.load(gx2 + g0 + p2)
            # the end map raw_l = b_last X_l - sum_i c_i d_li x_li^T (+ m_last S_l)
            e_dot += tl.sum(tl.sum(X1 * e1, 1), 0) + tl.sum(tl.sum(X2 * e2, 1), 0)
            R1 = _mm(kc, tl.trans(e1), PREC)  # [C, HT]
            dd1 = -c[:, None] * R1
            dkc -= c[:, None] * _mm(d1, e1, PREC)
            dc -= tl.sum(d1 * R1, 1)
            R2 += _mm(hk, tl.trans(e2), PREC)
            dh = -c[:, None] * _mm(d2, e2, PREC)
            if MOM:  # S_l' = Theta_C S_l - sum_i step_i d_li x_li^T
                s_dot += tl.sum(tl.sum(S1 * e1, 1), 0) + tl.sum(tl.sum(S2 * e2, 1), 0)
                lt_dot += theta_all * (tl.sum(tl.sum(S1 * dS1n, 1), 0) + tl.sum(tl.sum(S2 * dS2n, 1), 0))
                gS1 = m_last * e1 + theta_all * dS1n
                gS2 = m_last * e2 + theta_all * dS2n
                Q1 = _mm(kc, tl.trans(dS1n), PREC)
                dd1 -= step[:, None] * Q1
                dkc -= step[:, None] * _mm(d1, dS1n, PREC)
                dstep -= tl.sum(d1 * Q1, 1)
                Q2 += _mm(hk, tl.trans(dS2n), PREC)
                dh -= step[:, None] * _mm(d2, dS2n, PREC)
            # the layer-2 read (z = hq, x_in = hk, d = d2)
            gX2 = r2 * _mm(tl.trans(du2), hq * bt[:, None], PREC)
            dhq = r2 * bt[:, None] * _mm(du2, V2, PREC) + _mm(G2, hk, PREC)
            if MOM:
                gS2 += r2 * _mm(tl.trans(du2), hq * m[:, None], PREC)
                dhq += r2 * m[:, None] * _mm(du2, S2, PREC)
            dh += _mm(tl.trans(G2), hq, PREC)
            # the layer-1 read (z = q, x_in = k, d = d1)
            du1 = dhq * _act_grad(u1, ACT)
            gX1 = r1 * _mm(tl.trans(du1), qc * bt[:, None], PREC)
            dr1 += tl.sum(tl.sum(du1 * u1p, 1), 0)
            db += r1 * tl.sum(du1 * qV, 1)
            dqc += r1 * bt[:, None] * _mm(du1, V1, PREC)
            if MOM:
                gS1 += r1 * _mm(tl.trans(du1), qc * m[:, None], PREC)
                dm += r1 * tl.sum(du1 * qS, 1)
                dqc += r1 * m[:, None] * _mm(du1, S1, PREC)
            dA1 -= r1 * _mm(du1, tl.trans(d1), PREC)
            dd1 -= r1 * _mm(tl.trans(A1), du1, PREC)
            # the key pass, first half: d1 = (d2 W2) act'(a1) s
            dt1 = dd1 * s[:, None] * f1
            dd2 += _mm(dt1, tl.trans(W2), PREC)
            dW2 = _mm(tl.trans(d2), dt1, PREC)
            ds += tl.sum(dd1 * t1 * f1, 1)
            # the state's gradient so far (the key pass adds dW1 and the rest of dW2 in walk E)
            if RET == 2:
                gX1 += b_last * e1
                gX2 += r2 * dW2 + b_last * e2
                dw2_dot += tl.sum(tl.sum(dW2 * X2, 1), 0)
            elif RET == 3:  # dL/dV so far; V = exp(X)
                gX1 = gX1 * V1 + b_last * e1
                gX2 = (gX2 + dW2) * V2 + b_last * e2
            else:
                gX1 += b_last * e1
                gX2 += dW2 + b_last * e2
            tl.debug_barrier()
            tl.store(gx1 + g0 + p1, gX1)
            tl.store(gx2 + g0 + p2, gX2)
            if MOM:
                tl.store(gs1 + g0 + p1, gS1)
                tl.store(gs2 + g0 + p2, gS2)
            tl.store(sdd1 + pc, dd1)
            tl.store(sdh + pc, dh)
        tl.debug_barrier()
        dd2 -= c[:, None] * R2
        dc -= tl.sum(d2 * R2, 1)
        if MOM:
            dd2 -= step[:, None] * Q2
            dstep -= tl.sum(d2 * Q2, 1)
        G1 = dA1 * De
        dqc += _mm(G1, kc, PREC)
        dkc += _mm(tl.trans(G1), qc, PREC)
        dDe += dA1 * _mm(qc, tl.trans(kc), PREC) + tl.where(is_last[:, None], dc[None, :], 0.0)
        db += tl.where(is_last, e_dot, 0.0)
        if MOM:
            dm += tl.where(is_last, s_dot, 0.0)

        # ---- the key pass's LayerNorm and bias on chip
        E = kc + _norm(a2, K, LN) - vc
        G = _phi(E, vc, dl, BIAS, P_EXP, SHARP, EPS, RADIUS, NEPS, SMOOTH)
        dE, ddl, dvc, da2 = _bias_vjp(a2, E, G, dd2, dl, P_EXP, SHARP, EPS, RADIUS, K, BIAS, NEPS,
                                      SMOOTH, LN, False)
        dkc += dE

        # ---- walk E: the key pass, second half (dW2 += da2^T hs, dW1 = da1^T ks)
        dks = tl.zeros([C, K], dtype=tl.float32)
        dw1_dot = tl.zeros([], dtype=tl.float32)
        for j in range(HD // HT):
            p1 = j * HT * K + o1
            p2 = j * HT + o2
            pc = c0 + j * HT + ocd
            X1, X2, V1, V2, W1, W2 = _tile(state1, state2, cur + p1, cur + p2, r1, r2, RET)
            a1, hk, f1, t1, _d1 = _tile_keys(W1, W2, ks, s, d2, ACT, PREC)
            dd1 = tl.load(sdd1 + pc)
            dh = tl.load(sdh + pc)
            dW2 = _mm(tl.trans(da2), hk * s[:, None], PREC)
            dhs = _mm(da2, W2, PREC)
            dh += dhs * s[:, None]
            ds += tl.sum(dhs * hk, 1)
            da1 = dd1 * s[:, None] * t1 * _act_grad2(a1, ACT) + dh * f1
            dW1 = _mm(tl.trans(da1), ks, PREC)
            dks += _mm(da1, W1, PREC)
            gX1 = tl.load(gx1 + g0 + p1)
            gX2 = tl.load(gx2 + g0 + p2)
            if RET == 2:
                gX1 += r1 * dW1
                gX2 += r2 * dW2
                dw1_dot += tl.sum(tl.sum(dW1 * X1, 1), 0)
                dw2_dot += tl.sum(tl.sum(dW2 * X2, 1), 0)
            elif RET == 3:
                gX1 += dW1 * V1
                gX2 += dW2 * V2
            else:
                gX1 += dW1
                gX2 += dW2
            tl.debug_barrier()
            tl.store(gx1 + g0 + p1, gX1)
            tl.store(gx2 + g0 + p2, gX2)
        dkc += dks * s[:, None]
        ds += tl.sum(dks * kc, 1)
        if RETAIN_FIRST:
            db += ds

        # ---- walk F (lq): the read scales' VJP, W_l = r_l X_l
        if RET == 2:
            tl.debug_barrier()
            for j in range(HD // HT):
                p1 = j * HT * K + o1
                p2 = j * HT + o2
                X1 = tl.load(state1 + cur + p1)
                X2 = tl.load(state2 + cur + p2)
                gX1 = tl.load(gx1 + g0 + p1) + _lq_scale_vjp_of(X1, n1, QX, dr1 + dw1_dot)
                gX2 = tl.load(gx2 + g0 + p2) + _lq_scale_vjp_of(X2, n2, QX, dr2 + dw2_dot)
                tl.debug_barrier()
                tl.store(gx1 + g0 + p1, gX1)
                tl.store(gx2 + g0 + p2, gX2)

        # ---- gates: D[t, i] = exp(L_t - L_i), b = exp(L), L = cumsum(log alpha); momentum:
        # coef = D @ Dt, Dt[j, i] = exp(Lt_j - Lt_i), m = D @ exp(Lt), Lt = cumsum(log theta)
        bt, _s, D, Dt, coef, _m, _De = _decays(la, lth, et, C, RETAIN_FIRST, MOM)
        g_eta = tl.sum(dDe * coef, 0)
        dcoef = dDe * et[None, :]
        if MOM:
            g_eta += dstep * t_last
            elt = tl.exp(tl.cumsum(lth, 0))
            dD = tl.dot(dcoef, tl.trans(Dt), input_precision="ieee") + dm[:, None] * elt[None, :]
            dDt = tl.where(is_last[:, None], (dstep * et)[None, :], 0.0)
            dDt += tl.dot(tl.trans(D), dcoef, input_precision="ieee")
            Z = tl.where(causal, dDt * Dt, 0.0)
            dlt = tl.sum(Z, 1) - tl.sum(Z, 0) + tl.sum(D * dm[:, None], 0) * elt
            dlt += tl.where(is_last, lt_dot, 0.0)
            tl.store(dlth + row, tl.cumsum(dlt, 0, reverse=True), mask=mt)
        else:
            dD = dcoef
        Y = tl.where(causal, dD * D, 0.0)
        dL = db * bt + tl.sum(Y, 1) - tl.sum(Y, 0)
        tl.store(dla + row, tl.cumsum(dL, 0, reverse=True), mask=mt)
        tl.store(deta + row, g_eta, mask=mt)
        if NEEDS_DELTA:
            tl.store(ddelta + row, ddl, mask=mt)
        tl.store(dq + ptr, dqc, mask=mt[:, None])
        tl.store(dk + ptr, dkc, mask=mt[:, None])
        tl.store(dv + ptr, dvc, mask=mt[:, None])
        tl.debug_barrier()  # the next (earlier) segment reads this one's state gradient


def num_warps(chunk_size: int, key_dim: int, hidden_tile: int) -> int:
    """Warps per program: the [C, K], [C, C] and [C, HT] tiles live in registers (see
    benchmarks/kernel_resources.py for the spills this leaves on sm_90)."""
    return 8 if chunk_size * max(key_dim, hidden_tile) >= 64 * 64 else 4


def state_buffers(x1: torch.Tensor, x2: torch.Tensor, batch: int, slots: int, momentum: bool) -> list[torch.Tensor]:
    """state1, state2, mom1, mom2 [B*H, slots, HD*K] float32, slot 0 the initial state (x1 [H, HD,
    K], x2 [H, K, HD] for every batch row; the momentum zero); a placeholder without momentum."""
    heads, hidden, key_dim = x1.shape
    size = hidden * key_dim
    out = []
    for x in (x1, x2):
        buffer = torch.empty(batch * heads, slots, size, dtype=torch.float32, device=x.device)
        buffer[:, 0] = x.reshape(1, heads, size).expand(batch, -1, -1).reshape(batch * heads, size)
        out.append(buffer)
    for _ in range(2):
        shape = (batch * heads, slots, size) if momentum else (1,)
        out.append(torch.zeros(shape, dtype=torch.float32, device=x1.device))
    return out


def gradient_buffers(batch_heads: int, hidden: int, key_dim: int, chunk_size: int, momentum: bool,
                     end_map: bool, device: torch.device) -> list[torch.Tensor]:
    """gx1, gx2, gs1, gs2 (zero: dL/d(state) past the last segment), draw1, draw2 (lq, kl) and
    the [C, HD] scratch sdd1, sdh of the backward, float32; placeholders where unused."""
    f32 = {"dtype": torch.float32, "device": device}
    size = batch_heads * hidden * key_dim
    grads = [torch.zeros(size, **f32) for _ in range(2)]
    grads += [torch.zeros(size if momentum else 1, **f32) for _ in range(2)]
    scratch = [torch.empty(size if end_map else 1, **f32) for _ in range(2)]
    scratch += [torch.empty(batch_heads * chunk_size * hidden, **f32) for _ in range(2)]
    return grads + scratch
