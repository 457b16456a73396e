"""The small pieces of math that the memory ops and the kernels' PyTorch references share.

One copy of each: the floors (``NORM_FLOOR``, ``LQ_FLOOR``, ``LN_EPS``), the error norm, the smooth
sign and power of the attentional biases, |x|^q, prefix sums and the decay matrix of a chunk, the
lq log-norm, Muon's Newton-Schulz iteration, the MLP memories' activations with their backward and
the LayerNorm backward.
Everything here works on tensor methods, so the schema classes (whose options carry their math)
import this module without importing torch; the few functions that need torch's namespace import
it when called.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

NORM_FLOOR = 1e-6
"""Floor of the error norm ||e||: keeps e / ||e|| and its gradient finite at e = 0."""
LQ_FLOOR = 1e-6
"""Floor of ||A||_q in lq retention's normaliser n(A) = max(||A||_q, LQ_FLOOR)^(q - 2)."""
LN_EPS = 1e-5
"""The MLP memories' LayerNorm epsilon (as torch's default)."""
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
"""(a, b, c) of Muon's quintic Newton-Schulz iteration X <- a X + (b A + c A^2) X, A = X X^T
(Jordan et al. 2024, the optimiser Atlas uses, arXiv 2505.23735 Eq. 32)."""
NS_FLOOR = 1e-7
"""Floor of ||S||_F in Newton-Schulz's normalisation (S = 0 maps to 0 with a finite gradient)."""


def safe_norm(e: Tensor) -> Tensor:
    """||e|| over the last dim, [..., 1], floored at NORM_FLOOR (as sqrt of a floored square, so
    that the gradient stays finite at e = 0)."""
    return e.square().sum(-1, keepdim=True).clamp_min(NORM_FLOOR * NORM_FLOOR).sqrt()


def smooth_sign(e: Tensor, sharpness: float | Tensor) -> Tensor:
    """tanh(c e): the sign of e, with slope c at 0. ``sharpness`` c: a number or a tensor that
    broadcasts against e (a per-token c, e.g. rho / delta_t)."""
    return (sharpness * e).tanh()


def smooth_abs_pow(e: Tensor, power: float, eps: float) -> Tensor:
    """(e^2 + eps)^(power / 2), the smooth |e|^power (finite gradient at e = 0 for power < 1)."""
    base = e.square() + eps
    return base if power == 2.0 else base.pow(power / 2.0)  # p = 3 (Moneta): no pow


def tiny(x: Tensor) -> float:
    """The smallest positive normal number of x's dtype."""
    import torch

    return torch.finfo(x.dtype).tiny


def machine_eps(x: Tensor) -> float:
    """The machine epsilon of x's dtype."""
    import torch

    return torch.finfo(x.dtype).eps


def abs_pow(x: Tensor, q: float) -> Tensor:
    """|x|^q; q = 2, 4, 6 by squaring (torch's pow with a general exponent runs a scalar power
    per element on CPU, several times slower than the few multiplications)."""
    if q in (2.0, 4.0, 6.0):
        sq = x.square()
        return sq if q == 2.0 else sq.square() if q == 4.0 else sq.square() * sq
    return x.abs().pow(q)


def lq_log_scale(a: Tensor, q: float) -> Tensor:
    """log n(A) = (q - 2) log max(||A||_q, LQ_FLOOR) over the last two dims, [..., 1, 1], without
    forming |A|^q: at q = 6 an |A| of 1e7 (or 1e-7) overflows (underflows) float32 there, while
    the norm itself is representable.

    ||A||_q = m (sum (|A| / m)^q)^(1/q) with m = max |A| (no gradient needed: the norm is
    1-homogeneous, so its derivative in m is zero). At q = 4 (Moneta) ``lq4_log_scale`` computes
    the same with a hand-written backward; ``lq_log_scale_reference`` is this written out for
    autograd (also what torch.compile traces: it cannot trace the Function's creation)."""
    import torch

    if q == 4.0 and not torch.compiler.is_compiling():
        return lq4_log_scale(a)
    return lq_log_scale_reference(a, q)


def lq4_log_scale(a: Tensor) -> Tensor:
    """``lq_log_scale(a, 4)``, a: [..., out, in] -> [..., 1, 1], with a hand-written backward.

    The weights are normalised by it once per chunk and layer, and autograd through the
    reference's abs, division, two squarings and sum makes about eight passes over the state each
    way; this makes four forward (abs and max for max |A|) and two backward, d log n / dA =
    2 (A / m)^3 / (m sum (A / m)^4), zero at the floor.
    """
    return _lq4_function().apply(a)


