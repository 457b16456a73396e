"""Selective copying (Mamba, Gu & Dao 2023): copy the scattered data tokens, in order, after SEP.

Layout of one sequence of T + 1 tokens::

    PAD d1 PAD PAD d2 ... dN PAD | SEP | d1 d2 ... dN

N data symbols from [0, V) sit at random places of a PAD-filled context; after SEP they are
repeated in order. Loss is taken on the N copied tokens (the first predicted from SEP).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from miras_search.data._sampling import place
from miras_search.data._task import Split, SyntheticTask
from miras_search.data.batch import Batch
from miras_search.data.vocab import N_BYTES, PAD, SEP


class SelectiveCopy(SyntheticTask):
    """Copy the N data tokens scattered among fillers, in their order."""

    task: Literal["selective_copy"] = "selective_copy"
    vocab_size: int = Field(16, ge=2, le=N_BYTES, description="Data symbols (V).")
    num_tokens: int = Field(16, ge=1, description="Data tokens to copy (N).")

    def min_seq_len(self) -> int:
        return 2 * self.num_tokens

    def generate(self, batch_size: int, seq_len: int, gen: torch.Generator, split: Split = "train") -> Batch:
        """inputs, targets: [batch_size, seq_len]."""
        B, N = batch_size, self.num_tokens
        context = seq_len - N  # + SEP + N answers = T + 1 tokens
        data = torch.randint(self.vocab_size, (B, N), generator=gen)
        seq = torch.full((B, seq_len + 1), PAD, dtype=torch.long)
        seq.scatter_(1, place(context, 1, N, B, gen), data)
        seq[:, context] = SEP
        seq[:, context + 1 :] = data
        scored = torch.zeros_like(seq, dtype=torch.bool)
        scored[:, context + 1 :] = True
        return Batch.from_sequences(seq, scored)
