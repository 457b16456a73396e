"""Triton forward and backward of the chunked update of a 2-layer MLP memory.

Same semantics as ``naive.py`` (see its docstring for the math). This file keeps the whole
weights on chip, for the shapes where they fit (kernels.limits.MLP_MAX_TILES); tiled.py walks
the hidden dim in tiles for the wider ones. One program per
(batch, head) walks the segments in order and keeps the carried state X1 [Hd, K], X2 [K, Hd]
(and, for momentum, S1, S2 of the same shapes) on chip: per segment it runs the memory at the chunk-start weights on the keys (the key pass),
back-propagates the bias gradient through it (per-token d1, d2; never per-token weights), reads
the memory layer by layer with the queries (two masked, gate-weighted causal products with the
activation in between) and forms the segment-end state, with lq's normalisation and kl's
log / softmax applied at segment ends only.

The forward stores each segment's start state (and momentum). The backward walks the segments in reverse,
recomputes a segment from its stored start state and carries dL/dX of the segment end to its
start; every step is the hand-written vector-Jacobian product of the forward's line (the second
derivatives of the activation, the layer norm and the bias included).

kl retention (Memora) never reaches this file's kernels: its exact per-token read (naive.py) is
in channel.py's, and chunk_mlp_memory passes kl's alpha per input channel (a per-head one
repeated, its gradient summed back by autograd), in both layouts.

Shapes inside the kernels: C tokens (rows t, columns i of the [C, C] products), K the key/value
dim and HD the hidden dim; both are powers of two, so no tile is padded.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from ..bias import BiasConfig, KernelInputError, as_bias
from ..common import _bias_args, _check, _lq_scale_vjp, _mm, _slot
from ..fallback import reference_grads, warn_fallback
from ..launch import on_device
from ..limits import CHUNK_SIZES, mlp_hidden_tile, mlp_shape_problem, token_tensor_problem
from ..precision import mlp_precision, products
from ..segments import segments
from . import channel, tiled
from .naive import MlpMemoryConfig, chunk_mlp_from_state, initial_state
from .tl_ops import (
    _act,
    _act_grad,
    _channel_steps,
    _decay_grads,
    _decays,
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
    _threshold,
)

_ACT = {"gelu": 0, "silu": 1, "relu": 2}
_RET = {"none": 0, "l2": 1, "lq": 2, "kl": 3, "elastic": 4}  # elastic's exact soft threshold: 5
@triton.jit
def _read_layer(X, S, z, x_in, d, bt, m, De, MOM: tl.constexpr, PREC: tl.constexpr):
    """One layer's read without per-token weights, u / r = b z X^T + m z S^T - ((z x_in^T) * De) d;
    returns z x_in^T, the masked scores A and u / r."""
    ZX = _mm(z, tl.trans(x_in), PREC)
    A = ZX * De
    up = _mm(z * bt[:, None], tl.trans(X), PREC) - _mm(A, d, PREC)
    if MOM:
        up += _mm(z * m[:, None], tl.trans(S), PREC)
    return ZX, A, up


@triton.jit
def _read(X1, X2, S1, S2, r1, r2, qc, kc, hk, d1, d2, bt, m, De, K: tl.constexpr,
          ACT: tl.constexpr, LN: tl.constexpr, MOM: tl.constexpr, PREC: tl.constexpr):
    """The queries' outputs read layer by layer, and the pieces the backward needs."""
    QK, A1, u1p = _read_layer(X1, S1, qc, kc, d1, bt, m, De, MOM, PREC)
    u1 = r1 * u1p
    hq = _act(u1, ACT)
    HH, A2, u2p = _read_layer(X2, S2, hq, hk, d2, bt, m, De, MOM, PREC)
    u2 = r2 * u2p
    return QK, A1, u1p, u1, hq, HH, A2, u2p, u2, qc + _norm(u2, K, LN)


@triton.jit
def _read_layer_bwd(du, up, X, S, r, z, x_in, d, A, ZX, bt, m, De, MOM: tl.constexpr,
                    PREC: tl.constexpr):
    """VJP of one layer's read u = r (b z X^T + m z S^T - ((z x_in^T) * De) d), with
    A = (z x_in^T) * De, ZX = z x_in^T and up = u / r; returns the gradients of
    z, x_in, d, X, S, r, b, m and De (dS, dm are placeholders without momentum)."""
    dX = r * _mm(tl.trans(du), z * bt[:, None], PREC)
    dr = tl.sum(tl.sum(du * up, 1), 0)
    db = r * tl.sum(du * _mm(z, tl.trans(X), PREC), 1)
    dz = r * bt[:, None] * _mm(du, X, PREC)
    if MOM:
        dS = r * _mm(tl.trans(du), z * m[:, None], PREC)
        dm = r * tl.sum(du * _mm(z, tl.trans(S), PREC), 1)
        dz += r * m[:, None] * _mm(du, S, PREC)
    else:
        dS = dX
        dm = db
    dA = -r * _mm(du, tl.trans(d), PREC)
    dd = -r * _mm(tl.trans(A), du, PREC)
    G = dA * De
    dz += _mm(G, x_in, PREC)
    dx_in = _mm(tl.trans(G), z, PREC)
    return dz, dx_in, dd, dX, dS, dr, db, dm, dA * ZX


