"""MAD's memorization (Poli et al., 2024): a fixed key-value map learned in the weights.

One sequence of T inputs::

    k1 SEP k2 SEP ... kP SEP          (PAD first when T is odd)

targets: the value of k_i at the SEP after it (MAD's insert token), nothing elsewhere. One map
from the S/2 keys [0, S/2) to distinct values in [S/2, S), S = vocab_size - 1 (MAD counts the
insert token), is drawn from ``map_seed`` alone: the same in every sequence, split, trial and
training seed, so the answer is never in the context; the model must store the map. Train and
validation draw their keys independently from the same map (MAD's test set reuses its map too).
"""

from __future__ import annotations

from functools import cache
from typing import Literal

import torch
from pydantic import Field, model_validator

from miras_search.data._mad import MadTask, ignore_unscored
from miras_search.data._task import Split
from miras_search.data.batch import Batch, generator
from miras_search.data.vocab import PAD, SEP


@cache
def _value_map(symbols: int, map_seed: int) -> torch.Tensor:
    """[symbols // 2] the value of each key: distinct values from [symbols // 2, symbols)."""
    half = symbols // 2
    gen = generator("mad_memorization", "map", symbols, map_seed)
    return half + torch.randperm(symbols - half, generator=gen)[:half]


class MadMemorization(MadTask):
    """MAD memorization: recall each key's value from a map shared by all sequences."""

    task: Literal["mad_memorization"] = "mad_memorization"
    vocab_size: int = Field(256, ge=4, le=257, description="MAD's vocabulary size, its insert token included.")
    map_seed: int = Field(0, ge=0, description="Seed of the key-value map (not the trial's seed).")

    @model_validator(mode="after")
    def _counts(self) -> MadMemorization:
        if self.symbols() < 2:
            raise ValueError(f"vocab_size ({self.vocab_size}) must leave 2 symbols besides the insert token")
        return self

    def symbols(self) -> int:
        return self.vocab_size - 1

    def value_map(self) -> torch.Tensor:
        """[num_keys] the value of each key 0 .. num_keys - 1 (num_keys = (vocab_size - 1) // 2)."""
        return _value_map(self.symbols(), self.map_seed)

    def min_seq_len(self) -> int:
        return 2

    def generate(self, batch_size: int, seq_len: int, gen: torch.Generator, split: Split = "train") -> Batch:
        """inputs, targets: [batch_size, seq_len]; loss at each SEP on the value of the key before."""
        B, T = batch_size, seq_len
        P, lead = T // 2, T % 2
        table = self.value_map()
        keys = torch.randint(len(table), (B, P), generator=gen)
        inputs = torch.full((B, T), PAD, dtype=torch.long)
        inputs[:, lead::2] = keys
        inputs[:, lead + 1 :: 2] = SEP
        targets = torch.full((B, T), PAD, dtype=torch.long)
        targets[:, lead + 1 :: 2] = table[keys]
        scored = torch.zeros(B, T, dtype=torch.bool)
        scored[:, lead + 1 :: 2] = True
        return Batch(inputs, ignore_unscored(targets, scored))
