"""The whole-W MLP kernels with a channel-wise alpha (gd): every input channel of W1 (K of them)
and of W2 (Hd) decays on its own, as in Moneta and Yaad.

Same semantics as ``naive.py`` with ``alpha`` [B, T, H, K + Hd]. Per layer l, input width n,
lb = cumsum(log alpha_l) over the segment [C, n], b = exp(lb):

    key pass:  a1 = W1 (s1 k), h = act(a1), a2 = W2 (s2 h), d1 = (W2^T d2) * f1 * s2
               (s_l = b_l with l2 retention's retained gradient point, else 1)
    read:      u_t = (z_t * b_t) X^T - sum_{i<=t} A[t, i] d_i,
               A[t, i] = sum_c z_tc x_ic exp(lb_tc - lb_ic)
    end:       raw = X * b_last - d^T (x * exp(lb_last - lb))

with x the layer's write input (k, h; times eta). The scores A are summed column by column with
each exponent a difference (at most 0), so no decay can overflow, and the diagonal is exact.

Momentum (MOM; l2 or lq retention) carries S_l too, S_t = theta_t S_{t-1} - d_t x_t^T: a write
reaches a read through D[t, i] = sum_{i <= j <= t} (Theta_j / Theta_i) exp(lb_t - lb_j) per
channel (kernels.channel_momentum, summed step by step), and

    read:      u_t = (z_t * b_t) X^T + (z_t * cv_t) S^T - sum_{i<=t} A[t, i] d_i,
               A[t, i] = sum_c z_tc x_ic D[t, i]_c,  cv_t = sum_{j<=t} Theta_j exp(lb_t - lb_j)
    end:       raw = X * b_last + S * cv_last - d^T (x * D[last]),
               S' = Theta_last S - d^T (x * Theta_last / Theta_i)

kl retention (Memora; chunk_mlp_memory passes a per-head alpha per channel) reads every token at
its own exact map of the log-space state X instead (tl_ops._kl_read, one token at a time on chip):

    u_t = c softmax_row(raw_t) z_t,   raw_t = X * b_t - d^T (x * exp(lb_t - lb_i), i <= t)

and its backward recomputes each token's weights from the stored chunk-start X
(tl_ops._kl_read_bwd: the softmax's VJP into X, d, x and the decays); the key pass runs at
exp(X), and the end map and the last token's exact read are those of the other retentions.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ..channel_momentum import (
    _channel_momentum,
    _channel_momentum_bwd,
    _momentum_end_ch,
    _momentum_end_ch_bwd,
    _momentum_ends_ch_bwd,
    _theta_matrix,
)
from ..common import _lq_scale_vjp, _mm, _slot
from ..kl_read import _kl_read, _kl_read_bwd, _kl_read_mom_ch, _kl_read_mom_ch_bwd
from .tl_ops import (
    _act,
    _act_grad,
    _channel_steps,
    _end_read_bwd,
    _end_weights,
    _exact_read,
    _key_pass,
    _key_pass_bwd,
    _load_segment,
    _norm,
    _norm_back,
    _program,
    _read_base,
    _scales,
    _scores,
    _scores_bwd,
    _threshold,
)


@triton.jit
def _channel_decays(alpha, row, mt, K: tl.constexpr, HD: tl.constexpr):
    """lb_1 [C, K], lb_2 [C, HD]: the cumulative log-decays of the segment (0 on padding rows;
    chunk_mlp_memory drops alpha without retention, so it always decays here)."""
    la1, la2 = _channel_steps(alpha, row, mt, K, HD, 1.0)
    return tl.cumsum(tl.log(la1), 0), tl.cumsum(tl.log(la2), 0)


@triton.jit
def _read_layer_ch(X, z, x_in, d, lb, C: tl.constexpr, PREC: tl.constexpr):
    """One layer's read: (A, u / r) with u / r = (z * b) X^T - A d."""
    A = _scores(z, x_in, lb, C)
    up = _mm(z * tl.exp(lb), tl.trans(X), PREC) - _mm(A, d, PREC)
    return A, up


