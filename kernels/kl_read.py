"""kl retention's exact per-token read of one weight on chip (Memora's: every token reads
c softmax_row of its own log-space state), and its backward, which rebuilds each token's weights
from the segment-start log-weights instead of storing them; the carried state's end map. Shared
by the MLP kernels (each layer: mlp_chunk/channel.py, mlp_chunk/tiled.py per hidden tile) and the
matrix kernel's kl form (matrix_chunk/kl.py). With momentum and a decay per input channel
(``_kl_read_mom_ch``, channel.py) each token's write weights D_t come from one product of the
momentum's decays with the channel decays (kernels.channel_momentum's D, one token's row)."""

from __future__ import annotations

import triton
import triton.language as tl

from .common import _mm, _token_row


@triton.jit
def _log_softmax_rows(raw, SCALE):
    """log(SCALE softmax_row(raw)): kl's carried state, exact where the weights underflow."""
    shifted = raw - tl.max(raw, 1)[:, None]
    return tl.log(SCALE) + shifted - tl.log(tl.sum(tl.exp(shifted), 1))[:, None]


@triton.jit
def _kl_raw(X, d, xw, lb, t, C: tl.constexpr, PREC: tl.constexpr):
    """kl's log-space state of token t of one layer, raw_t = b_t X - d^T P_t [out, n]: X [out, n]
    the chunk-start log-weights, d [C, out] the deltas, xw [C, n] the write inputs (times eta),
    lb [C, n] the cumulative log-decays per input channel, P_t = xw exp(lb_t - lb_i) for i <= t
    (0 below), b_t = exp(lb_t). Returns raw_t, P_t, the decays exp(lb_t - lb_i) [C, n], b_t [n]."""
    oc = tl.arange(0, C)
    lb_t = _token_row(lb, t, C)
    dec = tl.exp(tl.where((oc <= t)[:, None], lb_t[None, :] - lb, float("-inf")))
    P = xw * dec
    bt = tl.exp(lb_t)
    return bt[None, :] * X - _mm(tl.trans(d), P, PREC), P, dec, bt


@triton.jit
def _kl_token(X, d, xw, lb, lse, t, SCALE, C: tl.constexpr, ROWS: tl.constexpr, PREC: tl.constexpr):
    """kl's exact weights of token t, U_t = SCALE softmax_row(raw_t) [out, n] (_kl_raw's
    arguments), with P_t, the decays and b_t. ROWS: the rows run past this block (W2's over hidden
    tiles), lse [C, out] holds their log-sum-exp over the whole row; else they end here."""
    raw, P, dec, bt = _kl_raw(X, d, xw, lb, t, C, PREC)
    if ROWS:
        U = SCALE * tl.exp(raw - _token_row(lse, t, C)[:, None])
    else:
        e = tl.exp(raw - tl.max(raw, 1)[:, None])
        U = e * (SCALE / tl.sum(e, 1))[:, None]
    return U, P, dec, bt


@triton.jit
def _kl_read(X, z, d, xw, lb, size, SCALE, C: tl.constexpr, PREC: tl.constexpr):
    """kl's read of one layer whose rows end in the block, u_t = U_t z_t for the segment's
    ``size`` tokens ([C, out], 0 on padding rows), every token's weights formed on chip
    (_kl_token); z: [C, n]."""
    oc = tl.arange(0, C)
    u = tl.zeros_like(d)
    for t in range(size):
        U, _P, _dec, _bt = _kl_token(X, d, xw, lb, d, t, SCALE, C, False, PREC)
        u_t = tl.sum(U * _token_row(z, t, C)[None, :], 1)
        u += tl.where((oc == t)[:, None], u_t[None, :], 0.0)
    return u


@triton.jit
def _token_read_vjp(U, du, z, u, t, SCALE, C: tl.constexpr):
    """Token t's share of the VJP of a kl read u_t = U_t z_t (U = SCALE softmax_row(raw_t)):
    (dL/draw_t = U * du_t (z_t - u_t / SCALE) [out, n], dL/dz_t [n]); the softmax's VJP of
    dU = du_t z_t^T, whose row sums <dU, U> are du_t * u_t."""
    du_t = _token_row(du, t, C)
    draw = U * du_t[:, None] * (_token_row(z, t, C)[None, :] - _token_row(u, t, C)[:, None] / SCALE)
    return draw, tl.sum(U * du_t[:, None], 0)


@triton.jit
def _kl_read_bwd(du, u, X, z, d, xw, lb, lse, size, SCALE, C: tl.constexpr, ROWS: tl.constexpr,
                 PREC: tl.constexpr):
    """VJP of kl's read u_t = U_t z_t of one block (the whole layer, or with ROWS a block of
    hidden columns whose rows' log-sum-exp is lse [C, out]) from du [C, out], u: the read's
    whole output; every token's weights recomputed. Gradients of z, X (the log-weights), d, xw
    and lb (each token's softmax VJP: _token_read_vjp, over the whole row)."""
    oc = tl.arange(0, C)
    dz = tl.zeros_like(z)
    dX = tl.zeros_like(X)
    dd = tl.zeros_like(d)
    dxw = tl.zeros_like(xw)
    dlb = tl.zeros_like(lb)
    for t in range(size):
        U, P, dec, bt = _kl_token(X, d, xw, lb, lse, t, SCALE, C, ROWS, PREC)
        here = (oc == t)[:, None]
        draw, dz_t = _token_read_vjp(U, du, z, u, t, SCALE, C)
        dz += tl.where(here, dz_t[None, :], 0.0)
        dX += bt[None, :] * draw
        dP = -_mm(d, draw, PREC)  # [C, n]
        dd -= _mm(P, tl.trans(draw), PREC)
        dxw += dP * dec
        tP = dP * P  # d / d(lb_t - lb_i) of P_t
        dlb += tl.where(here, (tl.sum(draw * X, 0) * bt + tl.sum(tP, 0))[None, :], 0.0) - tP
    return dz, dX, dd, dxw, dlb


