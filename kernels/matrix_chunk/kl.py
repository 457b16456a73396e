"""Triton forward and backward of kl retention (Memora's) on a matrix memory.

Same semantics as ``naive.naive_chunk_matrix_kl``: the state carried is the log-weights X [V, K]
(W = exp(X), each row summing to c = SCALE), the sequence walked in segments (each chunk split
after its first token, kernels.segments). One program per (V-tile, batch x head) walks them in
order; per segment, with lb = cumsum(log alpha) [C, K] (a per-head alpha repeated per channel):

    E = K exp(X)^T - V,   P = eta * phi(E)        (every gradient at the segment-start memory)
    o_t = c softmax_row(raw_t) q_t,   raw_t = exp(lb_t) * X - sum_{i<=t} exp(lb_t - lb_i) P_i kw_i^T
    X' = log(c softmax_row(raw_last))

with kw = k (eta * k for a channel-wise eta). With momentum (MOMENTUM) the log-space step S is
carried too: raw_t gains cv_t S and its step sum takes D[t, i] = sum_{i <= j <= t} (Theta_j /
Theta_i) exp(lb_t - lb_j) (per key channel: kernels.channel_momentum, one token's row at a time,
kernels.kl_read._kl_read_mom_ch) instead of exp(lb_t - lb_i), and S' = Theta_last S - sum_i
(Theta_last / Theta_i) P_i kw_i^T. Every token's weights are formed on chip one token
at a time (kernels.kl_read, as the MLP kernels' kl layers) and rebuilt in the backward, which walks
the segments in reverse from the stored segment-start X. The softmax runs along K, so V is tiled
unless the bias needs whole rows of E (huber_norm, huber_switch, robust).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from ..bias import BiasConfig
from ..channel_momentum import (
    _momentum_end_ch,
    _momentum_end_ch_bwd,
    _momentum_ends_ch_bwd,
    _theta_matrix,
)
from ..common import _bias_args, _bias_grad, _bias_grad_bwd, _mm, _slot, _token_row
from ..fallback import reference_grads, warn_fallback
from ..kl_read import (
    _kl_read,
    _kl_read_bwd,
    _kl_read_mom_ch,
    _kl_read_mom_ch_bwd,
    _log_softmax_rows,
)
from ..launch import on_device
from ..precision import matrix_precision
from ..segments import segments
from .chunk import TokenGradients, _launch_config, _momentum_logs, _steps, _thresholds
from .naive import naive_chunk_matrix_kl


@triton.jit
def _segment(q, k, v, eta, alpha, delta, seg_start, seg_size, n, b, h, i_v, T, H,
             K: tl.constexpr, V: tl.constexpr, C: tl.constexpr, BV: tl.constexpr,
             ALPHA: tl.constexpr, BIAS: tl.constexpr, ETA_CH: tl.constexpr, DELTA_CH: tl.constexpr):
    """Segment n's tiles: q, k [C, K], v [C, BV], the step factor et [C], the write keys kw
    [C, K], the Huber thresholds, lb = cumsum(log alpha) [C, K] (0 past the segment's ``size``
    rows, which load as tokens with k = v = q = 0, eta = 0, alpha = 1), and row / mask helpers."""
    start = tl.load(seg_start + n)
    size = tl.load(seg_size + n)
    oc = tl.arange(0, C)
    ok = tl.arange(0, K)
    ov = i_v * BV + tl.arange(0, BV)
    mt = oc < size
    row = (b * T + start + oc) * H + h
    m_ck = mt[:, None] & (ok < K)[None, :]
    m_cv = mt[:, None] & (ov < V)[None, :]
    qc = tl.load(q + row[:, None] * K + ok[None, :], mask=m_ck, other=0.0).to(tl.float32)
    kc = tl.load(k + row[:, None] * K + ok[None, :], mask=m_ck, other=0.0).to(tl.float32)
    vc = tl.load(v + row[:, None] * V + ov[None, :], mask=m_cv, other=0.0).to(tl.float32)
    et, kw = _steps(eta, row, mt, m_ck, ok, kc, K, ETA_CH)
    dl = _thresholds(delta, row, mt, m_cv, ov, V, et, BIAS, DELTA_CH)
    if ALPHA == 2:
        la = tl.log(tl.load(alpha + row[:, None] * K + ok[None, :], mask=m_ck, other=1.0).to(tl.float32))
    elif ALPHA == 1:
        la = tl.zeros([C, K], dtype=tl.float32) + tl.log(tl.load(alpha + row, mask=mt, other=1.0).to(tl.float32))[:, None]
    else:
        la = tl.zeros([C, K], dtype=tl.float32)
    return qc, kc, vc, et, kw, dl, tl.cumsum(la, 0), size, row, mt, m_ck, m_cv, ok, ov


@triton.jit
def _program(H, K: tl.constexpr, BV: tl.constexpr):
    """This program's V-tile and batch x head: (i_v, i_bh, b, h, key range [K], value rows [BV],
    offsets of its [BV, K] tile of a state)."""
    i_v = tl.program_id(0)
    i_bh = tl.program_id(1)
    ok = tl.arange(0, K)
    ov = i_v * BV + tl.arange(0, BV)
    return i_v, i_bh, i_bh // H, i_bh % H, ok, ov, ov[:, None] * K + ok[None, :]


@triton.jit
def _kl_fwd_kernel(
    q, k, v, eta, alpha, theta, delta, x0, seg_start, seg_size, o, saved_x, saved_s,
    T, H, NS, P_EXP, SHARP, EPS, RADIUS, SCALE,
    K: tl.constexpr, V: tl.constexpr, C: tl.constexpr, BV: tl.constexpr, BIAS: tl.constexpr,
    ALPHA: tl.constexpr, NEPS: tl.constexpr, SMOOTH: tl.constexpr, PREC: tl.constexpr,
    ETA_CH: tl.constexpr, DELTA_CH: tl.constexpr, SAVE: tl.constexpr, MOMENTUM: tl.constexpr,
):
    i_v, i_bh, b, h, _ok, ov, tile = _program(H, K, BV)
    X = tl.load(x0 + i_bh * V * K + tile).to(tl.float32)
    S = tl.zeros([BV, K], dtype=tl.float32)  # the log-space momentum (MOMENTUM)
    for n in range(NS):
        if SAVE:
            tl.store(saved_x + _slot(i_bh, n, NS, V * K) + tile, X)
            if MOMENTUM:
                tl.store(saved_s + _slot(i_bh, n, NS, V * K) + tile, S)
        qc, kc, vc, et, kw, dl, lb, size, row, mt, _m_ck, m_cv, _ok, _ov = _segment(
            q, k, v, eta, alpha, delta, seg_start, seg_size, n, b, h, i_v, T, H, K, V, C, BV,
            ALPHA, BIAS, ETA_CH, DELTA_CH)
        E = _mm(kc, tl.trans(tl.exp(X)), PREC) - vc
        P = _bias_grad(E, vc, dl, P_EXP, SHARP, EPS, RADIUS, BIAS, NEPS, SMOOTH, DELTA_CH) * et[:, None]
        lbl = _token_row(lb, C - 1, C)  # padded rows keep the last live one's
        if MOMENTUM:
            lt, ltl = _momentum_logs(theta, row, mt)
            out = _kl_read_mom_ch(X, S, qc, P, kw, lb, _theta_matrix(lt, C), tl.exp(lt), size, SCALE, C, PREC)
            raw, S, _Dl, _cl, _tlast = _momentum_end_ch(X, S, P, kw, lb, lbl, lt, ltl, mt, C, PREC)
        else:
            out = _kl_read(X, qc, P, kw, lb, size, SCALE, C, PREC)
            raw = X * tl.exp(lbl)[None, :] - _mm(tl.trans(P), kw * tl.exp(lbl[None, :] - lb), PREC)
        X = _log_softmax_rows(raw, SCALE)
        tl.store(o + row[:, None] * V + ov[None, :], out.to(o.dtype.element_ty), mask=m_cv)


@triton.jit
def _kl_bwd_kernel(
    q, k, v, eta, alpha, theta, delta, seg_start, seg_size, saved_x, saved_s, do,
    dq, dk, dv, deta, dla, dlth, ddelta, dx0,
    T, H, NS, BH, P_EXP, SHARP, EPS, RADIUS, SCALE,
    K: tl.constexpr, V: tl.constexpr, C: tl.constexpr, BV: tl.constexpr, BIAS: tl.constexpr,
    ALPHA: tl.constexpr, NEPS: tl.constexpr, SMOOTH: tl.constexpr, PREC: tl.constexpr,
    ETA_CH: tl.constexpr, DELTA_CH: tl.constexpr, MOMENTUM: tl.constexpr,
):
    """One program per (V-tile, batch x head) walks the segments in reverse, carrying dL/dX of
    the segment end; gradients that sum over V (q, k, the gates) are written per V-tile."""
    i_v, i_bh, b, h, ok, ov, tile = _program(H, K, BV)
    part = i_v * BH * T  # per-V-tile partial buffers: offset of this tile
    part_k = _slot(i_v, 0, BH * T, K)
    dXn = tl.zeros([BV, K], dtype=tl.float32)  # dL / d(segment-end log-weights)
    dSn = tl.zeros([BV, K], dtype=tl.float32)  # ... and momentum (MOMENTUM)
    for i_n in range(NS):
        n = NS - 1 - i_n
        X = tl.load(saved_x + _slot(i_bh, n, NS, V * K) + tile)
        qc, kc, vc, et, kw, dl, lb, size, row, mt, m_ck, m_cv, ok, ov = _segment(
            q, k, v, eta, alpha, delta, seg_start, seg_size, n, b, h, i_v, T, H, K, V, C, BV,
            ALPHA, BIAS, ETA_CH, DELTA_CH)
        dO = tl.load(do + row[:, None] * V + ov[None, :], mask=m_cv, other=0.0).to(tl.float32)
        W = tl.exp(X)
        E = _mm(kc, tl.trans(W), PREC) - vc
        G = _bias_grad(E, vc, dl, P_EXP, SHARP, EPS, RADIUS, BIAS, NEPS, SMOOTH, DELTA_CH)
        P = G * et[:, None]
        lbl = _token_row(lb, C - 1, C)
        if MOMENTUM:
            S = tl.load(saved_s + _slot(i_bh, n, NS, V * K) + tile)
            lt, ltl = _momentum_logs(theta, row, mt)
            raw, _S, Dl, cl, tlast = _momentum_end_ch(X, S, P, kw, lb, lbl, lt, ltl, mt, C, PREC)
        else:
            dec = tl.exp(lbl[None, :] - lb)
            KD = kw * dec
            raw = X * tl.exp(lbl)[None, :] - _mm(tl.trans(P), KD, PREC)
        # the end map X' = log c + log_softmax_row(raw)
        shifted = tl.exp(raw - tl.max(raw, 1)[:, None])
        draw = dXn - shifted / tl.sum(shifted, 1)[:, None] * tl.sum(dXn, 1)[:, None]
        dX = draw * tl.exp(lbl)[None, :]
        if MOMENTUM:  # raw and S' as _momentum_end_ch, the reads as _kl_read_mom_ch
            dP, dkw, dDl, dcl, dtlast = _momentum_end_ch_bwd(draw, dSn, S, P, kw, Dl, tlast, PREC)
            dS = draw * cl[None, :] + tl.exp(ltl) * dSn
            Lt = _theta_matrix(lt, C)
            u = _kl_read_mom_ch(X, S, qc, P, kw, lb, Lt, tl.exp(lt), size, SCALE, C, PREC)
            dqc, dXr, dSr, dPr, dkwr, dlb, dlt = _kl_read_mom_ch_bwd(
                dO, u, X, S, qc, P, kw, lb, Lt, tl.exp(lt), P, size, SCALE, C, False, PREC)
            dX += dXr
            dS += dSr
            dP += dPr
            dkw += dkwr
            dlbe, dlbl, dlte, dltl = _momentum_ends_ch_bwd(dDl, dcl, dtlast, lb, lbl, lt, ltl, mt, C)
            dlb += dlbe
            dlbl += tl.exp(lbl) * tl.sum(draw * X, 0)
            dltl += tl.exp(ltl) * tl.sum(tl.sum(dSn * S, 1), 0)
            # lt_t sums log theta_j over j <= t; ltl (the last row) all of them
            tl.store(dlth + part + row, tl.cumsum(dlt + dlte, 0, reverse=True) + dltl, mask=mt)
        else:
            dP = -_mm(KD, tl.trans(draw), PREC)
            dKD = -_mm(P, draw, PREC)
            dkw = dKD * dec
            dlb = -dKD * KD
            dlbl = tl.exp(lbl) * tl.sum(draw * X, 0) + tl.sum(dKD * KD, 0)
            # the per-token reads
            u = _kl_read(X, qc, P, kw, lb, size, SCALE, C, PREC)
            dqc, dXr, dPr, dkwr, dlbr = _kl_read_bwd(dO, u, X, qc, P, kw, lb, X, size, SCALE, C, False, PREC)
            dX += dXr
            dP += dPr
            dkw += dkwr
            dlb += dlbr
        # P = et * phi(E), E = K W^T - V, W = exp(X)
        dG = dP * et[:, None]
        dE, dd = _bias_grad_bwd(E, dG, dl, P_EXP, SHARP, EPS, RADIUS, BIAS, NEPS, SMOOTH, DELTA_CH)
        dkc = _mm(dE, W, PREC)
        dX += _mm(tl.trans(dE), kc, PREC) * W
        dvc = -dE
        if BIAS == 0:
            dvc -= dG
        # lb_t sums log alpha_j over j <= t; lbl (the last row) all of them
        g_la = tl.cumsum(dlb, 0, reverse=True) + dlbl[None, :]
        if ETA_CH:  # kw = eta * k
            ec = tl.load(eta + row[:, None] * K + ok[None, :], mask=m_ck, other=0.0).to(tl.float32)
            tl.store(dk + part_k + row[:, None] * K + ok[None, :], dkc + dkw * ec, mask=m_ck)
            tl.store(deta + part_k + row[:, None] * K + ok[None, :], dkw * kc, mask=m_ck)
        else:
            tl.store(dk + part_k + row[:, None] * K + ok[None, :], dkc + dkw, mask=m_ck)
            tl.store(deta + part + row, tl.sum(dP * G, 1), mask=mt)
        tl.store(dq + part_k + row[:, None] * K + ok[None, :], dqc, mask=m_ck)
        tl.store(dv + row[:, None] * V + ov[None, :], dvc.to(dv.dtype.element_ty), mask=m_cv)
        if ALPHA == 2:
            tl.store(dla + part_k + row[:, None] * K + ok[None, :], g_la, mask=m_ck)
        elif ALPHA == 1:
            tl.store(dla + part + row, tl.sum(g_la, 1), mask=mt)
        if (BIAS >= 3) and (BIAS <= 5):
            if DELTA_CH:
                tl.store(ddelta + row[:, None] * V + ov[None, :], dd, mask=m_cv)
            else:
                tl.store(ddelta + part + row, dd, mask=mt)
        dXn = dX
        if MOMENTUM:
            dSn = dS
    tl.store(dx0 + i_bh * V * K + tile, dXn)


def _segment_table(T: int, chunk_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(start, size) of every segment, int32 on ``device``."""
    spans = segments(T, chunk_size, lag_token=True)
    start = torch.tensor([a for a, _ in spans], dtype=torch.int32, device=device)
    size = torch.tensor([z - a for a, z in spans], dtype=torch.int32, device=device)
    return start, size


