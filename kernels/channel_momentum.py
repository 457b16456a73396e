"""Momentum with a decay per input channel, in Triton: the pieces every kernel with a
channel-wise alpha and momentum shares (the matrix kernel's key channels, the MLP kernels' input
channels of each layer).

With S_t = Theta-decayed sum of the steps and W_t = W_{t-1} diag(alpha_t) + S_t, the write of
token i reaches the read of token t (i <= t) through

    D[t, i] = sum_{i <= j <= t} (Theta_j / Theta_i) exp(lb_t - lb_j)        (one value per channel)

(lb the cumulative log alpha per channel, Theta the cumulative momentum gate). No product of two
factors gives it without cancellation (the sum runs between i and t), so the scores are summed
step by step, A = sum_j ((z * E_j) x^T) * w_j with E_j[t] = exp(lb_t - lb_j) (t >= j) and
w_j[i] = Theta_j / Theta_i (i <= j): one [C, N] x [N, C] product per step, O(C^3 N) per chunk,
every exponent a difference (at most 0), so nothing overflows however small a gate.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import _mm, _token_row


@triton.jit
def _momentum_decays_ch(lb, lt, j, C: tl.constexpr):
    """Step j's decays with momentum and a channel-wise alpha: (E [C, N], w [C], e^{lt_j}) with
    E[t] = exp(lb_t - lb_j) for t >= j (0 before) and w[i] = exp(lt_j - lt_i) for i <= j (0
    after); every exponent a difference, at most 0."""
    oc = tl.arange(0, C)
    lt_j = tl.sum(tl.where(oc == j, lt, 0.0), 0)
    E = tl.exp(tl.where((oc >= j)[:, None], lb - _token_row(lb, j, C)[None, :], float("-inf")))
    w = tl.exp(tl.where(oc <= j, lt_j - lt, float("-inf")))
    return E, w, tl.exp(lt_j)


@triton.jit
def _theta_matrix(lt, C: tl.constexpr):
    """Lt [C, C]: Theta_j / Theta_i = exp(lt_j - lt_i) for i <= j, 0 above."""
    oc = tl.arange(0, C)
    return tl.exp(tl.where(oc[:, None] >= oc[None, :], lt[:, None] - lt[None, :], float("-inf")))


@triton.jit
def _momentum_ends_ch(lb, lbl, lt, ltl, mt, C: tl.constexpr):
    """The chunk end's decays with momentum and a channel-wise alpha, from lb [C, N], its last
    live row lbl [N], lt [C] and its last ltl, mt [C] the live tokens: (Lt [C, C], wk [C, N],
    Dl [C, N], clast [N], tlast [C]) with Lt[j, i] = Theta_j / Theta_i, wk[j] = beta_last /
    beta_j over live tokens, Dl[i] = D[last, i] = sum_{j >= i} Lt[j, i] wk[j] (the end state's
    write weights), clast = sum_j Theta_j wk[j] (the chunk-start momentum's), tlast[i] =
    Theta_last / Theta_i (the end momentum's)."""
    Lt = _theta_matrix(lt, C)
    wk = tl.where(mt[:, None], tl.exp(lbl[None, :] - lb), 0.0)
    Dl = tl.dot(tl.trans(Lt), wk, input_precision="ieee")
    clast = tl.sum(wk * tl.exp(lt)[:, None], 0)
    return Lt, wk, Dl, clast, tl.exp(ltl - lt)


@triton.jit
def _channel_momentum(z, x, lb, lt, C: tl.constexpr, PREC: tl.constexpr):
    """The reads' weights, from the read inputs z [C, N], the write inputs x [C, N] (the keys
    times eta), lb [C, N] and lt [C]: (A [C, C], cv [C, N]) with
    A[t, i] = sum_n z_tn x_in D[t, i]_n (the step written at token i, read at t) and
    cv[t] = sum_{j <= t} Theta_j exp(lb_t - lb_j) (the chunk-start momentum's weight at t)."""
    A = tl.zeros([C, C], dtype=tl.float32)
    cv = tl.zeros_like(z)
    for j in range(C):
        E, w, th = _momentum_decays_ch(lb, lt, j, C)
        A += _mm(z * E, tl.trans(x), PREC) * w[None, :]
        cv += E * th
    return A, cv


@triton.jit
def _channel_momentum_bwd(dA, dcv, z, x, lb, lt, C: tl.constexpr, PREC: tl.constexpr):
    """Back through _channel_momentum: (dz, dx, dlb [C, N], dlt [C]) from dA [C, C] (causal)
    and dcv [C, N]."""
    oc = tl.arange(0, C)
    dA = tl.where(oc[:, None] >= oc[None, :], dA, 0.0)
    dz = tl.zeros_like(z)
    dx = tl.zeros_like(x)
    dlb = tl.zeros_like(lb)
    dlt = tl.zeros_like(lt)
    for j in range(C):
        here = oc == j
        E, w, th = _momentum_decays_ch(lb, lt, j, C)
        zE = z * E
        dAw = dA * w[None, :]
        gw = tl.sum(dA * _mm(zE, tl.trans(x), PREC), 0) * w  # d w[i] * w[i]
        dzE = _mm(dAw, x, PREC)
        dx += _mm(tl.trans(dAw), zE, PREC)
        dz += dzE * E
        gE = (dzE * z + dcv * th) * E
        dlb += gE - tl.where(here[:, None], tl.sum(gE, 0)[None, :], 0.0)
        dlt += tl.where(here, tl.sum(gw, 0) + th * tl.sum(tl.sum(dcv * E, 1), 0), 0.0) - gw
    return dz, dx, dlb, dlt


@triton.jit
def _momentum_ends_ch_bwd(dDl, dclast, dtlast, lb, lbl, lt, ltl, mt, C: tl.constexpr):
    """Back through _momentum_ends_ch: (dlb [C, N], dlbl [N], dlt [C], dltl) from the
    gradients of Dl [C, N], clast [N] and tlast [C]."""
    oc = tl.arange(0, C)
    Lt, wk, _Dl, _clast, tlast = _momentum_ends_ch(lb, lbl, lt, ltl, mt, C)
    dwk = tl.dot(Lt, dDl, input_precision="ieee") + dclast[None, :] * tl.exp(lt)[:, None]
    Y = tl.where(oc[:, None] >= oc[None, :], tl.dot(wk, tl.trans(dDl), input_precision="ieee") * Lt, 0.0)
    gt = dtlast * tlast
    dlt = tl.sum(Y, 1) - tl.sum(Y, 0) + tl.sum(wk * dclast[None, :], 1) * tl.exp(lt) - gt
    gb = dwk * wk
    return -gb, tl.sum(gb, 0), dlt, tl.sum(gt, 0)


@triton.jit
def _momentum_end_ch(X, S, d, x_in, lb, lbl, lt, ltl, mt, C: tl.constexpr, PREC: tl.constexpr):
    """A state's chunk end with momentum, X [out, n] and S, from the steps' rows d [C, out] and
    write inputs x_in [C, n]: (raw, S', D[last], cv_last, Theta_last / Theta_i) with
    raw = X * b_last + S * cv_last - d^T (x_in * D[last]), S' = Theta_last S - d^T (x_in * tlast)."""
    _Lt, _wk, Dl, cl, tlast = _momentum_ends_ch(lb, lbl, lt, ltl, mt, C)
    raw = X * tl.exp(lbl)[None, :] + S * cl[None, :] - _mm(tl.trans(d), x_in * Dl, PREC)
    S_end = tl.exp(ltl) * S - _mm(tl.trans(d * tlast[:, None]), x_in, PREC)
    return raw, S_end, Dl, cl, tlast


@triton.jit
def _momentum_end_ch_bwd(draw, dS_end, S, d, x_in, Dl, tlast, PREC: tl.constexpr):
    """Back through _momentum_end_ch but for its decays: gradients of d, x_in, D[last], cv_last,
    Theta_last / Theta_i (S's: the caller's, with Theta_last's)."""
    dw = -_mm(d, draw, PREC)  # d / d(x_in * D[last])
    R = _mm(x_in, tl.trans(dS_end), PREC)  # R[i] = dS' x_i
    dd = -_mm(x_in * Dl, tl.trans(draw), PREC) - tlast[:, None] * R
    dx = dw * Dl - tlast[:, None] * _mm(d, dS_end, PREC)
    return dd, dx, dw * x_in, tl.sum(draw * S, 0), -tl.sum(d * R, 1)
