"""Held-out evaluation of a trained model on every data source of the trial's mix."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from miras_search.data import IGNORE_INDEX, SYNTHETIC_TASKS, DataMix

LN2 = math.log(2.0)


def source_labels(mix: DataMix) -> list[str]:
    """Metric label of each source: its task name, or ``index:task`` when a task repeats."""
    tasks = [spec.task for spec in mix.specs]
    return [t if tasks.count(t) == 1 else f"{i}:{t}" for i, t in enumerate(tasks)]


@torch.no_grad()
def evaluate(model: nn.Module, mix: DataMix, *, batches: int, batch_size: int, seq_len: int,
             seed: int, device: torch.device,
             autocast: contextlib.AbstractContextManager) -> dict[str, float]:
    """Validation metrics per source and overall.

    Returns ``loss/<source>`` (nats per scored token) for every source, ``acc/<task>`` (answer
    accuracy) for synthetic tasks, and over the text sources ``val_loss`` and ``val_bpb`` (bits per
    byte; byte-level tokenizers only). Without text sources, ``val_loss`` is the mean over sources.
    """
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    text_sum = text_count = 0.0
    per_source: list[float] = []
    for source, spec, label in zip(mix.sources, mix.specs, source_labels(mix), strict=True):
        loss_sum = 0.0
        scored = hits = 0
        for step in range(batches):
            batch = source.batch(batch_size, step=step, seed=seed, split="validation", seq_len=seq_len)
            inputs, targets = batch.inputs.to(device), batch.targets.to(device)
            with autocast:
                logits = model(inputs)
            logits = logits.float()
            loss_sum += F.cross_entropy(
                logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
            ).item()
            mask = targets != IGNORE_INDEX
            scored += int(mask.sum())
            hits += int(((logits.argmax(-1) == targets) & mask).sum())
        mean = loss_sum / max(scored, 1)
        metrics[f"loss/{label}"] = mean
        per_source.append(mean)
        if spec.task in SYNTHETIC_TASKS:
            metrics[f"acc/{label}"] = hits / max(scored, 1)
        else:
            text_sum += loss_sum
            text_count += scored
            if getattr(spec, "tokenizer", "bytes") == "bytes":
                metrics[f"bpb/{label}"] = mean / LN2
    if text_count:
        metrics["val_loss"] = text_sum / text_count
        if any(k.startswith("bpb/") for k in metrics):
            metrics["val_bpb"] = metrics["val_loss"] / LN2
    else:
        metrics["val_loss"] = sum(per_source) / len(per_source)
    accuracies = [v for k, v in metrics.items() if k.startswith("acc/")]
    if accuracies:
        metrics["acc_mean"] = sum(accuracies) / len(accuracies)
    model.train(was_training)
    return metrics
