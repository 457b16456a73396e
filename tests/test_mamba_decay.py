"""Mamba2's decay parameterization (gate mode 'mamba'): alpha = exp(-A softplus(w . x + b)).

The reference below is written from the Mamba2 paper's definition (Dao and Gu, 2024, Section 7 /
its reference code's conventions): per head, A = exp(A_log) > 0 and dt = softplus(dt_proj(x) +
dt_bias); at init A is uniform in [1, 16] and dt log-uniform in [1e-3, 0.1].
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from miras_search.errors import ConfigError
from miras_search.model import build_model
from miras_search.model.gates import GateProducer
from miras_search.presets import preset
from miras_search.schema import Gate, ModelPoint
from miras_search.validation import validate as validate_as


def validate(spec: dict) -> ModelPoint:
    return validate_as(ModelPoint, spec, "point")

D, H = 12, 4096  # many heads: the initial draws are checked as distributions


def _producer(**ranges: tuple[float, float]) -> GateProducer:
    torch.manual_seed(0)
    return GateProducer("alpha", Gate(mode="mamba", **ranges), D, H, channels=1)


def _a_and_dt(producer: GateProducer) -> tuple[torch.Tensor, torch.Tensor]:
    return producer.log_a.detach().double().exp(), F.softplus(producer.proj.bias.detach().double())


@pytest.mark.parametrize(("a_init", "dt_init"), [((1.0, 16.0), (0.001, 0.1)), ((0.0, 16.0), (0.01, 0.02))])
def test_initial_a_and_dt_are_drawn_from_their_ranges(a_init, dt_init) -> None:
    a, dt = _a_and_dt(_producer(a_init=a_init, dt_init=dt_init))
    assert a.min() >= max(a_init[0], 1e-4) - 1e-6 and a.max() <= a_init[1] + 1e-6
    assert abs(a.mean().item() - sum(a_init) / 2) < 0.05 * a_init[1]  # uniform: mean at the middle
    log_dt = dt.log()
    low, high = math.log(dt_init[0]), math.log(dt_init[1])
    assert log_dt.min() >= low - 1e-5 and log_dt.max() <= high + 1e-5
    assert abs(log_dt.mean().item() - (low + high) / 2) < 0.05 * (high - low) + 1e-6  # log-uniform
    assert len(torch.unique(a)) > H // 2  # every head its own value


def test_gate_equals_the_reference_formula_for_any_weights() -> None:
    producer = _producer()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        producer.proj.weight.copy_(torch.randn(producer.proj.weight.shape, generator=gen))
    x = torch.randn(2, 7, D, generator=gen)
    a, _ = _a_and_dt(producer)
    z = x.double() @ producer.proj.weight.double().T + producer.proj.bias.double()
    expected = torch.exp(-a * F.softplus(z)).clamp(1e-6, 1 - 1e-6)
    got = producer(x)
    assert got.shape == (2, 7, H)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-7)


def test_at_init_each_head_starts_at_exp_of_minus_a_dt() -> None:
    producer = _producer()
    a, dt = _a_and_dt(producer)
    alpha = producer(torch.randn(1, 3, D)).double()
    torch.testing.assert_close(alpha[0, 0], torch.exp(-a * dt).clamp(1e-6, 1 - 1e-6), rtol=1e-5, atol=1e-7)
    assert alpha.min() >= math.exp(-16 * 0.1) - 1e-6 and alpha.max() <= math.exp(-1e-3) + 1e-6
    assert (alpha[0, 0] == alpha[0, 2]).all()  # the same for every token at init


def test_a_and_the_projection_learn() -> None:
    producer = _producer()
    producer(torch.randn(2, 5, D)).log().sum().backward()
    assert producer.log_a.grad.abs().sum() > 0 and producer.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["mamba2", "gated_deltanet", "deltaproduct"])
def test_presets_start_with_spread_per_head_decays(name: str) -> None:
    spec = preset(name).model_dump()
    spec["block"].update({"d_model": 64, "n_heads": 8, "n_layers": 1})
    torch.manual_seed(0)
    model = build_model(validate(spec))
    gates = [m for m in model.modules() if isinstance(m, GateProducer) and m.name == "alpha"]
    assert len(gates) == 1 and gates[0].mode == "mamba"
    alpha = gates[0](torch.zeros(1, 1, 64))[0, 0]
    assert alpha.max() - alpha.min() > 0.01  # heads forget at different rates, as in the papers


@pytest.mark.parametrize("gate", ["eta", "theta"])
def test_mode_mamba_is_for_the_retention_gate_only(gate: str) -> None:
    spec = preset("titans").model_dump()
    spec["algorithm"][gate] = {"mode": "mamba"}
    with pytest.raises(ConfigError, match=f"{gate}.mode 'mamba'"):
        validate(spec)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mode": "head", "a_init": [1, 2]}, "'a_init' is only used by mode 'mamba'"),
        ({"mode": "mamba", "dt_init": [0.0, 0.1]}, "dt_init must be"),
        ({"mode": "mamba", "a_init": [4.0, 2.0]}, "a_init must be"),
    ],
)
def test_bad_ranges_are_refused_with_the_field_named(fields: dict, message: str) -> None:
    spec = preset("gated_deltanet").model_dump()
    spec["retention"]["alpha"] = fields
    with pytest.raises(ConfigError, match=message):
        validate(spec)
