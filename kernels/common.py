"""Triton helpers both memory kernels share (as fla's ``ops/common`` and ``ops/utils``): int64
offsets of stored states, the matmul at a chosen precision, the attentional biases' gradient
factor phi(e) and its backward, lq retention's whole-matrix norm and read scale, and the checks
and launch arguments around them."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from miras_search.primitives import LQ_FLOOR

from .bias import BIAS_KINDS, NORM_EPS, BiasConfig, KernelInputError

# constants read inside the kernels must be constexpr globals for Triton's compiler
_TINY = tl.constexpr(1.1754943508222875e-38)  # smallest normal float32: the lq norm's floor
_LQ_FLOOR = tl.constexpr(LQ_FLOOR)


@triton.jit
def _slot(i_bh, n, count, size):
    """Offset of item n of program i_bh's ``count`` items of ``size`` elements, in int64. The
    per-chunk stored states outgrow int32 indexing first (B x H x chunks x V x K is 2^31 at
    B=1, H=16, T=128k, chunk 16, K = V = 128), then the backward's per-V-tile gradient
    partials; an int32 product would wrap silently."""
    return (i_bh.to(tl.int64) * count + n) * size


@triton.jit
def _mm(a, b, PREC: tl.constexpr):
    """a @ b with fp32 accumulation; PREC (kernels.precision): 0 bf16 operands, 1 "tf32x3"
    (fp32-accurate on tensor cores), 2 full fp32 ("ieee"). Not plain tf32: the Huber biases
    branch on e, and tf32 rounding flips branches enough to move results by percents."""
    if PREC == 0:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    elif PREC == 1:
        return tl.dot(a, b, input_precision="tf32x3")
    else:
        return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _token_row(x, i, C: tl.constexpr):
    """Row i of x [C, n] as [n]."""
    return tl.sum(tl.where((tl.arange(0, C) == i)[:, None], x, 0.0), 0)


@triton.jit
def _sign(x):
    return tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0))


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _phi(E, Vv, d, BIAS: tl.constexpr, P_EXP, SHARP, EPS, RADIUS, NEPS: tl.constexpr,
         SMOOTH: tl.constexpr):
    """g = phi(e) per token row. E, Vv: [C, BV]; d: [C] (Huber threshold)."""
    if BIAS == 0:  # dot
        G = -Vv
    elif BIAS == 1:  # l2
        G = E
    elif BIAS == 2:  # lp (smooth)
        s = _tanh(SHARP * E)
        m = tl.exp(0.5 * (P_EXP - 1.0) * tl.log(E * E + EPS))
        G = P_EXP * s * m
    elif BIAS == 3:  # huber coordinate
        G = tl.minimum(tl.maximum(E, -d[:, None]), d[:, None])
    else:
        n = tl.sqrt(tl.sum(E * E, 1))
        nc = tl.maximum(n, NEPS)
        U = E / nc[:, None]
        if BIAS == 4:  # huber norm
            G = tl.where((n <= d)[:, None], E, d[:, None] * U)
        elif BIAS == 5:  # huber switch (Yaad)
            if SMOOTH == 2:  # relative sharpness: d tanh(SHARP e / d)
                G = tl.where((n <= d)[:, None], E, d[:, None] * _tanh(SHARP * E / d[:, None]))
            elif SMOOTH == 1:
                G = tl.where((n <= d)[:, None], E, d[:, None] * _tanh(SHARP * E))
            else:
                G = tl.where((n <= d)[:, None], E, d[:, None] * _sign(E))
        else:  # robust
            G = E + RADIUS * U
    return G


@triton.jit
def _phi_bwd(E, dG, d, BIAS: tl.constexpr, P_EXP, SHARP, EPS, RADIUS, NEPS: tl.constexpr,
             SMOOTH: tl.constexpr):
    """(dL/dE, dL/ddelta) from dL/dG. E, dG: [C, BV]; d: [C]. dot returns dE = 0."""
    dd = tl.zeros_like(d)
    if BIAS == 0:
        dE = tl.zeros_like(E)
    elif BIAS == 1:
        dE = dG
    elif BIAS == 2:
        s = _tanh(SHARP * E)
        r = E * E + EPS
        h = 0.5 * (P_EXP - 1.0)
        m = tl.exp(h * tl.log(r))
        dE = dG * P_EXP * (SHARP * (1.0 - s * s) * m + s * h * 2.0 * E * m / r)
    elif BIAS == 3:
        inside = (d[:, None] > E) & (-d[:, None] < E)
        dE = tl.where(inside, dG, 0.0)
        dd = tl.sum(tl.where(inside, 0.0, _sign(E) * dG), 1)
    else:
        n = tl.sqrt(tl.sum(E * E, 1))
        nc = tl.maximum(n, NEPS)
        U = E / nc[:, None]
        # (d unit / d e)^T dG = dG / nc - e (e . dG) / nc^3 (the second term only where nc = n)
        edg = tl.sum(E * dG, 1)
        corr = tl.where(n > NEPS, edg / (nc * nc * nc), 0.0)
        dU = dG / nc[:, None] - E * corr[:, None]
        big = n > d
        if BIAS == 4:
            dE = tl.where(big[:, None], d[:, None] * dU, dG)
            dd = tl.where(big, tl.sum(U * dG, 1), 0.0)
        elif BIAS == 5:
            if SMOOTH == 2:
                x = SHARP * E / d[:, None]
                th = _tanh(x)
                dE = tl.where(big[:, None], SHARP * (1.0 - th * th) * dG, dG)
                dd = tl.where(big, tl.sum((th - x * (1.0 - th * th)) * dG, 1), 0.0)
            elif SMOOTH == 1:
                th = _tanh(SHARP * E)
                dE = tl.where(big[:, None], d[:, None] * SHARP * (1.0 - th * th) * dG, dG)
                dd = tl.where(big, tl.sum(th * dG, 1), 0.0)
            else:
                dE = tl.where(big[:, None], 0.0, dG)
                dd = tl.where(big, tl.sum(_sign(E) * dG, 1), 0.0)
        else:
            dE = dG + RADIUS * dU
    return dE, dd


@triton.jit
def _phi_ch(E, D, BIAS: tl.constexpr, SHARP, SMOOTH: tl.constexpr):
    """g = phi(e) with one Huber threshold per value channel, D: [C, BV] (coordinate and switch;
    the switch tests ||e / D|| <= 1, as miras_search.schema.bias.HuberBias.phi)."""
    if BIAS == 3:  # huber coordinate
        G = tl.minimum(tl.maximum(E, -D), D)
    else:  # huber switch (Yaad)
        inside = (tl.sqrt(tl.sum((E / D) * (E / D), 1)) <= 1.0)[:, None]
        if SMOOTH == 2:
            G = tl.where(inside, E, D * _tanh(SHARP * E / D))
        elif SMOOTH == 1:
            G = tl.where(inside, E, D * _tanh(SHARP * E))
        else:
            G = tl.where(inside, E, D * _sign(E))
    return G


@triton.jit
def _phi_ch_bwd(E, dG, D, BIAS: tl.constexpr, SHARP, SMOOTH: tl.constexpr):
    """(dL/dE, dL/dD) [C, BV] from dL/dG through _phi_ch (the branch test is not differentiated)."""
    if BIAS == 3:
        inside = (D > E) & (-D < E)
        dE = tl.where(inside, dG, 0.0)
        dD = tl.where(inside, 0.0, _sign(E) * dG)
    else:
        big = (tl.sqrt(tl.sum((E / D) * (E / D), 1)) > 1.0)[:, None]
        if SMOOTH == 2:
            x = SHARP * E / D
            th = _tanh(x)
            dE = tl.where(big, SHARP * (1.0 - th * th) * dG, dG)
            dD = tl.where(big, (th - x * (1.0 - th * th)) * dG, 0.0)
        elif SMOOTH == 1:
            th = _tanh(SHARP * E)
            dE = tl.where(big, D * SHARP * (1.0 - th * th) * dG, dG)
            dD = tl.where(big, th * dG, 0.0)
        else:
            dE = tl.where(big, 0.0, dG)
            dD = tl.where(big, _sign(E) * dG, 0.0)
    return dE, dD


@triton.jit
def _bias_grad(E, vc, dl, P_EXP, SHARP, EPS, RADIUS, BIAS: tl.constexpr, NEPS: tl.constexpr,
               SMOOTH: tl.constexpr, DELTA_CH: tl.constexpr):
    """g = phi(e) [C, BV]: the Huber threshold dl per value channel [C, BV] with DELTA_CH
    (coordinate and switch variants), else per token [C]."""
    if DELTA_CH:
        G = _phi_ch(E, dl, BIAS, SHARP, SMOOTH)
    else:
        G = _phi(E, vc, dl, BIAS, P_EXP, SHARP, EPS, RADIUS, NEPS, SMOOTH)
    return G


@triton.jit
def _bias_grad_bwd(E, dG, dl, P_EXP, SHARP, EPS, RADIUS, BIAS: tl.constexpr, NEPS: tl.constexpr,
                   SMOOTH: tl.constexpr, DELTA_CH: tl.constexpr):
    """(dL/dE [C, BV], dL/d(threshold): [C, BV] with DELTA_CH, else [C]) through _bias_grad."""
    if DELTA_CH:
        dE, ddl = _phi_ch_bwd(E, dG, dl, BIAS, SHARP, SMOOTH)
    else:
        dE, ddl = _phi_bwd(E, dG, dl, BIAS, P_EXP, SHARP, EPS, RADIUS, NEPS, SMOOTH)
    return dE, ddl


@triton.jit
def _lq_norm(x, QX):
    """||X||_q over the whole tile (a scalar), as m (sum (|X| / m)^q)^(1/q) with m = max |X|:
    |X|^q itself leaves float32's range (q = 6, |X| = 1e7) where the norm does not."""
    ax = tl.abs(x)
    mx = tl.maximum(tl.max(tl.max(ax, 1), 0), _TINY)
    p = tl.where(ax > 0, tl.exp(QX * tl.log(ax / mx)), 0.0)
    return mx * tl.exp(tl.log(tl.sum(tl.sum(p, 1), 0)) / QX)


