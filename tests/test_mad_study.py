"""The MAD score as a trial metric and a study objective; the `data: mad` preset in a study."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from miras_search.data import MQAR, PRESETS, DataMix, MadCompression, MadRecall
from miras_search.errors import ConfigError
from miras_search.study import InlinePool, load_study_dict, load_study_file, open_study, run_study
from miras_search.trial.evaluate import evaluate

TINY_SPACE = {
    "type": "space", "name": "tiny", "preset": "gated_deltanet",
    "base": {"block": {"d_model": 32, "n_heads": 2, "n_layers": 1, "max_seq_len": 512}},
    "params": {"bias": {"kind": {"choice": ["l2", "dot"]}}, "algorithm": {"kind": {"choice": ["gd", "momentum"]}}},
}
TINY_MAD = [
    {"task": "mad_recall", "vocab_size": 8, "seq_len": 16},
    {"task": "mad_selective_copy", "vocab_size": 6, "num_tokens": 2, "seq_len": 16},
    {"task": "mad_memorization", "vocab_size": 9, "seq_len": 16},
]


class ConstantLogits(nn.Module):
    """Predicts token ``token`` everywhere: accuracy is the share of answers equal to it."""

    def __init__(self, token: int, vocab: int = 260):
        super().__init__()
        self.token, self.vocab = token, vocab

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, T, V]
        logits = torch.zeros(*inputs.shape, self.vocab)
        logits[..., self.token] = 1.0
        return logits


def test_evaluate_reports_mad_scores_over_tasks_of_levels():
    mix = DataMix([MadRecall(vocab_size=4, seq_len=12), MadRecall(vocab_size=6, seq_len=20),
                   MadCompression(vocab_size=4, seq_len=9), MQAR(vocab_size=8, num_pairs=2, seq_len=9)])
    metrics = evaluate(ConstantLogits(2), mix, batches=2, batch_size=8, seq_len=16,
                       device=torch.device("cpu"), autocast=contextlib.nullcontext())
    # vocab 4: keys {0, 1}, values {2, 3}: a constant 2 is right about half the time
    assert 0.2 < metrics["acc/0:mad_recall"] < 0.8
    recall = (metrics["acc/0:mad_recall"] + metrics["acc/1:mad_recall"]) / 2
    assert metrics["mad/mad_recall"] == pytest.approx(recall)
    assert metrics["mad/mad_compression"] == metrics["acc/mad_compression"] > 0  # a third are 2s
    assert metrics["mad_score"] == pytest.approx((recall + metrics["acc/mad_compression"]) / 2)
    assert "mad/mqar" not in metrics and metrics["acc_mean"] != metrics["mad_score"]


def test_a_trial_config_takes_a_preset_name(tmp_path):
    base = {"type": "study", "name": "m", "space": "s.yaml", "trials": 1, "objectives": [{"metric": "mad_score",
            "direction": "maximize"}]}
    study = load_study_dict({**base, "trial": {"data": "mad"}})
    assert [s.task for s in study.trial.data] == [s["task"] for s in PRESETS["mad"]]
    with pytest.raises(ConfigError) as info:
        load_study_dict({**base, "trial": {"data": "mdd"}})
    assert "trial.data" in str(info.value) and "'mdd' is not a data preset" in str(info.value)


def _write(folder: Path, **fields) -> Path:
    (folder / "space.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    study = {
        "type": "study", "name": "tiny-mad", "space": "space.yaml",
        "trial": {"data": TINY_MAD, "tokens": 1536, "batch_size": 4, "seq_len": 16, "eval_batches": 2,
                  "report_every": 4},
        "objectives": [{"metric": "mad_score", "direction": "maximize"}],
        "sampler": {"kind": "tpe", "anchors": []}, "pruner": {"kind": "none"}, "trials": 3,
        "run_dir": str(folder / "runs"), "tracking": {"wandb": "off"},
    }
    study.update(fields)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_a_tiny_study_maximises_the_mad_score(tmp_path):
    path = _write(tmp_path)
    summary = run_study(load_study_file(path), lambda: InlinePool(threads=1))
    assert summary.finished == 3
    study = open_study(load_study_file(path))
    assert study.user_attrs["objectives"] == [{"name": "mad_score", "direction": "maximize"}]
    trials = study.get_trials()
    for trial in trials:
        metrics = trial.user_attrs["metrics"]
        tasks = [f"mad/{spec['task']}" for spec in TINY_MAD]
        assert trial.values == [metrics["mad_score"]]
        assert metrics["mad_score"] == pytest.approx(sum(metrics[t] for t in tasks) / 3)
        assert 0.0 <= metrics["mad_score"] <= 1.0
    assert study.best_trial.values[0] == max(t.values[0] for t in trials)
