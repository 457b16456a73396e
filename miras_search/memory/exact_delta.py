"""The exact chunked delta rule (WY / UT form) for a matrix memory with the l2 bias.

Recurrence per head (W: [V, K]), decay first ("retain, then learn", the gated delta rule):
W_t = alpha_t W_{t-1} - eta_t (alpha_t W_{t-1} k_t - v_t) k_t^T.
Inside a chunk, with gamma_t = prod_{j<=t} alpha_j, the state is
    W_t = gamma_t W_0 + sum_{i<=t} (gamma_t / gamma_i) r_i k_i^T,
    r_t = eta_t (v_t - gamma_t W_0 k_t - sum_{i<t} (gamma_t / gamma_i) (k_i . k_t) r_i),
(alpha_t W_{t-1} expanded), so (I + A) R = eta * (V - gamma K W_0^T) with A strictly lower
triangular: one unit-triangular solve per chunk gives every r_t, for any chunk size, exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from miras_search.memory.inputs import MemoryInputs


def _masked_exp(diff: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, diff, float("-inf")).exp()


class _UnitLowerSolve(torch.autograd.Function):
    """X = (I + A)^-1 R for A strictly lower triangular: a: [..., b, b], rhs: [..., b, d].

    The inverse T = (I + A)^-1 is taken once per chunk (a triangular solve against the identity,
    b columns) and applied with a matmul; the backward needs no solve: dR = T^T dX and
    dA = -(dR X^T) below the diagonal. torch's solve_triangular against R and its backward
    (a second solve) cost several times more on CPU, one small LAPACK call per chunk each.
    """

    @staticmethod
    def forward(ctx, a: Tensor, rhs: Tensor) -> Tensor:
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
        inverse = torch.linalg.solve_triangular(a, eye, upper=False, unitriangular=True)
        x = inverse @ rhs
        ctx.save_for_backward(inverse, x)
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        inverse, x = ctx.saved_tensors
        d_rhs = inverse.mT @ grad
        return (d_rhs @ x.mT).neg_().tril_(-1), d_rhs


def unit_lower_solve(a: Tensor, rhs: Tensor) -> Tensor:
    """(I + a)^-1 rhs for ``a`` strictly lower triangular: a: [..., b, b], rhs: [..., b, d]
    (what is on and above a's diagonal is ignored)."""
    return _UnitLowerSolve.apply(a, rhs)


def _blocks(x: Tensor, size: int, pad: int) -> Tensor:
    """[B, H, N, d] -> [B, H, n_chunks, size, d], zero-padded at the end."""
    x = F.pad(x, (0, 0, 0, pad))
    return x.view(*x.shape[:2], -1, size, x.shape[-1])


def exact_delta(x: MemoryInputs, w: Tensor, chunk_size: int) -> Tensor:
    """Outputs at every micro-step [B, H, N, V]; ``w``: initial state [B, H, V, K].

    Everything that does not depend on the state (decays, the triangular solve, q k^T) is
    computed for all chunks at once; only the state recurrence loops over chunks. Padding
    tokens have eta = 0 and alpha = 1, so they leave the state unchanged.
    """
    length, b = x.length, chunk_size
    pad = -length % b
    q, k, v = (_blocks(t, b, pad) for t in (x.q, x.k, x.v))  # [B, H, n, b, d]
    eta = _blocks(x.eta, b, pad)  # [B, H, n, b, 1]
    log_alpha = torch.zeros_like(eta) if x.alpha is None else _blocks(torch.log(x.alpha), b, pad)
    log_gamma = log_alpha.cumsum(3)[..., 0]  # [B, H, n, b]
    lower = torch.ones(b, b, dtype=torch.bool, device=w.device).tril()
    decay = _masked_exp(log_gamma.unsqueeze(-1) - log_gamma.unsqueeze(-2), lower)  # gamma_t / gamma_i
    gamma = log_gamma.exp().unsqueeze(-1)  # [B, H, n, b, 1]

    # A[t, i] = eta_t (gamma_t / gamma_i) (k_t . k_i), i < t
    a = eta * (decay * (k @ k.mT)).tril(-1)
    rhs = torch.cat([eta * v, eta * gamma * k], dim=-1)
    solved = unit_lower_solve(a, rhs)
    u, wk = solved.split([v.shape[-1], k.shape[-1]], dim=-1)

    qk = decay * (q @ k.mT)  # [B, H, n, t, i]
    ratio_last = decay[..., -1, :].unsqueeze(-1)  # gamma_b / gamma_i: [B, H, n, b, 1]

    # Chunks taken with unbind along a leading chunk axis (indexing the full-length tensors would
    # fill a full-size zero gradient per chunk in the backward, quadratic in T). Per chunk the
    # state is read at [wk ; gamma q] in one product.
    def major(t: Tensor) -> Tensor:
        return t.movedim(2, 0)  # [n, B, H, ...]

    reads = major(torch.cat([wk, gamma * q], dim=-2))  # [n, B, H, 2b, K]
    pieces = (reads, major(u), major(qk), major(k * ratio_last), major(gamma[..., -1:, :]))
    outputs = []
    for read_c, u_c, qk_c, kr_c, gamma_last in zip(*(t.unbind(0) for t in pieces), strict=True):
        wk_w, q_w = (read_c @ w.mT).split(b, dim=-2)  # [B, H, b, V] each
        r = u_c - wk_w
        outputs.append(q_w + qk_c @ r)
        w = gamma_last * w + r.mT @ kr_c
    return torch.stack(outputs, dim=2).flatten(2, 3)[:, :, :length]