@triton.jit
def _lq_scale_of(nrm, QX):
    """lq retention's read scale 1 / max(n, floor)^(q-2) of a matrix whose q-norm is n."""
    return tl.exp((2.0 - QX) * tl.log(tl.maximum(nrm, _LQ_FLOOR)))


@triton.jit
def _lq_scale_vjp_of(x, nrm, QX, dr):
    """dL/dX from dL/dr, r = _lq_scale_of(n), for a block x of a matrix whose q-norm is nrm (the
    whole matrix's)."""
    live = nrm > _LQ_FLOOR
    safe = tl.maximum(nrm, _LQ_FLOOR)
    coef = tl.where(live, dr * (2.0 - QX), 0.0)
    # dr/dX = (2 - q) n^(2-2q) |X|^(q-1) sign(X), as one exponent so that no factor overflows
    ax = tl.abs(x)
    grad = tl.where(ax > 0, tl.exp((QX - 1.0) * (tl.log(ax) - 2.0 * tl.log(safe))), 0.0)
    return coef * tl.where(x > 0, grad, -grad)


@triton.jit
def _lq_scale(x, QX):
    """lq retention's read scale of the whole tile X (a scalar)."""
    return _lq_scale_of(_lq_norm(x, QX), QX)


@triton.jit
def _lq_scale_vjp(x, QX, dr):
    """dL/dX from dL/dr, r = _lq_scale(X)."""
    return _lq_scale_vjp_of(x, _lq_norm(x, QX), QX, dr)


def _bias_args(bias: BiasConfig) -> dict:
    return {
        "P_EXP": float(bias.p), "SHARP": float(bias.sharpness), "EPS": float(bias.eps),
        "RADIUS": float(bias.radius), "BIAS": BIAS_KINDS.index(bias.kind), "NEPS": NORM_EPS,
        # 0: the exact sign; 1: tanh(SHARP e); 2: tanh(SHARP e / delta) (relative sharpness)
        "SMOOTH": (1 + int(bias.relative_sharpness)) if bias.smooth else 0,
    }


def _check(name: str, x: torch.Tensor | None, shape: tuple[int, ...], dtypes: tuple) -> None:
    if x is None:
        return
    if tuple(x.shape) != shape:
        raise KernelInputError(f"{name} must have shape {list(shape)} here, got {list(x.shape)}")
    if x.dtype not in dtypes:
        raise KernelInputError(f"{name} has dtype {x.dtype}; the kernel takes {dtypes}")
