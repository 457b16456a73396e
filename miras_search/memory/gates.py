"""The gate tensors the memory reads, and their internal heads-first layout."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class MemoryGates:
    """Per-token gates produced by the block.

    - ``eta``: [B, T, H] or [B, T, H, C] (channel-wise: one per input channel of each memory
      layer, C = ``MemoryRule.channel_width``), > 0; multistep: [B, T, n, H(, C)].
    - ``alpha``: [B, T, H] or [B, T, H, C], in (0, 1]; None means 1 (no decay).
    - ``theta``: [B, T, H] momentum gate in (0, 1); None unless the algorithm is momentum.
    - ``delta``: [B, T, H] or [B, T, H, V] (one per value channel) Huber threshold > 0; None
      unless the bias is huber.
    - ``write_key``: [B, T, H, K], the key the value is written with when it is not ``eta * k``
      (RWKV-7's replacement key: ``W_t = alpha_t W - (W k)(eta * k)^T + v write_key^T``);
      None for the plain gradient step.
    - ``gamma``: [B, T, H] or [B, T, H, c - 1], in (0, 1): the Omega rule's weights of the c - 1
      past tokens in token t's window (Atlas, arXiv 2505.23735 Eq. 9; lag 1 first); None for the
      online update (window 1).
    """

    eta: Tensor
    alpha: Tensor | None = None
    theta: Tensor | None = None
    delta: Tensor | None = None
    write_key: Tensor | None = None
    gamma: Tensor | None = None
