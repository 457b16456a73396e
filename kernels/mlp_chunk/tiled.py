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

Backward, per segment in reverse: the recomputation (A, B) from the stored start state; for lq,
kl and elastic the exact read's VJP and the end map's (C1-C3, from the stored end state, into a
``draw`` scratch); (D) per tile the end map's, the reads' and the key pass's first VJP, with
the tile's dd1 and partial dh kept in a [chunk, hidden] scratch; the LayerNorm and bias VJP on
chip; (E) the key pass's second half per tile; (F, lq) the read scale's VJP, which needs the
whole gradient's dot product with the state, (F, elastic) shrink' of the raw start state.
Gradients of the carried state live in global buffers updated in place. Every walk over tiles
that reads what another wrote is separated from it by a barrier (threads of a program do not
otherwise see each other's global writes in order), and so is every read-then-write of the
same block.

Elastic retention (W' = shrink(raw), tl_ops._shrink) stores each segment's raw end map: slots
past the initial one (which holds W_0) are read at shrink(X) (_tile_base), the end map grows
from those weights, and the last token reads shrink(X') exactly (_end_tile).

Gates. eta, alpha and the Huber threshold delta are per head ([B, T, H]) or channel-wise, in any
combination the whole-W kernels take (chunk.py's ETA_CH and DELTA_CH, channel.py's alpha):
ETA_CH, eta [B, T, H, K + HD]; ALPHA_CH, alpha [B, T, H, K + HD] (kl always); DELTA_CH,
delta [B, T, H, K] (huber_coordinate, huber_switch). eta always scales each layer's write input
(x1 = k e1, x2 = h e2; a per-head eta as a [C, 1] column), so the decays take unit steps. A
channel-wise alpha decays every input channel on its own: W1's K channels on chip (the layer-1
scores, tl_ops._scores, once per segment), W2's hidden units per tile, where the layer-2 read
sums the tile's decayed scores over tiles as it sums hq hk^T per head; the end map scales X1's
columns and X2's (a tile's) by their own decays. The backward writes a channel-wise alpha's
gradient per tile in walk D (and adds the retained point's key-pass part in walk E), eta's in
walk D, and W1's channels' on chip.

Momentum. The chunk-start momentum S reaches token t's read with a weight mv (_tile_scores): m_t
per head, cv_t per input channel with a channel-wise alpha, whose scores then come from
kernels.channel_momentum (summed step by step: layer 1 on chip, layer 2 per tile, like the
decayed scores above); the end map's write weights and S's weight (_end_gates) are then D[last]
and cv_last per channel. The backward takes the scores' VJP per tile (layer 2) and on chip
(layer 1), the end decays' per tile and, for layer 1 and theta's end step Theta_C / Theta_i of
both layers, once after walk D; theta's gradient gathers there. kl retention with momentum
reads each token's log-space state with cv_t S and its steps' D_t (kl_read's _mom_ch functions).

kl retention (Memora; ALPHA_CH: chunk_mlp_memory passes a per-head alpha per channel) reads
every token at its own exact map of the log-space state, U_t = c softmax_row(raw_t) with
raw_t = b_t X - d^T (x exp(lb_t - lb_i), i <= t) (naive.py), formed per token and tile on chip
and never stored. W1's rows run over K, whole in each tile, so the layer-1 read is per tile
(tl_ops._kl_read). W2's rows run over the hidden dim: _kl_reads walks the tiles (after walk A)
with an online softmax per token and row, a running max, sum of exp(raw - max) and sum of
exp(raw - max) hq, giving u2 and the rows' log-sum-exp lse2 [C, K]; walk B then forms only the
segment end. The backward recomputes u2 and lse2 the same way; in walk D each tile rebuilds its
tokens' weights from them (W2's: exp(raw - lse2), so the softmax's VJP, whose row sums are
du2 * u2, needs no second walk; W1's on chip) and adds the reads' VJPs into the log-weights'
gradient, dd2 and the tile's dd1, the write inputs (eta) and the channel decays (alpha); the
key pass's part enters through exp(X) as before. kl takes 4 warps (num_warps).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..channel_momentum import (
    _channel_momentum,
    _channel_momentum_bwd,
    _momentum_ends_ch,
    _momentum_ends_ch_bwd,
    _theta_matrix,
)
from ..common import _bias_grad, _lq_scale_of, _lq_scale_vjp_of, _mm, _slot, _token_row
from ..kl_read import (
    _kl_raw,
    _kl_raw_mom_ch,
    _kl_read,
    _kl_read_bwd,
    _kl_read_mom_ch,
    _kl_read_mom_ch_bwd,
    _log_softmax_rows,
)
from .tl_ops import (
    _act,
    _act_grad,
    _act_grad2,
    _bias_vjp,
    _decay_grads,
    _decays,
    _gate_block,
    _load_segment,
    _lq_norm_tiles,
    _norm,
    _norm_back,
    _norm_end,
    _norm_start,
    _norm_update,
    _read_base,
    _scores,
    _scores_bwd,
    _shrink,
    _shrink_grad,
    _threshold,
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
def _tile(state1, state2, p1, p2, r1, r2, raw_start, SCALE, RET: tl.constexpr):
    """One hidden tile of the state: X1 [HT, K], X2 [K, HT], the reads' base V and weights W
    (elastic: a start state stored raw, ``raw_start``, is read at shrink(X); SCALE its gamma)."""
    X1 = tl.load(state1 + p1)
    X2 = tl.load(state2 + p2)
    V1 = _tile_base(X1, raw_start, SCALE, RET)
    V2 = _tile_base(X2, raw_start, SCALE, RET)
    return X1, X2, V1, V2, r1 * V1, r2 * V2


@triton.jit
def _tile_base(x, raw_start, SCALE, RET: tl.constexpr):
    """The reads' base of a stored start state (tl_ops._read_base): elastic's slots past the
    initial one hold the raw end map, whose weights are shrink(X)."""
    if RET >= 4:
        out = tl.where(raw_start, _shrink(x, SCALE, RET), x)
    else:
        out = _read_base(x, RET)
    return out


@triton.jit
def _start_map_vjp(g, x, norm, dot, raw_start, QX, SCALE, RET: tl.constexpr):
    """A start tile's gradient g [of its base / weights] taken to the stored state x: lq adds its
    read scale's VJP (norm: the state's q-norm, dot: <dW, X> + dL/dr summed over the matrix);
    elastic multiplies by shrink'(x) past the initial slot (_tile_base)."""
    if RET == 2:
        out = g + _lq_scale_vjp_of(x, norm, QX, dot)
    else:
        out = g * tl.where(raw_start, _shrink_grad(x, SCALE, RET), 1.0)
    return out


@triton.jit
def _log_decays(alpha, row, mt, WIDTH: tl.constexpr, col, N: tl.constexpr):
    """lb [C, N]: the cumulative log-decays of N input channels of a channel-wise alpha (from
    column col of its [K + HD] ones; 0 on padding rows past the last token's)."""
    return tl.cumsum(tl.log(_gate_block(alpha, row, mt, WIDTH, col, N, 1.0)), 0)


@triton.jit
def _layer_gates(eta, alpha, row, mt, ew, bt, s, c, b_last, is_last, col, N: tl.constexpr,
                 WIDTH: tl.constexpr, ETA_CH: tl.constexpr, ALPHA_CH: tl.constexpr,
                 RETAIN_FIRST: tl.constexpr):
    """The gates of N input channels of one layer, from column ``col`` of the channel-wise gates
    [B, T, H, WIDTH = K + HD] (layer 1: col 0, N = K; hidden tile j of layer 2: col K + j HT,
    N = HT). Per-head ones come as [C, 1] columns (or a scalar) that broadcast:

    e: the step on the layer's write input (x_w = x e), [C, N] with ETA_CH, else ew[:, None];
    lb: the cumulative log-decay [C, N] with ALPHA_CH (a placeholder otherwise);
    b: the read's decay of the start state, exp(lb) [C, N], or bt[:, None];
    sc: the key pass's input scale (l2's retained point: b; else 1), [C, N] or s[:, None];
    cg: the end map's weight of token i, exp(lb_last - lb_i) [C, N], or c[:, None] (per head:
    the decays' row at the last token);
    bl: the segment's decay, exp(lb_last) [1, N], or the scalar b_last."""
    if ETA_CH:
        e = _gate_block(eta, row, mt, WIDTH, col, N, 0.0)
    else:
        e = ew[:, None]
    if ALPHA_CH:
        lb = _log_decays(alpha, row, mt, WIDTH, col, N)
        b = tl.exp(lb)
        last = tl.sum(tl.where(is_last[:, None], lb, 0.0), 0)
        cg = tl.exp(last[None, :] - lb)
        bl = tl.exp(last)[None, :]
        if RETAIN_FIRST:
            sc = b
        else:
            sc = s[:, None]
    else:
        b = bt[:, None]
        lb = b
        sc = s[:, None]
        cg = c[:, None]
        bl = b_last
    return e, lb, b, sc, cg, bl


@triton.jit
def _tile_scale(alpha, row, mt, s, col, N: tl.constexpr, WIDTH: tl.constexpr,
                ALPHA_CH: tl.constexpr, RETAIN_FIRST: tl.constexpr):
    """_layer_gates' sc alone (the key pass needs no other gate)."""
    if ALPHA_CH:
        if RETAIN_FIRST:
            sc = tl.exp(_log_decays(alpha, row, mt, WIDTH, col, N))
        else:
            sc = s[:, None]
    else:
        sc = s[:, None]
    return sc


@triton.jit
def _raw_scores(z, x, lb, C: tl.constexpr, ALPHA_CH: tl.constexpr, PREC: tl.constexpr):
    """A layer's read scores before a per-head decay, z x^T [C, C]; with ALPHA_CH the decayed
    scores themselves (tl_ops._scores: a decay per input channel). z, x, lb: [C, n]."""
    if ALPHA_CH:
        out = _scores(z, x, lb, C)
    else:
        out = _mm(z, tl.trans(x), PREC)
    return out


@triton.jit
def _decayed(Z, De, ALPHA_CH: tl.constexpr):
    """The read scores A [C, C] from _raw_scores' Z: Z * De per head, Z itself per channel (the
    decays already in it); likewise the layer-2 read's momentum term from _momentum_sum's PS
    (De = m [C, 1])."""
    if ALPHA_CH:
        out = Z
    else:
        out = Z * De
    return out


@triton.jit
def _tile_scores(z, x, lb, lt, m, C: tl.constexpr, ALPHA_CH: tl.constexpr, MOM: tl.constexpr,
                 PREC: tl.constexpr):
    """A layer's read scores Z [C, C] (_raw_scores; with momentum and a channel-wise alpha the
    decayed scores of kernels.channel_momentum) and the weight of the chunk-start momentum in
    its read, mv: cv [C, N] per channel (momentum, channel-wise alpha), m[:, None] per head (a
    placeholder without momentum). z, x, lb: [C, N]; lt, m: [C]."""
    mv = m[:, None]
    if ALPHA_CH and MOM:
        Z, mv = _channel_momentum(z, x, lb, lt, C, PREC)
    else:
        Z = _raw_scores(z, x, lb, C, ALPHA_CH, PREC)
    return Z, mv


@triton.jit
def _scores_vjp(dA, dmv, z, x, lb, lt, De, C: tl.constexpr, ALPHA_CH: tl.constexpr, MOM: tl.constexpr,
                PREC: tl.constexpr):
    """(dz, dx, dlb, dlt) from dL/dA [C, C] through A = _decayed(Z) of _tile_scores (and dL/dmv
    [C, N] with momentum and a channel-wise alpha: dlt [C] of lt = cumsum(log theta); else a
    placeholder); per head dlb is a placeholder (the decays' gradient dA * Z is summed by the
    caller)."""
    if ALPHA_CH:
        oc = tl.arange(0, C)
        dA = tl.where(oc[:, None] >= oc[None, :], dA, 0.0)
        if MOM:
            dz, dx, dlb, dlt = _channel_momentum_bwd(dA, dmv, z, x, lb, lt, C, PREC)
        else:
            dz, dx, dlb = _scores_bwd(dA, z, x, lb, C)
            dlt = lt
    else:
        G = dA * De
        dz = _mm(G, x, PREC)
        dx = _mm(tl.trans(G), z, PREC)
        dlb = dz
        dlt = lt
    return dz, dx, dlb, dlt


@triton.jit
def _end_gates(lb, cg, lt, ltl, m_last, mt, is_last, C: tl.constexpr, MOM: tl.constexpr,
               ALPHA_CH: tl.constexpr):
    """The end map's weights of one layer (or hidden tile), raw = bl X + mS S - d^T (x cw):
    (cw, mS, lbl). Momentum with a channel-wise alpha: cw = D[last] [C, N], mS = cv_last [1, N]
    (kernels.channel_momentum._momentum_ends_ch); else cw = cg (_layer_gates') and the per-head
    m_last. lbl [N]: lb's last live row (a placeholder per head)."""
    lbl = tl.sum(tl.where(is_last[:, None], lb, 0.0), 0)
    cw = cg
    mS = m_last
    if ALPHA_CH and MOM:
        _Lt, _wk, cw, cl, _tl = _momentum_ends_ch(lb, lbl, lt, ltl, mt, C)
        mS = cl[None, :]
    return cw, mS, lbl


@triton.jit
def _momentum_gates(m, Dt, lth, one, is_last):
    """A segment's momentum gates (_decays' m, Dt; placeholders without momentum): m_last (per
    head, how much of S_0 reaches the end), step [C] (Theta_C / Theta_i on live tokens),
    theta_all = Theta_C, lt = cumsum(log theta) [C] and its last, ltl = log Theta_C."""
    lt = tl.cumsum(lth, 0)
    ltl = tl.sum(lth, 0)
    m_last = tl.sum(tl.where(is_last, m, 0.0), 0)
    step = tl.sum(tl.where(is_last[:, None], Dt, 0.0), 0) * one
    return m_last, step, tl.exp(ltl), lt, ltl


@triton.jit
def _tile_keys(W1, W2, ks, s2, d2, ACT: tl.constexpr, PREC: tl.constexpr):
    """The key pass on one hidden tile: a1, h = act(a1), act'(a1), t1 = d2 W2, d1 = t1 act'(a1) s2
    [C, HT] (s2: the tile's input scale of layer 2, [C, HT] or [C, 1])."""
    a1 = _mm(ks, tl.trans(W1), PREC)
    hk = _act(a1, ACT)
    f1 = _act_grad(a1, ACT)
    t1 = _mm(d2, W2, PREC)
    return a1, hk, f1, t1, t1 * f1 * s2


@triton.jit
def _tile_read1(V1, S1, r1, qb, qc, mv1, A1, d1, ACT: tl.constexpr, MOM: tl.constexpr,
                ALPHA_CH: tl.constexpr, PREC: tl.constexpr):
    """The layer-1 read on one hidden tile, u1 / r1 = qb V1^T - A1 d1 (+ (q mv1) S1^T) with
    qb = q b1 and mv1 the chunk-start momentum's weight (_tile_scores; per head a [C, 1] column
    applied after the product): u1 / r1, u1, hq = act(u1) [C, HT]."""
    u1p = _mm(qb, tl.trans(V1), PREC) - _mm(A1, d1, PREC)
    if MOM:
        if ALPHA_CH:
            u1p += _mm(qc * mv1, tl.trans(S1), PREC)
        else:
            u1p += mv1 * _mm(qc, tl.trans(S1), PREC)
    u1 = r1 * u1p
    return u1p, u1, _act(u1, ACT)


@triton.jit
def _momentum_sum(hq, mv2, S2, ALPHA_CH: tl.constexpr, PREC: tl.constexpr):
    """A tile's part of the layer-2 read's momentum sum [C, K]: (hq cv2) S2^T per channel, hq S2^T
    per head (m is applied after the walk, _decayed, so hq feeds this and the scores' product)."""
    if ALPHA_CH:
        out = _mm(hq * mv2, tl.trans(S2), PREC)
    else:
        out = _mm(hq, tl.trans(S2), PREC)
    return out


@triton.jit
def _tile_keyed(state1, state2, p1, p2, r1, r2, raw_start, SCALE, ks, s2, d2, e2, ACT: tl.constexpr, RET: tl.constexpr,
                PREC: tl.constexpr):
    """A hidden tile's state (_tile) with its key pass (_tile_keys) and the layer-2 write input
    x2w = hk e2: X1, X2, V1, V2, W1, W2, a1, hk, f1, t1, d1, x2w."""
    X1, X2, V1, V2, W1, W2 = _tile(state1, state2, p1, p2, r1, r2, raw_start, SCALE, RET)
    a1, hk, f1, t1, d1 = _tile_keys(W1, W2, ks, s2, d2, ACT, PREC)
    return X1, X2, V1, V2, W1, W2, a1, hk, f1, t1, d1, hk * e2


@triton.jit
def _tile_momentum(mom1, mom2, p1, p2, X1, X2, MOM: tl.constexpr):
    """The tile's momentum S1 [HT, K], S2 [K, HT] (placeholders without momentum)."""
    if MOM:
        S1 = tl.load(mom1 + p1)
        S2 = tl.load(mom2 + p2)
    else:
        S1 = X1
        S2 = X2
    return S1, S2


@triton.jit
def _tile_pass(state1, state2, mom1, mom2, p1, p2, r1, r2, raw_start, SCALE, ks, qb1, qc, mv1, A1, d2, m, lt, e2, s2, lb2,
               C: tl.constexpr, ACT: tl.constexpr, RET: tl.constexpr, MOM: tl.constexpr,
               ALPHA_CH: tl.constexpr, PREC: tl.constexpr):
    """One hidden tile's key pass and layer-1 read from the state at p1 ([HT, K] block), p2
    ([K, HT]): the tile X1, X2 (the base its end map grows from: the stored state, or elastic's
    weights V = shrink(X)), S1, S2, V1, V2, W1, W2; the key pass a1, hk, f1, t1, d1; the layer-2
    write input x2w = hk e2; the read's u1p, u1, hq; the tile's layer-2 scores Z2 and momentum
    read weight mv2 (_tile_scores)."""
    X1, X2, V1, V2, W1, W2, a1, hk, f1, t1, d1, x2w = _tile_keyed(state1, state2, p1, p2, r1, r2, raw_start,
                                                                  SCALE, ks, s2, d2, e2, ACT, RET, PREC)
    S1, S2 = _tile_momentum(mom1, mom2, p1, p2, V1, V2, MOM)
    u1p, u1, hq = _tile_read1(V1, S1, r1, qb1, qc, mv1, A1, d1, ACT, MOM, ALPHA_CH, PREC)
    Z2, mv2 = _tile_scores(hq, x2w, lb2, lt, m, C, ALPHA_CH, MOM, PREC)
    if RET >= 4:
        X1 = V1
        X2 = V2
    return X1, X2, S1, S2, V1, V2, W1, W2, a1, hk, f1, t1, d1, x2w, u1p, u1, hq, Z2, mv2


@triton.jit
def _key_sums(state1, state2, base, o1, o2, r1, r2, raw_start, SCALE, ks, alpha, row, mt, s, C: tl.constexpr,
              K: tl.constexpr, HD: tl.constexpr, HT: tl.constexpr, ACT: tl.constexpr,
              RET: tl.constexpr, ALPHA_CH: tl.constexpr, RETAIN_FIRST: tl.constexpr,
              PREC: tl.constexpr):
    """Walk A: a2 = (s2 h) W2^T [C, K], the key pass's second layer summed over hidden tiles."""
    a2 = tl.zeros([C, K], dtype=tl.float32)
    for j in range(HD // HT):
        _X1, _X2, _V1, _V2, W1, W2 = _tile(state1, state2, base + j * HT * K + o1,
                                           base + j * HT + o2, r1, r2, raw_start, SCALE, RET)
        s2 = _tile_scale(alpha, row, mt, s, K + j * HT, HT, K + HD, ALPHA_CH, RETAIN_FIRST)
        hs = _act(_mm(ks, tl.trans(W1), PREC), ACT) * s2
        a2 += _mm(hs, tl.trans(W2), PREC)
    return a2


@triton.jit
def _kl_tile_read1(X1, S1, qc, d1, x1w, lb1, Lt, elt, size, SCALE, C: tl.constexpr, MOM: tl.constexpr,
                   PREC: tl.constexpr):
    """kl's layer-1 read of one tile, u1 [C, HT] (kl_read._kl_read; with momentum _kl_read_mom_ch)."""
    if MOM:
        out = _kl_read_mom_ch(X1, S1, qc, d1, x1w, lb1, Lt, elt, size, SCALE, C, PREC)
    else:
        out = _kl_read(X1, qc, d1, x1w, lb1, size, SCALE, C, PREC)
    return out


@triton.jit
def _kl_tile_raw(X2, S2, d2, x2w, lb2, Lt, elt, t, C: tl.constexpr, MOM: tl.constexpr, PREC: tl.constexpr):
    """Token t's log-space layer-2 state on one tile, raw_t [K, HT] (kl_read._kl_raw; with momentum
    _kl_raw_mom_ch)."""
    if MOM:
        raw, _P, _dec, _Dt, _bt, _cvt = _kl_raw_mom_ch(X2, S2, d2, x2w, lb2, Lt, elt, t, C, PREC)
    else:
        raw, _P, _dec, _bt = _kl_raw(X2, d2, x2w, lb2, t, C, PREC)
    return raw


@triton.jit
def _kl_tile_read_bwd(du, u, X, S, z, d, xw, lb, Lt, elt, lse, size, SCALE, C: tl.constexpr, ROWS: tl.constexpr,
                      MOM: tl.constexpr, PREC: tl.constexpr):
    """VJP of one tile's kl read (kl_read._kl_read_bwd; with momentum _kl_read_mom_ch_bwd): dz, dX,
    dS, dd, dxw, dlb, dlt (dS and dlt placeholders without momentum)."""
    if MOM:
        dz, dX, dS, dd, dxw, dlb, dlt = _kl_read_mom_ch_bwd(du, u, X, S, z, d, xw, lb, Lt, elt, lse, size, SCALE,
                                                            C, ROWS, PREC)
    else:
        dz, dX, dd, dxw, dlb = _kl_read_bwd(du, u, X, z, d, xw, lb, lse, size, SCALE, C, ROWS, PREC)
        dS = X
        dlt = elt
    return dz, dX, dS, dd, dxw, dlb, dlt


@triton.jit
def _kl_reads(state1, state2, mom1, mom2, base, o1, o2, ks, qc, d2, x1w, lb1, lt, eta, alpha, row, mt, ew, bt,
              s, c, b_last, is_last, size, SCALE, C: tl.constexpr, K: tl.constexpr, HD: tl.constexpr,
              HT: tl.constexpr, ACT: tl.constexpr, RET: tl.constexpr, MOM: tl.constexpr, ETA_CH: tl.constexpr,
              ALPHA_CH: tl.constexpr, RETAIN_FIRST: tl.constexpr, PREC: tl.constexpr):
    """kl's exact reads over the hidden tiles: per tile the key pass's d1, the layer-1 read (its
    rows run over K, whole in the tile: _kl_tile_read1) and, per token, one step of an online
    softmax over the rows of W2, which run over the hidden dim: the running max, sum of
    exp(raw - max) and sum of exp(raw - max) hq of every token and row. Returns u2 [C, K] and the
    rows' log-sum-exp lse2 [C, K] (0 on padding rows) that the backward's weights need. With
    momentum each token's log-space state carries cv_t S and the step's D_t (kl_read's _mom_ch)."""
    oc = tl.arange(0, C)
    mx = tl.full([C, K], -1e30, tl.float32)
    sm = tl.zeros([C, K], dtype=tl.float32)
    nm = tl.zeros([C, K], dtype=tl.float32)
    Lt = _theta_matrix(lt, C)
    elt = tl.exp(lt)
    for j in range(HD // HT):
        e2, lb2, _b2, s2, _cg2, _bl2 = _layer_gates(eta, alpha, row, mt, ew, bt, s, c, b_last, is_last,
                                                    K + j * HT, HT, K + HD, ETA_CH, ALPHA_CH, RETAIN_FIRST)
        p1 = base + j * HT * K + o1
        p2 = base + j * HT + o2
        (X1, X2, _V1, _V2, _W1, _W2, _a1, _hk, _f1, _t1, d1,
         x2w) = _tile_keyed(state1, state2, p1, p2, 1.0, 1.0, False, SCALE, ks, s2, d2, e2, ACT, RET, PREC)
        S1, S2 = _tile_momentum(mom1, mom2, p1, p2, X1, X2, MOM)
        hq = _act(_kl_tile_read1(X1, S1, qc, d1, x1w, lb1, Lt, elt, size, SCALE, C, MOM, PREC), ACT)
        for t in range(size):
            raw = _kl_tile_raw(X2, S2, d2, x2w, lb2, Lt, elt, t, C, MOM, PREC)
            here = (oc == t)[:, None]
            m_t = _token_row(mx, t, C)
            new = tl.maximum(m_t, tl.max(raw, 1))
            e = tl.exp(raw - new[:, None])
            keep = tl.exp(m_t - new)
            sm = tl.where(here, (_token_row(sm, t, C) * keep + tl.sum(e, 1))[None, :], sm)
            nm = tl.where(here, (_token_row(nm, t, C) * keep
                                 + tl.sum(e * _token_row(hq, t, C)[None, :], 1))[None, :], nm)
            mx = tl.where(here, new[None, :], mx)
    live = sm > 0
    safe = tl.where(live, sm, 1.0)
    return tl.where(live, SCALE * nm / safe, 0.0), tl.where(live, mx + tl.log(safe), 0.0)


@triton.jit
def _read_sums(state1, state2, mom1, mom2, base, o1, o2, r1, r2, raw_start, SCALE, ks, qb1, qc, mv1, A1, d2, m, lt,
               eta, alpha, row, mt, ew, bt, s, c, b_last, is_last,
               C: tl.constexpr, K: tl.constexpr, HD: tl.constexpr, HT: tl.constexpr,
               ACT: tl.constexpr, RET: tl.constexpr, MOM: tl.constexpr, ETA_CH: tl.constexpr,
               ALPHA_CH: tl.constexpr, RETAIN_FIRST: tl.constexpr, PREC: tl.constexpr):
    """The backward's walk B: the layer-2 read's sums (hq b2) V2^T, the momentum's PS
    (_momentum_sum) [C, K] and its scores Z2 [C, C] (_tile_scores)."""
    PV = tl.zeros([C, K], dtype=tl.float32)
    PS = tl.zeros([C, K], dtype=tl.float32)
    Z2 = tl.zeros([C, C], dtype=tl.float32)
    for j in range(HD // HT):
        e2, lb2, b2, s2, _cg2, _bl2 = _layer_gates(eta, alpha, row, mt, ew, bt, s, c, b_last, is_last,
                                                   K + j * HT, HT, K + HD, ETA_CH, ALPHA_CH, RETAIN_FIRST)
        (_X1, _X2, _S1, S2, _V1, V2, _W1, _W2, _a1, _hk, _f1, _t1, _d1, _x2w, _u1p, _u1, hq,
         Zj, mv2) = _tile_pass(state1, state2, mom1, mom2, base + j * HT * K + o1, base + j * HT + o2, r1,
                               r2, raw_start, SCALE, ks, qb1, qc, mv1, A1, d2, m, lt, e2, s2, lb2, C, ACT, RET, MOM, ALPHA_CH, PREC)
        PV += _mm(hq * b2, tl.trans(V2), PREC)
        if MOM:
            PS += _momentum_sum(hq, mv2, S2, ALPHA_CH, PREC)
        Z2 += Zj
    return PV, PS, Z2


@triton.jit
def _end_tile(state1, state2, p1, p2, r1n, r2n, lse2, SCALE, RET: tl.constexpr):
    """(X1', X2', W1', W2') of one tile of the segment-end state as stored (lq: the accumulator,
    whose weights are r' X'; kl: X1' already log-normalised, X2' still raw: its rows normalise over
    the whole hidden dim, log-sum-exp lse2 [K]; elastic: raw, whose weights are shrink(X'))."""
    X1n = tl.load(state1 + p1)
    X2n = tl.load(state2 + p2)
    if RET == 3:
        X2n = X2n - lse2[:, None] + tl.log(SCALE)
        W1n = tl.exp(X1n)
        W2n = tl.exp(X2n)
    elif RET >= 4:  # elastic: stored raw, SCALE its gamma
        W1n = _shrink(X1n, SCALE, RET)
        W2n = _shrink(X2n, SCALE, RET)
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
    NEEDS_DELTA: tl.constexpr, SAVE: tl.constexpr, PREC: tl.constexpr, ETA_CH: tl.constexpr,
    ALPHA_CH: tl.constexpr, DELTA_CH: tl.constexpr,
):
    """One program per (batch, head). state1 [B*H, slots, HD, K], state2 [B*H, slots, K, HD]
    (mom1, mom2 alike for momentum) hold the carried state; slot 0 is the initial state. With
    SAVE, slot n + 1 receives the end state of segment n (slots = NS + 1); else slots = 1.
    ETA_CH: eta [B, T, H, K + HD]; ALPHA_CH: alpha [B, T, H, K + HD] (then HAS_ALPHA is False);
    DELTA_CH: delta [B, T, H, K]."""
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
        raw_start = n > 0  # elastic: the start state is stored raw past the initial slot
        if SAVE:
            cur = _slot(i_bh, n, NS + 1, HD * K)
            nxt = cur + HD * K
        else:
            cur = _slot(i_bh, 0, 1, HD * K)
            nxt = cur
        qc, kc, vc, ew, la, lth, dl, row, ptr, mt = _load_segment(
            q, k, v, eta, alpha, theta, delta, b, h, start, size, T, H, C, K, HAS_ALPHA, MOM,
            NEEDS_DELTA)
        dl = _threshold(delta, ptr, mt, dl, DELTA_CH)
        one = tl.where(mt, 1.0, 0.0)  # eta scales the write inputs, not the decays' step weights
        bt, s, _D, Dt, _coef, m, De = _decays(la, lth, one, C, RETAIN_FIRST, MOM)
        is_last = oc == size - 1
        c = tl.sum(tl.where(is_last[:, None], De, 0.0), 0)  # coef[last, i]
        b_last = tl.exp(tl.sum(la, 0))
        e1, lb1, b1, s1, cg1, bl1 = _layer_gates(eta, alpha, row, mt, ew, bt, s, c, b_last, is_last,
                                                 0, K, K + HD, ETA_CH, ALPHA_CH, RETAIN_FIRST)
        r1, r2, _n1, _n2 = _start_scales(state1, state2, cur, QX, K, HD, HT, RET)
        ks = kc * s1
        x1w = kc * e1
        qb1 = qc * b1
        m_last, step, theta_all, lt, ltl = _momentum_gates(m, Dt, lth, one, is_last)

        # ---- walk A: the key pass's output; the bias's gradient on chip
        a2 = _key_sums(state1, state2, cur, o1, o2, r1, r2, raw_start, SCALE, ks, alpha, row, mt, s, C, K, HD, HT, ACT,
                       RET, ALPHA_CH, RETAIN_FIRST, PREC)
        E = kc + _norm(a2, K, LN) - vc
        G = _bias_grad(E, vc, dl, P_EXP, SHARP, EPS, RADIUS, BIAS, NEPS, SMOOTH, DELTA_CH)
        d2 = _norm_back(a2, G, K, LN)
        if RET == 3:  # every token reads its own exact map (chunk_mlp_memory: alpha per channel)
            u2, _lse2 = _kl_reads(state1, state2, mom1, mom2, cur, o1, o2, ks, qc, d2, x1w, lb1, lt, eta, alpha,
                                  row, mt, ew, bt, s, c, b_last, is_last, size, SCALE, C, K, HD, HT, ACT, RET,
                                  MOM, ETA_CH, ALPHA_CH, RETAIN_FIRST, PREC)
        else:
            Z1, mv1 = _tile_scores(qc, x1w, lb1, lt, m, C, ALPHA_CH, MOM, PREC)
            A1 = _decayed(Z1, De, ALPHA_CH)
        cg1, mS1, _l1 = _end_gates(lb1, cg1, lt, ltl, m_last, mt, is_last, C, MOM, ALPHA_CH)

        # ---- walk B: layer-1 read, layer-2 read's sums, the tile's segment end
        PV = tl.zeros([C, K], dtype=tl.float32)
        PS = tl.zeros([C, K], dtype=tl.float32)
        Z2 = tl.zeros([C, C], dtype=tl.float32)
        nm1, ns1 = _norm_start()  # lq: the running norms of the new state
        nm2, ns2 = _norm_start()
        rmax = tl.full([K], float("-inf"), tl.float32)  # kl: the running row log-sum-exp of raw2
        rsum = tl.zeros([K], dtype=tl.float32)
        for j in range(HD // HT):
            p1 = cur + j * HT * K + o1
            p2 = cur + j * HT + o2
            e2, lb2, b2, s2, cg2, bl2 = _layer_gates(eta, alpha, row, mt, ew, bt, s, c, b_last, is_last,
                                                     K + j * HT, HT, K + HD, ETA_CH, ALPHA_CH,
                                                     RETAIN_FIRST)
            if RET == 3:  # the tile's segment end only (the reads ran in _kl_reads)
                (X1, X2, _V1, _V2, _W1, _W2, _a1, _hk, _f1, _t1, d1,
                 x2w) = _tile_keyed(state1, state2, p1, p2, r1, r2, raw_start, SCALE, ks, s2, d2, e2, ACT, RET,
                                    PREC)
                S1, S2 = _tile_momentum(mom1, mom2, p1, p2, X1, X2, MOM)
            else:
                (X1, X2, S1, S2, _V1, V2, _W1, _W2, _a1, _hk, _f1, _t1, d1, x2w, _u1p, _u1, hq,
                 Zj, mv2) = _tile_pass(state1, state2, mom1, mom2, p1, p2, r1, r2, raw_start, SCALE, ks, qb1, qc, mv1, A1, d2, m,
                                       lt, e2, s2, lb2, C, ACT, RET, MOM, ALPHA_CH, PREC)
                PV += _mm(hq * b2, tl.trans(V2), PREC)
                if MOM:
                    PS += _momentum_sum(hq, mv2, S2, ALPHA_CH, PREC)
                Z2 += Zj
            cg2, mS2, _l2 = _end_gates(lb2, cg2, lt, ltl, m_last, mt, is_last, C, MOM, ALPHA_CH)
            raw1 = bl1 * X1 - _mm(tl.trans(d1), x1w * cg1, PREC)
            raw2 = bl2 * X2 - _mm(tl.trans(d2), x2w * cg2, PREC)
            if MOM:
                raw1 += mS1 * S1
                raw2 += mS2 * S2
                S1 = theta_all * S1 - _mm(tl.trans(d1), x1w * step[:, None], PREC)
                S2 = theta_all * S2 - _mm(tl.trans(d2), x2w * step[:, None], PREC)
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
        if RET != 3:
            u2p = PV - _mm(_decayed(Z2, De, ALPHA_CH), d2, PREC)
            if MOM:
                u2p += _decayed(PS, m[:, None], ALPHA_CH)
            u2 = r2 * u2p
        out = qc + _norm(u2, K, LN)

        # ---- walk C (lq, kl, elastic): the end map over whole matrices; the last token's exact read
        if RET >= 2:
            tl.debug_barrier()
            r1n = b_last  # (kl and elastic: placeholders, _end_tile maps X' itself)
            r2n = b_last
            lse2 = rmax
            if RET == 2:
                r1n = _lq_scale_of(_norm_end(nm1, ns1, QX), QX)
                r2n = _lq_scale_of(_norm_end(nm2, ns2, QX), QX)
            elif RET == 3:
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
    NEEDS_DELTA: tl.constexpr, PREC: tl.constexpr, ETA_CH: tl.constexpr, ALPHA_CH: tl.constexpr,
    DELTA_CH: tl.constexpr,
):
    """One program per (batch, head), segments in reverse. state*, mom*: the forward's NS + 1
    slots. gx1 [B*H, HD, K], gx2 [B*H, K, HD] (gs1, gs2 alike): dL/d(carried state) at the
    current segment end, zero at the start and the initial state's gradient at the end.
    Scratch: draw1, draw2 like gx (lq, kl), sdd1, sdh [B*H, C, HD]. deta, dla, ddelta have the
    shapes of eta, alpha, delta (dla: dL/d log alpha)."""
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
        raw_start = n > 0  # elastic: the start state is stored raw past the initial slot
        cur = _slot(i_bh, n, NS + 1, HD * K)
        nxt = cur + HD * K
        qc, kc, vc, ew, la, lth, dl, row, ptr, mt = _load_segment(
            q, k, v, eta, alpha, theta, delta, b, h, start, size, T, H, C, K, HAS_ALPHA, MOM,
            NEEDS_DELTA)
        dl = _threshold(delta, ptr, mt, dl, DELTA_CH)
        base_e = row[:, None] * (K + HD)  # rows of the channel-wise gates' gradients
        dy = tl.load(do + ptr, mask=mt[:, None], other=0.0).to(tl.float32)
        is_last = oc == size - 1
        one = tl.where(mt, 1.0, 0.0)
        # D, coef (and E, G, the scores below) are recomputed where needed again rather than
        # kept alive across the walks: registers, not arithmetic, are what this kernel runs short of
        bt, s, _D, Dt, _coef, m, De = _decays(la, lth, one, C, RETAIN_FIRST, MOM)
        c = tl.sum(tl.where(is_last[:, None], De, 0.0), 0)
        b_last = tl.exp(tl.sum(la, 0))
        e1, lb1, b1, s1, cg1, bl1 = _layer_gates(eta, alpha, row, mt, ew, bt, s, c, b_last, is_last,
                                                 0, K, K + HD, ETA_CH, ALPHA_CH, RETAIN_FIRST)
        r1, r2, n1, n2 = _start_scales(state1, state2, cur, QX, K, HD, HT, RET)
        ks = kc * s1
        x1w = kc * e1
        qb1 = qc * b1
        m_last, step, theta_all, lt, ltl = _momentum_gates(m, Dt, lth, one, is_last)
        Lt = _theta_matrix(lt, C)  # (kl with momentum)
        elt = tl.exp(lt)

        # ---- recompute: walks A and B
        a2 = _key_sums(state1, state2, cur, o1, o2, r1, r2, raw_start, SCALE, ks, alpha, row, mt, s, C, K, HD, HT, ACT,
                       RET, ALPHA_CH, RETAIN_FIRST, PREC)
        d2 = _norm_back(a2, _bias_grad(kc + _norm(a2, K, LN) - vc, vc, dl, P_EXP, SHARP, EPS, RADIUS,
                                       BIAS, NEPS, SMOOTH, DELTA_CH), K, LN)
        if RET == 3:  # kl's exact reads; lse2k: the log-sum-exp of W2's rows of every token
            u2, lse2k = _kl_reads(state1, state2, mom1, mom2, cur, o1, o2, ks, qc, d2, x1w, lb1, lt, eta, alpha,
                                  row, mt, ew, bt, s, c, b_last, is_last, size, SCALE, C, K, HD, HT, ACT, RET,
                                  MOM, ETA_CH, ALPHA_CH, RETAIN_FIRST, PREC)
        else:
            Z1, mv1 = _tile_scores(qc, x1w, lb1, lt, m, C, ALPHA_CH, MOM, PREC)
            A1 = _decayed(Z1, De, ALPHA_CH)
            PV, PS, Z2 = _read_sums(state1, state2, mom1, mom2, cur, o1, o2, r1, r2, raw_start, SCALE, ks, qb1, qc, mv1, A1, d2,
                                    m, lt, eta, alpha, row, mt, ew, bt, s, c, b_last, is_last, C, K, HD, HT,
                                    ACT, RET, MOM, ETA_CH, ALPHA_CH, RETAIN_FIRST, PREC)
            A2 = _decayed(Z2, De, ALPHA_CH)
            u2p = PV - _mm(A2, d2, PREC)
            if MOM:
                u2p += _decayed(PS, m[:, None], ALPHA_CH)
            u2 = r2 * u2p
        cg1, mS1, l1 = _end_gates(lb1, cg1, lt, ltl, m_last, mt, is_last, C, MOM, ALPHA_CH)

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
                    en1 = tl.load(gx1 + g0 + p1) + r1n * dW1n
                    en2 = tl.load(gx2 + g0 + p2) + r2n * dW2n
                elif RET >= 4:  # elastic: W' = shrink(X'), X' the stored raw end map
                    en1 = tl.load(gx1 + g0 + p1) + dW1n * _shrink_grad(X1n, SCALE, RET)
                    en2 = tl.load(gx2 + g0 + p2) + dW2n * _shrink_grad(X2n, SCALE, RET)
                else:  # X' = log c + log_softmax_row(raw), W' = exp(X')
                    dL1 = tl.load(gx1 + g0 + p1) + dW1n * W1n
                    en1 = dL1 - W1n * (tl.sum(dL1, 1)[:, None] / SCALE)
                    en2 = tl.load(gx2 + g0 + p2) + dW2n * W2n
                    rs2 += tl.sum(en2, 1)
                tl.store(draw1 + g0 + p1, en1)
                tl.store(draw2 + g0 + p2, en2)
            tl.debug_barrier()
            if RET <= 3:  # (elastic's end map is element-wise: draw is complete)
                for j in range(HD // HT):  # walk C3: what needs the sums over the whole matrix
                    p1 = j * HT * K + o1
                    p2 = j * HT + o2
                    X1n, X2n, _W1n, W2n = _end_tile(state1, state2, nxt + p1, nxt + p2, r1n, r2n, lse2,
                                                    SCALE, RET)
                    en2 = tl.load(draw2 + g0 + p2)
                    if RET == 2:
                        en1 = tl.load(draw1 + g0 + p1) + _lq_scale_vjp_of(X1n, m1n, QX, dot1)
                        en2 += _lq_scale_vjp_of(X2n, m2n, QX, dot2)
                        tl.debug_barrier()
                        tl.store(draw1 + g0 + p1, en1)
                    else:  # kl's rows of W1' run over K: draw1 is complete
                        en2 -= W2n * (rs2[:, None] / SCALE)
                        tl.debug_barrier()
                    tl.store(draw2 + g0 + p2, en2)
            tl.debug_barrier()
        else:
            dyr = dy

        # ---- the layer-2 read's VJP on chip (u2 = r2 ((hq b2) V2^T + (hq mv2) S2^T - A2 d2), mv2 = m per head)
        du2 = _norm_back(u2, dyr, K, LN)
        db = tl.zeros([C], dtype=tl.float32)  # per-head alpha: dL/db, b = exp(L)
        dm = tl.zeros([C], dtype=tl.float32)  # per head: dL/dm, m the chunk-start momentum's weight
        if RET == 3:
            dd2 = tl.zeros([C, K], dtype=tl.float32)  # walk D sums the reads' part over tiles
        else:
            dA2 = -r2 * _mm(du2, tl.trans(d2), PREC)
            dd2 = -r2 * _mm(tl.trans(A2), du2, PREC)
            dr2 = tl.sum(tl.sum(du2 * u2p, 1), 0)
            if MOM:
                dm = r2 * tl.sum(du2 * PS, 1)  # (per head: PS = sum of hq S2^T, _momentum_sum)
            dDe = dA2 * Z2  # (per-head alpha)

        # ---- walk D: per tile the end map's VJP, both reads' and the key pass's first half
        dqb1 = tl.zeros([C, K], dtype=tl.float32)  # dL/d(q b1)
        dq_kl = tl.zeros([C, K], dtype=tl.float32)  # kl: the layer-1 read's dq, dx1w, dlb1
        dx1_kl = tl.zeros([C, K], dtype=tl.float32)
        dlb1_kl = tl.zeros([C, K], dtype=tl.float32)
        dw1 = tl.zeros([C, K], dtype=tl.float32)  # sum over tiles of d1 draw1: -dL/d(x1w cg1)
        ds1m = tl.zeros([C, K], dtype=tl.float32)  # momentum: d1 dS1'
        Q2 = tl.zeros([C, K], dtype=tl.float32)  # momentum: x2w dS2'^T
        dqm1 = tl.zeros([C, K], dtype=tl.float32)  # momentum: dL/d(q mv1)
        dcl1 = tl.zeros([K], dtype=tl.float32)  # momentum, channel-wise alpha: <S1, draw1> per channel
        dlt = tl.zeros([C], dtype=tl.float32)  # ... dL/d lt, lt = cumsum(log theta)
        dltl = tl.zeros([], dtype=tl.float32)  # ... and of its last, log Theta_C
        dA1 = tl.zeros([C, C], dtype=tl.float32)
        dc = tl.zeros([C], dtype=tl.float32)
        ds = tl.zeros([C], dtype=tl.float32)
        dstep = tl.zeros([C], dtype=tl.float32)
        geta = tl.zeros([C], dtype=tl.float32)  # per-head eta's gradient
        el1 = tl.zeros([K], dtype=tl.float32)  # channel alpha: <X1, draw1> b1_last per channel
        e_dot = tl.zeros([], dtype=tl.float32)  # <X, draw>: d b_last
        s_dot = tl.zeros([], dtype=tl.float32)  # momentum: <S, draw>: d m_last
        lt_dot = tl.zeros([], dtype=tl.float32)  # momentum: theta_all <S, dS'>
        dr1 = tl.zeros([], dtype=tl.float32)
        dw2_dot = tl.zeros([], dtype=tl.float32)  # lq: <dW2, X2>
        for j in range(HD // HT):
            p1 = j * HT * K + o1
            p2 = j * HT + o2
            pc = c0 + j * HT + ocd
            pe = base_e + K + j * HT + oht[None, :]  # this tile's columns of the channel gates
            e2, lb2, b2, s2, cg2, bl2 = _layer_gates(eta, alpha, row, mt, ew, bt, s, c, b_last, is_last,
                                                     K + j * HT, HT, K + HD, ETA_CH, ALPHA_CH,
                                                     RETAIN_FIRST)
            if RET == 3:
                X1, X2, V1, V2, W1, W2, a1, hk, f1, t1, d1, x2w = _tile_keyed(
                    state1, state2, cur + p1, cur + p2, r1, r2, raw_start, SCALE, ks, s2, d2, e2, ACT, RET, PREC)
                S1, S2 = _tile_momentum(mom1, mom2, cur + p1, cur + p2, X1, X2, MOM)
                u1 = _kl_tile_read1(X1, S1, qc, d1, x1w, lb1, Lt, elt, size, SCALE, C, MOM, PREC)
                hq = _act(u1, ACT)
            else:
                (X1, X2, S1, S2, V1, V2, W1, W2, a1, hk, f1, t1, d1, x2w, u1p, u1, hq,
                 _Zj, mv2) = _tile_pass(state1, state2, mom1, mom2, cur + p1, cur + p2, r1, r2, raw_start, SCALE, ks, qb1,
                                        qc, mv1, A1, d2, m, lt, e2, s2, lb2, C, ACT, RET, MOM, ALPHA_CH, PREC)
            if RET >= 2:
                en1 = tl.load(draw1 + g0 + p1)
                en2 = tl.load(draw2 + g0 + p2)
            else:
                en1 = tl.load(gx1 + g0 + p1)
                en2 = tl.load(gx2 + g0 + p2)
            # the end map raw_l = bl_l X_l - d_l^T (x_lw cg_l) (+ mS_l S_l: _end_gates)
            cg2, mS2, l2 = _end_gates(lb2, cg2, lt, ltl, m_last, mt, is_last, C, MOM, ALPHA_CH)
            dd1 = -_mm(x1w * cg1, tl.trans(en1), PREC)  # [C, HT]
            dw1 += _mm(d1, en1, PREC)
            dd2 -= _mm(x2w * cg2, tl.trans(en2), PREC)
            dw2 = -_mm(d2, en2, PREC)  # dL/d(x2w cg2) [C, HT]
            dx2w = dw2 * cg2
            if ALPHA_CH:  # cg = exp(lb_last - lb) (momentum: D[last]), bl = exp(lb_last)
                el1 += tl.sum(X1 * en1 * bl1, 0)
                if MOM:  # through D[last] and cv_last (Theta_C / Theta_i's part: dstep, after walk D)
                    dlbe, dlbl, dlte, dltle = _momentum_ends_ch_bwd(dw2 * x2w, tl.sum(en2 * S2, 0), dlt * 0.0,
                                                                    lb2, l2, lt, ltl, mt, C)
                    dlb2 = dlbe + tl.where(is_last[:, None], (dlbl + tl.sum(X2 * en2 * bl2, 0))[None, :], 0.0)
                    dlt += dlte
                    dltl += dltle
                    dcl1 += tl.sum(S1 * en1, 0)
                else:
                    tg2 = dw2 * x2w * cg2
                    dlb2 = tl.where(is_last[:, None], (tl.sum(tg2, 0) + tl.sum(X2 * en2 * bl2, 0))[None, :],
                                    0.0) - tg2
            else:
                e_dot += tl.sum(tl.sum(X1 * en1, 1), 0) + tl.sum(tl.sum(X2 * en2, 1), 0)
                dc += tl.sum(dw2 * x2w, 1)
            if MOM:  # S_l' = Theta_C S_l - sum_i step_i d_li x_li^T
                dS1n = tl.load(gs1 + g0 + p1)
                dS2n = tl.load(gs2 + g0 + p2)
                s_dot += tl.sum(tl.sum(S1 * en1, 1), 0) + tl.sum(tl.sum(S2 * en2, 1), 0)
                lt_dot += theta_all * (tl.sum(tl.sum(S1 * dS1n, 1), 0) + tl.sum(tl.sum(S2 * dS2n, 1), 0))
                gS1 = mS1 * en1 + theta_all * dS1n
                gS2 = mS2 * en2 + theta_all * dS2n
                Q1 = _mm(x1w, tl.trans(dS1n), PREC)
                dd1 -= step[:, None] * Q1
                ds1m += _mm(d1, dS1n, PREC)
                dstep -= tl.sum(d1 * Q1, 1)
                Q2 += _mm(x2w, tl.trans(dS2n), PREC)
                dx2w -= step[:, None] * _mm(d2, dS2n, PREC)
            if RET == 3:  # kl's exact reads, every token's weights recomputed (gX: of the log-weights)
                dhq, gX2, dSr, dd2r, dx, dlbs, dlts = _kl_tile_read_bwd(
                    du2, u2, X2, S2, hq, d2, x2w, lb2, Lt, elt, lse2k, size, SCALE, C, True, MOM, PREC)
                if MOM:  # (and S's, and theta's through D_t and cv_t)
                    gS2 += dSr
                    dlt += dlts
                dd2 += dd2r
                dx2w += dx
                dlb2 += dlbs
                du1 = dhq * _act_grad(u1, ACT)
                dq1, gX1, dSr, dd1r, dx, dlbs, dlts = _kl_tile_read_bwd(
                    du1, u1, X1, S1, qc, d1, x1w, lb1, Lt, elt, u1, size, SCALE, C, False, MOM, PREC)
                if MOM:
                    gS1 += dSr
                    dlt += dlts
                dd1 += dd1r
                dq_kl += dq1
                dx1_kl += dx
                dlb1_kl += dlbs
            else:
                # the layer-2 read (z = hq, write input x2w, d = d2)
                gX2 = r2 * _mm(tl.trans(du2), hq * b2, PREC)
                dhqb = r2 * _mm(du2, V2, PREC)  # dL/d(hq b2)
                dhm2 = hq * 0.0  # dL/d(hq mv2) (momentum)
                if MOM:
                    dhm2 = r2 * _mm(du2, S2, PREC)
                    gS2 += r2 * _mm(tl.trans(du2), hq * mv2, PREC)
                dz, dx, dlbs, dlts = _scores_vjp(dA2, dhm2 * hq, hq, x2w, lb2, lt, De, C, ALPHA_CH, MOM, PREC)
                dhq = dhqb * b2 + dz
                if MOM:
                    dhq += dhm2 * mv2
                dx2w += dx
                if ALPHA_CH:
                    dlb2 += dlbs + dhqb * hq * b2
                    if MOM:
                        dlt += dlts
                else:
                    db += tl.sum(dhqb * hq, 1)
                # the layer-1 read (z = q, write input x1w, d = d1)
                du1 = dhq * _act_grad(u1, ACT)
                gX1 = r1 * _mm(tl.trans(du1), qb1, PREC)
                dr1 += tl.sum(tl.sum(du1 * u1p, 1), 0)
                dqb1 += r1 * _mm(du1, V1, PREC)
                if MOM:
                    gS1 += r1 * _mm(tl.trans(du1), qc * mv1, PREC)
                    dqm1 += r1 * _mm(du1, S1, PREC)
                dA1 -= r1 * _mm(du1, tl.trans(d1), PREC)
                dd1 -= r1 * _mm(tl.trans(A1), du1, PREC)
            # the key pass, first half: d1 = (d2 W2) act'(a1) s2
            dt1 = dd1 * s2 * f1
            dd2 += _mm(dt1, tl.trans(W2), PREC)
            dW2 = _mm(tl.trans(d2), dt1, PREC)
            ds2 = dd1 * t1 * f1  # dL/ds2 so far (walk E adds the rest)
            # the write input x2w = hk e2: eta's gradient, and hk's (stored for walk E)
            dh = dx2w * e2
            if ETA_CH:
                tl.store(deta + pe, dx2w * hk, mask=mt[:, None])
            else:
                geta += tl.sum(dx2w * hk, 1)
            if ALPHA_CH:  # dL/d log alpha of the tile's channels (l2's retained point: more in walk E)
                if RETAIN_FIRST:
                    dlb2 += ds2 * s2
                tl.store(dla + pe, tl.cumsum(dlb2, 0, reverse=True), mask=mt[:, None])
            else:
                ds += tl.sum(ds2, 1)
            # the state's gradient so far (the key pass adds dW1 and the rest of dW2 in walk E)
            if RET == 2:
                gX1 += bl1 * en1
                gX2 += r2 * dW2 + bl2 * en2
                dw2_dot += tl.sum(tl.sum(dW2 * X2, 1), 0)
            elif RET == 3:  # the reads' part is of X already; the key pass ran at V = exp(X)
                gX1 += bl1 * en1
                gX2 += dW2 * V2 + bl2 * en2
            else:
                gX1 += bl1 * en1
                gX2 += dW2 + bl2 * en2
            tl.debug_barrier()
            tl.store(gx1 + g0 + p1, gX1)
            tl.store(gx2 + g0 + p2, gX2)
            if MOM:
                tl.store(gs1 + g0 + p1, gS1)
                tl.store(gs2 + g0 + p2, gS2)
            tl.store(sdd1 + pc, dd1)
            tl.store(sdh + pc, dh)
        tl.debug_barrier()
        if MOM:
            dd2 -= step[:, None] * Q2
            dstep -= tl.sum(d2 * Q2, 1)

        # ---- layer 1 on chip: the end map's and the scores' VJP, then x1w = k e1
        dx1w = -dw1 * cg1
        if MOM:
            dx1w -= step[:, None] * ds1m
        if RET == 3:
            dz = dq_kl
            dx = dx1_kl
            dlbs = dlb1_kl
            dlts = dlt * 0.0  # (walk D added kl's reads' part of dlt)
        else:
            if MOM:  # the layer-1 read's q mv1 S1^T
                dqc += dqm1 * mv1
                dm += tl.sum(dqm1 * qc, 1)  # (per head)
            dz, dx, dlbs, dlts = _scores_vjp(dA1, dqm1 * qc, qc, x1w, lb1, lt, De, C, ALPHA_CH, MOM, PREC)
        dqc += dz + dqb1 * b1
        dx1w += dx
        if ALPHA_CH:
            if MOM:  # the end map's D[last], cv_last and Theta_C / Theta_i (dstep, both layers')
                dlbe, dlbl, dlte, dltle = _momentum_ends_ch_bwd(-dw1 * x1w, dcl1, dstep, lb1, l1, lt, ltl, mt, C)
                dlb1 = dlbs + dlbe + dqb1 * qc * b1
                dlb1 += tl.where(is_last[:, None], (dlbl + el1)[None, :], 0.0)
                dlt += dlts + dlte + tl.where(is_last, dltl + dltle + lt_dot, 0.0)
                tl.store(dlth + row, tl.cumsum(dlt, 0, reverse=True), mask=mt)
            else:
                tg1 = -dw1 * x1w * cg1
                dlb1 = dlbs - tg1 + dqb1 * qc * b1
                dlb1 += tl.where(is_last[:, None], (tl.sum(tg1, 0) + el1)[None, :], 0.0)
        else:
            dc -= tl.sum(dw1 * x1w, 1)
            db += tl.sum(dqb1 * qc, 1) + tl.where(is_last, e_dot, 0.0)
            dDe += dA1 * Z1 + tl.where(is_last[:, None], dc[None, :], 0.0)
            if MOM:
                dm += tl.where(is_last, s_dot, 0.0)
        dkc = dx1w * e1
        if ETA_CH:
            tl.store(deta + base_e + ok[None, :], dx1w * kc, mask=mt[:, None])
        else:
            tl.store(deta + row, geta + tl.sum(dx1w * kc, 1), mask=mt)

        # ---- the key pass's LayerNorm and bias on chip
        E = kc + _norm(a2, K, LN) - vc
        G = _bias_grad(E, vc, dl, P_EXP, SHARP, EPS, RADIUS, BIAS, NEPS, SMOOTH, DELTA_CH)
        dE, ddl, dvc, da2 = _bias_vjp(a2, E, G, dd2, dl, P_EXP, SHARP, EPS, RADIUS, K, BIAS, NEPS,
                                      SMOOTH, LN, DELTA_CH)
        dkc += dE

        # ---- walk E: the key pass, second half (dW2 += da2^T hs, dW1 = da1^T ks)
        dks = tl.zeros([C, K], dtype=tl.float32)
        dw1_dot = tl.zeros([], dtype=tl.float32)
        for j in range(HD // HT):
            p1 = j * HT * K + o1
            p2 = j * HT + o2
            pc = c0 + j * HT + ocd
            s2 = _tile_scale(alpha, row, mt, s, K + j * HT, HT, K + HD, ALPHA_CH, RETAIN_FIRST)
            X1, X2, V1, V2, W1, W2 = _tile(state1, state2, cur + p1, cur + p2, r1, r2, raw_start, SCALE, RET)
            a1, hk, f1, t1, _d1 = _tile_keys(W1, W2, ks, s2, d2, ACT, PREC)
            dd1 = tl.load(sdd1 + pc)
            dh = tl.load(sdh + pc)
            dW2 = _mm(tl.trans(da2), hk * s2, PREC)
            dhs = _mm(da2, W2, PREC)
            dh += dhs * s2
            ds2 = dhs * hk
            if ALPHA_CH:
                if RETAIN_FIRST:  # the rest of dL/d log alpha of the tile's channels
                    pa = dla + base_e + K + j * HT + oht[None, :]
                    dla2 = tl.load(pa, mask=mt[:, None], other=0.0)
                    dla2 += tl.cumsum(ds2 * s2, 0, reverse=True)
                    tl.debug_barrier()
                    tl.store(pa, dla2, mask=mt[:, None])
            else:
                ds += tl.sum(ds2, 1)
            da1 = dd1 * s2 * t1 * _act_grad2(a1, ACT) + dh * f1
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
        dkc += dks * s1
        if ALPHA_CH:
            if RETAIN_FIRST:
                dlb1 += dks * kc * s1
        else:
            ds += tl.sum(dks * kc, 1)
            if RETAIN_FIRST:
                db += ds

        # ---- walk F (lq, elastic): the start state's map to the reads' base and weights,
        # W_l = r_l X_l (lq: the read scales' VJP), V_l = shrink(X_l) (elastic, past slot 0)
        if RET == 2 or RET >= 4:
            tl.debug_barrier()
            for j in range(HD // HT):
                p1 = j * HT * K + o1
                p2 = j * HT + o2
                X1 = tl.load(state1 + cur + p1)
                X2 = tl.load(state2 + cur + p2)
                gX1 = _start_map_vjp(tl.load(gx1 + g0 + p1), X1, n1, dr1 + dw1_dot, raw_start, QX, SCALE, RET)
                gX2 = _start_map_vjp(tl.load(gx2 + g0 + p2), X2, n2, dr2 + dw2_dot, raw_start, QX, SCALE, RET)
                tl.debug_barrier()
                tl.store(gx1 + g0 + p1, gX1)
                tl.store(gx2 + g0 + p2, gX2)

        # ---- gates. Channel-wise: lb = cumsum(log alpha) per channel. Per head: D[t, i] =
        # exp(L_t - L_i), b = exp(L), L = cumsum(log alpha); momentum: coef = D @ Dt,
        # Dt[j, i] = exp(Lt_j - Lt_i), m = D @ exp(Lt), Lt = cumsum(log theta)
        if ALPHA_CH:
            tl.store(dla + base_e + ok[None, :], tl.cumsum(dlb1, 0, reverse=True), mask=mt[:, None])
        else:
            bt, _s, D, Dt, _coef, _m, _De = _decays(la, lth, one, C, RETAIN_FIRST, MOM)
            dcoef = dDe * one[None, :]
            if MOM:
                dDt = tl.where(is_last[:, None], (dstep * one)[None, :], 0.0)
            else:  # placeholders: _decay_grads reads neither without momentum
                dDt = dcoef
                dm = db
            dL, dlt = _decay_grads(dcoef, dDt, db, bt, D, Dt, dm, lth, lt_dot, causal, is_last, MOM)
            if MOM:
                tl.store(dlth + row, tl.cumsum(dlt, 0, reverse=True), mask=mt)
            tl.store(dla + row, tl.cumsum(dL, 0, reverse=True), mask=mt)
        if DELTA_CH:
            tl.store(ddelta + ptr, ddl, mask=mt[:, None])
        elif NEEDS_DELTA:
            tl.store(ddelta + row, ddl, mask=mt)
        tl.store(dq + ptr, dqc, mask=mt[:, None])
        tl.store(dk + ptr, dkc, mask=mt[:, None])
        tl.store(dv + ptr, dvc, mask=mt[:, None])
        tl.debug_barrier()  # the next (earlier) segment reads this one's state gradient


def num_warps(chunk_size: int, key_dim: int, hidden_tile: int, kl: bool = False) -> int:
    """Warps per program: the [C, K], [C, C] and [C, HT] tiles live in registers (see
    benchmarks/kernel_resources.py for the spills this leaves on sm_90). kl retention (its
    per-token reads) takes 4 at every shape: with 8 its backward at K = 64, chunk 64 needed 240
    KiB of shared memory on sm_90 (232 with a tile of 16), over an H100's 227; with 4, 176."""
    if kl:
        return 4
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
