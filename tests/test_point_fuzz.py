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
from pydantic import ValidationError

from miras_search.model import build_model
from miras_search.model.factory import param_count
from miras_search.schema import ModelPoint
from miras_search.schema.bias import HuberBias
from miras_search.space import SearchSpace

SPACES = sorted((Path(__file__).resolve().parent.parent / "spaces").glob("*.yaml"))
VOCAB = 32


def _tiny(data: dict[str, Any], seq_len: int = 16, chunk_size: int | None = None) -> dict[str, Any]:
    """The point's data on a block small enough for a CPU step: at most 2 heads of width 8."""
    block, train = dict(data["block"]), dict(data["train"])
    heads = min(block["n_heads"], 2)
    block.update(n_heads=heads, d_model=8 * heads, n_layers=min(block["n_layers"], 2), vocab_size=VOCAB)
    for name in ("key_dim", "value_dim"):
        if block.get(name) is not None:
            block[name] = min(block[name], 8)
    if block.get("key_dim") and block.get("value_dim") and data["block"]["key_dim"] == data["block"]["value_dim"]:
        block["value_dim"] = block["key_dim"]
    train.update(batch_size=2, seq_len=seq_len, compile=False, kernel="torch")
    if chunk_size is not None:
        train["chunk_size"] = chunk_size
    return {**data, "block": block, "train": train}


def _step(point: ModelPoint, length: int, dtype: torch.dtype = torch.float32) -> None:
    """Build ``point``, check its parameter count, run one forward and backward of ``length``
    tokens: loss and every gradient finite."""
    torch.manual_seed(0)
    model = build_model(point, device="cpu").to(dtype)
    assert sum(p.numel() for p in model.parameters()) == param_count(point)
    tokens = torch.randint(0, VOCAB, (2, length))
    _, loss = model(tokens, tokens)
    assert torch.isfinite(loss), point.axes
    loss.backward()
    bad = [name for name, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all()]
    assert not bad, (point.axes, bad)


@pytest.mark.parametrize("path", SPACES, ids=lambda path: path.stem)
def test_sampled_points_of_every_shipped_space_train_a_step(path: Path) -> None:
    """Random-sampler points (the project's own sampling path), one at an odd length and a
    chunk size that does not divide it, in float64."""
    points = SearchSpace.load(path).sample(4, seed=11)
    for index, point in enumerate(points):
        _step(ModelPoint.model_validate(_tiny(point.model_dump(mode="json"))), 16)
        if index == 0:
            odd = ModelPoint.model_validate(_tiny(point.model_dump(mode="json"), seq_len=7, chunk_size=3))
            _step(odd, 7, torch.float64)


_GATES = ({"mode": "constant"}, {"mode": "head"}, {"mode": "channel", "rank": 4})
_ALPHAS = (*_GATES, {"mode": "mamba", "value": 0.9}, {"mode": "retnet"}, {"mode": "alibi"})
_MAPS = ({"kind": "identity"}, {"kind": "polynomial", "degree": 2}, {"kind": "exponential", "degree": 2})
_MEMORIES = (
    {"kind": "vector"}, {"kind": "none"}, {"kind": "none", "window": 3, "short_conv": False},
    *({"kind": "matrix", "feature_map": phi} for phi in _MAPS),
    *({"kind": "mlp", "expansion": 1, "layer_norm": norm, "feature_map": phi} for phi in _MAPS for norm in (True, False)),
)
_BIASES = (
    *({"kind": kind, "window": window} for kind in ("dot", "l2", "lp", "robust") for window in (1, 3)),
    *({"kind": "huber", "variant": variant, "delta": gate, "sharpness_scale": scale, "window": window}
      for variant in ("coordinate", "norm", "switch") for gate in _GATES
      for scale in ("absolute", "threshold") for window in (1, 3)),
)
_RETENTIONS = (
    {"kind": "none"}, {"kind": "bregman"}, {"kind": "l2", "gradient_at": "previous"},
    *({"kind": kind, "alpha": alpha} for kind in ("l2", "lq", "kl", "elastic") for alpha in _ALPHAS),
)
_ALGORITHMS = (
    {"kind": "none"},
    *({"kind": kind, "eta": eta} for kind in ("gd", "momentum", "implicit", "multistep") for eta in _GATES),
    *({"kind": "gd", "write_key": key, "eta": eta} for key in ("one_minus_alpha", "lerp") for eta in _GATES),
    {"kind": "muon", "ns_steps": 2},
)
_BLOCKS = (
    {}, {"hybrid": "samba", "window": 3}, {"layer_pattern": ["memory", "swa"], "window": 4},
    {"key_dim": 4, "value_dim": 6}, {"conv_size": 0, "qk_l2_norm": False, "output_norm": False, "output_gate": False},
)
_TRAINS = ({}, {"mode": "recurrent"}, {"chunk_size": 1}, {"chunk_size": 3}, {"chunk_form": "minibatch"},
           {"chunk_form": "exact_delta"})


def _combinations(count: int, seed: int) -> list[tuple[dict[str, Any], int]]:
    """``count`` combinations of the axes the schema accepts (drawn with ``seed``, rejected ones
    skipped), each with a sequence length."""
    rng, found = random.Random(seed), []
    while len(found) < count:
        data = {
            "memory": rng.choice(_MEMORIES), "bias": rng.choice(_BIASES), "retention": rng.choice(_RETENTIONS),
            "algorithm": rng.choice(_ALGORITHMS),
            "block": {"d_model": 16, "n_heads": 2, "n_layers": 2, "vocab_size": VOCAB, **rng.choice(_BLOCKS)},
            "train": {"batch_size": 2, "seq_len": 16, "compile": False, "kernel": "torch", **rng.choice(_TRAINS)},
        }
        try:
            ModelPoint.model_validate(data)
        except ValidationError:
            continue
        found.append((data, rng.choice((1, 7, 13))))
    return found


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