def _reference(bias: BiasConfig, chunk_size: int, scale: float):
    """The PyTorch reference in float32 (or wider), output in q's dtype: the fallback of a launch
    that does not fit this GPU."""
    def run(q, k, v, eta, alpha, theta, delta, x0):
        wide = [x if x is None else x.to(torch.promote_types(x.dtype, torch.float32))
                for x in (q, k, v, eta, alpha, delta, x0, theta)]
        return naive_chunk_matrix_kl(*wide[:7], bias=bias, chunk_size=chunk_size, scale=scale,
                                     theta=wide[7]).to(q.dtype)
    return run


class ChunkMatrixKL(torch.autograd.Function):
    """autograd wrapper around the two kl kernels (inputs checked by chunk_matrix_memory); x0 is
    the initial log-weights [H, V, K] in float32; theta (momentum)."""

    @staticmethod
    def forward(ctx, q, k, v, eta, alpha, theta, delta, x0, bias, chunk_size, scale):
        B, T, H, K = k.shape
        V = v.shape[-1]
        _, BV, warps = _launch_config(K, V, bias, backward=False)
        seg_start, seg_size = _segment_table(T, chunk_size, q.device)
        NS = seg_start.numel()
        save = any(ctx.needs_input_grad)
        o = torch.empty(B, T, H, V, dtype=q.dtype, device=q.device)
        saved_x = torch.empty(B * H * NS * V * K if save else 1, dtype=torch.float32, device=q.device)
        saved_s = torch.empty(B * H * NS * V * K if save and theta is not None else 1, dtype=torch.float32,
                              device=q.device)
        x0_full = x0.float().unsqueeze(0).expand(B, -1, -1, -1).contiguous()
        dummy = eta
        ctx.bias, ctx.chunk_size, ctx.scale, ctx.fallback = bias, chunk_size, scale, False
        scalars = _scalars(bias, q, eta, alpha, theta, delta, K, V, chunk_size, BV, scale)
        try:
            with on_device(q):
                _kl_fwd_kernel[(triton.cdiv(V, BV), B * H)](
                    q, k, v, eta, dummy if alpha is None else alpha, dummy if theta is None else theta,
                    dummy if delta is None else delta, x0_full, seg_start, seg_size, o, saved_x, saved_s,
                    T, H, NS, SAVE=save, num_warps=warps, num_stages=1, **scalars,
                )
        except OutOfResources as error:
            warn_fallback("matrix-memory kl forward", error)
            ctx.fallback = True
            o = _reference(bias, chunk_size, scale)(q, k, v, eta, alpha, theta, delta, x0)
        ctx.save_for_backward(q, k, v, eta, alpha, theta, delta, x0, saved_x, saved_s, seg_start, seg_size)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, eta, alpha, theta, delta, x0, saved_x, saved_s, seg_start, seg_size = ctx.saved_tensors
        bias, C, scale = ctx.bias, ctx.chunk_size, ctx.scale
        inputs = [q, k, v, eta, alpha, theta, delta, x0]
        reference = _reference(bias, C, scale)
        if ctx.fallback:
            return (*reference_grads(reference, inputs, do), None, None, None)
        B, T, H, K = k.shape
        V = v.shape[-1]
        _, BV, warps = _launch_config(K, V, bias, backward=True)
        NV = triton.cdiv(V, BV)
        token_grads = TokenGradients(NV, q, v, eta, delta, (alpha, theta))
        dx0 = torch.empty(B, H, V, K, dtype=torch.float32, device=q.device)
        dummy = eta
        try:
            with on_device(q):
                _kl_bwd_kernel[(NV, B * H)](
                    q, k, v, eta, dummy if alpha is None else alpha, dummy if theta is None else theta,
                    dummy if delta is None else delta, seg_start, seg_size, saved_x, saved_s, do.contiguous(),
                    *token_grads.buffers(), dx0,
                    T, H, seg_start.numel(), B * H, num_warps=warps, num_stages=1,
                    **_scalars(bias, q, eta, alpha, theta, delta, K, V, C, BV, scale),
                )
        except OutOfResources as error:
            warn_fallback("matrix-memory kl backward", error)
            return (*reference_grads(reference, inputs, do), None, None, None)
        return (*token_grads.finish(q, k, eta, delta, (alpha, theta)), dx0.sum(0).to(x0.dtype), None, None, None)


