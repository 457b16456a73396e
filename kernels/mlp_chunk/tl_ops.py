"""Triton helpers of the two MLP-memory kernels (chunk.py keeps W on chip, tiled.py loops over
hidden tiles): activations and their derivatives, the layer norm and its vector-Jacobian
products, lq's tiled norm, the segment's loads, decays and end states, and the channel-wise
gates' loads and decayed scores (channel.py and tiled.py). kl's exact per-token reads are in
kernels/kl_read.py, lq's whole-tile norm and the shared bias helpers in kernels/common.py."""

from __future__ import annotations

import triton
import triton.language as tl

from miras_search.primitives import LN_EPS

from ..common import (
    _TINY,
    _bias_grad,
    _bias_grad_bwd,
    _lq_scale,
    _lq_scale_vjp,
    _mm,
    _token_row,
)
from ..kl_read import _log_softmax_rows

# constants read inside the kernels must be constexpr globals for Triton's compiler
_LN_EPS = tl.constexpr(LN_EPS)


@triton.jit
def _program(H, C: tl.constexpr, K: tl.constexpr, HD: tl.constexpr):
    """The whole-W kernels' start: this program's batch x head index, b, h, the chunk rows [C],
    the key and hidden ranges [K], [HD], and the offsets of a [HD, K] and a [K, HD] matrix."""
    i_bh = tl.program_id(0)
    ok = tl.arange(0, K)
    oh = tl.arange(0, HD)
    return (i_bh, i_bh // H, i_bh % H, tl.arange(0, C), ok, oh,
            oh[:, None] * K + ok[None, :], ok[:, None] * HD + oh[None, :])


@triton.jit
def _act(z, ACT: tl.constexpr):
    if ACT == 0:
        out = 0.5 * z * (1.0 + tl.erf(z * 0.7071067811865476))
    elif ACT == 1:
        out = z * tl.sigmoid(z)
    else:
        out = tl.maximum(z, 0.0)
    return out


@triton.jit
def _act_grad(z, ACT: tl.constexpr):
    if ACT == 0:
        out = 0.5 * (1.0 + tl.erf(z * 0.7071067811865476)) + z * tl.exp(-0.5 * z * z) * 0.3989422804014327
    elif ACT == 1:
        s = tl.sigmoid(z)
        out = s * (1.0 + z * (1.0 - s))
    else:
        out = tl.where(z > 0, 1.0, 0.0)
    return out


@triton.jit
def _act_grad2(z, ACT: tl.constexpr):
    if ACT == 0:
        out = tl.exp(-0.5 * z * z) * 0.3989422804014327 * (2.0 - z * z)
    elif ACT == 1:
        s = tl.sigmoid(z)
        out = s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s))
    else:
        out = tl.zeros_like(z)
    return out


@triton.jit
def _ln_stats(z, DIM: tl.constexpr):
    """(y, sigma) of the layer norm over the rows of z [C, DIM]."""
    zc = z - (tl.sum(z, 1) / DIM)[:, None]
    sigma = tl.sqrt(tl.sum(zc * zc, 1) / DIM + _LN_EPS)
    return zc / sigma[:, None], sigma


@triton.jit
def _norm(z, DIM: tl.constexpr, LN: tl.constexpr):
    if LN:
        out, _ = _ln_stats(z, DIM)
    else:
        out = z
    return out


@triton.jit
def _norm_back(z, g, DIM: tl.constexpr, LN: tl.constexpr):
    """N'(z)^T g per row (identity without layer norm)."""
    if LN:
        y, sigma = _ln_stats(z, DIM)
        out = (g - (tl.sum(g, 1) / DIM)[:, None] - y * (tl.sum(g * y, 1) / DIM)[:, None]) / sigma[:, None]
    else:
        out = g
    return out


@triton.jit
def _norm_back_vjp(z, g, u, DIM: tl.constexpr):
    """(dz, dg) of <u, N'(z)^T g> for the layer norm."""
    y, sigma = _ln_stats(z, DIM)
    d2 = _norm_back(z, g, DIM, True)
    gy = tl.sum(g * y, 1)[:, None]
    uy = tl.sum(u * y, 1)[:, None]
    ud = tl.sum(u * d2, 1)[:, None]
    ns = DIM * sigma[:, None]
    dz = _norm_back(z, -(u * gy + g * uy) / ns, DIM, True) - y * ud / ns
    return dz, _norm_back(z, u, DIM, True)


