"""A batch of (inputs, targets) and the seeding rule that makes every batch reproducible."""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import torch

from miras_search.data.vocab import IGNORE_INDEX


class Batch(NamedTuple):
    """One batch for next-token training.

    inputs:  [B, T] LongTensor, the tokens fed to the model.
    targets: [B, T] LongTensor, ``targets[:, t]`` is the token to predict after ``inputs[:, t]``,
             or ``IGNORE_INDEX`` (-100) where no loss is taken.
    """

    inputs: torch.Tensor
    targets: torch.Tensor

    @property
    def answer_mask(self) -> torch.Tensor:
        """[B, T] bool: the positions that carry a loss."""
        return self.targets != IGNORE_INDEX

    @classmethod
    def from_sequences(cls, seq: torch.Tensor, scored: torch.Tensor | None = None) -> Batch:
        """Shift ``seq: [B, T+1]`` into inputs ``seq[:, :-1]`` and targets ``seq[:, 1:]``.

        scored: optional [B, T+1] bool, True at the tokens that are answers; the target of every
        other token is IGNORE_INDEX. None scores every position (plain language modelling).
        """
        inputs, targets = seq[:, :-1], seq[:, 1:].clone()
        if scored is not None:
            targets[~scored[:, 1:]] = IGNORE_INDEX
        return cls(inputs.contiguous(), targets)


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (seed, split, step, name): stable across processes and runs.

    Python's ``hash`` is salted per process, so the parts are hashed with SHA-256 instead.
    """
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(*parts: object) -> torch.Generator:
    """A CPU torch.Generator seeded with ``derive_seed(*parts)``."""
    gen = torch.Generator()
    gen.manual_seed(derive_seed(*parts))
    return gen