@triton.jit
def _fwd_kernel(
    q, k, v, eta, alpha, theta, delta, x1_0, x2_0, seg_start, seg_size, o,
    saved1, saved2, saved_s1, saved_s2,
    T, H, NS, P_EXP, SHARP, EPS, RADIUS, QX, SCALE,
    C: tl.constexpr, K: tl.constexpr, HD: tl.constexpr, BIAS: tl.constexpr, NEPS: tl.constexpr,
    SMOOTH: tl.constexpr, ACT: tl.constexpr, LN: tl.constexpr, RET: tl.constexpr,
    RETAIN_FIRST: tl.constexpr, HAS_ALPHA: tl.constexpr, MOM: tl.constexpr, NEEDS_DELTA: tl.constexpr, SAVE: tl.constexpr,
    PREC: tl.constexpr, ETA_CH: tl.constexpr, DELTA_CH: tl.constexpr,
):
    tl.static_assert(RET != 3, "kl retention runs on channel.py's kernels")
    i_bh, b, h, oc, _ok, _oh, off1, off2 = _program(H, C, K, HD)
    X1 = tl.load(x1_0 + h * HD * K + off1).to(tl.float32)
    X2 = tl.load(x2_0 + h * HD * K + off2).to(tl.float32)
    S1 = tl.zeros([HD, K], dtype=tl.float32)  # the momentum (momentum only)
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
        qc, kc, vc, et, la, lth, dl, _row, ptr, mt = _load_segment(
            q, k, v, eta, alpha, theta, delta, b, h, start, size, T, H, C, K, HAS_ALPHA, MOM,
            NEEDS_DELTA)
        if ETA_CH:  # the steps scale each layer's write input; the step weights keep eta = 1
            e1, e2 = _channel_steps(eta, _row, mt, K, HD, 0.0)
            et = tl.where(mt, 1.0, 0.0)
        dl = _threshold(delta, ptr, mt, dl, DELTA_CH)  # per value channel with DELTA_CH
        r1, r2 = _scales(X1, X2, QX, RET)
        V1 = _read_base(X1, RET)
        V2 = _read_base(X2, RET)
        bt, s, _D, Dt, _coef, m, De = _decays(la, lth, et, C, RETAIN_FIRST, MOM)
        _ks, _a1, hk, _hs, _a2, _E, _G, d2, _t1, _f1, d1 = _key_pass(
            r1 * V1, r2 * V2, kc, vc, dl, s[:, None], s[:, None], P_EXP, SHARP, EPS, RADIUS,
            K, BIAS, NEPS, SMOOTH, ACT, LN, PREC, DELTA_CH)
        if ETA_CH:
            x1w = kc * e1
            x2w = hk * e2
        else:
            x1w = kc
            x2w = hk
        _QK, _A1, _u1p, _u1, _hq, _HH, _A2, _u2p, _u2, out = _read(
            V1, V2, S1, S2, r1, r2, qc, x1w, x2w, d1, d2, bt, m, De, K, ACT, LN, MOM, PREC)
        # the segment's last token (padding rows would still add S: momentum needs this row)
        is_last = oc == size - 1
        c = tl.sum(tl.where(is_last[:, None], De, 0.0), 0)  # coef[last, i] eta_i
        b_last = tl.exp(tl.sum(la, 0))
        raw1 = b_last * X1 - _mm(tl.trans(d1), x1w * c[:, None], PREC)
        raw2 = b_last * X2 - _mm(tl.trans(d2), x2w * c[:, None], PREC)
        if MOM:
            m_last = tl.sum(tl.where(is_last, m, 0.0), 0)
            raw1 += m_last * S1
            raw2 += m_last * S2
            step = tl.sum(tl.where(is_last[:, None], Dt, 0.0), 0) * et  # Theta_C / Theta_i eta_i
            theta_all = tl.exp(tl.sum(lth, 0))
            S1 = theta_all * S1 - _mm(tl.trans(d1), x1w * step[:, None], PREC)
            S2 = theta_all * S2 - _mm(tl.trans(d2), x2w * step[:, None], PREC)
        X1, W1n = _end_weights(raw1, QX, SCALE, RET)
        X2, W2n = _end_weights(raw2, QX, SCALE, RET)
        if RET >= 2:  # the segment's last token reads the exact new memory
            _z1, _hl, _z2, exact = _exact_read(W1n, W2n, qc, K, ACT, LN, PREC)
            out = tl.where(is_last[:, None], exact, out)
        tl.store(o + ptr, out.to(o.dtype.element_ty), mask=mt[:, None])