@triton.jit
def _scales(X1, X2, QX, RET: tl.constexpr):
    if RET == 2:
        r1 = _lq_scale(X1, QX)
        r2 = _lq_scale(X2, QX)
    else:
        r1 = 1.0
        r2 = 1.0
    return r1, r2


@triton.jit
def _read_base(x, RET: tl.constexpr):
    """The weights the reads grow from: exp of kl's carried log-weights, else the state itself."""
    if RET == 3:
        out = tl.exp(x)
    else:
        out = x
    return out


@triton.jit
def _atan(z):
    """arctan, elementwise (Triton's interpreter has no libdevice.atan): |z| > 1 folds to
    pi/2 - atan(1/|z|), two half-angle steps t / (1 + sqrt(1 + t^2)) bring t under tan(pi/16),
    where six terms of the series leave an error under 1e-10."""
    a = tl.abs(z)
    big = a > 1.0
    t = tl.where(big, 1.0 / tl.maximum(a, 1.0), a)
    t = t / (1.0 + tl.sqrt(1.0 + t * t))
    t = t / (1.0 + tl.sqrt(1.0 + t * t))
    t2 = t * t
    series = t * (1.0 + t2 * (-1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (-1.0 / 7.0 + t2 * (1.0 / 9.0 - t2 / 11.0)))))
    out = 4.0 * series
    out = tl.where(big, 1.5707963267948966 - out, out)
    return tl.where(z < 0.0, -out, out)


@triton.jit
def _shrink(x, GAMMA, RET: tl.constexpr):
    """Elastic retention's soft threshold at GAMMA: the smooth surrogate
    |x| atan(x / GAMMA) / (pi / 2) (RET 4), or sign(x) max(|x| - GAMMA, 0) (RET 5)."""
    if RET == 4:
        out = tl.abs(x) * _atan(x / GAMMA) * 0.6366197723675814
    else:
        out = tl.where(x > GAMMA, x - GAMMA, tl.where(x < -GAMMA, x + GAMMA, 0.0))
    return out


@triton.jit
def _shrink_grad(x, GAMMA, RET: tl.constexpr):
    """d _shrink / dx: (atan(|x| / GAMMA) + |x| GAMMA / (GAMMA^2 + x^2)) / (pi / 2) for the
    surrogate (RET 4), 1 past the threshold and 0 inside it (RET 5)."""
    if RET == 4:
        a = tl.abs(x)
        out = (_atan(a / GAMMA) + a * GAMMA / (GAMMA * GAMMA + x * x)) * 0.6366197723675814
    else:
        out = tl.where(tl.abs(x) > GAMMA, 1.0, 0.0)
    return out


@triton.jit
def _end_weights(raw, QX, SCALE, RET: tl.constexpr):
    """(carried state, read weights) of the segment end from raw (SCALE: kl's c, elastic's
    threshold gamma)."""
    if RET == 3:
        x = _log_softmax_rows(raw, SCALE)
        w = tl.exp(x)
    elif RET == 2:
        x = raw
        w = raw * _lq_scale(raw, QX)
    elif RET >= 4:
        x = _shrink(raw, SCALE, RET)
        w = x
    else:
        x = raw
        w = raw
    return x, w