@triton.jit
def _read_layer_ch_bwd(du, up, X, r, z, x_in, d, A, lb, C: tl.constexpr, PREC: tl.constexpr):
    """VJP of u = r ((z * b) X^T - A d): gradients of z, x_in, d, X, r and lb."""
    b = tl.exp(lb)
    zb = z * b
    dX = r * _mm(tl.trans(du), zb, PREC)
    dr = tl.sum(tl.sum(du * up, 1), 0)
    dzb = r * _mm(du, X, PREC)
    dA = -r * _mm(du, tl.trans(d), PREC)
    dd = -r * _mm(tl.trans(A), du, PREC)
    oc = tl.arange(0, C)
    dA = tl.where(oc[:, None] >= oc[None, :], dA, 0.0)
    dz, dx_in, dlb = _scores_bwd(dA, z, x_in, lb, C)
    dz += dzb * b
    dlb += dzb * zb
    return dz, dx_in, dd, dX, dr, dlb


@triton.jit
def _read_layer_mom(X, S, z, x_in, d, lb, lt, C: tl.constexpr, PREC: tl.constexpr):
    """One layer's read with momentum: (A, cv, u / r) with u / r = (z * b) X^T + (z * cv) S^T - A d."""
    A, cv = _channel_momentum(z, x_in, lb, lt, C, PREC)
    up = _mm(z * tl.exp(lb), tl.trans(X), PREC) + _mm(z * cv, tl.trans(S), PREC) - _mm(A, d, PREC)
    return A, cv, up


@triton.jit
def _read_layer_mom_bwd(du, up, X, S, r, z, x_in, d, A, cv, lb, lbl, lt, ltl, mt, dDl, dcl, dtl,
                        C: tl.constexpr, PREC: tl.constexpr):
    """VJP of the read u = r ((z * b) X^T + (z * cv) S^T - A d) and of the segment end's decays
    (dDl, dcl, dtl: the gradients of D[last], cv_last and Theta_last / Theta_i): gradients of
    z, x_in, d, X, S, r, lb, lb's last row, lt and lt's last."""
    b = tl.exp(lb)
    zb = z * b
    dX = r * _mm(tl.trans(du), zb, PREC)
    dS = r * _mm(tl.trans(du), z * cv, PREC)
    dr = tl.sum(tl.sum(du * up, 1), 0)
    dzb = r * _mm(du, X, PREC)
    dzc = r * _mm(du, S, PREC)
    dA = -r * _mm(du, tl.trans(d), PREC)
    dd = -r * _mm(tl.trans(A), du, PREC)
    dzA, dx_in, dlb, dlt = _channel_momentum_bwd(dA, dzc * z, z, x_in, lb, lt, C, PREC)
    dlbe, dlbl, dlte, dltl = _momentum_ends_ch_bwd(dDl, dcl, dtl, lb, lbl, lt, ltl, mt, C)
    return dzA + dzb * b + dzc * cv, dx_in, dd, dX, dS, dr, dlb + dlbe + dzb * zb, dlbl, dlt + dlte, dltl


@triton.jit
def _load_segment_ch(q, k, v, eta, alpha, theta, delta, b, h, start, size, T, H, C: tl.constexpr,
                     K: tl.constexpr, HD: tl.constexpr, RETAIN_FIRST: tl.constexpr,
                     MOM: tl.constexpr, NEEDS_DELTA: tl.constexpr, DELTA_CH: tl.constexpr):
    """One segment's tiles (tl_ops._load_segment), its Huber threshold per value channel with
    DELTA_CH, the cumulative log-decays lb1 [C, K], lb2 [C, HD], the gradient point's input
    scales s1, s2 (b = exp(lb) with l2's retained point, else 1) and with MOM the cumulative log
    momentum gate lt [C] (0 without)."""
    qc, kc, vc, et, _la, lth, dl, row, ptr, mt = _load_segment(
        q, k, v, eta, eta, theta, delta, b, h, start, size, T, H, C, K, False, MOM, NEEDS_DELTA)
    lt = tl.cumsum(lth, 0)  # without MOM lth is 0
    dl = _threshold(delta, ptr, mt, dl, DELTA_CH)
    lb1, lb2 = _channel_decays(alpha, row, mt, K, HD)
    if RETAIN_FIRST:
        s1 = tl.exp(lb1)
        s2 = tl.exp(lb2)
    else:
        s1 = tl.full([C, K], 1.0, tl.float32)
        s2 = tl.full([C, HD], 1.0, tl.float32)
    return qc, kc, vc, et, dl, row, ptr, mt, lb1, lb2, s1, s2, lt