@triton.jit
def _bwd_kernel(
    q, k, v, eta, alpha, theta, delta, seg_start, seg_size, saved1, saved2, saved_s1, saved_s2, do,
    dq, dk, dv, deta, dla, dlth, ddelta, dx1, dx2,
    T, H, NS, P_EXP, SHARP, EPS, RADIUS, QX, SCALE,
    C: tl.constexpr, K: tl.constexpr, HD: tl.constexpr, BIAS: tl.constexpr, NEPS: tl.constexpr,
    SMOOTH: tl.constexpr, ACT: tl.constexpr, LN: tl.constexpr, RET: tl.constexpr,
    RETAIN_FIRST: tl.constexpr, HAS_ALPHA: tl.constexpr, MOM: tl.constexpr, NEEDS_DELTA: tl.constexpr, PREC: tl.constexpr,
    ETA_CH: tl.constexpr, DELTA_CH: tl.constexpr,
):
    tl.static_assert(RET != 3, "kl retention runs on channel.py's kernels")
    i_bh, b, h, oc, ok, oh, off1, off2 = _program(H, C, K, HD)
    causal = oc[:, None] >= oc[None, :]
    dX1n = tl.zeros([HD, K], dtype=tl.float32)  # dL / d(carried state at the segment end)
    dX2n = tl.zeros([K, HD], dtype=tl.float32)
    dS1n = tl.zeros([HD, K], dtype=tl.float32)  # ... and of the momentum (momentum only)
    dS2n = tl.zeros([K, HD], dtype=tl.float32)
    for i_n in range(NS):
        n = NS - 1 - i_n
        start = tl.load(seg_start + n)
        size = tl.load(seg_size + n)
        base = _slot(i_bh, n, NS, HD * K)
        X1 = tl.load(saved1 + base + off1)
        X2 = tl.load(saved2 + base + off2)
        if MOM:
            S1 = tl.load(saved_s1 + base + off1)
            S2 = tl.load(saved_s2 + base + off2)
        else:
            S1 = X1
            S2 = X2
        qc, kc, vc, et, la, lth, dl, row, ptr, mt = _load_segment(
            q, k, v, eta, alpha, theta, delta, b, h, start, size, T, H, C, K, HAS_ALPHA, MOM,
            NEEDS_DELTA)
        if ETA_CH:
            e1, e2 = _channel_steps(eta, row, mt, K, HD, 0.0)
            et = tl.where(mt, 1.0, 0.0)
        dl = _threshold(delta, ptr, mt, dl, DELTA_CH)
        dy = tl.load(do + ptr, mask=mt[:, None], other=0.0).to(tl.float32)
        is_last = oc == size - 1
        # ---- recompute the segment
        r1, r2 = _scales(X1, X2, QX, RET)
        V1 = _read_base(X1, RET)
        V2 = _read_base(X2, RET)
        W1 = r1 * V1
        W2 = r2 * V2
        bt, s, D, Dt, coef, m, De = _decays(la, lth, et, C, RETAIN_FIRST, MOM)
        ks, a1, hk, hs, a2, E, G, d2, t1, f1, d1 = _key_pass(
            W1, W2, kc, vc, dl, s[:, None], s[:, None], P_EXP, SHARP, EPS, RADIUS, K, BIAS, NEPS, SMOOTH,
            ACT, LN, PREC, DELTA_CH)
        if ETA_CH:
            x1w = kc * e1
            x2w = hk * e2
        else:
            x1w = kc
            x2w = hk
        QK, A1, u1p, u1, hq, HH, A2, u2p, u2, _out = _read(
            V1, V2, S1, S2, r1, r2, qc, x1w, x2w, d1, d2, bt, m, De, K, ACT, LN, MOM, PREC)
        c = tl.sum(tl.where(is_last[:, None], De, 0.0), 0)
        b_last = tl.exp(tl.sum(la, 0))
        E1 = X1  # the segment end grows from the carried state itself
        E2 = X2
        raw1 = b_last * E1 - _mm(tl.trans(d1), x1w * c[:, None], PREC)
        raw2 = b_last * E2 - _mm(tl.trans(d2), x2w * c[:, None], PREC)
        if MOM:
            m_last = tl.sum(tl.where(is_last, m, 0.0), 0)
            raw1 += m_last * S1
            raw2 += m_last * S2
            t_last = tl.sum(tl.where(is_last[:, None], Dt, 0.0), 0)  # Theta_C / Theta_i
            step = t_last * et
            theta_all = tl.exp(tl.sum(lth, 0))

        # ---- the segment end: exact last read and the end map
        dq_end, dyr, draw1, draw2 = _end_read_bwd(raw1, raw2, dX1n, dX2n, qc, dy, is_last, QX, SCALE,
                                                  K, ACT, LN, RET, PREC)
        dqc = dy + dq_end  # the memory's residual, and lq / kl's exact last read
        # raw_l = b_last E_l - sum_i c_i d_li x_li^T
        db = tl.where(is_last, tl.sum(tl.sum(E1 * draw1, 1), 0) + tl.sum(tl.sum(E2 * draw2, 1), 0), 0.0)
        # dx1w, dx2w: the gradients of each layer's write input (k, h; channel eta: scaled)
        R1 = _mm(x1w, tl.trans(draw1), PREC)  # [C, HD]
        R2 = _mm(x2w, tl.trans(draw2), PREC)  # [C, K]
        dd1 = -c[:, None] * R1
        dd2 = -c[:, None] * R2
        dx1w = -c[:, None] * _mm(d1, draw1, PREC)
        dx2w = -c[:, None] * _mm(d2, draw2, PREC)
        dc = -tl.sum(d1 * R1, 1) - tl.sum(d2 * R2, 1)
        dDe = tl.where(is_last[:, None], dc[None, :], 0.0)
        if MOM:  # raw_l += m_C S_l;  S_l' = Theta_C S_l - sum_i step_i d_li x_li^T
            dm = tl.where(is_last, tl.sum(tl.sum(S1 * draw1, 1), 0) + tl.sum(tl.sum(S2 * draw2, 1), 0), 0.0)
            dS1 = m_last * draw1 + theta_all * dS1n
            dS2 = m_last * draw2 + theta_all * dS2n
            Q1 = _mm(x1w, tl.trans(dS1n), PREC)
            Q2 = _mm(x2w, tl.trans(dS2n), PREC)
            dd1 -= step[:, None] * Q1
            dd2 -= step[:, None] * Q2
            dx1w -= step[:, None] * _mm(d1, dS1n, PREC)
            dx2w -= step[:, None] * _mm(d2, dS2n, PREC)
            dstep = -tl.sum(d1 * Q1, 1) - tl.sum(d2 * Q2, 1)
            dDt = tl.where(is_last[:, None], (dstep * et)[None, :], 0.0)
            dlt_all = theta_all * (tl.sum(tl.sum(S1 * dS1n, 1), 0) + tl.sum(tl.sum(S2 * dS2n, 1), 0))

        # ---- the reads, layer 2 then layer 1
        du2 = _norm_back(u2, dyr, K, LN)
        dhq, dh2, dd2r, dX2, dS2r, dr2, db2, dm2, dDe2 = _read_layer_bwd(
            du2, u2p, V2, S2, r2, hq, x2w, d2, A2, HH, bt, m, De, MOM, PREC)
        du1 = dhq * _act_grad(u1, ACT)
        dq1, dk1, dd1r, dX1, dS1r, dr1, db1, dm1, dDe1 = _read_layer_bwd(
            du1, u1p, V1, S1, r1, qc, x1w, d1, A1, QK, bt, m, De, MOM, PREC)
        dqc += dq1
        dx1w += dk1
        dx2w += dh2
        if ETA_CH:  # x1w = k * e1, x2w = h * e2
            g_e1 = dx1w * kc
            g_e2 = dx2w * hk
            dkc = dx1w * e1
            dh = dx2w * e2
        else:
            dkc = dx1w
            dh = dx2w
        dd1 += dd1r
        dd2 += dd2r
        db += db1 + db2
        dDe += dDe1 + dDe2
        if MOM:
            dS1 += dS1r
            dS2 += dS2r
            dm += dm1 + dm2

        # ---- the key pass
        dkc, dvc, dW1, dW2, ddl, ds1, ds2 = _key_pass_bwd(
            dd1, dd2, dh, dkc, kc, W1, W2, s[:, None], s[:, None], ks, a1, hk, hs, a2, E, G, d2, t1,
            f1, dl, P_EXP, SHARP, EPS, RADIUS, K, BIAS, NEPS, SMOOTH, ACT, LN, PREC, DELTA_CH)
        ds = tl.sum(ds1, 1) + tl.sum(ds2, 1)
        if RETAIN_FIRST:
            db += ds

        # ---- weights -> carried state
        if RET == 2:
            dX1 += r1 * dW1 + _lq_scale_vjp(X1, QX, dr1 + tl.sum(tl.sum(dW1 * X1, 1), 0))
            dX2 += r2 * dW2 + _lq_scale_vjp(X2, QX, dr2 + tl.sum(tl.sum(dW2 * X2, 1), 0))
        else:
            dX1 += dW1
            dX2 += dW2
        dX1 += b_last * draw1
        dX2 += b_last * draw2

        # ---- gates: D[t, i] = exp(L_t - L_i), b = exp(L), L = cumsum(log alpha); momentum:
        # coef = D @ Dt, Dt[j, i] = exp(Lt_j - Lt_i), m = D @ exp(Lt), Lt = cumsum(log theta)
        g_eta = tl.sum(dDe * coef, 0)
        dcoef = dDe * et[None, :]
        if MOM:
            g_eta += dstep * t_last
        else:  # placeholders: _decay_grads reads none of them without momentum
            dDt = dcoef
            dm = db
            dlt_all = 0.0
        dL, dlt = _decay_grads(dcoef, dDt, db, bt, D, Dt, dm, lth, dlt_all, causal, is_last, MOM)
        if MOM:
            tl.store(dlth + row, tl.cumsum(dlt, 0, reverse=True), mask=mt)
        tl.store(dla + row, tl.cumsum(dL, 0, reverse=True), mask=mt)
        if ETA_CH:
            base_e = row[:, None] * (K + HD)
            tl.store(deta + base_e + ok[None, :], g_e1, mask=mt[:, None])
            tl.store(deta + base_e + K + oh[None, :], g_e2, mask=mt[:, None])
        else:
            tl.store(deta + row, g_eta, mask=mt)
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


