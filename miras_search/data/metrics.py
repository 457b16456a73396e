"""Accuracy on answer positions (the targets that are not IGNORE_INDEX)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from miras_search.data.vocab import IGNORE_INDEX
from miras_search.errors import MirasError


@dataclass(frozen=True)
class AnswerCounts:
    """What a batch's answers add up to; sums over batches by ``+``."""

    tokens: int = 0  # answer positions (targets that are not IGNORE_INDEX)
    right_tokens: int = 0  # of them, predicted right (argmax)
    examples: int = 0  # rows with at least one answer position
    right_examples: int = 0  # of them, rows with every answer token right

    def __add__(self, other: AnswerCounts) -> AnswerCounts:
        return AnswerCounts(self.tokens + other.tokens, self.right_tokens + other.right_tokens,
                            self.examples + other.examples, self.right_examples + other.right_examples)


def answer_counts(logits: torch.Tensor, targets: torch.Tensor) -> AnswerCounts:
    """Answer positions and examples of a batch, and how many the argmax gets right.

    logits: [B, T, V]; targets: [B, T] with IGNORE_INDEX where no answer is expected.
    """
    if logits.dim() != 3 or targets.dim() != 2 or logits.shape[:2] != targets.shape:
        raise MirasError(
            f"logits must be [B, T, V] and targets [B, T] with the same B, T; "
            f"got logits {tuple(logits.shape)} and targets {tuple(targets.shape)}"
        )
    mask = targets != IGNORE_INDEX
    right = (logits.argmax(dim=-1) == targets) & mask
    has_answer = mask.any(dim=1)
    return AnswerCounts(
        tokens=int(mask.sum()), right_tokens=int(right.sum()), examples=int(has_answer.sum()),
        right_examples=int(((right == mask).all(dim=1) & has_answer).sum()),
    )


def _scored(counts: AnswerCounts) -> AnswerCounts:
    if not counts.tokens:
        raise MirasError("targets have no answer positions (every target is -100): nothing to score")
    return counts


def answer_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of answer tokens whose argmax prediction is right.

    logits: [B, T, V]; targets: [B, T] with IGNORE_INDEX where no answer is expected.
    Returns a float in [0, 1] over all answer positions of the batch.
    """
    counts = _scored(answer_counts(logits, targets))
    return counts.right_tokens / counts.tokens


def sequence_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of sequences whose every answer token is right (exact match, as NIAH is scored).

    logits: [B, T, V]; targets: [B, T]. Sequences without answer positions are left out.
    """
    counts = _scored(answer_counts(logits, targets))
    return counts.right_examples / counts.examples
