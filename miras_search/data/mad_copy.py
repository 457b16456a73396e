"""MAD's selective copying (Poli et al., 2024).

One sequence of T inputs::

    PAD d1 PAD PAD d2 ... dN PAD  SEP  PAD PAD ... PAD
                                        \\-- N blanks: targets d1 .. dN --/

N data symbols from [0, vocab_size - 2) (MAD counts its blank and copy tokens) sit at random
places among T - 2N - 1 blanks; after the copy token (SEP) come N more blanks, and the target
at the i-th of them is d_i. Unlike ``selective_copy`` (Mamba's layout, teacher-forced: the
answers are fed back as inputs), MAD's model never sees the data again while it copies.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from miras_search.data._mad import MadTask, ignore_unscored
from miras_search.data._sampling import place
from miras_search.data._task import Split
from miras_search.data.batch import Batch
from miras_search.data.vocab import PAD, SEP


class MadSelectiveCopy(MadTask):
    """MAD selective copying: copy N scattered symbols, in order, onto blanks after SEP."""

    task: Literal["mad_selective_copy"] = "mad_selective_copy"
    num_tokens: int = Field(16, ge=1, le=4096, description="Data tokens to copy (MAD's num_tokens_to_copy).")

    @model_validator(mode="after")
    def _counts(self) -> MadSelectiveCopy:
        if self.symbols() < 1:
            raise ValueError(f"vocab_size ({self.vocab_size}) leaves no data symbols after MAD's 2 specials")
        return self

    def symbols(self) -> int:
        return self.vocab_size - 2

    def min_seq_len(self) -> int:
        return 2 * self.num_tokens + 2  # MAD: seq_len > 2N + 1, at least one blank among the data

    def generate(self, batch_size: int, seq_len: int, gen: torch.Generator, split: Split = "train") -> Batch:
        """inputs, targets: [batch_size, seq_len]; loss on the N blanks after SEP only."""
        B, N, T = batch_size, self.num_tokens, seq_len
        context = T - N - 1
        data = torch.randint(self.symbols(), (B, N), generator=gen)  # [B, N]
        inputs = torch.full((B, T), PAD, dtype=torch.long)
        inputs.scatter_(1, place(context, 1, N, B, gen), data)
        inputs[:, context] = SEP
        targets = torch.full((B, T), PAD, dtype=torch.long)
        targets[:, context + 1 :] = data
        scored = torch.zeros(B, T, dtype=torch.bool)
        scored[:, context + 1 :] = True
        return Batch(inputs, ignore_unscored(targets, scored))
