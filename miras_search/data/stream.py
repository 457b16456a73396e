"""Deterministic [B, T+1] token windows over one split of a token store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch

from miras_search.data.batch import Batch, generator
from miras_search.errors import MirasError

Order = Literal["random", "sequential"]


class TextStream:
    """Windows of ``seq_len + 1`` tokens from a 1-D token array (usually a read-only memmap).

    - ``random``: batch ``step`` takes B windows at uniform random offsets drawn from
      (seed, step), so any step can be produced alone (resume, parallel workers).
    - ``sequential``: consecutive non-overlapping windows (window i starts at i * seq_len, the
      last token of one window is the first of the next), wrapping around; for evaluation.

    The array is sliced per window, never copied whole, so one memmap serves every stream.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        seq_len: int,
        batch_size: int,
        *,
        seed: int = 0,
        order: Order = "random",
        name: str = "text",
    ):
        if seq_len < 1 or batch_size < 1:
            raise MirasError(f"seq_len and batch_size must be >= 1, got {seq_len} and {batch_size}")
        if len(tokens) < seq_len + 1:
            raise MirasError(
                f"{name} has {len(tokens)} tokens, fewer than one window of seq_len + 1 = "
                f"{seq_len + 1}; use a shorter seq_len or more text"
            )
        if order not in ("random", "sequential"):
            raise MirasError(f"order must be 'random' or 'sequential', got '{order}'")
        self.tokens, self.seq_len, self.batch_size = tokens, seq_len, batch_size
        self.seed, self.order, self.name = seed, order, name

    @property
    def n_windows(self) -> int:
        """Distinct non-overlapping windows (the length of one sequential pass)."""
        return (len(self.tokens) - 1) // self.seq_len

    def offsets(self, step: int) -> np.ndarray:
        """[B] start offsets of the windows of batch ``step``."""
        B = self.batch_size
        if self.order == "sequential":
            index = (step * B + np.arange(B)) % self.n_windows
            return index * self.seq_len
        gen = generator("text", self.name, self.seed, step)
        high = len(self.tokens) - self.seq_len  # offsets 0 .. len - (T + 1)
        return torch.randint(high, (B,), generator=gen).numpy()

    def windows(self, step: int) -> torch.Tensor:
        """[B, T+1] LongTensor: batch number ``step``."""
        span = self.seq_len + 1
        rows = [np.asarray(self.tokens[o : o + span], dtype=np.int64) for o in self.offsets(step)]
        return torch.from_numpy(np.stack(rows))

    def batch(self, step: int) -> Batch:
        """Batch ``step`` as inputs [B, T] and targets [B, T] (every position scored)."""
        return Batch.from_sequences(self.windows(step))

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Windows [B, T+1] of steps 0, 1, 2, ... (endless; one sequential pass = n_windows / B)."""
        step = 0
        while True:
            yield self.windows(step)
            step += 1