@triton.jit
def _load_segment(q, k, v, eta, alpha, theta, delta, b, h, start, size, T, H,
                  C: tl.constexpr, K: tl.constexpr, HAS_ALPHA: tl.constexpr, MOM: tl.constexpr,
                  NEEDS_DELTA: tl.constexpr):
    """Tiles of one segment; rows past ``size`` are tokens with k = v = q = 0, eta = 0 and
    alpha = theta = 1."""
    oc = tl.arange(0, C)
    ok = tl.arange(0, K)
    mt = oc < size
    row = (b * T + start + oc) * H + h
    ptr = row[:, None] * K + ok[None, :]
    qc = tl.load(q + ptr, mask=mt[:, None], other=0.0).to(tl.float32)
    kc = tl.load(k + ptr, mask=mt[:, None], other=0.0).to(tl.float32)
    vc = tl.load(v + ptr, mask=mt[:, None], other=0.0).to(tl.float32)
    et = tl.load(eta + row, mask=mt, other=0.0).to(tl.float32)
    if HAS_ALPHA:
        la = tl.log(tl.load(alpha + row, mask=mt, other=1.0).to(tl.float32))
    else:
        la = tl.zeros([C], dtype=tl.float32)
    if MOM:
        lth = tl.log(tl.load(theta + row, mask=mt, other=1.0).to(tl.float32))
    else:
        lth = la
    if NEEDS_DELTA:
        dl = tl.load(delta + row, mask=mt, other=1.0).to(tl.float32)
    else:
        dl = et
    return qc, kc, vc, et, la, lth, dl, row, ptr, mt


@triton.jit
def _decays(la, lth, et, C: tl.constexpr, RETAIN_FIRST: tl.constexpr, MOM: tl.constexpr):
    """b = exp(L) [C], the gradient scale s [C], D [C, C] and for momentum Dt [C, C] (theta's
    D) and m [C] (how much of S_0 reaches t); the step weights W = coef * eta [C, C] with
    coef = D (gd) or D @ Dt (momentum). Without momentum Dt and m are placeholders."""
    oc = tl.arange(0, C)
    causal = oc[:, None] >= oc[None, :]
    lb = tl.cumsum(la, 0)
    bt = tl.exp(lb)
    D = tl.exp(tl.where(causal, lb[:, None] - lb[None, :], float("-inf")))
    if RETAIN_FIRST:
        s = bt
    else:
        s = tl.full([C], 1.0, tl.float32)
    if MOM:
        lt = tl.cumsum(lth, 0)
        Dt = tl.exp(tl.where(causal, lt[:, None] - lt[None, :], float("-inf")))
        coef = tl.dot(D, Dt, input_precision="ieee")
        m = tl.sum(D * tl.exp(lt)[None, :], 1)
    else:
        Dt = D
        coef = D
        m = bt
    return bt, s, D, Dt, coef, m, coef * et[None, :]


@triton.jit
def _decay_grads(dcoef, dDt, db, bt, D, Dt, dm, lth, lt_last, causal, is_last, MOM: tl.constexpr):
    """Per-token gradients of the per-head log-decays from those of the chunk's coefficients
    (``_decays``): dcoef [C, C] of coef, dDt [C, C] of Dt from elsewhere (momentum: the end
    step's row), db [C] of b, dm [C] of m, lt_last the carried momentum's part at the last token.
    Returns (dL, dLt) [C] of L = cumsum(log alpha) and Lt = cumsum(log theta) per token, before
    the reverse cumsum that takes them to log alpha and log theta; dLt is 0 without momentum."""
    if MOM:
        elt = tl.exp(tl.cumsum(lth, 0))
        dD = tl.dot(dcoef, tl.trans(Dt), input_precision="ieee") + dm[:, None] * elt[None, :]
        dDt += tl.dot(tl.trans(D), dcoef, input_precision="ieee")
        Z = tl.where(causal, dDt * Dt, 0.0)
        dlt = tl.sum(Z, 1) - tl.sum(Z, 0) + tl.sum(D * dm[:, None], 0) * elt
        dlt += tl.where(is_last, lt_last, 0.0)
    else:
        dD = dcoef
        dlt = db * 0.0
    Y = tl.where(causal, dD * D, 0.0)
    return db * bt + tl.sum(Y, 1) - tl.sum(Y, 0), dlt


@triton.jit
def _norm_start():
    """(max, sum) of a running q-norm before its first block: the floor and zero."""
    mx = tl.zeros([], dtype=tl.float32) + _TINY
    return mx, tl.zeros([], dtype=tl.float32)