@triton.jit
def _write_steps(eta, et, row, mt, C: tl.constexpr, K: tl.constexpr, HD: tl.constexpr,
                 ETA_CH: tl.constexpr):
    """The step on each layer's write input, [C, K] and [C, HD]: a channel-wise eta's, or the
    per-head one (et [C]) repeated over the channels."""
    if ETA_CH:
        e1, e2 = _channel_steps(eta, row, mt, K, HD, 0.0)
    else:
        e1 = tl.zeros([C, K], dtype=tl.float32) + et[:, None]
        e2 = tl.zeros([C, HD], dtype=tl.float32) + et[:, None]
    return e1, e2


@triton.jit
def _fwd_kernel_ch(
    q, k, v, eta, alpha, theta, delta, x1_0, x2_0, seg_start, seg_size, o, saved1, saved2,
    saved_s1, saved_s2,
    T, H, NS, P_EXP, SHARP, EPS, RADIUS, QX, SCALE,
    C: tl.constexpr, K: tl.constexpr, HD: tl.constexpr, BIAS: tl.constexpr, NEPS: tl.constexpr,
    SMOOTH: tl.constexpr, ACT: tl.constexpr, LN: tl.constexpr, RET: tl.constexpr,
    RETAIN_FIRST: tl.constexpr, MOM: tl.constexpr, NEEDS_DELTA: tl.constexpr, SAVE: tl.constexpr,
    PREC: tl.constexpr, ETA_CH: tl.constexpr, DELTA_CH: tl.constexpr,
):
    i_bh, b, h, oc, _ok, _oh, off1, off2 = _program(H, C, K, HD)
    X1 = tl.load(x1_0 + h * HD * K + off1).to(tl.float32)
    X2 = tl.load(x2_0 + h * HD * K + off2).to(tl.float32)
    S1 = tl.zeros([HD, K], dtype=tl.float32)  # the momentum (MOM)
    S2 = tl.zeros([K, HD], dtype=tl.float32)
    for n in range(NS):
        start = tl.load(seg_start + n)
        size = tl.load(seg_size + n)
        if SAVE:
            base = _slot(i_bh, n, NS, HD * K)
            tl.store(saved1 + base + off1, X1)
            tl.store(saved2 + base + off2, X2)
            if MOM:
                tl.store(saved_s1 + base + off1, S1)
                tl.store(saved_s2 + base + off2, S2)
        qc, kc, vc, et, dl, row, ptr, mt, lb1, lb2, s1, s2, lt = _load_segment_ch(
            q, k, v, eta, alpha, theta, delta, b, h, start, size, T, H, C, K, HD, RETAIN_FIRST,
            MOM, NEEDS_DELTA, DELTA_CH)
        r1, r2 = _scales(X1, X2, QX, RET)
        V1 = _read_base(X1, RET)
        V2 = _read_base(X2, RET)
        _ks, _a1, hk, _hs, _a2, _E, _G, d2, _t1, _f1, d1 = _key_pass(
            r1 * V1, r2 * V2, kc, vc, dl, s1, s2, P_EXP, SHARP, EPS, RADIUS,
            K, BIAS, NEPS, SMOOTH, ACT, LN, PREC, DELTA_CH)
        e1, e2 = _write_steps(eta, et, row, mt, C, K, HD, ETA_CH)
        x1w = kc * e1
        x2w = hk * e2
        if RET == 3:  # every token reads its own c softmax_row of the log-space state
            if MOM:
                Lt = _theta_matrix(lt, C)
                elt = tl.exp(lt)
                hq = _act(_kl_read_mom_ch(X1, S1, qc, d1, x1w, lb1, Lt, elt, size, SCALE, C, PREC), ACT)
                u2 = _kl_read_mom_ch(X2, S2, hq, d2, x2w, lb2, Lt, elt, size, SCALE, C, PREC)
            else:
                hq = _act(_kl_read(X1, qc, d1, x1w, lb1, size, SCALE, C, PREC), ACT)
                u2 = _kl_read(X2, hq, d2, x2w, lb2, size, SCALE, C, PREC)
            out = qc + _norm(u2, K, LN)
        elif MOM:
            _A1, _cv1, u1p = _read_layer_mom(V1, S1, qc, x1w, d1, lb1, lt, C, PREC)
            hq = _act(r1 * u1p, ACT)
            _A2, _cv2, u2p = _read_layer_mom(V2, S2, hq, x2w, d2, lb2, lt, C, PREC)
            out = qc + _norm(r2 * u2p, K, LN)
        else:
            _A1, u1p = _read_layer_ch(V1, qc, x1w, d1, lb1, C, PREC)
            hq = _act(r1 * u1p, ACT)
            _A2, u2p = _read_layer_ch(V2, hq, x2w, d2, lb2, C, PREC)
            out = qc + _norm(r2 * u2p, K, LN)
        is_last = oc == size - 1
        l1 = tl.sum(tl.where(is_last[:, None], lb1, 0.0), 0)  # [K]: the segment's log-decay
        l2 = tl.sum(tl.where(is_last[:, None], lb2, 0.0), 0)
        if MOM:
            ltl = tl.sum(tl.where(is_last, lt, 0.0), 0)
            raw1, S1, _Dl1, _cl1, _tl1 = _momentum_end_ch(X1, S1, d1, x1w, lb1, l1, lt, ltl, mt, C, PREC)
            raw2, S2, _Dl2, _cl2, _tl2 = _momentum_end_ch(X2, S2, d2, x2w, lb2, l2, lt, ltl, mt, C, PREC)
        else:
            raw1 = X1 * tl.exp(l1)[None, :] - _mm(tl.trans(d1), x1w * tl.exp(l1[None, :] - lb1), PREC)
            raw2 = X2 * tl.exp(l2)[None, :] - _mm(tl.trans(d2), x2w * tl.exp(l2[None, :] - lb2), PREC)
        X1, W1n = _end_weights(raw1, QX, SCALE, RET)
        X2, W2n = _end_weights(raw2, QX, SCALE, RET)
        if RET >= 2:  # the segment's last token reads the exact new memory
            _z1, _hl, _z2, exact = _exact_read(W1n, W2n, qc, K, ACT, LN, PREC)
            out = tl.where(is_last[:, None], exact, out)
        tl.store(o + ptr, out.to(o.dtype.element_ty), mask=mt[:, None])