def _scalars(bias: BiasConfig, q, eta, alpha, theta, delta, K: int, V: int, chunk_size: int, BV: int,
             scale: float) -> dict:
    """The launch's scalars and flags, shared by the forward and the backward."""
    mode = 0 if alpha is None else (2 if alpha.dim() == 4 else 1)
    return dict(
        K=K, V=V, C=chunk_size, BV=BV, ALPHA=mode, PREC=matrix_precision(q.dtype, bias.kind, kl=True),
        ETA_CH=eta.dim() == 4, DELTA_CH=delta is not None and delta.dim() == 4, SCALE=float(scale),
        MOMENTUM=theta is not None,
        **_bias_args(bias),
    )


def compile_specs(bias: BiasConfig, K: int, V: int, chunk_size: int, alpha: str = "channel",
                  dtype: torch.dtype = torch.bfloat16, eta: str = "channel", delta: str = "head",
                  momentum: bool = False) -> list[tuple]:
    """(name, kernel, scalars, pointer types, num_warps) of the forward and backward launches for
    kernels.compile_check; alpha: none / head / channel; eta and delta:
    head / channel."""
    element = "*bf16" if dtype == torch.bfloat16 else "*fp32"
    pointers = {name: element for name in ("q", "k", "v", "o", "do", "dv")}
    pointers |= {"seg_start": "*i32", "seg_size": "*i32"}
    specs = []
    for name, kernel, backward in (("kl forward", _kl_fwd_kernel, False), ("kl backward", _kl_bwd_kernel, True)):
        _, BV, warps = _launch_config(K, V, bias, backward)
        scalars = {"T": 1024, "H": 8, "NS": 2 * 1024 // chunk_size, "K": K, "V": V, "C": chunk_size,
                   "BV": BV, "ALPHA": {"none": 0, "head": 1, "channel": 2}[alpha],
                   "PREC": matrix_precision(dtype, bias.kind, kl=True), "ETA_CH": eta == "channel",
                   "DELTA_CH": delta == "channel", "SCALE": 1.0, "MOMENTUM": momentum, **_bias_args(bias)}
        scalars |= {"BH": 32} if backward else {"SAVE": True}
        specs.append((name, kernel, scalars, pointers, warps))
    return specs


def chunk_matrix_kl(q, k, v, eta, alpha, theta, delta, initial_state, bias: BiasConfig, chunk_size: int,
                    scale: float) -> torch.Tensor:
    """kl retention's kernel call (inputs checked by chunk_matrix_memory): the initial
    log-weights log(c softmax_row(initial_state)) (uniform rows without one), in float32 and
    through autograd, so that the learned parameter gets its gradient."""
    H, K, V = q.shape[2], q.shape[3], v.shape[3]
    if initial_state is None:
        x0 = torch.full((H, V, K), math.log(scale / K), dtype=torch.float32, device=q.device)
    else:
        x0 = math.log(scale) + initial_state.float().log_softmax(-1)
    return ChunkMatrixKL.apply(q, k, v, eta, alpha, theta, delta, x0.contiguous(), bias, chunk_size, scale)