def _retention_code(config: MlpMemoryConfig) -> int:
    """The kernels' RET: 0 none, 1 l2, 2 lq, 3 kl, 4 elastic (smooth surrogate), 5 elastic (exact
    soft threshold)."""
    return _RET[config.retention] + (config.retention == "elastic" and not config.smooth)


def _kernel_args(config: MlpMemoryConfig, bias: BiasConfig) -> dict:
    return {
        **_bias_args(bias), "QX": float(config.q), "SCALE": float(config.retention_scalar),
        "ACT": _ACT[config.activation], "LN": bool(config.layer_norm), "RET": _retention_code(config),
        "RETAIN_FIRST": config.retains_first,
        "NEEDS_DELTA": bias.needs_delta,
    }


def _segment_table(T: int, chunk_size: int, config: MlpMemoryConfig, device) -> tuple[torch.Tensor, torch.Tensor]:
    spans = segments(T, chunk_size, config.lag_token)
    start = torch.tensor([a for a, _ in spans], dtype=torch.int32, device=device)
    size = torch.tensor([z - a for a, z in spans], dtype=torch.int32, device=device)
    return start, size


def _num_warps(K: int, HD: int, backward: bool) -> int:
    """Warps per program, chosen from the compiled kernels' register spills on sm_90 (see
    benchmarks/kernel_resources.py): the backward keeps more [Hd, K] tiles alive."""
    if backward and K * HD >= 64 * 256:
        return 16
    return 8 if K * HD >= 32 * 128 else 4