@triton.jit
def _bwd_kernel_ch(
    q, k, v, eta, alpha, theta, delta, seg_start, seg_size, saved1, saved2, saved_s1, saved_s2, do,
    dq, dk, dv, deta, dla, dlth, ddelta, dx1, dx2,
    T, H, NS, P_EXP, SHARP, EPS, RADIUS, QX, SCALE,
    C: tl.constexpr, K: tl.constexpr, HD: tl.constexpr, BIAS: tl.constexpr, NEPS: tl.constexpr,
    SMOOTH: tl.constexpr, ACT: tl.constexpr, LN: tl.constexpr, RET: tl.constexpr,
    RETAIN_FIRST: tl.constexpr, MOM: tl.constexpr, NEEDS_DELTA: tl.constexpr, PREC: tl.constexpr,
    ETA_CH: tl.constexpr, DELTA_CH: tl.constexpr,
):
    i_bh, b, h, oc, ok, oh, off1, off2 = _program(H, C, K, HD)
    dX1n = tl.zeros([HD, K], dtype=tl.float32)  # dL / d(carried state at the segment end)
    dX2n = tl.zeros([K, HD], dtype=tl.float32)
    dS1n = tl.zeros([HD, K], dtype=tl.float32)  # ... and momentum (MOM)
    dS2n = tl.zeros([K, HD], dtype=tl.float32)
    for i_n in range(NS):
        n = NS - 1 - i_n
        start = tl.load(seg_start + n)
        size = tl.load(seg_size + n)
        base = _slot(i_bh, n, NS, HD * K)
        X1 = tl.load(saved1 + base + off1)
        X2 = tl.load(saved2 + base + off2)
        qc, kc, vc, et, dl, row, ptr, mt, lb1, lb2, s1, s2, lt = _load_segment_ch(
            q, k, v, eta, alpha, theta, delta, b, h, start, size, T, H, C, K, HD, RETAIN_FIRST,
            MOM, NEEDS_DELTA, DELTA_CH)
        dy = tl.load(do + ptr, mask=mt[:, None], other=0.0).to(tl.float32)
        is_last = oc == size - 1
        # ---- recompute the segment
        r1, r2 = _scales(X1, X2, QX, RET)
        V1 = _read_base(X1, RET)
        V2 = _read_base(X2, RET)
        W1 = r1 * V1
        W2 = r2 * V2
        ks, a1, hk, hs, a2, E, G, d2, t1, f1, d1 = _key_pass(
            W1, W2, kc, vc, dl, s1, s2, P_EXP, SHARP, EPS, RADIUS, K, BIAS, NEPS, SMOOTH, ACT, LN, PREC,
            DELTA_CH)
        base_e = row[:, None] * (K + HD)
        e1, e2 = _write_steps(eta, et, row, mt, C, K, HD, ETA_CH)
        x1w = kc * e1
        x2w = hk * e2
        l1 = tl.sum(tl.where(is_last[:, None], lb1, 0.0), 0)
        l2 = tl.sum(tl.where(is_last[:, None], lb2, 0.0), 0)
        if MOM:
            S1 = tl.load(saved_s1 + base + off1)
            S2 = tl.load(saved_s2 + base + off2)
            ltl = tl.sum(tl.where(is_last, lt, 0.0), 0)
        if RET == 3:
            if MOM:
                Lt = _theta_matrix(lt, C)
                elt = tl.exp(lt)
                u1 = _kl_read_mom_ch(X1, S1, qc, d1, x1w, lb1, Lt, elt, size, SCALE, C, PREC)
                hq = _act(u1, ACT)
                u2 = _kl_read_mom_ch(X2, S2, hq, d2, x2w, lb2, Lt, elt, size, SCALE, C, PREC)
            else:
                u1 = _kl_read(X1, qc, d1, x1w, lb1, size, SCALE, C, PREC)
                hq = _act(u1, ACT)
                u2 = _kl_read(X2, hq, d2, x2w, lb2, size, SCALE, C, PREC)
        elif MOM:
            A1, cv1, u1p = _read_layer_mom(V1, S1, qc, x1w, d1, lb1, lt, C, PREC)
            u1 = r1 * u1p
            hq = _act(u1, ACT)
            A2, cv2, u2p = _read_layer_mom(V2, S2, hq, x2w, d2, lb2, lt, C, PREC)
            u2 = r2 * u2p
        else:
            A1, u1p = _read_layer_ch(V1, qc, x1w, d1, lb1, C, PREC)
            u1 = r1 * u1p
            hq = _act(u1, ACT)
            A2, u2p = _read_layer_ch(V2, hq, x2w, d2, lb2, C, PREC)
            u2 = r2 * u2p
        if MOM:
            raw1, _S1e, Dl1, cl1, tl1 = _momentum_end_ch(X1, S1, d1, x1w, lb1, l1, lt, ltl, mt, C, PREC)
            raw2, _S2e, Dl2, cl2, tl2 = _momentum_end_ch(X2, S2, d2, x2w, lb2, l2, lt, ltl, mt, C, PREC)
        else:
            g1 = tl.exp(l1[None, :] - lb1)  # [C, K]: b_last / b_i per channel
            g2 = tl.exp(l2[None, :] - lb2)
            raw1 = X1 * tl.exp(l1)[None, :] - _mm(tl.trans(d1), x1w * g1, PREC)
            raw2 = X2 * tl.exp(l2)[None, :] - _mm(tl.trans(d2), x2w * g2, PREC)

        # ---- the segment end: exact last read and the end map
        dq_end, dyr, draw1, draw2 = _end_read_bwd(raw1, raw2, dX1n, dX2n, qc, dy, is_last, QX, SCALE,
                                                  K, ACT, LN, RET, PREC)
        dqc = dy + dq_end  # the memory's residual, and lq's exact last read
        dl1 = tl.sum(draw1 * X1, 0) * tl.exp(l1)  # d / d l1 (through b_last)
        dl2 = tl.sum(draw2 * X2, 0) * tl.exp(l2)
        if MOM:  # raw_l = X_l b_last + S_l cv_last - d_l^T (x_l D[last]); S_l' as _momentum_end_ch
            dd1, dx1w, dDl1, dcl1, dtl1 = _momentum_end_ch_bwd(draw1, dS1n, S1, d1, x1w, Dl1, tl1, PREC)
            dd2, dx2w, dDl2, dcl2, dtl2 = _momentum_end_ch_bwd(draw2, dS2n, S2, d2, x2w, Dl2, tl2, PREC)
            dlb1 = tl.zeros([C, K], dtype=tl.float32)
            dlb2 = tl.zeros([C, HD], dtype=tl.float32)
        else:  # raw_l = X_l * b_last - d_l^T (x_l * g_l)
            dw1 = -_mm(d1, draw1, PREC)  # [C, K]: d / d(x1w * g1)
            dw2 = -_mm(d2, draw2, PREC)
            dd1 = -_mm(x1w * g1, tl.trans(draw1), PREC)
            dd2 = -_mm(x2w * g2, tl.trans(draw2), PREC)
            dx1w = dw1 * g1
            dx2w = dw2 * g2
            tg1 = dw1 * x1w * g1
            tg2 = dw2 * x2w * g2
            dl1 += tl.sum(tg1, 0)
            dl2 += tl.sum(tg2, 0)
            dlb1 = -tg1
            dlb2 = -tg2

        # ---- the reads, layer 2 then layer 1
        du2 = _norm_back(u2, dyr, K, LN)
        if MOM:
            if RET == 3:  # kl's per-token reads (dX1, dX2: of the log-weights), then the end's decays
                dhq, dX2, dS2, dd2r, dxr2, dlbr2, dlt2 = _kl_read_mom_ch_bwd(
                    du2, u2, X2, S2, hq, d2, x2w, lb2, Lt, elt, d2, size, SCALE, C, False, PREC)
                du1 = dhq * _act_grad(u1, ACT)
                dq1, dX1, dS1, dd1r, dxr1, dlbr1, dlt1 = _kl_read_mom_ch_bwd(
                    du1, u1, X1, S1, qc, d1, x1w, lb1, Lt, elt, d1, size, SCALE, C, False, PREC)
                dlbe2, dl2r, dlte2, dltl2 = _momentum_ends_ch_bwd(dDl2, dcl2, dtl2, lb2, l2, lt, ltl, mt, C)
                dlbe1, dl1r, dlte1, dltl1 = _momentum_ends_ch_bwd(dDl1, dcl1, dtl1, lb1, l1, lt, ltl, mt, C)
                dlbr1 += dlbe1
                dlbr2 += dlbe2
                dlt1 += dlte1
                dlt2 += dlte2
            else:
                dhq, dxr2, dd2r, dX2, dS2, dr2, dlbr2, dl2r, dlt2, dltl2 = _read_layer_mom_bwd(
                    du2, u2p, V2, S2, r2, hq, x2w, d2, A2, cv2, lb2, l2, lt, ltl, mt, dDl2, dcl2, dtl2, C, PREC)
                du1 = dhq * _act_grad(u1, ACT)
                dq1, dxr1, dd1r, dX1, dS1, dr1, dlbr1, dl1r, dlt1, dltl1 = _read_layer_mom_bwd(
                    du1, u1p, V1, S1, r1, qc, x1w, d1, A1, cv1, lb1, l1, lt, ltl, mt, dDl1, dcl1, dtl1, C, PREC)
            dl1 += dl1r
            dl2 += dl2r
            # theta: lt = cumsum(log theta), ltl its last; the end momentum Theta_last S_l
            dltl = dltl1 + dltl2 + tl.exp(ltl) * (tl.sum(tl.sum(dS1n * S1, 1), 0) + tl.sum(tl.sum(dS2n * S2, 1), 0))
            dlt = dlt1 + dlt2 + tl.where(is_last, dltl, 0.0)
            tl.store(dlth + row, tl.cumsum(dlt, 0, reverse=True), mask=mt)
            dS1 += tl.exp(ltl) * dS1n + draw1 * cl1[None, :]
            dS2 += tl.exp(ltl) * dS2n + draw2 * cl2[None, :]
        elif RET == 3:  # dX1, dX2: of the log-weights
            dhq, dX2, dd2r, dxr2, dlbr2 = _kl_read_bwd(du2, u2, X2, hq, d2, x2w, lb2, u2, size, SCALE,
                                                       C, False, PREC)
            du1 = dhq * _act_grad(u1, ACT)
            dq1, dX1, dd1r, dxr1, dlbr1 = _kl_read_bwd(du1, u1, X1, qc, d1, x1w, lb1, u1, size, SCALE,
                                                       C, False, PREC)
        else:
            dhq, dxr2, dd2r, dX2, dr2, dlbr2 = _read_layer_ch_bwd(du2, u2p, V2, r2, hq, x2w, d2, A2, lb2, C, PREC)
            du1 = dhq * _act_grad(u1, ACT)
            dq1, dxr1, dd1r, dX1, dr1, dlbr1 = _read_layer_ch_bwd(du1, u1p, V1, r1, qc, x1w, d1, A1, lb1, C, PREC)
        dqc += dq1
        dx1w += dxr1
        dx2w += dxr2
        dd1 += dd1r
        dd2 += dd2r
        dlb1 += dlbr1
        dlb2 += dlbr2
        dkc = dx1w * e1
        dh = dx2w * e2
        g_e1 = dx1w * kc
        g_e2 = dx2w * hk

        # ---- the key pass
        dkc, dvc, dW1, dW2, ddl, ds1, ds2 = _key_pass_bwd(
            dd1, dd2, dh, dkc, kc, W1, W2, s1, s2, ks, a1, hk, hs, a2, E, G, d2, t1, f1, dl,
            P_EXP, SHARP, EPS, RADIUS, K, BIAS, NEPS, SMOOTH, ACT, LN, PREC, DELTA_CH)
        if RETAIN_FIRST:  # s_l = exp(lb_l)
            dlb1 += ds1 * s1
            dlb2 += ds2 * s2

        # ---- weights -> carried state
        if RET == 2:
            dX1 += r1 * dW1 + _lq_scale_vjp(X1, QX, dr1 + tl.sum(tl.sum(dW1 * X1, 1), 0))
            dX2 += r2 * dW2 + _lq_scale_vjp(X2, QX, dr2 + tl.sum(tl.sum(dW2 * X2, 1), 0))
        elif RET == 3:  # the key pass ran at W = exp(X)
            dX1 += dW1 * V1
            dX2 += dW2 * V2
        else:
            dX1 += dW1
            dX2 += dW2
        dX1 += draw1 * tl.exp(l1)[None, :]
        dX2 += draw2 * tl.exp(l2)[None, :]

        # ---- gates: lb = cumsum(log alpha) per channel, l = lb of the last token
        dlb1 += tl.where(is_last[:, None], dl1[None, :], 0.0)
        dlb2 += tl.where(is_last[:, None], dl2[None, :], 0.0)
        tl.store(dla + base_e + ok[None, :], tl.cumsum(dlb1, 0, reverse=True), mask=mt[:, None])
        tl.store(dla + base_e + K + oh[None, :], tl.cumsum(dlb2, 0, reverse=True), mask=mt[:, None])
        if ETA_CH:
            tl.store(deta + base_e + ok[None, :], g_e1, mask=mt[:, None])
            tl.store(deta + base_e + K + oh[None, :], g_e2, mask=mt[:, None])
        else:
            tl.store(deta + row, tl.sum(g_e1, 1) + tl.sum(g_e2, 1), mask=mt)
        if DELTA_CH:
            tl.store(ddelta + ptr, ddl, mask=mt[:, None])
        elif NEEDS_DELTA:
            tl.store(ddelta + row, ddl, mask=mt)
        tl.store(dq + ptr, dqc, mask=mt[:, None])
        tl.store(dk + ptr, dkc, mask=mt[:, None])
        tl.store(dv + ptr, dvc, mask=mt[:, None])
        dX1n = dX1
        dX2n = dX2
        if MOM:
            dS1n = dS1
            dS2n = dS2
    tl.store(dx1 + i_bh * HD * K + off1, dX1n)
    tl.store(dx2 + i_bh * HD * K + off2, dX2n)