@functools.cache
def _lq4_function() -> type:
    """The autograd Function behind ``lq4_log_scale``, made on first use (this module imports
    torch only inside functions)."""
    import torch
    from torch.autograd.function import once_differentiable

    class Lq4LogScale(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a: Tensor) -> Tensor:
            # max |a|: [..., 1, 1]; abs then amax, both vectorised (torch's CPU aminmax over the
            # last dim is about 8x slower than the two at [32, 4096])
            m = a.detach().abs().amax((-2, -1), keepdim=True).clamp_min(tiny(a))
            r = a / m
            s = r.square()
            # sum (a / m)^4 = ||s||_2^2, in [1, numel]
            ratio = torch.linalg.vector_norm(s, dim=(-2, -1), keepdim=True).square()
            log_norm = m.log() + ratio.log() / 4.0
            floor = math.log(LQ_FLOOR)
            ctx.save_for_backward(r, s, m, ratio, log_norm > floor)
            return 2.0 * log_norm.clamp_min(floor)

        @staticmethod
        @once_differentiable
        def backward(ctx, grad: Tensor) -> Tensor:
            r, s, m, ratio, above_floor = ctx.saved_tensors
            coefficient = torch.where(above_floor, 2.0 * grad / (m * ratio), 0.0)
            return (s * r).mul_(coefficient)

    return Lq4LogScale


def lq_log_scale_reference(a: Tensor, q: float) -> Tensor:
    """``lq_log_scale`` for any q, through autograd."""
    m = a.detach().abs().amax((-2, -1), keepdim=True).clamp_min(tiny(a))
    ratio = abs_pow(a / m, q).sum((-2, -1), keepdim=True)  # in [1, numel]
    log_norm = m.log() + ratio.log() / q
    return (q - 2.0) * log_norm.clamp_min(math.log(LQ_FLOOR))


def kl_log_weights(raw: Tensor, scale: float) -> Tensor:
    """log(c softmax_row(raw)) = log c + log_softmax_row(raw): kl retention's carried state."""
    return math.log(scale) + raw.log_softmax(dim=-1)


def prefix_sum(x: Tensor, dim: int) -> Tensor:
    """x.cumsum(dim): one add of whole slices per step along ``dim`` where the other axes hold
    several channels, torch's cumsum where ``dim`` is the last non-unit axis.

    On the CPU, torch's cumsum along an inner axis and its backward (a flip, a cumsum and a flip)
    took 4.8 ms forward and backward at [128, 4, 16, 160] (dim 2), these adds 2.1; under
    torch.compile 4.8 against 1.1 (inductor fuses the adds into one pass; it also fuses a
    pointwise producer such as a log into every add, which still left them ahead: 3.4 against
    5.2 ms). The work is b slices, linear in the length of ``dim``. The chunk decays' log prefixes
    at the whole-model benchmark's size ([8, 64, 16, 160], the log before them, the exp after in
    another graph): 2.6 ms compiled and 4.7 eager, forward and backward, against 3.8 and 7.6 for
    the product with the b x b lower-triangular ones they used before.
    """
    import torch

    if x.shape[dim] <= 1 or all(size == 1 for size in x.shape[dim:][1:]):
        return x.cumsum(dim)
    slices = x.unbind(dim)
    total, sums = slices[0], [slices[0]]
    for piece in slices[1:]:
        total = total + piece
        sums.append(total)
    return torch.stack(sums, dim)


def decay_matrix(log_cum: Tensor) -> Tensor:
    """exp(l_t - l_i) for i <= t, else 0. log_cum: [..., C] -> [..., C, C] (rows t, columns i)."""
    import torch

    c = log_cum.shape[-1]
    causal = torch.ones(c, c, dtype=torch.bool, device=log_cum.device).tril()
    diff = log_cum.unsqueeze(-1) - log_cum.unsqueeze(-2)
    return torch.where(causal, diff, torch.full_like(diff, float("-inf"))).exp()


def newton_schulz(s: Tensor, steps: int) -> Tensor:
    """Muon's NewtonShulz-k(S) of Atlas's step (arXiv 2505.23735, Eq. 32): ``steps`` quintic
    iterations from S / ||S||_F towards the nearest semi-orthogonal matrix, on the last two dims
    ([..., out, in]; a tall S is iterated transposed, so that X X^T is the smaller Gram matrix)."""
    tall = s.shape[-2] > s.shape[-1]
    x = s.mT if tall else s
    norm = x.square().sum((-2, -1), keepdim=True).clamp_min(NS_FLOOR * NS_FLOOR).sqrt()
    x = x / norm
    a, b, c = NS_COEFFICIENTS
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.mT if tall else x


def activation(name: str) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor, Tensor], Tensor]]:
    """(act, act_back) for gelu (exact erf form), silu and relu; act_back(g, z) = g * act'(z).

    For gelu and relu act_back is torch's own backward op (one op) rather than the derivative
    written out (about ten ops each way for gelu); gelu's has a hand-written derivative of its own
    (``gelu_back``) for the outer backward.
    """
    import torch
    import torch.nn.functional as F

    if name == "gelu":
        return F.gelu, gelu_back
    if name == "silu":  # aten's silu_backward has no derivative of its own
        def silu_back(g: Tensor, z: Tensor) -> Tensor:
            s = torch.sigmoid(z)
            return g * s * (1.0 + z * (1.0 - s))
        return F.silu, silu_back
    if name == "relu":
        return F.relu, lambda g, z: torch.ops.aten.threshold_backward(g, z, 0.0)
    raise ValueError(f"unknown activation '{name}'")