def _scalars(config: MlpMemoryConfig, bias: BiasConfig, T: int, H: int, NS: int, K: int, HD: int,
             chunk_size: int, has_alpha: bool, momentum: bool, dtype: torch.dtype) -> dict:
    """Every scalar and constexpr argument the two kernels share (inputs of ``dtype``)."""
    precision = mlp_precision(dtype, config.layer_norm, config.retention, bias.kind)
    return {
        "T": T, "H": H, "NS": NS, "C": chunk_size, "K": K, "HD": HD, "HAS_ALPHA": has_alpha,
        "MOM": momentum, "PREC": precision, **_kernel_args(config, bias),
    }


def compile_specs(config: MlpMemoryConfig, bias: BiasConfig, K: int, HD: int, chunk_size: int,
                  momentum: bool = False, dtype: torch.dtype = torch.bfloat16,
                  hidden_tile: int | None = None, eta_channel: bool = False,
                  alpha_channel: bool = False, delta_channel: bool = False) -> list[tuple]:
    """(name, kernel, scalars, pointer types, num_warps) of the forward and backward launches
    for kernels.compile_check (compiling for a GPU without one): the layout chunk_mlp_memory
    picks for this shape (kernels.limits.mlp_hidden_tile), or the tiled one with ``hidden_tile``;
    ``eta_channel`` / ``alpha_channel`` / ``delta_channel``: a channel-wise eta / alpha / Huber
    threshold (alpha: channel.py's kernels where W fits on chip, else tiled.py's)."""
    alpha_channel = alpha_channel or config.retention == "kl"  # kl: channel.py (chunk_mlp_memory)
    scalars = _scalars(config, bias, 1024, 8, 64, K, HD, chunk_size, config.retention != "none",
                       momentum, dtype)
    element = "*bf16" if dtype == torch.bfloat16 else "*fp32"
    pointers = {name: element for name in ("q", "k", "v", "o", "do")}
    pointers |= {"seg_start": "*i32", "seg_size": "*i32"}
    if hidden_tile is None:
        hidden_tile = mlp_hidden_tile(K, HD, chunk_size, products(scalars["PREC"]),
                                      momentum and (config.retention == "lq" or alpha_channel))  # kl: alpha_channel
    if hidden_tile is None and alpha_channel:
        scalars = {name: value for name, value in scalars.items() if name != "HAS_ALPHA"}
        scalars |= {"ETA_CH": eta_channel, "DELTA_CH": delta_channel}
        return [
            ("channel-alpha forward", channel._fwd_kernel_ch, {**scalars, "SAVE": True}, pointers,
             _num_warps(K, HD, False)),
            ("channel-alpha backward", channel._bwd_kernel_ch, scalars, pointers, _num_warps(K, HD, True)),
        ]
    if hidden_tile is None:
        scalars |= {"ETA_CH": eta_channel, "DELTA_CH": delta_channel}
        return [
            ("forward", _fwd_kernel, {**scalars, "SAVE": True}, pointers, _num_warps(K, HD, False)),
            ("backward", _bwd_kernel, scalars, pointers, _num_warps(K, HD, True)),
        ]
    scalars |= _tiled_flags(alpha_channel, eta_channel, delta_channel)
    scalars["HT"] = hidden_tile
    warps = tiled.num_warps(chunk_size, K, hidden_tile, config.retention == "kl")
    return [
        ("tiled forward", tiled._fwd_kernel, {**scalars, "SAVE": True}, pointers, warps),
        ("tiled backward", tiled._bwd_kernel, scalars, pointers, warps),
    ]


def _channel_alpha(alpha: torch.Tensor | None) -> bool:
    """Whether alpha is channel-wise ([B, T, H, K + Hd]): channel.py's kernels where W fits on
    chip, else tiled.py's with ALPHA_CH."""
    return alpha is not None and alpha.dim() == 4


def _momentum_per_channel(config: MlpMemoryConfig, alpha: torch.Tensor | None, theta: torch.Tensor | None) -> bool:
    """Momentum with a channel-wise alpha (kl retention's always is: chunk_mlp_memory passes its
    alpha per channel), whose kernels take a smaller chunk (kernels.limits)."""
    return theta is not None and (config.retention == "kl" or _channel_alpha(alpha))


