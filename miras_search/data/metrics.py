"""Accuracy on answer positions (the targets that are not IGNORE_INDEX)."""

from __future__ import annotations

import torch

from miras_search.data.vocab import IGNORE_INDEX
from miras_search.errors import MirasError


def _hits(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.dim() != 3 or targets.dim() != 2 or logits.shape[:2] != targets.shape:
        raise MirasError(
            f"logits must be [B, T, V] and targets [B, T] with the same B, T; "
            f"got logits {tuple(logits.shape)} and targets {tuple(targets.shape)}"
        )
    mask = targets != IGNORE_INDEX
    if not mask.any():
        raise MirasError("targets have no answer positions (every target is -100): nothing to score")
    return (logits.argmax(dim=-1) == targets) & mask, mask


def answer_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of answer tokens whose argmax prediction is right.

    logits: [B, T, V]; targets: [B, T] with IGNORE_INDEX where no answer is expected.
    Returns a float in [0, 1] over all answer positions of the batch.
    """
    hits, mask = _hits(logits, targets)
    return float(hits.sum() / mask.sum())


def sequence_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of sequences whose every answer token is right (exact match, as NIAH is scored).

    logits: [B, T, V]; targets: [B, T]. Sequences without answer positions are left out.
    """
    hits, mask = _hits(logits, targets)
    has_answer = mask.any(dim=1)
    exact = (hits == mask).all(dim=1) & has_answer
    return float(exact.sum() / has_answer.sum())
