"""Shared parts of the MAD tasks (Poli et al., 2024, "Mechanistic Design and Scaling of Hybrid
Architectures", arXiv 2403.17844): symbol ranges counted as MAD counts them, and the rule of
which targets carry a loss.

MAD states each task's ``vocab_size`` including its special tokens (a copy, insert or
compression marker, a pad or blank); here those specials are the shared ids PAD and SEP, so a
task's symbols are ``0 .. vocab_size - specials - 1`` and every batch fits the byte vocabulary.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from miras_search.data._task import Split, SyntheticTask
from miras_search.data.batch import Batch
from miras_search.data.vocab import IGNORE_INDEX, PAD

LossOn = Literal["all", "answers"]


class MadTask(SyntheticTask):
    """Base of the MAD tasks; ``vocab_size`` is MAD's (specials included)."""

    vocab_size: int = Field(16, ge=4, le=256, description="MAD's vocabulary size, its special tokens included.")

    def symbols(self) -> int:
        """Ids this task draws its keys, values, data and noise from: ``0 .. symbols() - 1``."""
        raise NotImplementedError


class MadRecallBase(MadTask):
    """Recall tasks, which MAD trains as language models: the loss on every token in training."""

    loss_on: LossOn = Field(
        "all",
        description=(
            "Training targets: 'all' tokens (MAD trains recall as a language model) or only the "
            "'answers'; validation always scores the answers only."
        ),
    )

    def _batch(self, seq: torch.Tensor, scored: torch.Tensor, split: Split) -> Batch:
        """seq, scored: [B, T+1]; training with loss_on 'all' scores every non-PAD target."""
        if split == "train" and self.loss_on == "all":
            scored = seq != PAD
        return Batch.from_sequences(seq, scored)


def ignore_unscored(targets: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """targets [B, T] with IGNORE_INDEX wherever ``scored`` [B, T] is False."""
    return torch.where(scored, targets, torch.full_like(targets, IGNORE_INDEX))
