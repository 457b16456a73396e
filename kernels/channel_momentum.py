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
def _momentum_ends_ch(lb, lbl, lt, ltl, mt, C: tl.constexpr):
    """The chunk end's decays with momentum and a channel-wise alpha, from lb [C, N], its last
    live row lbl [N], lt [C] and its last ltl, mt [C] the live tokens: (Lt [C, C], wk [C, N],
    Dl [C, N], clast [N], tlast [C]) with Lt[j, i] = Theta_j / Theta_i, wk[j] = beta_last /
    beta_j over live tokens, Dl[i] = D[last, i] = sum_{j >= i} Lt[j, i] wk[j] (the end state's
    write weights), clast = sum_j Theta_j wk[j] (the chunk-start momentum's), tlast[i] =
    Theta_last / Theta_i (the end momentum's)."""
    oc = tl.arange(0, C)
    causal = oc[:, None] >= oc[None, :]
    Lt = tl.exp(tl.where(causal, lt[:, None] - lt[None, :], float("-inf")))
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
def _channel_momentum_bwd(dA, dcv, dDl, dclast, dtlast, z, x, lb, lbl, lt, ltl, mt,
                          C: tl.constexpr, PREC: tl.constexpr):
    """Back through _channel_momentum and _momentum_ends_ch: (dz, dx, dlb [C, N], dlbl [N],
    dlt [C], dltl) from dA [C, C] (causal), dcv [C, N], dDl [C, N], dclast [N], dtlast [C]."""
    oc = tl.arange(0, C)
    causal = oc[:, None] >= oc[None, :]
    dA = tl.where(causal, dA, 0.0)
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
    Lt, wk, _Dl, _clast, tlast = _momentum_ends_ch(lb, lbl, lt, ltl, mt, C)
    dwk = tl.dot(Lt, dDl, input_precision="ieee") + dclast[None, :] * tl.exp(lt)[:, None]
    Y = tl.where(causal, tl.dot(wk, tl.trans(dDl), input_precision="ieee") * Lt, 0.0)
    gt = dtlast * tlast
    dlt += tl.sum(Y, 1) - tl.sum(Y, 0) + tl.sum(wk * dclast[None, :], 1) * tl.exp(lt) - gt
    gb = dwk * wk
    return dz, dx, dlb - gb, tl.sum(gb, 0), dlt, tl.sum(gt, 0)