def _tiled_flags(alpha_channel: bool, ETA_CH: bool, DELTA_CH: bool) -> dict:
    """tiled.py's flags for channel-wise gates: _gate_flags' and ALPHA_CH (a channel-wise alpha
    replaces the per-head one, HAS_ALPHA)."""
    flags = {"ETA_CH": ETA_CH, "ALPHA_CH": alpha_channel, "DELTA_CH": DELTA_CH}
    return flags | ({"HAS_ALPHA": False} if alpha_channel else {})


def _gate_flags(eta: torch.Tensor, delta: torch.Tensor | None) -> dict:
    """The whole-W kernels' flags for a channel-wise eta and Huber threshold."""
    return {"ETA_CH": eta.dim() == 4, "DELTA_CH": delta is not None and delta.dim() == 4}


def _channel_scalars(scalars: dict, eta: torch.Tensor, delta: torch.Tensor | None) -> dict:
    """The shared scalars as channel.py's kernels take them (no alpha flag: alpha is always there)."""
    kept = {name: value for name, value in scalars.items() if name != "HAS_ALPHA"}
    return kept | _gate_flags(eta, delta)


def _kernel_inputs(q, k, v, eta, alpha, theta, delta) -> tuple:
    """The token inputs in the kernels' argument order."""
    return (q, k, v, eta, *_or(eta, alpha, theta, delta))


def _reference(config: MlpMemoryConfig, bias: BiasConfig, chunk_size: int):
    """The PyTorch reference from the carried state x1, x2, taking the kernels' argument order:
    what a launch that does not fit this GPU runs instead."""
    def run(q, k, v, eta, alpha, theta, delta, x1, x2):
        return chunk_mlp_from_state(q, k, v, eta, x1, x2, alpha, delta, theta, config, bias, chunk_size)
    return run


def _reference_grads(ctx, do: torch.Tensor) -> tuple:
    """Gradients from the PyTorch reference, recomputed (used when a kernel does not fit)."""
    reference = _reference(ctx.config, ctx.bias, ctx.chunk_size)
    return (*reference_grads(reference, list(ctx.saved_tensors[:9]), do), None, None, None, None)


