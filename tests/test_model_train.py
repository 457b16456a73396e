"""The quick training loop: schedule, and a short CPU run that lowers the loss of several presets."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from miras_search.model import StepInfo, lr_at, train_tokens
from miras_search.presets import PRESET_AXES, preset
from miras_search.schema import Train

SEQ, BATCH = 24, 4


def tiny_point(name: str, **train: Any) -> Any:
    block = {"d_model": 32, "n_heads": 2, "n_layers": 2, "max_seq_len": 64}
    train = {
        **PRESET_AXES[name].get("train", {}),
        "seq_len": SEQ, "batch_size": BATCH, "lr": 1e-2, "warmup": 0.1, **train,
    }
    return preset(name, block=block, train=train)


def repeated_pattern(seed: int = 0) -> Iterator[torch.Tensor]:
    """Batches [B, SEQ+1] of one 7-byte pattern repeated, each row at a random phase."""
    pattern = torch.tensor(list(b"miras. "))
    gen = torch.Generator().manual_seed(seed)
    while True:
        phase = torch.randint(0, len(pattern), (BATCH, 1), generator=gen)
        yield pattern[(phase + torch.arange(SEQ + 1)) % len(pattern)]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_schedule_warms_up_then_decays_to_the_floor() -> None:
    train = Train(lr=1e-3, warmup=0.1, min_lr_ratio=0.1, schedule="cosine")
    lrs = [lr_at(step, 100, train) for step in range(100)]
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[9] == pytest.approx(1e-3)
    assert all(a <= b for a, b in itertools.pairwise(lrs[:10]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] == pytest.approx(1e-4)
    linear = Train(lr=1e-3, warmup=0.0, min_lr_ratio=0.0, schedule="linear")
    assert lr_at(0, 11, linear) == pytest.approx(1e-3)
    assert lr_at(5, 11, linear) == pytest.approx(5e-4)
    assert lr_at(10, 11, linear) == pytest.approx(0.0)
    constant = Train(lr=1e-3, warmup=0.0, schedule="constant")
    assert {lr_at(step, 7, constant) for step in range(7)} == {1e-3}


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
@pytest.mark.parametrize(("steps", "warmup"), [(1, 0.0), (2, 0.5), (7, 0.0), (7, 0.3), (63, 0.1), (100, 0.2), (100, 0.99)])
def test_the_torch_scheduler_follows_the_reference_schedule(schedule: str, steps: int, warmup: float) -> None:
    from miras_search.model.quick_train import make_scheduler

    train = Train(lr=3e-3, warmup=warmup, min_lr_ratio=0.1, schedule=schedule)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=train.lr)
    scheduler = make_scheduler(optimizer, steps, train)
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [lr_at(step, steps, train) for step in range(steps)]
    assert seen == pytest.approx(expected, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("name", ["moneta", "yaad", "memora", "transformer", "gated_deltanet", "titans"])
def test_a_short_run_lowers_the_loss(name: str) -> None:
    seen: list[StepInfo] = []
    result = train_tokens(tiny_point(name), repeated_pattern(), steps=20, on_step=seen.append, device="cpu")
    assert result.steps == 20 and len(seen) == 20
    assert all(torch.isfinite(torch.tensor(result.losses)))
    first, last = result.losses[0], sum(result.losses[-3:]) / 3
    assert first > math.log(200)  # starts near uniform over the 260 symbols
    # below the entropy of the pattern's 7 equally frequent bytes: the model uses the context
    assert last < math.log(7), f"{name}: loss {first:.3f} -> {last:.3f}"
    assert result.tokens == 20 * BATCH * SEQ
    assert seen[-1].tokens == result.tokens and seen[-1].step == 20
    assert result.tokens_per_s > 0


def test_training_is_reproducible_from_the_seed() -> None:
    point = tiny_point("gated_deltanet")
    a = train_tokens(point, repeated_pattern(), steps=3, device="cpu").losses
    b = train_tokens(point, repeated_pattern(), steps=3, device="cpu").losses
    assert a == b


def test_callback_can_stop_and_short_data_ends_the_run() -> None:
    point = tiny_point("gated_deltanet")
    stopped = train_tokens(point, repeated_pattern(), steps=10, on_step=lambda i: i.step < 4, device="cpu")
    assert stopped.steps == 4
    batches = [next(repeated_pattern()) for _ in range(2)]
    short = train_tokens(point, batches, steps=10, device="cpu")
    assert short.steps == 2