@triton.jit
def _kl_raw_mom_ch(X, S, d, xw, lb, Lt, elt, t, C: tl.constexpr, PREC: tl.constexpr):
    """kl's log-space state of token t with momentum S [out, n] (a decay per input channel):
    raw_t = b_t X + cv_t S - d^T P_t, P_t = xw * D_t with D_t[i] = sum_{i <= j <= t} Lt[j, i]
    exp(lb_t - lb_j) = (Lt^T dec_t)[i] and cv_t = sum_{j <= t} elt_j exp(lb_t - lb_j); Lt [C, C]
    = Theta_j / Theta_i (i <= j), elt [C] = Theta_j. Every exponent a difference, at most 0.
    Returns raw_t, P_t, dec_t [C, n] (exp(lb_t - lb_j), j <= t), D_t, b_t and cv_t."""
    oc = tl.arange(0, C)
    lb_t = _token_row(lb, t, C)
    dec = tl.exp(tl.where((oc <= t)[:, None], lb_t[None, :] - lb, float("-inf")))
    Dt = tl.dot(tl.trans(Lt), dec, input_precision="ieee")
    P = xw * Dt
    bt = tl.exp(lb_t)
    cvt = tl.sum(dec * elt[:, None], 0)
    return bt[None, :] * X + cvt[None, :] * S - _mm(tl.trans(d), P, PREC), P, dec, Dt, bt, cvt


@triton.jit
def _kl_token_mom_ch(X, S, d, xw, lb, Lt, elt, lse, t, SCALE, C: tl.constexpr, ROWS: tl.constexpr,
                     PREC: tl.constexpr):
    """Token t's exact weights with momentum, U_t = SCALE softmax_row(raw_t) (_kl_raw_mom_ch's
    arguments; ROWS and lse as _kl_token's), with _kl_raw_mom_ch's P_t, dec_t, D_t, b_t, cv_t."""
    raw, P, dec, Dt, bt, cvt = _kl_raw_mom_ch(X, S, d, xw, lb, Lt, elt, t, C, PREC)
    if ROWS:
        U = SCALE * tl.exp(raw - _token_row(lse, t, C)[:, None])
    else:
        e = tl.exp(raw - tl.max(raw, 1)[:, None])
        U = e * (SCALE / tl.sum(e, 1))[:, None]
    return U, P, dec, Dt, bt, cvt


@triton.jit
def _kl_read_mom_ch(X, S, z, d, xw, lb, Lt, elt, size, SCALE, C: tl.constexpr, PREC: tl.constexpr):
    """kl's read with momentum, u_t = U_t z_t [C, out] for the segment's ``size`` tokens."""
    oc = tl.arange(0, C)
    u = tl.zeros_like(d)
    for t in range(size):
        U, _P, _dec, _Dt, _bt, _cvt = _kl_token_mom_ch(X, S, d, xw, lb, Lt, elt, d, t, SCALE, C, False, PREC)
        u += tl.where((oc == t)[:, None], tl.sum(U * _token_row(z, t, C)[None, :], 1)[None, :], 0.0)
    return u


@triton.jit
def _kl_read_mom_ch_bwd(du, u, X, S, z, d, xw, lb, Lt, elt, lse, size, SCALE, C: tl.constexpr,
                        ROWS: tl.constexpr, PREC: tl.constexpr):
    """VJP of _kl_read_mom_ch from du [C, out], every token's weights rebuilt (ROWS: a block of
    hidden columns whose rows' log-sum-exp is lse [C, out], as _kl_read_bwd's): gradients of z, X,
    S, d, xw, lb [C, n] and lt [C] (through Lt and elt)."""
    oc = tl.arange(0, C)
    dz = tl.zeros_like(z)
    dX = tl.zeros_like(X)
    dS = tl.zeros_like(S)
    dd = tl.zeros_like(d)
    dxw = tl.zeros_like(xw)
    dlb = tl.zeros_like(lb)
    dLt = tl.zeros_like(Lt)
    delt = tl.zeros_like(elt)
    for t in range(size):
        U, P, dec, Dt, bt, cvt = _kl_token_mom_ch(X, S, d, xw, lb, Lt, elt, lse, t, SCALE, C, ROWS, PREC)
        here = (oc == t)[:, None]
        draw, dz_t = _token_read_vjp(U, du, z, u, t, SCALE, C)
        dz += tl.where(here, dz_t[None, :], 0.0)
        dX += bt[None, :] * draw
        dS += cvt[None, :] * draw
        dP = -_mm(d, draw, PREC)  # [C, n]
        dd -= _mm(P, tl.trans(draw), PREC)
        dxw += dP * Dt
        dDt = dP * xw
        dLt += tl.dot(dec, tl.trans(dDt), input_precision="ieee")
        dcv = tl.sum(draw * S, 0)
        ddec = tl.dot(Lt, dDt, input_precision="ieee") + elt[:, None] * dcv[None, :]
        delt += tl.sum(dec * dcv[None, :], 1)
        g = ddec * dec  # d / d(lb_t - lb_j)
        dlb += tl.where(here, (tl.sum(draw * X, 0) * bt + tl.sum(g, 0))[None, :], 0.0) - g
    Y = tl.where(oc[:, None] >= oc[None, :], dLt * Lt, 0.0)
    return dz, dX, dS, dd, dxw, dlb, tl.sum(Y, 1) - tl.sum(Y, 0) + elt * delt