def gelu_back(g: Tensor, z: Tensor) -> Tensor:
    """g * gelu'(z) (exact erf gelu), g and z of one shape.

    torch's gelu backward op, with a derivative written out: in g, gelu'(z) (the same op); in z,
    g gelu''(z) = g phi(z) (2 - z^2), phi the standard normal density. Autograd's derivative of
    the op takes about ten passes over the [chunk, hidden] activations; this takes six.
    Under torch.compile the op's own derivative is traced instead (inductor fuses it).
    """
    import torch

    if torch.compiler.is_compiling():
        return torch.ops.aten.gelu_backward(g, z)
    return _second_order_functions()[0].apply(g, z)


def layer_norm_back(z: Tensor, g: Tensor) -> Tensor:
    """dl/dz of y = LN(z) (no affine, over the last dim, eps LN_EPS) given g = dl/dy.

    torch's layer-norm backward op, with a derivative written out for the outer backward (the
    statistics are recomputed here, so it is the full derivative in z): with x = (z - mean) r,
    r = 1 / sqrt(var + eps), c = mean(g x) and d the result, the derivative along u is
    r P u in g (P the same projection as in d = r P g) and
    -(r / n) (sum(u d) x + sum(u x) d) - r^2 c (u - mean(u) - mean(u x) x) in z.
    Autograd's derivative of the op takes about 56 small ops per call; this takes about 15.
    Under torch.compile the op's own derivative is traced instead.
    """
    import torch

    if torch.compiler.is_compiling():
        with torch.no_grad():
            mean, rstd = _layer_norm_stats(z)
        return _layer_norm_grad(z, g, mean, rstd)
    return _second_order_functions()[1].apply(z, g)


def _layer_norm_stats(z: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, 1 / sqrt(var + LN_EPS)) over the last dim, keepdim: the statistics torch's
    layer-norm op returns beside its output. On a CPU its kernel takes 24 us at [8, 4, 16, 32]
    where var_mean over the same 32-wide rows takes 124 us (one thread)."""
    import torch

    _, mean, rstd = torch.native_layer_norm(z, z.shape[-1:], None, None, LN_EPS)
    return mean, rstd


def _layer_norm_grad(z: Tensor, g: Tensor, mean: Tensor, rstd: Tensor) -> Tensor:
    """torch's layer-norm backward op for the input only: r P g, z's statistics given."""
    import torch

    return torch.ops.aten.native_layer_norm_backward(
        g, z, z.shape[-1:], mean, rstd, None, None, [True, False, False]
    )[0]


@functools.cache
def _second_order_functions() -> tuple[type, type]:
    """The autograd Functions behind ``gelu_back`` and ``layer_norm_back``, made on first use
    (this module imports torch only inside functions)."""
    import torch
    from torch.autograd.function import once_differentiable

    inv_sqrt_2pi = 1.0 / math.sqrt(2.0 * math.pi)

    class GeluBack(torch.autograd.Function):
        @staticmethod
        def forward(ctx, g: Tensor, z: Tensor) -> Tensor:
            ctx.save_for_backward(g, z)
            return torch.ops.aten.gelu_backward(g, z)

        @staticmethod
        @once_differentiable
        def backward(ctx, u: Tensor) -> tuple[Tensor | None, Tensor | None]:
            g, z = ctx.saved_tensors
            grad_g = torch.ops.aten.gelu_backward(u, z) if ctx.needs_input_grad[0] else None
            grad_z = None
            if ctx.needs_input_grad[1]:
                z2 = z * z
                density = torch.exp(z2 * -0.5).mul_(inv_sqrt_2pi)
                grad_z = density.mul_(z2.neg_().add_(2.0)).mul_(u).mul_(g)
            return grad_g, grad_z

    class LayerNormBack(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z: Tensor, g: Tensor) -> Tensor:
            mean, rstd = _layer_norm_stats(z)
            d = _layer_norm_grad(z, g, mean, rstd)
            ctx.save_for_backward(z, g, mean, rstd, d)
            return d

        @staticmethod
        @once_differentiable
        def backward(ctx, u: Tensor) -> tuple[Tensor | None, Tensor | None]:
            z, g, mean, rstd, d = ctx.saved_tensors
            grad_g = None
            if ctx.needs_input_grad[1]:  # d is r P g with P symmetric: the same op on u
                grad_g = _layer_norm_grad(z, u, mean, rstd)
            grad_z = None
            if ctx.needs_input_grad[0]:
                n = z.shape[-1]
                x = (z - mean).mul_(rstd)
                ux = (u * x).sum(-1, keepdim=True)
                ud = (u * d).sum(-1, keepdim=True)
                c = (g * x).mean(-1, keepdim=True)
                # -(r / n) (ud x + ux d) - r^2 c (u - mean(u) - (ux / n) x)
                centred = u - u.mean(-1, keepdim=True) - x * (ux / n)
                grad_z = (x * ud + d * ux).mul_(-rstd / n) - centred.mul_(c * rstd.square())
            return grad_z, grad_g

    return GeluBack, LayerNormBack


