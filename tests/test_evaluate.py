"""What a trial's evaluation measures: bits per byte over the bytes the scored tokens stand for,
one validation set for every training seed, and exact match for needle-in-a-haystack."""

from __future__ import annotations

import contextlib
import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from miras_search.data import EOS, IGNORE_INDEX, VOCAB_SIZE, Batch, DataMix, Files
from miras_search.trial import evaluate as evaluate_module
from miras_search.trial.evaluate import EVAL_SEED, evaluate


class UniformLogits(nn.Module):
    """Every next token equally likely: the loss of each scored target is ln V."""

    def __init__(self, vocab: int = VOCAB_SIZE):
        super().__init__()
        self.vocab = vocab

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, T, V]
        return torch.zeros(*inputs.shape, self.vocab)


def _run(model: nn.Module, mix, batches: int = 2, batch_size: int = 4, seq_len: int = 32, **kw):
    return evaluate(model, mix, batches=batches, batch_size=batch_size, seq_len=seq_len,
                    device=torch.device("cpu"), autocast=contextlib.nullcontext(), **kw)


def test_bits_per_byte_divide_by_the_bytes_not_the_tokens(tmp_path, monkeypatch):
    """Short records of 2-, 3- and 4-byte characters: end-of-document targets cover no byte."""
    monkeypatch.setenv("MIRAS_CACHE_DIR", str(tmp_path / "cache"))
    records = [{"text": f"é€𝄞 {i} ü"} for i in range(400)]
    path = tmp_path / "short.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    mix = DataMix([Files(paths=[str(path)], val_fraction=0.2)])
    metrics = _run(UniformLogits(), mix)

    targets = torch.cat([mix.sources[0].batch(4, step=s, seed=EVAL_SEED, split="validation",
                                              seq_len=32).targets for s in range(2)])
    scored, eos = targets.numel(), int((targets == EOS).sum())
    assert eos > scored / 20  # the case that matters: many end-of-document targets
    expected = math.log2(VOCAB_SIZE) * scored / (scored - eos)
    # float32 cross-entropy sums: relative error ~1e-7
    assert metrics["val_bpb"] == pytest.approx(expected, rel=1e-6)
    assert metrics["bpb/files"] == pytest.approx(expected, rel=1e-6)
    assert metrics["val_loss"] == pytest.approx(math.log(VOCAB_SIZE), rel=1e-6)  # nats per token


def test_val_bpb_pools_bits_and_bytes_over_text_sources(tmp_path, monkeypatch):
    """Short records end a document every few bytes, long ones rarely: pooled bits per byte
    lies between the two sources' own."""
    monkeypatch.setenv("MIRAS_CACHE_DIR", str(tmp_path / "cache"))
    for name, length in (("short", 6), ("long", 600)):
        records = [{"text": f"{i:05d} " + "x" * length} for i in range(300)]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    mix = DataMix([Files(paths=[str(tmp_path / f"{name}.jsonl")]) for name in ("short", "long")])
    metrics = _run(UniformLogits(), mix)
    short, long = metrics["bpb/0:files"], metrics["bpb/1:files"]
    assert short > long * 1.05  # end-of-document targets carry bits but no bytes
    assert long < metrics["val_bpb"] < short


def test_the_validation_set_does_not_depend_on_the_training_seed(monkeypatch):
    calls: list[dict] = []

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return {"val_loss": 1.0, "val_bpb": 1.0}

    monkeypatch.setattr("miras_search.trial.runner.evaluate", recording)
    from miras_search.presets import preset
    from miras_search.schema import ModelPoint
    from miras_search.trial import TrialConfig, run_trial

    data = preset("gated_deltanet").model_dump()
    data["block"].update({"d_model": 32, "n_heads": 2, "n_layers": 1})
    point = ModelPoint.model_validate(data)
    for seed in (0, 7):
        config = TrialConfig(tokens=256, batch_size=2, seq_len=32, eval_batches=1, seed=seed)
        assert run_trial(point, config).status == "complete"
    assert [c.get("seed", EVAL_SEED) for c in calls] == [EVAL_SEED, EVAL_SEED]


class _Fixed:
    """A data source whose only validation batch is given."""

    def __init__(self, batch: Batch):
        self._batch = batch

    def batch(self, batch_size, *, step, seed, split, seq_len):
        return self._batch


class _Echo(nn.Module):
    """Predicts the given answers, with the given positions wrong."""

    def __init__(self, targets: torch.Tensor, wrong: torch.Tensor):
        super().__init__()
        logits = torch.zeros(*targets.shape, VOCAB_SIZE)
        answer = targets.clamp(min=0) + wrong.long()  # one id off where wrong
        logits.scatter_(-1, answer.unsqueeze(-1), 1.0)
        self.logits = logits

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.logits


@pytest.mark.parametrize(("task", "expected"), [("niah", 0.5), ("mqar", 6 / 8)])
def test_needle_answers_are_scored_by_exact_match_other_tasks_per_token(task, expected):
    targets = torch.full((4, 6), IGNORE_INDEX)
    targets[:, 1:3] = torch.tensor([[10, 11], [12, 13], [14, 15], [16, 17]])
    wrong = torch.zeros(4, 6, dtype=torch.bool)
    wrong[1, 2] = True  # rows 1 and 3 miss one of their two answer tokens
    wrong[3, 1] = True
    mix = SimpleNamespace(sources=[_Fixed(Batch(torch.zeros(4, 6, dtype=torch.long), targets))],
                          specs=[SimpleNamespace(task=task)])
    metrics = _run(_Echo(targets, wrong), mix, batches=1)
    assert metrics[f"acc/{task}"] == pytest.approx(expected)
    assert metrics["acc_mean"] == pytest.approx(expected)


def test_exact_match_tasks_are_synthetic_tasks():
    from miras_search.data import SYNTHETIC_TASKS

    assert evaluate_module.EXACT_MATCH_TASKS.issubset(SYNTHETIC_TASKS)
