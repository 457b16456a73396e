"""Multi-query associative recall (MQAR, as in Zoology / Based).

Layout of one sequence of T + 1 tokens (inputs are the first T, targets the last T)::

    k1 v1 k2 v2 ... kN vN | PAD .. kq vq .. PAD .. kq' vq' .. PAD

The context binds N distinct keys to values; the query region repeats Q of those keys, each
followed by its value, at random non-overlapping places among PAD fillers. Loss is taken only
where a queried key's value must be predicted. Keys come from [0, V/2), values from [V/2, V).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from miras_search.data._sampling import distinct, place
from miras_search.data._task import Split, SyntheticTask
from miras_search.data.batch import Batch
from miras_search.data.vocab import N_BYTES, PAD


class MQAR(SyntheticTask):
    """Multi-query associative recall: N key-value pairs, then Q of the keys queried."""

    task: Literal["mqar"] = "mqar"
    vocab_size: int = Field(
        N_BYTES, ge=4, le=N_BYTES, description="Symbols used; keys are the lower half, values the upper."
    )
    num_pairs: int = Field(16, ge=1, description="Key-value pairs in the context (N).")
    num_queries: int | None = Field(
        None, ge=1, description="Keys queried (Q <= N, each at most once); null = num_pairs."
    )

    @model_validator(mode="after")
    def _counts(self) -> MQAR:
        if self.num_pairs > self.vocab_size // 2:
            raise ValueError(
                f"num_pairs ({self.num_pairs}) needs that many distinct keys but vocab_size "
                f"{self.vocab_size} has only {self.vocab_size // 2} key symbols"
            )
        if self.queries > self.num_pairs:
            raise ValueError(f"num_queries ({self.queries}) cannot exceed num_pairs ({self.num_pairs})")
        return self

    @property
    def queries(self) -> int:
        return self.num_queries if self.num_queries is not None else self.num_pairs

    def min_seq_len(self) -> int:
        return 2 * self.num_pairs + 2 * self.queries - 1

    def generate(self, batch_size: int, seq_len: int, gen: torch.Generator, split: Split = "train") -> Batch:
        """inputs, targets: [batch_size, seq_len]."""
        B, N, Q, half = batch_size, self.num_pairs, self.queries, self.vocab_size // 2
        keys = distinct(half, N, B, gen)  # [B, N], distinct: every answer is unique
        values = torch.randint(half, 2 * half, (B, N), generator=gen)  # [B, N]
        seq = torch.full((B, seq_len + 1), PAD, dtype=torch.long)
        seq[:, 0 : 2 * N : 2] = keys
        seq[:, 1 : 2 * N : 2] = values

        asked = distinct(N, Q, B, gen)  # [B, Q] which pairs are queried
        starts = 2 * N + place(seq_len + 1 - 2 * N, 2, Q, B, gen)  # [B, Q] query key positions
        seq.scatter_(1, starts, keys.gather(1, asked))
        seq.scatter_(1, starts + 1, values.gather(1, asked))
        scored = torch.zeros_like(seq, dtype=torch.bool).scatter_(1, starts + 1, True)
        return Batch.from_sequences(seq, scored)
