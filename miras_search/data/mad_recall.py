"""MAD's in-context recall and noisy in-context recall (Poli et al., 2024).

One sequence of T + 1 tokens is a stream of floor((T + 1) / 2) key-value pairs (after one PAD
when T + 1 is odd)::

    k v k v n n k v ... k v      (n n: a slot of two noise tokens, with probability frac_noise)

Each sequence has its own random map from keys to values; keys recur, and every value whose key
appeared earlier in the sequence is a query (MAD's multi-query setting). The last pair's key
always appeared before. Keys come from [0, S/2), values from [S/2, S), noise from
[S, S + noise_vocab), S = vocab_size - noise_vocab (MAD counts the noise symbols in vocab_size).
Validation scores the queried values; training scores every token (``loss_on: all``, as MAD
trains) or only the queried values (``loss_on: answers``).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from miras_search.data._mad import MadRecallBase
from miras_search.data._task import Split
from miras_search.data.batch import Batch
from miras_search.data.vocab import PAD


class MadRecall(MadRecallBase):
    """MAD in-context recall: pairs with recurring keys, each repeat's value is a query."""

    task: Literal["mad_recall"] = "mad_recall"
    noise_vocab: int = Field(0, ge=0, le=252, description="Noise symbols, counted in vocab_size.")
    frac_noise: float = Field(
        0.0, ge=0.0, lt=1.0, description="Chance that a pair slot holds two noise tokens instead."
    )

    @model_validator(mode="after")
    def _counts(self) -> MadRecall:
        if self.symbols() < 2:
            raise ValueError(
                f"vocab_size ({self.vocab_size}) minus noise_vocab ({self.noise_vocab}) must leave at "
                f"least 2 symbols (one key, one value); raise vocab_size or lower noise_vocab"
            )
        if self.frac_noise > 0 and self.noise_vocab == 0:
            raise ValueError(f"frac_noise {self.frac_noise} needs noise symbols: set noise_vocab >= 1")
        return self

    def symbols(self) -> int:
        return self.vocab_size - self.noise_vocab

    def min_seq_len(self) -> int:
        return 3  # PAD k v k v: two pairs

    def generate(self, batch_size: int, seq_len: int, gen: torch.Generator, split: Split = "train") -> Batch:
        """inputs, targets: [batch_size, seq_len]."""
        B, S = batch_size, self.symbols()
        K = S // 2  # key symbols [0, K), value symbols [K, S)
        P = (seq_len + 1) // 2  # pairs, after one PAD when T + 1 is odd
        value_of = torch.randint(K, S, (B, K), generator=gen)  # [B, K] this sequence's map
        keys = torch.randint(K, (B, P), generator=gen)  # [B, P]
        noise = torch.rand(B, P, generator=gen) < self.frac_noise
        # A pair among the first P - 1 that is no noise, so the last pair has a key to repeat.
        kept = torch.randint(P - 1, (B, 1), generator=gen)
        noise.scatter_(1, kept, False)
        noise[:, -1] = False
        seen = torch.zeros(B, K).scatter_add_(1, keys[:, :-1], (~noise[:, :-1]).float())  # [B, K]
        keys[:, -1] = torch.multinomial(seen.clamp(max=1.0), 1, generator=gen).squeeze(1)
        values = value_of.gather(1, keys)  # [B, P]

        pairs = torch.stack([keys, values], dim=-1)  # [B, P, 2]
        noise_tokens = S + torch.randint(max(self.noise_vocab, 1), (B, P, 2), generator=gen)
        pairs = torch.where(noise.unsqueeze(-1), noise_tokens, pairs)
        # A value is a query when an earlier pair (not noise) had its key: [B, P, P] comparisons.
        earlier = torch.ones(P, P, dtype=torch.bool).tril(-1)
        same = (keys.unsqueeze(2) == keys.unsqueeze(1)) & earlier & ~noise.unsqueeze(1)
        query = same.any(dim=2) & ~noise  # [B, P]
        scored = torch.stack([torch.zeros_like(query), query], dim=-1)  # [B, P, 2]

        pad = seq_len + 1 - 2 * P  # 0 or 1
        seq = torch.cat([torch.full((B, pad), PAD), pairs.flatten(1)], dim=1)  # [B, T+1]
        scored = torch.cat([torch.zeros(B, pad, dtype=torch.bool), scored.flatten(1)], dim=1)
        return self._batch(seq, scored, split)


class MadNoisyRecall(MadRecall):
    """MAD noisy in-context recall: in-context recall with pair slots of noise (MAD's defaults)."""

    task: Literal["mad_noisy_recall"] = "mad_noisy_recall"  # type: ignore[assignment]
    vocab_size: int = Field(32, ge=4, le=256, description="MAD's vocabulary size, noise symbols included.")
    noise_vocab: int = Field(16, ge=1, le=252, description="Noise symbols, counted in vocab_size.")
    frac_noise: float = Field(0.2, ge=0.0, lt=1.0, description="Chance that a pair slot holds noise.")
