"""Held-out evaluation of a trained model on every data source of the trial's mix."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from miras_search.data import IGNORE_INDEX, SYNTHETIC_TASKS, DataMix, mad_scores
from miras_search.data.metrics import AnswerCounts, answer_counts
from miras_search.model.compiling import eager

LN2 = math.log(2.0)

EVAL_SEED = 0
"""The seed of every validation batch, whatever the training seed: all trials, seeds and workers
of a study are scored on the same windows of text and the same synthetic examples, so that a
difference between two runs is the models', not the sample's."""

MEASURE_VERSION = 2
"""What a trial's metrics mean, bumped whenever that changes, so that a study never ranks trials
measured one way against trials measured another (``study.setup.check_measure``).
1: studies from before the version was stored (val_bpb per token, validation windows drawn with
the training seed, the corpus split by exact duplicates only).
2: val_bpb over bytes, one validation set for every trial, near-duplicate documents split
together, no codec tables, NIAH by exact match, budgets counted at each source's seq_len, l2
retention's gradient point per preset (titans, yaad: 'previous')."""

EXACT_MATCH_TASKS = frozenset({"niah"})
"""Tasks scored per example (every answer token right), as needle-in-a-haystack benchmarks are:
per token, a UUID answer earns a fifth of its score for its format alone."""


def source_labels(mix: DataMix) -> list[str]:
    """Metric label of each source: its task name, or ``index:task`` when a task repeats."""
    tasks = [spec.task for spec in mix.specs]
    return [t if tasks.count(t) == 1 else f"{i}:{t}" for i, t in enumerate(tasks)]


@dataclass
class _Tally:
    """Sums over one source's validation batches."""

    loss: float = 0.0  # nats, summed over scored targets
    answers: AnswerCounts = field(default_factory=AnswerCounts)
    nbytes: float = 0.0  # UTF-8 bytes the scored targets stand for (text sources)

    def add(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """logits [B, T, V] (float32), targets [B, T]."""
        self.loss += F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        ).item()
        self.answers += answer_counts(logits, targets)


@torch.no_grad()
def evaluate(model: nn.Module, mix: DataMix, *, batches: int, batch_size: int, seq_len: int,
             device: torch.device, autocast: contextlib.AbstractContextManager,
             seed: int = EVAL_SEED) -> dict[str, float]:
    """Validation metrics per source and overall, on ``batches`` batches of each source.

    Returns ``loss/<source>`` (nats per scored token) for every source; for synthetic tasks
    ``acc/<task>`` (share of answer tokens right, or of examples with every answer token right
    for EXACT_MATCH_TASKS); for text sources ``bpb/<source>`` (bits per UTF-8 byte of the
    scored text); and over the text sources ``val_loss`` (nats per token) and ``val_bpb``
    (their summed bits over their summed bytes). Without text sources, ``val_loss`` is the mean
    over sources. With MAD tasks in the mix, ``mad/<task>`` (mean accuracy over that task's
    sources) and ``mad_score`` (their mean over the tasks, MAD's aggregate; data.mad_suite).
    Bytes are exact for the byte tokenizer (an end-of-document token covers none) and the
    validation split's bytes per token for a tokenizer.json.
    """
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    text = _Tally()
    per_source: list[float] = []
    for source, spec, label in zip(mix.sources, mix.specs, source_labels(mix), strict=True):
        tally = _Tally()
        for step in range(batches):
            batch = source.batch(batch_size, step=step, seed=seed, split="validation", seq_len=seq_len)
            inputs, targets = batch.inputs.to(device), batch.targets.to(device)
            with autocast, eager():  # a compiled model's training graph does not fit a no-grad pass
                logits = model(inputs)
            tally.add(logits.float(), targets)
            if spec.task not in SYNTHETIC_TASKS:
                tally.nbytes += source.target_bytes(batch.targets)
        mean = tally.loss / max(tally.answers.tokens, 1)
        metrics[f"loss/{label}"] = mean
        per_source.append(mean)
        if spec.task in SYNTHETIC_TASKS:
            a = tally.answers
            exact = spec.task in EXACT_MATCH_TASKS
            right, total = (a.right_examples, a.examples) if exact else (a.right_tokens, a.tokens)
            metrics[f"acc/{label}"] = right / max(total, 1)
        else:
            if tally.nbytes:
                metrics[f"bpb/{label}"] = tally.loss / LN2 / tally.nbytes
            text.loss += tally.loss
            text.answers += tally.answers
            text.nbytes += tally.nbytes
    if text.answers.tokens:
        metrics["val_loss"] = text.loss / text.answers.tokens
        if text.nbytes:
            metrics["val_bpb"] = text.loss / LN2 / text.nbytes
    else:
        metrics["val_loss"] = sum(per_source) / len(per_source)
    accuracies = [v for k, v in metrics.items() if k.startswith("acc/")]
    if accuracies:
        metrics["acc_mean"] = sum(accuracies) / len(accuracies)
    metrics.update(mad_scores(
        (spec.task, metrics[f"acc/{label}"]) for spec, label in zip(mix.specs, source_labels(mix), strict=True)
        if f"acc/{label}" in metrics
    ))
    model.train(was_training)
    return metrics
