"""The token budget of a trial with sources of several lengths, and the final step's report."""

from __future__ import annotations

import pytest

from miras_search.data import MQAR, DataMix, NeedleInHaystack, SelectiveCopy
from miras_search.errors import MirasError
from miras_search.model import StepInfo
from miras_search.presets import preset
from miras_search.schema import ModelPoint
from miras_search.trial import TrialConfig, run_trial

SHORT = MQAR(num_pairs=2, vocab_size=32)
LONG = NeedleInHaystack(seq_len=512)


def _tiny() -> ModelPoint:
    return preset("transformer", block={"d_model": 32, "n_heads": 2, "n_layers": 1, "max_seq_len": 512})


def _trained(mix: DataMix, steps: int, batch_size: int, seq_len: int, seed: int) -> int:
    """Tokens of the first ``steps`` training batches of the mix, from the batches themselves."""
    return sum(
        mix.batch(batch_size, step=step, seed=seed, seq_len=seq_len)[1].targets.numel() for step in range(steps)
    )


@pytest.mark.parametrize("tokens", [128, 1000, 4096, 5000])
def test_one_length_keeps_tokens_over_batch_tokens(tokens):
    mix = DataMix([SHORT, SelectiveCopy(num_tokens=4, seq_len=64, weight=3.0)])
    assert mix.train_steps(tokens, 2, 64, seed=5) == tokens // (2 * 64)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_long_source_is_counted_with_its_own_length(seed):
    mix = DataMix([SHORT, LONG])
    steps = mix.train_steps(4096, 2, 64, seed=seed)
    trained = _trained(mix, steps, 2, 64, seed)
    assert 4096 - 2 * 512 < trained <= 4096
    assert trained + 2 * mix.seq_lens(64)[mix.pick(steps, seed)] > 4096  # the next batch would not fit


def test_a_budget_below_one_batch_of_the_longest_source_is_refused():
    with pytest.raises(MirasError, match=r"tokens \(1000\) do not cover one batch \(batch_size 2 x seq_len 512 of data source '1:niah' = 1024\); give at least 1024 tokens"):
        DataMix([SHORT, LONG]).train_steps(1000, 2, 64)


def test_a_trial_with_a_long_source_trains_its_budget_and_schedule():
    """QA B5: tokens=4096, B=2, T=64 with niah(seq_len=512) trained 32 steps, 21,120 tokens."""
    config = TrialConfig(data=[SHORT, LONG], tokens=4096, batch_size=2, seq_len=64, eval_batches=1,
                         eval_batch_size=1, report_every=2, threads=1)
    infos: list[StepInfo] = []
    result = run_trial(_tiny(), config, device="cpu", progress=infos.append)
    assert result.ok, result.reason
    assert 4096 - 2 * 512 < result.metrics["tokens"] <= 4096
    assert result.metrics["tokens"] == infos[-1].tokens
    assert [info.step for info in infos] == list(range(1, infos[-1].steps + 1))  # the bar's total is right
    train = _tiny().train
    assert infos[-1].lr == pytest.approx(train.lr * train.min_lr_ratio)  # the schedule ends where training does
    assert result.curve[-1][0] == infos[-1].steps


def test_a_trial_of_one_length_is_unchanged():
    config = TrialConfig(data=[SHORT], tokens=5000, batch_size=2, seq_len=64, eval_batches=1,
                         report_every=10, threads=1)
    result = run_trial(_tiny(), config, device="cpu")
    assert result.ok, result.reason
    assert result.metrics["tokens"] == 39 * 2 * 64
    assert [step for step, _ in result.curve] == [10, 20, 30, 39]


def test_a_trial_whose_budget_misses_one_long_batch_fails_as_build():
    # the config refuses it where it sets the batch (trial.tokens, at its line in a file) ...
    with pytest.raises(ValueError, match=r"seq_len 512 of trial\.data\.1 \(niah\) = 1024"):
        TrialConfig(data=[SHORT, LONG], tokens=512, batch_size=2, seq_len=64, threads=1)
    # ... and a trial given such a config all the same fails as 'build', before any training
    config = TrialConfig(data=[SHORT, LONG], batch_size=2, seq_len=64, threads=1).model_copy(update={"tokens": 512})
    result = run_trial(_tiny(), config, device="cpu")
    assert result.failure == "build" and "seq_len 512 of data source '1:niah' = 1024" in result.reason


def _always_prune(seen: list[int]):
    def report(step: int, loss: float) -> bool:
        seen.append(step)
        return False
    return report


def test_pruning_stops_at_an_earlier_report():
    seen: list[int] = []
    config = TrialConfig(data=[SHORT], tokens=11 * 128, batch_size=2, seq_len=64, eval_batches=1,
                         report_every=4, threads=1)
    result = run_trial(_tiny(), config, device="cpu", report=_always_prune(seen))
    assert result.status == "pruned" and seen == [4] and "val_loss" not in result.metrics


@pytest.mark.parametrize("report_every", [4, 11, 50])
def test_the_final_step_is_reported_but_never_pruned(report_every):
    """QA D2: a prune answer at the final step threw away a fully trained trial unevaluated."""
    seen: list[int] = []
    config = TrialConfig(data=[SHORT], tokens=11 * 128, batch_size=2, seq_len=64, eval_batches=1,
                         report_every=report_every, threads=1)

    def prune_only_at_the_end(step: int, loss: float) -> bool:
        seen.append(step)
        return step != 11

    result = run_trial(_tiny(), config, device="cpu", report=prune_only_at_the_end)
    assert result.status == "complete", result.reason
    assert "val_loss" in result.metrics and result.metrics["tokens"] == 11 * 128
    assert seen[-1] == 11 and result.curve[-1][0] == 11
    if report_every > 11:  # the final step is the only report: a pruner saying "prune" cannot
        seen.clear()
        always = run_trial(_tiny(), config, device="cpu", report=_always_prune(seen))
        assert always.status == "complete" and seen == [11] and "val_loss" in always.metrics
