"""Noisy, fuzzy in-context recall: multi-token keys and values scattered in random noise.

Layout of one sequence of T + 1 tokens::

    n n [k k v v] n n n [k k v v] n ... n | SEP | k k v v  k k v v ...
    \\------------ context: N pairs in noise -----------/     \\-- Q queries --/

Keys are ``key_len`` symbols from [0, V/2) (the N keys pairwise distinct as tuples, so every answer
is unique), values are ``value_len`` symbols from [V/2, V), and every context position that no
pair takes holds a noise symbol from [V, V + noise_vocab), a range no key or value uses. After SEP,
Q of the keys are repeated, each followed by its value; loss is taken on every value token there.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from miras_search.data._sampling import distinct, distinct_tuples, place, scatter_items
from miras_search.data._task import Split, SyntheticTask
from miras_search.data.batch import Batch
from miras_search.data.vocab import N_BYTES, SEP


class NoisyRecall(SyntheticTask):
    """In-context recall of multi-token key-value pairs hidden in noise tokens."""

    task: Literal["noisy_recall"] = "noisy_recall"
    vocab_size: int = Field(64, ge=4, le=N_BYTES - 1, description="Key + value symbols (V).")
    noise_vocab: int = Field(64, ge=1, le=N_BYTES - 4, description="Noise symbols, after the V.")
    num_pairs: int = Field(8, ge=1, description="Key-value pairs in the context (N).")
    num_queries: int | None = Field(None, ge=1, description="Keys queried (Q <= N); null = N.")
    key_len: int = Field(2, ge=1, le=8, description="Symbols per key.")
    value_len: int = Field(2, ge=1, le=8, description="Symbols per value.")

    @model_validator(mode="after")
    def _counts(self) -> NoisyRecall:
        if self.vocab_size + self.noise_vocab > N_BYTES:
            raise ValueError(
                f"vocab_size + noise_vocab ({self.vocab_size} + {self.noise_vocab}) exceeds the "
                f"{N_BYTES} task symbols"
            )
        if self.num_pairs > (self.vocab_size // 2) ** self.key_len:
            raise ValueError(
                f"num_pairs ({self.num_pairs}) exceeds the {(self.vocab_size // 2) ** self.key_len} "
                f"distinct keys of key_len {self.key_len} over {self.vocab_size // 2} symbols"
            )
        if self.queries > self.num_pairs:
            raise ValueError(f"num_queries ({self.queries}) cannot exceed num_pairs ({self.num_pairs})")
        return self

    @property
    def queries(self) -> int:
        return self.num_queries if self.num_queries is not None else self.num_pairs

    @property
    def pair_len(self) -> int:
        return self.key_len + self.value_len

    def min_seq_len(self) -> int:
        return (self.num_pairs + self.queries) * self.pair_len  # + SEP - the unused last token

    def generate(self, batch_size: int, seq_len: int, gen: torch.Generator, split: Split = "train") -> Batch:
        """inputs, targets: [batch_size, seq_len]."""
        B, N, Q, half = batch_size, self.num_pairs, self.queries, self.vocab_size // 2
        keys = distinct_tuples(half, self.key_len, N, B, gen)  # [B, N, key_len]
        values = torch.randint(half, 2 * half, (B, N, self.value_len), generator=gen)
        pairs = torch.cat([keys, values], dim=-1)  # [B, N, pair_len]

        context = seq_len + 1 - 1 - Q * self.pair_len
        noise = self.vocab_size + torch.randint(self.noise_vocab, (B, seq_len + 1), generator=gen)
        seq = noise.clone()
        scatter_items(seq, place(context, self.pair_len, N, B, gen), pairs)
        seq[:, context] = SEP

        asked = distinct(N, Q, B, gen)  # [B, Q]
        queries = pairs.gather(1, asked.unsqueeze(-1).expand(-1, -1, self.pair_len))
        seq[:, context + 1 :] = queries.flatten(1)
        scored = torch.zeros_like(seq, dtype=torch.bool)
        value_at = torch.arange(self.key_len, self.pair_len)
        answer_positions = context + 1 + (torch.arange(Q).unsqueeze(-1) * self.pair_len + value_at)
        scored[:, answer_positions.flatten()] = True
        return Batch.from_sequences(seq, scored)
