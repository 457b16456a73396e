"""fla's gated ``chunk_bwd_dqkwg`` in plain PyTorch, for the GPUs where fla refuses its own.

fla 0.6 raises in the backward of every gated chunk op (gated_delta_rule, simple_gla,
gated_delta_product, ...) on Hopper GPUs with Triton >= 3.4 and < 3.7.1, because that Triton
compiles this one kernel to wrong results (fla issue #640); its TileLang backend is the only way
round it there. The rest of fla's backward is unaffected. This module computes the same function
with batched matrix products over the chunks (float32, exact up to rounding) and registers it as
an fla backend for the ``common`` operations, which fla's dispatch consults before its own
kernel: the verifier accepts exactly the calls the guard refuses (and that the TileLang backend,
tried first, did not take), so wherever fla's kernel runs, it still runs.

The function, per chunk c of BT tokens (rows t, s), head h, with the chunk-local cumulative
log2-decay g (fla's convention: decays are ``exp2``), the chunk's state h_c: [K, V] and its
gradient dh_c, do / dv the gradients of the output and of the delta rule's corrected values:

    dq_t  = scale * (exp2(g_t) * do_t h_c^T + sum_{s<=t} ds_ts k_s)
    dk_s  = exp2(g_last - g_s) * v_s dh_c^T + sum_{t>=s} ds_ts q_t
    ds_ts = scale * exp2(g_t - g_s) * <do_t, v_s>            (t >= s)
    dw_t  = -dv_t h_c^T
    dg_t  = <dq_t, q_t> - <dk_t, k_t>  (+ exp2(g_last) <h_c, dh_c> + sum_s <dk_s, k_s> at the
            chunk's last token: the gradient of the chunk-end decay)

dg is per token, before fla's reverse cumulative sum (its caller does that).
"""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor


def chunk_bwd_dqkwg_gated(
    q: Tensor, k: Tensor, v: Tensor, do: Tensor, h: Tensor, dh: Tensor, g: Tensor,
    w: Tensor | None = None, dv: Tensor | None = None, scale: float | None = None,
    state_v_first: bool = False, chunk_size: int = 64,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """(dq, dk, dw, dg) of fla's gated chunk output, as fla's ``chunk_bwd_dqkwg`` returns them.

    q, k: [B, T, H, K]; v, do, dv: [B, T, HV, V] (HV a multiple of H: grouped values); w:
    [B, T, HV, K] or None; h, dh: [B, NT, HV, K, V] ([..., V, K] with ``state_v_first``), NT =
    ceil(T / chunk_size); g: [B, T, HV], the chunk-local cumulative log2-decay. Returns dq, dk:
    [B, T, H, K] in q's / k's dtype, dw like w (None without w), dg: [B, T, HV] float32.
    """
    batch, length, heads, key_dim = q.shape
    value_heads = v.shape[2]
    group = value_heads // heads
    n_chunks = -(-length // chunk_size)
    pad = n_chunks * chunk_size - length
    scale = key_dim ** -0.5 if scale is None else scale

    def chunks(x: Tensor, repeat_last: bool = False) -> Tensor:  # [B, T, ...] -> [B, NT, BT, ...]
        x = x.float()
        if pad:
            tail = x[:, -1:] if repeat_last else x.new_zeros(1).expand_as(x[:, -1:])
            x = torch.cat([x, tail.expand(-1, pad, *x.shape[2:])], dim=1)
        return x.reshape(batch, n_chunks, chunk_size, *x.shape[2:])

    def grouped(x: Tensor) -> Tensor:  # query-key heads -> one per value head
        return x.repeat_interleave(group, dim=2) if group > 1 else x

    qc, kc = chunks(grouped(q)), chunks(grouped(k))
    vc, doc = chunks(v), chunks(do)
    state, dstate = h.float(), dh.float()
    if state_v_first:
        state, dstate = state.transpose(-1, -2), dstate.transpose(-1, -2)
    # the padded tokens repeat the last decay: every term they enter is multiplied by a zero row
    gc = chunks(g, repeat_last=True)  # [B, NT, BT, HV]
    g_last = gc[:, :, -1]  # [B, NT, HV]

    dq = torch.einsum("bnthv,bnhkv->bnthk", doc, state) * (torch.exp2(gc) * scale).unsqueeze(-1)
    dk = torch.einsum("bnthv,bnhkv->bnthk", vc, dstate) * torch.exp2(g_last.unsqueeze(2) - gc).unsqueeze(-1)
    dg_last = (state * dstate).sum((-2, -1)) * torch.exp2(g_last) + (dk * kc).sum((2, 4))  # [B, NT, HV]

    gt = gc.transpose(2, 3)  # [B, NT, HV, BT]
    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device).tril()
    scores = torch.einsum("bnthv,bnshv->bnhts", doc, vc)
    ds = torch.where(causal, scores * torch.exp2(gt.unsqueeze(-1) - gt.unsqueeze(-2)), 0.0) * scale
    dq = dq + torch.einsum("bnhts,bnshk->bnthk", ds, kc)
    dk = dk + torch.einsum("bnhts,bnthk->bnshk", ds, qc)

    dg = (dq * qc).sum(-1) - (dk * kc).sum(-1)  # [B, NT, BT, HV]
    last_row = (length - 1) - (n_chunks - 1) * chunk_size
    dg[:, :-1, -1] += dg_last[:, :-1]
    dg[:, -1, last_row] += dg_last[:, -1]

    def tokens(x: Tensor) -> Tensor:  # [B, NT, BT, ...] -> [B, T, ...]
        return x.reshape(batch, n_chunks * chunk_size, *x.shape[3:])[:, :length]

    dq, dk, dg = tokens(dq), tokens(dk), tokens(dg)
    if group > 1:
        dq = dq.reshape(batch, length, heads, group, key_dim).sum(3)
        dk = dk.reshape(batch, length, heads, group, key_dim).sum(3)
    dw = None
    if w is not None:
        if dv is None:
            raise ValueError("chunk_bwd_dqkwg_gated: w needs dv (the delta rule's value gradient)")
        dw = tokens(-torch.einsum("bnthv,bnhkv->bnthk", chunks(dv), state)).to(w.dtype)
    return dq.to(q.dtype), dk.to(k.dtype), dw, dg


def fla_refuses_gated_dqkwg() -> bool:
    """Whether fla's own gated ``chunk_bwd_dqkwg`` raises here (fla issue #640's guard)."""
    try:
        from fla.utils import IS_NVIDIA_HOPPER, TRITON_ABOVE_3_4_0, TRITON_ABOVE_3_7_1
    except Exception:
        return False
    return bool(IS_NVIDIA_HOPPER and TRITON_ABOVE_3_4_0 and not TRITON_ABOVE_3_7_1)


@functools.cache
def register_fla_backend() -> bool:
    """Register ``chunk_bwd_dqkwg_gated`` with fla's dispatch for the calls fla refuses.

    Returns whether it is registered and consulted (False: fla not importable, a layout without
    backends, or fla's dispatch turned off with FLA_DISABLE_BACKEND_DISPATCH=1).
    fla tries its backends by priority: TileLang's first (priority 5) where usable, this one
    after it; the verifier accepts only refused calls that it computes (gated, no g_gamma, no
    variable-length batch), so everything else still goes to fla's own kernel.
    """
    try:
        from fla.backends import BaseBackend, register
    except Exception:
        return False
    if os.environ.get("FLA_DISABLE_BACKEND_DISPATCH") == "1":  # fla then never consults backends
        return False

    class MirasDqkwgBackend(BaseBackend):
        backend_type = "miras_search"
        priority = 9

        def chunk_bwd_dqkwg_verifier(self, q, k, v, do, h, dh, w=None, g=None, g_gamma=None,
                                     dv=None, scale=None, state_v_first=False, cu_seqlens=None,
                                     chunk_size=64, chunk_indices=None) -> tuple[bool, str | None]:
            if not fla_refuses_gated_dqkwg():
                return False, "fla's own kernel runs here"
            if g is None or g_gamma is not None or cu_seqlens is not None:
                return False, "only the gated, fixed-length case (the one fla refuses with g)"
            if v.shape[2] % k.shape[2]:
                return False, "value heads must be a multiple of the query-key heads"
            return True, None

        def chunk_bwd_dqkwg(self, q, k, v, do, h, dh, w=None, g=None, g_gamma=None, dv=None,
                            scale=None, state_v_first=False, cu_seqlens=None, chunk_size=64,
                            chunk_indices=None):
            return chunk_bwd_dqkwg_gated(q, k, v, do, h, dh, g, w=w, dv=dv, scale=scale,
                                         state_v_first=state_v_first, chunk_size=chunk_size)

    register("common", backend=None)(MirasDqkwgBackend)
    return True