@triton.jit
def _norm_update(x, mx, acc, QX):
    """One block x's step of a running q-norm: the maximum mx of |X| so far and the sum acc of
    (|X| / mx)^q, rescaled when the maximum grows (as _lq_norm, which sees the whole matrix)."""
    ax = tl.abs(x)
    new = tl.maximum(mx, tl.max(tl.max(ax, 1), 0))
    p = tl.where(ax > 0, tl.exp(QX * tl.log(ax / new)), 0.0)
    return new, acc * tl.exp(QX * tl.log(mx / new)) + tl.sum(tl.sum(p, 1), 0)


@triton.jit
def _norm_end(mx, acc, QX):
    """||X||_q from a running (max, sum)."""
    return mx * tl.exp(tl.log(acc) / QX)


@triton.jit
def _lq_norm_tiles(ptr, QX, K: tl.constexpr, HD: tl.constexpr, HT: tl.constexpr):
    """||X||_q of a [HD, K] (or [K, HD]: the norm ignores the layout) matrix in global memory,
    read in [HT, K] blocks."""
    off = tl.arange(0, HT)[:, None] * K + tl.arange(0, K)[None, :]
    mx, acc = _norm_start()
    for j in range(HD // HT):
        mx, acc = _norm_update(tl.load(ptr + j * HT * K + off), mx, acc, QX)
    return _norm_end(mx, acc, QX)


@triton.jit
def _gate_block(gate, row, mt, WIDTH: tl.constexpr, col, N: tl.constexpr, PAD: tl.constexpr):
    """Columns col .. col + N of one segment of a channel-wise gate [B, T, H, WIDTH]: [C, N] in
    float32, PAD on padding rows."""
    ptr = gate + row[:, None] * WIDTH + col + tl.arange(0, N)[None, :]
    return tl.load(ptr, mask=mt[:, None], other=PAD).to(tl.float32)


@triton.jit
def _channel_steps(gate, row, mt, K: tl.constexpr, HD: tl.constexpr, PAD: tl.constexpr):
    """One segment of a gate per input channel of W1, then of W2 ([B, T, H, K + HD]: eta, alpha):
    [C, K] and [C, HD] in float32, PAD on padding rows."""
    return _gate_block(gate, row, mt, K + HD, 0, K, PAD), _gate_block(gate, row, mt, K + HD, K, HD, PAD)


@triton.jit
def _threshold(delta, ptr, mt, dl, DELTA_CH: tl.constexpr):
    """The Huber threshold: per value channel [C, K] with DELTA_CH (delta [B, T, H, K]), else
    the per-head one ``dl`` [C] as loaded by _load_segment."""
    if DELTA_CH:
        out = tl.load(delta + ptr, mask=mt[:, None], other=1.0).to(tl.float32)
    else:
        out = dl
    return out


@triton.jit
def _scores(z, x, lb, C: tl.constexpr):
    """Channel-wise decayed scores A[t, i] = sum_c z_tc x_ic exp(lb_tc - lb_ic) for i <= t, 0
    above; [C, C] from z, x, lb [C, n]. Summed column by column with each exponent a difference
    (at most 0), so no decay can overflow."""
    oc = tl.arange(0, C)
    A = tl.zeros([C, C], dtype=tl.float32)
    for i in range(C):
        x_i = _token_row(x, i, C)
        lb_i = _token_row(lb, i, C)
        dec = tl.exp(tl.where((oc >= i)[:, None], lb - lb_i[None, :], float("-inf")))
        col = tl.sum(z * x_i[None, :] * dec, 1)
        A += tl.where((oc == i)[None, :], col[:, None], 0.0)
    return A


@triton.jit
def _scores_bwd(dA, z, x, lb, C: tl.constexpr):
    """(dz, dx, dlb) [C, n] from dA [C, C] through _scores."""
    oc = tl.arange(0, C)
    dz = tl.zeros_like(z)
    dx = tl.zeros_like(x)
    dlb = tl.zeros_like(lb)
    for i in range(C):
        here = oc == i
        x_i = _token_row(x, i, C)
        lb_i = _token_row(lb, i, C)
        dec = tl.exp(tl.where((oc >= i)[:, None], lb - lb_i[None, :], float("-inf")))
        dA_i = tl.sum(tl.where(here[None, :], dA, 0.0), 1)  # column i of dA
        P = dA_i[:, None] * dec
        dz += P * x_i[None, :]
        term = P * z * x_i[None, :]
        dx += tl.where(here[:, None], tl.sum(P * z, 0)[None, :], 0.0)
        dlb += term - tl.where(here[:, None], tl.sum(term, 0)[None, :], 0.0)
    return dz, dx, dlb


@triton.jit
def _key_pass(W1, W2, kc, vc, dl, s1, s2, P_EXP, SHARP, EPS, RADIUS,
              K: tl.constexpr, BIAS: tl.constexpr, NEPS: tl.constexpr, SMOOTH: tl.constexpr,
              ACT: tl.constexpr, LN: tl.constexpr, PREC: tl.constexpr, DELTA_CH: tl.constexpr):
    """The memory at the gradient point on the keys and its back-propagated bias gradient.
    s1: [C, K] or [C, 1], s2: [C, HD] or [C, 1]: the point's scale of each layer's input (l2's
    retained point; 1 otherwise), per channel or per token. ``dl``: the Huber threshold, [C], or
    [C, K] per value channel with DELTA_CH."""
    ks = kc * s1
    a1 = _mm(ks, tl.trans(W1), PREC)
    hk = _act(a1, ACT)
    hs = hk * s2
    a2 = _mm(hs, tl.trans(W2), PREC)
    E = kc + _norm(a2, K, LN) - vc
    G = _bias_grad(E, vc, dl, P_EXP, SHARP, EPS, RADIUS, BIAS, NEPS, SMOOTH, DELTA_CH)
    d2 = _norm_back(a2, G, K, LN)
    t1 = _mm(d2, W2, PREC)
    f1 = _act_grad(a1, ACT)
    d1 = t1 * f1 * s2
    return ks, a1, hk, hs, a2, E, G, d2, t1, f1, d1


@triton.jit
def _exact_read(W1n, W2n, qc, K: tl.constexpr, ACT: tl.constexpr, LN: tl.constexpr, PREC: tl.constexpr):
    """M_{W'}(q) for every row (the caller keeps the segment's last)."""
    z1 = _mm(qc, tl.trans(W1n), PREC)
    hl = _act(z1, ACT)
    z2 = _mm(hl, tl.trans(W2n), PREC)
    return z1, hl, z2, qc + _norm(z2, K, LN)


@triton.jit
def _end_read_bwd(raw1, raw2, dX1n, dX2n, qc, dy, is_last, QX, SCALE, K: tl.constexpr,
                  ACT: tl.constexpr, LN: tl.constexpr, RET: tl.constexpr, PREC: tl.constexpr):
    """The segment end's VJP: lq, kl and elastic read the last token at the exact new memory M_{W'}.
    Returns (dq of that read, dy left for the chunk's reads, dL/draw1, dL/draw2); draw_l = dX_ln
    (the carried state's gradient) where the end map is the identity."""
    if RET >= 2:
        _X1n, W1n = _end_weights(raw1, QX, SCALE, RET)
        _X2n, W2n = _end_weights(raw2, QX, SCALE, RET)
        z1, hl, z2, _exact = _exact_read(W1n, W2n, qc, K, ACT, LN, PREC)
        dyl = tl.where(is_last[:, None], dy, 0.0)
        dz2 = _norm_back(z2, dyl, K, LN)
        dW2n = _mm(tl.trans(dz2), hl, PREC)
        dz1 = _mm(dz2, W2n, PREC) * _act_grad(z1, ACT)
        dW1n = _mm(tl.trans(dz1), qc, PREC)
        dq_end = _mm(dz1, W1n, PREC)
        dyr = tl.where(is_last[:, None], 0.0, dy)
        if RET == 2:
            draw1 = dX1n + _lq_scale(raw1, QX) * dW1n + _lq_scale_vjp(raw1, QX, tl.sum(tl.sum(dW1n * raw1, 1), 0))
            draw2 = dX2n + _lq_scale(raw2, QX) * dW2n + _lq_scale_vjp(raw2, QX, tl.sum(tl.sum(dW2n * raw2, 1), 0))
        elif RET >= 4:  # elastic: X' = W' = shrink(raw)
            draw1 = (dX1n + dW1n) * _shrink_grad(raw1, SCALE, RET)
            draw2 = (dX2n + dW2n) * _shrink_grad(raw2, SCALE, RET)
        else:  # X' = log SCALE + log_softmax_row(raw), W' = exp(X')
            dL1 = dX1n + dW1n * W1n
            dL2 = dX2n + dW2n * W2n
            draw1 = dL1 - W1n * (tl.sum(dL1, 1)[:, None] / SCALE)
            draw2 = dL2 - W2n * (tl.sum(dL2, 1)[:, None] / SCALE)
    else:
        dq_end = tl.zeros_like(qc)
        dyr = dy
        draw1 = dX1n
        draw2 = dX2n
    return dq_end, dyr, draw1, draw2


@triton.jit
def _bias_vjp(a2, E, G, dd2, dl, P_EXP, SHARP, EPS, RADIUS, K: tl.constexpr, BIAS: tl.constexpr,
              NEPS: tl.constexpr, SMOOTH: tl.constexpr, LN: tl.constexpr, DELTA_CH: tl.constexpr):
    """VJP of the key pass's end on chip, E = k + norm(a2) - v and the bias gradient G = phi(E),
    from dL/dd2 (d2 = norm_back(a2, G)): (dE, the threshold's gradient, dv, da2), all [C, K];
    dL/dk gains dE."""
    if LN:
        da2, dG = _norm_back_vjp(a2, G, dd2, K)
    else:
        da2 = tl.zeros_like(a2)
        dG = dd2
    dE, ddl = _bias_grad_bwd(E, dG, dl, P_EXP, SHARP, EPS, RADIUS, BIAS, NEPS, SMOOTH, DELTA_CH)
    dvc = -dE
    if BIAS == 0:  # dot: g = -v
        dvc -= dG
    da2 += _norm_back(a2, dE, K, LN)
    return dE, ddl, dvc, da2


@triton.jit
def _key_pass_bwd(dd1, dd2, dh, dkc, kc, W1, W2, s1, s2, ks, a1, hk, hs, a2, E, G, d2, t1, f1, dl,
                  P_EXP, SHARP, EPS, RADIUS, K: tl.constexpr, BIAS: tl.constexpr,
                  NEPS: tl.constexpr, SMOOTH: tl.constexpr, ACT: tl.constexpr, LN: tl.constexpr,
                  PREC: tl.constexpr, DELTA_CH: tl.constexpr):
    """VJP of the key pass (ks = k s1, a1 = W1 ks, h = act(a1), hs = h s2, a2 = W2 hs, the bias
    gradient G and its back-propagation d2, d1 = (d2 W2) act'(a1) s2) from dL/dd1, dL/dd2 and the
    gradients dh, dkc already collected for h and k. s1: [C, K] or [C, 1], s2: [C, HD] or [C, 1].
    Returns dk, dv, dW1, dW2, the threshold's gradient, and the scales' [C, K], [C, HD]."""
    dt1 = dd1 * s2 * f1
    da1 = dd1 * s2 * t1 * _act_grad2(a1, ACT)
    ds2 = dd1 * t1 * f1
    dd2 += _mm(dt1, tl.trans(W2), PREC)
    dW2 = _mm(tl.trans(d2), dt1, PREC)
    dE, ddl, dvc, da2 = _bias_vjp(a2, E, G, dd2, dl, P_EXP, SHARP, EPS, RADIUS, K, BIAS, NEPS,
                                  SMOOTH, LN, DELTA_CH)
    dkc += dE
    dW2 += _mm(tl.trans(da2), hs, PREC)
    dhs = _mm(da2, W2, PREC)
    dh += dhs * s2
    ds2 += dhs * hk
    da1 += dh * f1
    dW1 = _mm(tl.trans(da1), ks, PREC)
    dks = _mm(da1, W1, PREC)
    dkc += dks * s1
    return dkc, dvc, dW1, dW2, ddl, dks * kc, ds2


