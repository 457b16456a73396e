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
    """X_j = (I + A)^-1 R_j for A strictly lower triangular: a: [..., b, b], each R_j: [..., b, d_j].

    The inverse T = (I + A)^-1 is taken once per chunk (a triangular solve against the identity,
    b columns) and applied with matmuls; the backward needs no solve: dR_j = T^T dX_j and
    dA = -sum_j dR_j X_j^T below the diagonal. torch's solve_triangular against R and its
    backward (a second solve) cost several times more on CPU, one small LAPACK call per chunk
    each; several right-hand sides share T without being concatenated.
    """

    @staticmethod
    def forward(ctx, a: Tensor, *rhs: Tensor) -> tuple[Tensor, ...]:
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
        inverse = torch.linalg.solve_triangular(a, eye, upper=False, unitriangular=True)
        xs = tuple(inverse @ r for r in rhs)
        ctx.save_for_backward(inverse, *xs)
        return xs

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        inverse, *xs = ctx.saved_tensors
        d_rhs = [None if g is None else inverse.mT @ g for g in grads]
        d_a = None
        for d, x in zip(d_rhs, xs, strict=True):
            if d is not None:
                d_a = d @ x.mT if d_a is None else d_a + d @ x.mT
        return (None if d_a is None else d_a.neg_().tril_(-1)), *d_rhs


def unit_lower_solve(a: Tensor, *rhs: Tensor) -> tuple[Tensor, ...]:
    """(I + a)^-1 R for each R in ``rhs``: a: [..., b, b] strictly lower triangular (what is on
    and above its diagonal is ignored), each R: [..., b, d]. Returns one tensor per R."""
    return _UnitLowerSolve.apply(a, *rhs)


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
    u, wk = unit_lower_solve(a, eta * v, (eta * gamma) * k)

    qk = decay * (q @ k.mT)  # [B, H, n, t, i]
    ratio_last = decay[..., -1, :].unsqueeze(-1)  # gamma_b / gamma_i: [B, H, n, b, 1]
    batch, heads, n_chunks = q.shape[:3]

    def flat(t: Tensor) -> Tensor:  # [B, H, n, ...] -> [B*H, n, ...]
        return t.flatten(0, 1)

    o = _ChunkRecurrence.apply(flat(wk), flat(gamma * q), flat(u), flat(qk), flat(k * ratio_last),
                               flat(gamma[..., -1, 0]), w.flatten(0, 1))  # [B*H, n, b, V]
    return o.view(batch, heads, n_chunks * b, -1)[:, :, :length]


def chunk_recurrence(wk: Tensor, gq: Tensor, u: Tensor, qk: Tensor, kr: Tensor, g: Tensor,
                     w: Tensor) -> Tensor:
    """The state recurrence over chunks, written out (autograd's backward); ``_ChunkRecurrence``
    computes the same with a hand-written backward. Per chunk c (state W entering it, [V, K]):

        r_c = u_c - wk_c W^T,   o_c = gq_c W^T + qk_c r_c,   W <- g_c W + r_c^T kr_c.

    wk, gq, kr: [G, n, b, K]; u: [G, n, b, V]; qk: [G, n, b, b]; g: [G, n]; w: [G, V, K]
    (G = batch * heads). Returns o: [G, n, b, V]. (The tests' reference: autograd through its
    indexing fills a full-size zero gradient per chunk.)
    """
    outputs = []
    for c in range(wk.shape[1]):
        r = u[:, c] - wk[:, c] @ w.mT
        outputs.append(gq[:, c] @ w.mT + qk[:, c] @ r)
        w = g[:, c, None, None] * w + r.mT @ kr[:, c]
    return torch.stack(outputs, dim=1)


STATE_BLOCK_BYTES = 8 * 2**20
"""Most bytes of one block of per-chunk states (``_ChunkRecurrence`` keeps the state entering
every chunk for the backward, in blocks of chunks). At long sequences all of them at once
outgrow the caches and glibc's largest mmap threshold (32 MiB: a block above it is mapped anew
and faulted in at every step): gated_deltanet at T=8192, B=1, H=4, 64 x 64, chunk 16 keeps
33.5 MB of states; as one tensor its fwd+bwd took 2.3x the time of T=4096 (0.061 -> 0.143 s), in
blocks 2.0x (0.069 -> 0.138 s, another run)."""