class ChunkMlpMemory(torch.autograd.Function):
    """autograd wrapper around the two kernels (inputs checked by chunk_mlp_memory): the ones of
    this file (W on chip) when ``hidden_tile`` is None, else those of tiled.py (the hidden dim in
    tiles of ``hidden_tile`` units).

    A kernel that does not fit the GPU (Triton's OutOfResources, e.g. a wide hidden dim on a
    small card) falls back to the PyTorch reference for that call, with a warning.
    """

    @staticmethod
    def forward(ctx, q, k, v, eta, alpha, theta, delta, x1, x2, config, bias, chunk_size, hidden_tile):
        B, T, H, K = q.shape
        HD = x1.shape[1]
        start, size = _segment_table(T, chunk_size, config, q.device)
        NS = start.numel()
        save = any(ctx.needs_input_grad)
        o = torch.empty_like(q)
        ctx.config, ctx.bias, ctx.chunk_size, ctx.hidden_tile = config, bias, chunk_size, hidden_tile
        ctx.fallback = False
        scalars = _scalars(config, bias, T, H, NS, K, HD, chunk_size, alpha is not None,
                           theta is not None, q.dtype)
        inputs = _kernel_inputs(q, k, v, eta, alpha, theta, delta)
        if hidden_tile is not None:  # X1, X2, S1, S2 in NS + 1 slots (1, updated in place, without a backward)
            saved = tiled.state_buffers(x1, x2, B, NS + 1 if save else 1, theta is not None)
            kernel, first = tiled._fwd_kernel, [start, size, o, *saved]
            scalars |= _tiled_flags(_channel_alpha(alpha), **_gate_flags(eta, delta))
            scalars["HT"] = hidden_tile
            warps = tiled.num_warps(chunk_size, K, hidden_tile, config.retention == "kl")
        else:  # W on chip: channel.py with a channel-wise alpha, else this file's kernels
            n_saved = B * H * NS * HD * K if save else 1
            saved = [torch.empty(n_saved if (i < 2 or theta is not None) else 1, dtype=torch.float32,
                                 device=q.device) for i in range(4)]  # X1, X2, S1, S2
            channel_alpha = _channel_alpha(alpha)
            kernel = channel._fwd_kernel_ch if channel_alpha else _fwd_kernel
            first = [x1, x2, start, size, o, *saved]
            warps = _num_warps(K, HD, False)
            scalars = _channel_scalars(scalars, eta, delta) if channel_alpha else scalars | _gate_flags(eta, delta)
        try:
            with on_device(q):
                kernel[(B * H,)](*inputs, *first, SAVE=save, num_warps=warps, num_stages=1, **scalars)
        except OutOfResources as error:
            warn_fallback("MLP-memory forward", error)
            ctx.fallback = True
            o = _reference(config, bias, chunk_size)(q, k, v, eta, alpha, theta, delta, x1, x2)
        ctx.save_for_backward(q, k, v, eta, alpha, theta, delta, x1, x2, *saved, start, size)
        return o

    @staticmethod
    def backward(ctx, do):
        if ctx.fallback:
            return _reference_grads(ctx, do)
        q, k, v, eta, alpha, theta, delta, x1, x2, *saved, start, size = ctx.saved_tensors
        B, T, H, K = q.shape
        HD = x1.shape[1]
        f32 = {"dtype": torch.float32, "device": q.device}
        dq, dk, dv = (torch.empty(B, T, H, K, **f32) for _ in range(3))
        dla = torch.empty(alpha.shape if _channel_alpha(alpha) else (B, T, H), **f32)
        dlth = torch.empty(B, T, H, **f32)
        ddelta = torch.empty(delta.shape if delta is not None else (B, T, H), **f32)
        deta = torch.empty(eta.shape, **f32)
        scalars = _scalars(ctx.config, ctx.bias, T, H, start.numel(), K, HD, ctx.chunk_size,
                           alpha is not None, theta is not None, q.dtype)
        grads = [dq, dk, dv, deta, dla, dlth, ddelta]
        inputs = _kernel_inputs(q, k, v, eta, alpha, theta, delta)
        if ctx.hidden_tile is not None:
            state_grads = tiled.gradient_buffers(B * H, HD, K, ctx.chunk_size, theta is not None,
                                                 ctx.config.retention in ("lq", "kl", "elastic"), q.device)
            dx1, dx2 = state_grads[0].view(B, H, HD, K), state_grads[1].view(B, H, K, HD)
            kernel = tiled._bwd_kernel
            scalars |= _tiled_flags(_channel_alpha(alpha), **_gate_flags(eta, delta))
            scalars["HT"] = ctx.hidden_tile
            warps = tiled.num_warps(ctx.chunk_size, K, ctx.hidden_tile, ctx.config.retention == "kl")
        else:  # W on chip: channel.py with a channel-wise alpha, else this file's kernels
            dx1 = torch.empty(B, H, HD, K, **f32)
            dx2 = torch.empty(B, H, K, HD, **f32)
            channel_alpha = _channel_alpha(alpha)
            kernel = channel._bwd_kernel_ch if channel_alpha else _bwd_kernel
            state_grads = [dx1, dx2]
            warps = _num_warps(K, HD, True)
            scalars = _channel_scalars(scalars, eta, delta) if channel_alpha else scalars | _gate_flags(eta, delta)
        try:
            with on_device(q):
                kernel[(B * H,)](
                    *inputs, start, size, *saved, do.contiguous(),
                    *grads, *state_grads, num_warps=warps, num_stages=1, **scalars,
                )
        except OutOfResources as error:
            warn_fallback("MLP-memory backward", error)
            return _reference_grads(ctx, do)
        g_alpha = None if alpha is None else (dla / alpha.float()).to(alpha.dtype)
        g_theta = None if theta is None else (dlth / theta.float()).to(theta.dtype)
        g_delta = None if delta is None else ddelta.to(delta.dtype)
        return (
            dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), deta.to(eta.dtype), g_alpha, g_theta,
            g_delta, dx1.sum(0).to(x1.dtype), dx2.sum(0).to(x2.dtype), None, None, None, None,
        )


def _per_channel(alpha: torch.Tensor | None, q: torch.Tensor, hidden: int) -> torch.Tensor:
    """alpha as a decay per input channel of W1, then of W2, [B, T, H, K + hidden]: a per-head
    one [B, T, H] repeated (autograd sums its gradient back), None as no decay."""
    B, T, H, K = q.shape
    if alpha is None:
        return torch.ones(B, T, H, K + hidden, dtype=q.dtype, device=q.device)
    if alpha.dim() == 4:
        return alpha
    return alpha.unsqueeze(-1).expand(B, T, H, K + hidden)


def _or(dummy: torch.Tensor, *tensors: torch.Tensor | None) -> list[torch.Tensor]:
    """The optional kernel inputs, a placeholder where absent (the kernel never reads it)."""
    return [dummy if x is None else x for x in tensors]


