"""MAD's fuzzy in-context recall (Poli et al., 2024): keys and values of several tokens.

One sequence of T + 1 tokens::

    PAD .. PAD  k k v  k v v v  ..  [kp kp kp vp]  ..  k k k v v   kp kp kp vp
                \\---------------- pairs, one of them the probe ------------/ \\- probe again -/

Keys are tuples of distinct symbols from [0, S/2), values tuples of distinct symbols from
[S/2, S), S = vocab_size - 1 (MAD counts the pad token). In training a key has 1 to ``key_len``
tokens and a value 1 to ``value_len``; in validation every key has ``key_len`` tokens (MAD
always prompts at the longest key) and values keep their random lengths. Each sequence has its
own map from keys to values; one probe pair sits at a random place and is repeated at the end.
Every value (all its tokens) whose key appeared earlier is a query, the final probe's value
included; pairs fill the sequence as long as they fit, PAD fills the front.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from miras_search.data._mad import MadRecallBase
from miras_search.data._task import Split
from miras_search.data.batch import Batch
from miras_search.data.vocab import PAD


class MadFuzzyRecall(MadRecallBase):
    """MAD fuzzy in-context recall: multi-token keys and values of random lengths."""

    task: Literal["mad_fuzzy_recall"] = "mad_fuzzy_recall"
    key_len: int = Field(3, ge=1, le=8, description="Most tokens of a key (MAD's k_motif_size).")
    value_len: int = Field(3, ge=1, le=8, description="Most tokens of a value (MAD's v_motif_size).")

    @model_validator(mode="after")
    def _counts(self) -> MadFuzzyRecall:
        S = self.symbols()
        for name, length, have in (("key_len", self.key_len, S // 2), ("value_len", self.value_len, S - S // 2)):
            if length > have:
                raise ValueError(
                    f"{name} ({length}) exceeds the {have} symbols a {name[:-4]} draws its distinct "
                    f"tokens from (vocab_size {self.vocab_size}: {S // 2} key and {S - S // 2} value "
                    f"symbols); raise vocab_size or lower {name}"
                )
        return self

    def symbols(self) -> int:
        return self.vocab_size - 1

    def min_seq_len(self) -> int:
        return 2 * (self.key_len + self.value_len)  # the probe twice, minus the unused last token, + 1

    def generate(self, batch_size: int, seq_len: int, gen: torch.Generator, split: Split = "train") -> Batch:
        """inputs, targets: [batch_size, seq_len]."""
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=gen)))
        rows = [self._row(seq_len + 1, rng, split) for _ in range(batch_size)]
        seq = torch.tensor(np.array([r[0] for r in rows]), dtype=torch.long)
        scored = torch.tensor(np.array([r[1] for r in rows]), dtype=torch.bool)
        return self._batch(seq, scored, split)

    def _draw(self, rng: np.random.Generator, longest: int, low: int, high: int, fixed: bool) -> tuple[int, ...]:
        size = longest if fixed else int(rng.integers(1, longest + 1))
        return tuple(int(x) for x in low + rng.choice(high - low, size, replace=False))

    def _row(self, length: int, rng: np.random.Generator, split: Split) -> tuple[list[int], list[bool]]:
        """One sequence of ``length`` tokens and its [length] answer flags."""
        S = self.symbols()
        K = S // 2

        def key() -> tuple[int, ...]:
            return self._draw(rng, self.key_len, 0, K, fixed=split == "validation")

        def value() -> tuple[int, ...]:
            return self._draw(rng, self.value_len, K, S, fixed=False)

        probe_key, probe_value = key(), value()
        value_of = {probe_key: probe_value}
        budget = length - len(probe_key) - len(probe_value)  # tokens before the final probe
        probe_at = int(rng.integers(budget - len(probe_key) - len(probe_value) + 1))
        tokens: list[int] = []
        flags: list[bool] = []
        seen: set[tuple[int, ...]] = set()
        probe_placed = False

        def add(k: tuple[int, ...], v: tuple[int, ...]) -> None:
            value_of[k] = v
            tokens.extend(k + v)
            flags.extend([False] * len(k) + [k in seen] * len(v))
            seen.add(k)

        while True:
            if not probe_placed and len(tokens) >= probe_at:
                add(probe_key, probe_value)
                probe_placed = True
                continue
            k = key()
            v = value_of[k] if k in value_of else value()
            reserved = 0 if probe_placed else len(probe_key) + len(probe_value)
            if len(k) + len(v) > budget - len(tokens) - reserved:
                break
            add(k, v)
            probe_placed = probe_placed or k == probe_key
        if not probe_placed:
            add(probe_key, probe_value)
        add(probe_key, probe_value)  # the final query; its key is in ``seen`` now
        pad = length - len(tokens)
        return [PAD] * pad + tokens, [False] * pad + flags