def state_blocks(n_chunks: int, state_bytes: int) -> list[tuple[int, int]]:
    """[start, end) ranges of chunks whose states (``state_bytes`` each, all heads) fit
    STATE_BLOCK_BYTES, covering 0..n_chunks; one range when all fit."""
    per_block = max(1, STATE_BLOCK_BYTES // max(state_bytes, 1))
    return [(c, min(c + per_block, n_chunks)) for c in range(0, n_chunks, per_block)]


class _ChunkRecurrence(torch.autograd.Function):
    """``chunk_recurrence`` with the loop cut to what is sequential: forward loops over chunks
    for r_c and the states only (the outputs are batched products after it); backward loops for
    the state gradient only, every other gradient is a batched product. Autograd through the
    loop costs several small ops per chunk each way plus full-size copies (split and stack
    backwards), which dominate at CPU sizes. The batched products run per block of chunks
    (``state_blocks``): one block at proxy sizes, cache-sized blocks of states at long
    sequences. Inputs and output as ``chunk_recurrence``."""

    @staticmethod
    def forward(ctx, wk: Tensor, gq: Tensor, u: Tensor, qk: Tensor, kr: Tensor, g: Tensor,
                w: Tensor) -> Tensor:
        blocks = state_blocks(wk.shape[1], w.numel() * w.element_size())
        r = torch.empty_like(u)  # [G, n, b, V]
        outputs, kept = [], []
        for c0, c1 in blocks:
            states = w.new_empty(w.shape[0], c1 - c0, *w.shape[1:])  # W entering chunk c: [G, nb, V, K]
            for c in range(c0, c1):
                states[:, c - c0] = w
                r[:, c] = torch.baddbmm(u[:, c], wk[:, c], w.mT, alpha=-1.0)
                w = torch.baddbmm(g[:, c, None, None] * w, r[:, c].mT, kr[:, c])
            outputs.append(torch.baddbmm((gq[:, c0:c1] @ states.mT).flatten(0, 1),
                                         qk[:, c0:c1].flatten(0, 1), r[:, c0:c1].flatten(0, 1)))
            kept.append(states)
        ctx.blocks = blocks
        ctx.save_for_backward(wk, gq, qk, kr, g, r, *kept)
        if len(outputs) == 1:
            return outputs[0].view_as(u)  # [G, n, b, V]
        return torch.cat([o.view(u.shape[0], -1, *u.shape[2:]) for o in outputs], dim=1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, ...]:
        wk, gq, qk, kr, g, r, *kept = ctx.saved_tensors
        grad = grad.contiguous()
        # the parts of dr_c that do not depend on later chunks, for all chunks at once
        from_outputs = qk.mT @ grad  # qk_c^T dO_c: [G, n, b, V]
        dw = torch.zeros_like(kept[0][:, 0])  # gradient of the state after the last chunk
        d_u, d_wk, d_gq, d_kr, d_g = [], [], [], [], []  # per block, last block first
        for (c0, c1), states in zip(reversed(ctx.blocks), reversed(kept), strict=True):
            grad_b, r_b = grad[:, c0:c1], r[:, c0:c1]
            from_reads = grad_b.mT @ gq[:, c0:c1]  # dO_c^T gq_c: [G, nb, V, K]
            dw_after = torch.empty_like(states)  # gradient of the state leaving chunk c
            dr: list[Tensor] = []  # dL/dr_c, last chunk first
            for c in reversed(range(c0, c1)):
                dw_after[:, c - c0] = dw
                dr.append(torch.baddbmm(from_outputs[:, c], kr[:, c], dw.mT))
                dw = torch.baddbmm(torch.addcmul(from_reads[:, c - c0], g[:, c, None, None], dw),
                                   dr[-1].mT, wk[:, c], alpha=-1.0)
            du_b = torch.stack(dr[::-1], dim=1)  # [G, nb, b, V]
            d_u.append(du_b)
            d_wk.append((du_b @ states).neg_())
            d_gq.append(grad_b @ states)
            d_kr.append(r_b @ dw_after)
            d_g.append((dw_after * states).sum((-2, -1)))

        def chunks_in_order(parts: list[Tensor]) -> Tensor:
            return parts[0] if len(parts) == 1 else torch.cat(parts[::-1], dim=1)

        d_qk = grad @ r.mT
        return (chunks_in_order(d_wk), chunks_in_order(d_gq), chunks_in_order(d_u), d_qk,
                chunks_in_order(d_kr), chunks_in_order(d_g), dw)