def check_mlp_inputs(q, k, v, eta, w1, w2, alpha, theta, delta, bias: BiasConfig, chunk_size: int,
                     config: MlpMemoryConfig, hidden_tile: int | None = None) -> None:
    """KernelInputError naming the argument unless the kernel can take these inputs."""
    if q.dim() != 4:
        raise KernelInputError(f"q must be [B, T, H, K], got a tensor of shape {list(q.shape)}")
    B, T, H, K = q.shape
    if w1.dim() != 3 or w1.shape[0] != H or w1.shape[2] != K:
        raise KernelInputError(f"w1 must be [H, Hd, K] = [{H}, Hd, {K}], got {list(w1.shape)}")
    HD = w1.shape[1]
    floats = (torch.float32, torch.bfloat16)
    eta_shape = (B, T, H, K + HD) if eta is not None and eta.dim() == 4 else (B, T, H)
    alpha_shape = (B, T, H, K + HD) if alpha is not None and alpha.dim() == 4 else (B, T, H)
    delta_shape = (B, T, H, K) if delta is not None and delta.dim() == 4 else (B, T, H)
    if delta is not None and delta.dim() == 4 and bias.kind not in ("huber_coordinate", "huber_switch"):
        raise KernelInputError(f"a Huber threshold per value channel has a kernel with the coordinate "
                               f"and switch variants, not {bias.kind!r}")
    for name, x, shape in (
        ("q", q, (B, T, H, K)), ("k", k, (B, T, H, K)), ("v", v, (B, T, H, K)),
        ("eta", eta, eta_shape), ("alpha", alpha, alpha_shape), ("theta", theta, (B, T, H)),
        ("delta", delta, delta_shape),
    ):
        _check(name, x, shape, floats)
    _check("w2", w2, (H, K, HD), (*floats, torch.float64))  # parameters may stay float64
    if chunk_size not in CHUNK_SIZES:
        raise KernelInputError(f"chunk_size must be 16, 32 or 64 for the Triton kernel, got {chunk_size}")
    precision = mlp_precision(q.dtype, config.layer_norm, config.retention, bias.kind)
    problem = mlp_shape_problem(K, HD, chunk_size, products(precision),
                                theta is not None and config.retention == "lq",
                                channel_momentum=_momentum_per_channel(config, alpha, theta))
    problem = problem or token_tensor_problem(B, T, H, K)
    if problem is not None:
        raise KernelInputError(problem)
    if hidden_tile is not None and not (16 <= hidden_tile <= HD and HD % hidden_tile == 0
                                        and hidden_tile & (hidden_tile - 1) == 0):
        raise KernelInputError(
            f"hidden_tile must be a power of two >= 16 that divides the hidden dim {HD}, got {hidden_tile}"
        )
    if bias.needs_delta and delta is None:
        raise KernelInputError(f"bias {bias.kind!r} needs the Huber threshold tensor delta [B, T, H]")


def chunk_mlp_memory(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    alpha: torch.Tensor | None = None,
    theta: torch.Tensor | None = None,
    delta: torch.Tensor | None = None,
    config: MlpMemoryConfig | None = None,
    bias: BiasConfig | str = "l2",
    chunk_size: int = 16,
    hidden_tile: int | None = None,
) -> torch.Tensor:
    """Chunked 2-layer MLP memory with Triton kernels (forward and backward).

    Args:
        q, k, v: [B, T, H, K] (float32 or bfloat16; K a power of two >= 16; the hidden dim
            and chunk size inside kernels.limits.MLP_MAX_TILES, or K <= 64 for the hidden-tiled
            kernel (kernels.limits.mlp_shape_problem); at most 2^31 - 1 elements).
        eta: [B, T, H] (> 0), or channel-wise [B, T, H, K + Hd] (a step per input channel of
            W1, then of W2); alpha: [B, T, H] in (0, 1], channel-wise [B, T, H, K + Hd] (a decay
            per input channel of W1, then of W2) or None;
        theta: [B, T, H] in (0, 1) for momentum (Titans; S starts at zero), None for gd (kl
            retention's exact per-token read, Memora's, runs channel.py's or the tiled kernels'
            channel-wise alpha, with momentum too; in tiles a channel-wise alpha with momentum
            takes chunk x K <= 2048, kernels.limits);
        delta: [B, T, H] (> 0), the Huber threshold (huber biases only), or [B, T, H, K], one
            per value channel (huber_coordinate and huber_switch). Every gate combination runs
            in both layouts (W on chip, hidden tiles).
        w1: [H, Hd, K], w2: [H, K, Hd]: the learned initial parameters as in naive.py
            (Hd a power of two >= 16).
        config: activation, layer norm and retention (none, l2, lq, kl, elastic).
        bias: a BiasConfig or its kind name; chunk_size: 16, 32 or 64.
        hidden_tile: None picks the layout (kernels.limits.mlp_hidden_tile: W on chip where it
            fits, else the hidden dim in tiles); a power of two dividing Hd forces the tiled
            kernel with that tile.
    Returns:
        o: [B, T, H, K] in the dtype of q.
    """
    config = config or MlpMemoryConfig()
    bias = as_bias(bias)
    if bias.kind == "lp" and not bias.smooth:
        raise KernelInputError("bias 'lp' has a Triton kernel only with smooth=True (tanh / sqrt surrogates)")
    check_mlp_inputs(q, k, v, eta, w1, w2, alpha, theta, delta, bias, chunk_size, config, hidden_tile)
    if hidden_tile is None:
        precision = mlp_precision(q.dtype, config.layer_norm, config.retention, bias.kind)
        hidden_tile = mlp_hidden_tile(q.shape[-1], w1.shape[1], chunk_size, products(precision),
                                      (theta is not None and config.retention == "lq")
                                      or _momentum_per_channel(config, alpha, theta))
    # the learned weights -> the state in fp32 (kl: a softmax, which bf16 would blur)
    x1, x2 = (x.contiguous() for x in initial_state(w1.float(), w2.float(), config))
    if config.retention == "none":
        alpha = None
    if config.retention == "kl":  # channel.py's kernels: a per-head alpha as a channel-wise one
        alpha = _per_channel(alpha, q, w1.shape[1])
    if not bias.needs_delta:
        delta = None
    args = [x.contiguous() if x is not None else None for x in (q, k, v, eta, alpha, theta, delta)]
    return ChunkMlpMemory.apply(*args, x1, x2, config, bias, chunk_size, hidden_tile)
