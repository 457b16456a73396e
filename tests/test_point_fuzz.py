"""Every point a space or the schema produces either builds and trains a step, or is refused at
validation: a seeded sample of the shipped spaces' points and of the axis combinations the schema
accepts, shrunk to a tiny block, each run forward and backward on the CPU with finite loss and
gradients and ``param_count`` equal to the built model's parameters; plus the combinations such a
fuzz pass found broken (regressions)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch

from miras_search.schema import ModelPoint
from miras_search.schema.bias import HuberBias
from miras_search.space import SearchSpace
from miras_search.testing.point_fuzz import VOCAB, axis_combinations, step_problem, tiny

SPACES = sorted((Path(__file__).resolve().parent.parent / "spaces").glob("*.yaml"))


def _step(point: ModelPoint, length: int, dtype: torch.dtype = torch.float32) -> None:
    """One forward and backward of ``length`` tokens: parameter count, loss and every gradient as
    they should be (``step_problem`` says what is not)."""
    problem = step_problem(point, length, dtype)
    assert problem is None, (point.axes, problem)


@pytest.mark.parametrize("path", SPACES, ids=lambda path: path.stem)
def test_sampled_points_of_every_shipped_space_train_a_step(path: Path) -> None:
    """Random-sampler points (the project's own sampling path), one at an odd length and a
    chunk size that does not divide it, in float64."""
    points = SearchSpace.load(path).sample(4, seed=11)
    for index, point in enumerate(points):
        _step(ModelPoint.model_validate(tiny(point.model_dump(mode="json"))), 16)
        if index == 0:
            odd = ModelPoint.model_validate(tiny(point.model_dump(mode="json"), seq_len=7, chunk_size=3))
            _step(odd, 7, torch.float64)


def _combinations(count: int, seed: int) -> list[tuple[dict[str, Any], int]]:
    """``count`` axis combinations the schema accepts, each with a sequence length of 1, 7 or 13."""
    lengths = random.Random(seed)
    return [(data, lengths.choice((1, 7, 13))) for data in axis_combinations(count, seed)]


@pytest.mark.parametrize(("data", "length"), _combinations(24, seed=3))
def test_axis_combinations_the_schema_accepts_train_a_step(data: dict[str, Any], length: int) -> None:
    _step(ModelPoint.model_validate(data), length)


@pytest.mark.parametrize("delta", [{"mode": "constant"}, {"mode": "head"}], ids=lambda gate: gate["mode"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_yaads_threshold_sharpness_in_an_omega_window_stays_finite(delta: dict, dtype: torch.dtype) -> None:
    """The switch's l1 branch with c = sharpness / delta_t: the window's padded lags carry
    delta = 0, whose floor made c overflow to inf and inf * 0 = NaN from the first token."""
    point = ModelPoint.model_validate({
        "memory": {"kind": "matrix"}, "algorithm": {"kind": "gd"},
        "bias": {"kind": "huber", "variant": "switch", "sharpness_scale": "threshold", "sharpness": 10.0,
                 "delta": delta, "window": 3},
        "block": {"d_model": 16, "n_heads": 2, "n_layers": 1, "vocab_size": VOCAB},
        "train": {"batch_size": 2, "seq_len": 8},
    })
    _step(point, 7, dtype)


def test_huber_switch_is_finite_at_a_padded_token() -> None:
    """e = 0 with delta = 0 (a padded token) gives a zero step, not NaN, in either dtype."""
    bias = HuberBias(variant="switch", sharpness_scale="threshold", sharpness=10.0)
    for dtype in (torch.float32, torch.float64):
        e = torch.zeros(3, 4, dtype=dtype)
        step = bias.phi(e, e, torch.zeros(3, 1, dtype=dtype))
        assert torch.equal(step, torch.zeros_like(step))


@pytest.mark.parametrize("mode", ["head", "channel"])
def test_a_learned_omega_gamma_may_start_at_one(mode: str) -> None:
    """gamma's range is (0, 1] as alpha's: a learned gamma of 1.0 starts just below it (as alpha
    does) instead of failing the build with a logit's math domain error."""
    point = ModelPoint.model_validate({
        "memory": {"kind": "mlp", "expansion": 1}, "algorithm": {"kind": "gd"},
        "bias": {"kind": "l2", "window": 2, "gamma": {"mode": mode, "value": 1.0}},
        "block": {"d_model": 16, "n_heads": 2, "n_layers": 1, "vocab_size": VOCAB},
        "train": {"batch_size": 2, "seq_len": 8},
    })
    _step(point, 7)
