"""KL retention (Memora) inside a chunk: linear in log space, the softmax map at every token.

Memora's update is a mirror step, ``W_t = c softmax_row(alpha_t log W_{t-1} - eta_t G_t)``. With
all gradients of a chunk taken at the chunk-start W_0 (the paper's parallel form) its log-space
state is linear in the steps:

    raw_t = beta_t * log W_0 + m_t * S_0 - sum_{i<=t} C_ti eta_i delta_i x_i^T,   W_t = c softmax_row(raw_t)

with the usual chunk coefficients (``beta_t``, ``C``, ``m_t``; per input channel when alpha is
channel-wise). The paper keeps the recurrence linear inside a chunk and applies the nonlinear map
across chunks; here every token reads its own ``c softmax_row(raw_t)``, so a step moves each
weight in proportion to the weight, as the exact update does. Adding the step to W_0 instead (the
linear form of the other retentions) moved entries of size about c / in by in / c (32 to 128 here)
times the exact step, shrank W_0 where the exact decay flattens its rows, and Memora's training
loss rose after a few dozen steps at d_model 128; a first-order expansion of the softmax around
W_0 (weight-proportional too, but unbounded) trained better early and then diverged as well.

With alpha per head this equals the per-token rule at the chunk's gradients (a softmax ignores
the row constant alpha_t times log W's row normaliser). With alpha per input channel it does not:
that constant then differs per column, and the exact rule renormalises every token where this
form does so at chunk ends only (0.5 % relative at T = 7, chunk 16, alpha in [0.9, 1]; nothing at
initialisation, where the channels' alphas are equal). b = 1 is still exactly the recurrence;
``tests/test_paper_references.py`` pins both sides.

The per-token weights are formed: [B, H, b, out, in] per chunk and weight (b times the weight),
the price of the exact map. Above ``CHECKPOINT_FLOATS`` per chunk the backward pass recomputes
them (``checkpointed_read``) instead of keeping them for every chunk of the sequence.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.utils.checkpoint
from torch import Tensor

from miras_search.primitives import prefix_sum

CHECKPOINT_FLOATS = 2**21
"""Per-token weights of one chunk and layer (floats, batch and heads included) from which the
read is checkpointed: 8 MB in float32. Autograd keeps about two tensors of this size per chunk
(the log states and the softmax: 16.6-17.4 MB for 7.9 MB of weights at B=8, H=4, b=15, 32 x 128,
in every form of the read); with the per-token products of an earlier form Memora at batch 16,
d_model 128, 4 layers, seq 256 (4M floats per chunk) peaked at 16 GB without it."""


def chunk_log_states(
    log_w0: Tensor, beta: Tensor, s0: Tensor | None, m: Tensor | None, coef: Tensor | None,
    alpha: Tensor | None, delta: Tensor, ex: Tensor,
) -> Tensor:
    """raw_t for every token of the chunk: [B, H, b, out, in].

    log_w0, s0: [B, H, out, in] (a vector memory: out = 1); beta, m: [B, H, b, c]; coef:
    [B, H, b, b, c], or None where C_ti = beta_t / beta_i is left implicit (``chunked.separable``);
    alpha: the chunk's per-step decays [B, H, b, c] (None: no decay); delta: [B, H, b, out];
    ex = eta * x: [B, H, b, in]; c in {1, in}.
    """
    if coef is None:
        raw = beta.unsqueeze(-2) * (log_w0.unsqueeze(2) - _separable_step_sums(beta, delta, ex))
    else:
        raw = log_w0.unsqueeze(2) * beta.unsqueeze(-2) - _step_sums(coef, m, alpha, delta, ex)
    if s0 is not None and m is not None:
        raw = raw + s0.unsqueeze(2) * m.unsqueeze(-2)
    return raw


def _separable_step_sums(beta: Tensor, delta: Tensor, ex: Tensor) -> Tensor:
    """sum_{i<=t} delta_i (ex_i / beta_i)^T for every t, [B, H, b, out, in]: with C_ti =
    beta_t / beta_i the step sums are beta_t times these, a running sum of outer products (the
    chunk checked beta above exp(SEPARABLE_LOG_FLOOR), so the quotients stay finite).

    Slice-by-slice adds (``prefix_sum``), which inductor fuses with the outer products: forward
    and backward of Memora's two reads at the whole-model benchmark's size (B=8, H=4, b=15, 32 x
    128 and 128 x 32) took 9.2 ms compiled and 25.9 eager, against 17.8 and 33.3 for the
    [out, b] x [b, in] product per token that the general form needs (its backward's products
    have an inner size of b); the decayed running sum (``_decayed_sums``) took 11.4 and 29.7.
    This graph is what runs under train.compile; eager, ``_SeparableRead`` computes the same read
    with its backward written out."""
    return prefix_sum(delta.unsqueeze(-1) * (ex / beta).unsqueeze(-2), 2)


def _step_sums(coef: Tensor, m: Tensor | None, alpha: Tensor | None, delta: Tensor, ex: Tensor) -> Tensor:
    """sum_{i<=t} C_ti delta_i (ex_i)^T for every t, [B, H, b, out, in], coef C: [B, H, b, b, c].

    Without momentum (m None) C_ti is the product of the decays after step i, and the sums are
    the running sum P_t = alpha_t P_{t-1} + delta_t ex_t^T (``_decayed_sums``; exact at any decay,
    no quotient). With momentum, one [out, b] x [b, in] product per token, made in the
    [t, out, in] layout the softmax reads."""
    if m is None:
        return _decayed_sums(delta.unsqueeze(-1) * ex.unsqueeze(-2), None if alpha is None else alpha.unsqueeze(-2))
    return delta.mT.unsqueeze(2) @ (coef * ex.unsqueeze(2))


def _decayed_sums(steps: Tensor, decay: Tensor | None) -> Tensor:
    """P_t = decay_t * P_{t-1} + steps_t along dim 2 (P_0 = steps_0; decay None: a prefix sum).

    steps: [B, H, b, ...]; decay: [B, H, b, ...] broadcasting to a step. A per-head decay reads
    this way 1.5x faster compiled than through the [out, b] x [b, in] products (B=8, H=4, b=15,
    32 x 128 and 128 x 32: 12.1 against 18.2 ms forward and backward; eager the same)."""
    if decay is None:
        return prefix_sum(steps, 2)
    total, sums = steps[:, :, 0], [steps[:, :, 0]]
    for step, factor in zip(steps.unbind(2)[1:], decay.unbind(2)[1:], strict=True):
        total = torch.addcmul(step, total, factor)
        sums.append(total)
    return torch.stack(sums, 2)


def mirror_chunk_read(
    log_w0: Tensor, scale: float, beta: Tensor, s0: Tensor | None, m: Tensor | None,
    coef: Tensor | None, alpha: Tensor | None, delta: Tensor, ex: Tensor, z: Tensor,
) -> Tensor:
    """U_t z_t with U_t = c softmax_row(raw_t) for a matrix weight: [B, H, b, out].

    Shapes as ``chunk_log_states``; z: [B, H, b, in]; ``scale``: c (each row of U_t sums to it).
    """
    if coef is None and m is None and not torch.compiler.is_compiling():
        return _SeparableRead.apply(log_w0, beta, delta, ex, z, scale)
    weights = torch.softmax(chunk_log_states(log_w0, beta, s0, m, coef, alpha, delta, ex), -1)
    return scale * (weights @ z.unsqueeze(-1)).squeeze(-1)


class _SeparableRead(torch.autograd.Function):
    """``mirror_chunk_read`` with separable decays and no momentum, eager, with its backward
    written out: fewer passes over the per-token tensors ([B, H, b, out, in]) than autograd's graph
    of the same ops makes, and those passes are what an eager read costs (compiled, inductor fuses
    that graph instead). Both reads of a chunk and layer, forward and backward, at B=8, H=4, b=15,
    32 x 128 and 128 x 32: 18.8 against 24.6 ms (at b=63: 96.4 against 119.0).

    Forward: R_t = log W_0 - sum_{i<=t} delta_i u_i^T (u = ex / beta, written slice by slice),
    U_t = softmax_row(beta_t R_t), y_t = c U_t z_t. Backward, with gy_t [out]: the softmax's
    G_t = c U_t (z_t - y_t / c) gy_t (row-wise), then d beta_t = sum_o G_t R_t, dR_t = beta_t G_t,
    d log W_0 = sum_t dR_t, and each step's gradient is minus the sum of dR_s over s >= t.
    """

    @staticmethod
    def forward(ctx, log_w0: Tensor, beta: Tensor, delta: Tensor, ex: Tensor, z: Tensor,
                scale: float) -> Tensor:
        u = ex / beta
        rest = torch.empty(*delta.shape, log_w0.shape[-1], dtype=log_w0.dtype, device=log_w0.device)
        previous = log_w0
        for t in range(delta.shape[2]):
            previous = torch.addcmul(previous, delta[:, :, t].unsqueeze(-1), u[:, :, t].unsqueeze(-2),
                                     value=-1.0, out=rest[:, :, t])
        weights = torch.softmax(rest * beta.unsqueeze(-2), -1)
        y = scale * (weights @ z.unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(rest, weights, beta, delta, u, z, y)
        ctx.scale = scale
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        rest, weights, beta, delta, u, z, y = ctx.saved_tensors
        scaled = grad_y * ctx.scale
        grad_z = (weights.mT @ scaled.unsqueeze(-1)).squeeze(-1)
        grad = (z.unsqueeze(-2) - (y / ctx.scale).unsqueeze(-1)).mul_(weights).mul_(scaled.unsqueeze(-1))
        grad_beta = (grad * rest).sum(-2)
        grad.mul_(beta.unsqueeze(-2))  # now d R_t
        grad_log_w0 = grad.sum(2)
        for t in range(grad.shape[2] - 2, -1, -1):  # suffix sums: d(step t) = -sum_{s>=t} dR_s
            grad[:, :, t].add_(grad[:, :, t + 1])
        grad_delta = (grad @ u.unsqueeze(-1)).squeeze(-1).neg_()
        grad_u = (grad.mT @ delta.unsqueeze(-1)).squeeze(-1).neg_()
        grad_ex = grad_u / beta
        grad_beta = grad_beta - grad_ex * u
        return grad_log_w0, grad_beta, grad_delta, grad_ex, grad_z, None


def mirror_diagonal_read(
    log_w0: Tensor, scale: float, beta: Tensor, s0: Tensor | None, m: Tensor | None,
    coef: Tensor | None, alpha: Tensor | None, delta: Tensor, ex: Tensor, z: Tensor,
) -> Tensor:
    """The vector memory's analogue (log_w0: [B, H, 1, K], one distribution over K; the step of
    token i is delta_i * x_i per channel): U_t * z_t, [B, H, b, K]."""
    if coef is None:  # C_ti = beta_t / beta_i: a running sum (see _separable_step_sums)
        raw = beta * (log_w0 - prefix_sum(ex * delta / beta, 2))
    elif m is None:
        raw = beta * log_w0 - _decayed_sums(ex * delta, alpha)
    else:
        raw = beta * log_w0 - (coef * (ex * delta).unsqueeze(2)).sum(3)
    if s0 is not None and m is not None:
        raw = raw + m * s0
    return scale * torch.softmax(raw, -1) * z


def checkpointed_read(read_map: Callable[..., Tensor], log_w0: Tensor, *args: Tensor | float | None) -> Tensor:
    """``read_map(log_w0, *args)`` (``mirror_chunk_read`` or ``mirror_diagonal_read``), its
    per-token weights recomputed in the backward pass when they exceed ``CHECKPOINT_FLOATS``
    (same outputs and gradients; the read's forward runs twice)."""
    ex = args[-2]  # [B, H, b, in]
    floats = log_w0.numel() * ex.shape[2]
    if not torch.is_grad_enabled() or floats < CHECKPOINT_FLOATS:
        return read_map(log_w0, *args)
    return torch.utils.checkpoint.checkpoint(read_map, log_w0, *args, use_reentrant=False)
