"""MAD's compression (Poli et al., 2024), in a decoder-only language model.

MAD encodes a random sequence and a final compression token, keeps only the encoder's output at
that token, and an MLP decoder (given positions only) must rebuild every token from it. The
model factory builds decoder-only LMs, so here the rebuild follows in the same sequence::

    d1 d2 ... dL  SEP  PAD PAD ... PAD        (PAD first when T - 1 is odd)
                        \\- L blanks: targets d1 .. dL -/

L = (T - 1) // 2 symbols from [0, vocab_size - 1) (MAD counts the compression token), then the
compression token (SEP), then L blanks whose targets are the symbols in order; as in MAD's
decoder, the model is fed no token of the sequence while it rebuilds it. The bottleneck is the
model's own: a memory layer's fixed-size state must hold the L symbols, but attention can read
them back, so for attention this is MAD's (non-selective) copying rather than compression.
MAD's seq_len s (s - 1 symbols and the token) is seq_len 2s - 1 here.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import model_validator

from miras_search.data._mad import MadTask, ignore_unscored
from miras_search.data._task import Split
from miras_search.data.batch import Batch
from miras_search.data.vocab import PAD, SEP


class MadCompression(MadTask):
    """MAD compression: rebuild a random sequence after its compression token, from blanks."""

    task: Literal["mad_compression"] = "mad_compression"

    @model_validator(mode="after")
    def _counts(self) -> MadCompression:
        if self.symbols() < 2:
            raise ValueError(f"vocab_size ({self.vocab_size}) must leave 2 symbols besides the compression token")
        return self

    def symbols(self) -> int:
        return self.vocab_size - 1

    def min_seq_len(self) -> int:
        return 3  # d1 SEP PAD

    def generate(self, batch_size: int, seq_len: int, gen: torch.Generator, split: Split = "train") -> Batch:
        """inputs, targets: [batch_size, seq_len]; loss on the L rebuilt symbols."""
        B, T = batch_size, seq_len
        L = (T - 1) // 2
        lead = T - 2 * L - 1  # 0 or 1 PAD in front
        data = torch.randint(self.symbols(), (B, L), generator=gen)
        inputs = torch.full((B, T), PAD, dtype=torch.long)
        inputs[:, lead : lead + L] = data
        inputs[:, lead + L] = SEP
        targets = torch.full((B, T), PAD, dtype=torch.long)
        targets[:, lead + L + 1 :] = data
        scored = torch.zeros(B, T, dtype=torch.bool)
        scored[:, lead + L + 1 :] = True
        return Batch(inputs, ignore_unscored(targets, scored))
