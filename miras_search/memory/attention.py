"""Memory 'none': causal (optionally sliding-window) softmax attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def softmax_attention(
    q: Tensor, k: Tensor, v: Tensor, window: int | None = None, scale: float | None = None
) -> Tensor:
    """q, k: [B, T, H, K]; v: [B, T, H, V] -> [B, T, H, V].

    Token t attends to tokens (t - window, t] (all of [0, t] when ``window`` is None);
    ``scale`` defaults to 1 / sqrt(K).
    """
    if window is not None and window < 1:
        raise ValueError(f"attention window must be >= 1, got {window}")
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))  # [B, H, T, d]
    t = q.shape[2]
    if window is None or window >= t:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    else:
        pos = torch.arange(t, device=q.device)
        gap = pos[:, None] - pos[None, :]
        mask = (gap >= 0) & (gap < window)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return out.transpose(1, 2)
