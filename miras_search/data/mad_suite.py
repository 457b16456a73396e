"""The MAD suite (Poli et al., 2024) as data presets, and its aggregate score.

MAD scores a model per task as its mean accuracy over the task's difficulty levels (sequence
length, vocabulary size, noise, tokens to copy, size of the training set) and compares models by
these task scores and their mean. Here every level is one data source of a trial's mix, so one
trial trains one model on all of them at once (MAD trains one model per level and sweeps the
learning rate and weight decay); ``mad_scores`` turns the per-source accuracies into
``mad/<task>`` (the mean over that task's sources) and ``mad_score`` (the mean over the tasks).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from miras_search.errors import MirasError

MAD_TASKS = (
    "mad_recall", "mad_fuzzy_recall", "mad_noisy_recall", "mad_selective_copy", "mad_compression",
    "mad_memorization",
)

# MAD's baseline setting of each task (its configs/tasks), in this package's terms.
_BASELINE: dict[str, dict[str, Any]] = {
    "mad_recall": {"vocab_size": 16, "seq_len": 128},
    "mad_fuzzy_recall": {"vocab_size": 16, "seq_len": 128, "key_len": 3, "value_len": 3},
    "mad_noisy_recall": {"vocab_size": 32, "noise_vocab": 16, "frac_noise": 0.2, "seq_len": 128},
    "mad_selective_copy": {"vocab_size": 16, "seq_len": 256, "num_tokens": 16},
    "mad_compression": {"vocab_size": 16, "seq_len": 63},  # MAD's seq_len 32
    "mad_memorization": {"vocab_size": 256, "seq_len": 32},
}

# MAD's changes to the baseline, one at a time (its training-set sizes are left out: these tasks
# draw fresh examples; memorization's vocabularies of 512 to 8192 exceed the byte vocabulary).
_LEVELS: dict[str, dict[str, list[Any]]] = {
    "mad_recall": {"vocab_size": [32, 64, 128], "seq_len": [256, 512, 1024]},
    "mad_fuzzy_recall": {"vocab_size": [32, 64, 128], "seq_len": [256, 512, 1024]},
    "mad_noisy_recall": {
        "vocab_size": [48, 80, 144], "seq_len": [256, 512, 1024], "frac_noise": [0.4, 0.6, 0.8],
    },
    "mad_selective_copy": {
        "vocab_size": [32, 64, 128], "seq_len": [512, 1024], "num_tokens": [32, 64, 96],
    },
    "mad_compression": {"vocab_size": [32, 64, 128], "seq_len": [127, 255, 511]},
    "mad_memorization": {},
}

# The six baselines scaled to what a small model learns on a CPU in minutes: half of MAD's
# lengths, the same layouts, and the recall tasks' loss on their answers only. MAD trains recall
# on every token for 200 epochs; in a few hundred steps that loss, mostly on unpredictable keys,
# leaves recall at chance (a 2-layer gated_deltanet of width 64, 150 steps of 16 x 64 tokens of
# mad_recall: accuracy 0.22 with loss_on 'all', 0.86 with 'answers').
_ANSWERS = {"loss_on": "answers"}
_CPU: dict[str, dict[str, Any]] = {
    "mad_recall": {"vocab_size": 16, "seq_len": 64, **_ANSWERS},
    "mad_fuzzy_recall": {"vocab_size": 16, "seq_len": 64, "key_len": 2, "value_len": 2, **_ANSWERS},
    "mad_noisy_recall": {"vocab_size": 32, "noise_vocab": 16, "frac_noise": 0.2, "seq_len": 64, **_ANSWERS},
    "mad_selective_copy": {"vocab_size": 16, "seq_len": 64, "num_tokens": 8},
    "mad_compression": {"vocab_size": 16, "seq_len": 31},  # MAD's seq_len 16
    "mad_memorization": {"vocab_size": 64, "seq_len": 32},
}


def _levels() -> list[dict[str, Any]]:
    out = []
    for task, base in _BASELINE.items():
        out.append({"task": task, **base})
        for field, values in _LEVELS[task].items():
            out.extend({"task": task, **base, field: value} for value in values)
    return out


PRESETS: dict[str, list[dict[str, Any]]] = {
    "mad": [{"task": task, **fields} for task, fields in _CPU.items()],
    "mad-baseline": [{"task": task, **fields} for task, fields in _BASELINE.items()],
    "mad-levels": _levels(),
}
"""Named data lists: ``mad`` (the six tasks at CPU sizes), ``mad-baseline`` (MAD's baseline
settings) and ``mad-levels`` (the baselines and MAD's difficulty levels, 41 sources)."""


def mad_preset(name: str) -> list[dict[str, Any]]:
    """The data list of a preset (fresh dicts, to validate as DataSpecs); MirasError if unknown."""
    if name not in PRESETS:
        raise MirasError(f"unknown data preset '{name}': the presets are {', '.join(PRESETS)}")
    return [dict(spec) for spec in PRESETS[name]]


def mad_scores(accuracies: Iterable[tuple[str, float]]) -> dict[str, float]:
    """``mad/<task>`` (mean accuracy over that task's sources) and ``mad_score`` (mean over tasks).

    accuracies: (task name, accuracy in [0, 1]) per data source; sources of other tasks are
    ignored. Returns {} when no source is a MAD task.
    """
    per_task: dict[str, list[float]] = defaultdict(list)
    for task, accuracy in accuracies:
        if task in MAD_TASKS:
            per_task[task].append(accuracy)
    if not per_task:
        return {}
    scores = {f"mad/{task}": sum(values) / len(values) for task, values in per_task.items()}
    scores["mad_score"] = sum(scores.values()) / len(scores)
    return scores
