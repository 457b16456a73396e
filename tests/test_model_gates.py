"""Gate producers: shapes, ranges, and the initial value of data-dependent gates."""

from __future__ import annotations

import math

import pytest
import torch

from miras_search.model.gates import GateProducer, squashing
from miras_search.schema import Gate

B, T, D, H, K = 2, 7, 12, 3, 5
RANGES = {  # (low, high, high_inclusive)
    "alpha": (0.0, 1.0, True),
    "eta": (0.0, math.inf, False),
    "theta": (0.0, 1.0, False),
    "delta": (0.0, math.inf, False),
}


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))


def _randomise(producer: GateProducer, scale: float) -> None:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in producer.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * scale)


@pytest.mark.parametrize(
    ("name", "value"),
    [("alpha", 0.95), ("alpha", 0.3), ("eta", 0.5), ("eta", 1.0), ("eta", 7.0), ("theta", 0.9), ("delta", 1.5)],
)
@pytest.mark.parametrize("mode", ["head", "channel"])
def test_data_dependent_gate_starts_at_its_value(name: str, value: float, mode: str) -> None:
    gate = Gate(mode=mode, value=value, rank=4 if mode == "channel" else None)
    producer = GateProducer(name, gate, D, H, K)
    out = producer(_x())
    expected_shape = (B, T, H, K) if mode == "channel" else (B, T, H)
    assert out.shape == expected_shape
    rel = ((out - value).abs() / value).max().item()
    assert rel <= 1e-6, f"{name}={value} ({mode}) starts at {out.flatten()[0].item()}"
    # the gate is data-dependent once trained: its projection receives a gradient
    out.sum().backward()
    assert producer.proj.weight.grad is not None and producer.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(RANGES))
@pytest.mark.parametrize("mode", ["head", "channel"])
@pytest.mark.parametrize("value", [0.2, 0.9])
def test_gate_stays_in_range_for_any_weights(name: str, mode: str, value: float) -> None:
    producer = GateProducer(name, Gate(mode=mode, value=value), D, H, K)
    _randomise(producer, scale=3.0)
    out = producer(_x(2) * 10)
    low, high, inclusive = RANGES[name]
    assert torch.isfinite(out).all()
    assert (out > low).all()
    assert (out <= high).all() if inclusive else (out < high).all()
    assert out.std() > 0  # really data-dependent


def test_eta_above_one_uses_softplus_and_can_exceed_one() -> None:
    assert squashing("eta", 0.5) == "sigmoid"
    assert squashing("eta", 2.0) == "softplus"
    producer = GateProducer("eta", Gate(mode="head", value=2.0), D, H, K)
    _randomise(producer, scale=3.0)
    assert (producer(_x(3) * 10) > 1.0).any()


def test_alpha_of_one_is_capped_just_below_one() -> None:
    out = GateProducer("alpha", Gate(mode="head", value=1.0), D, H, K)(_x())
    assert (out < 1.0).all()
    assert (1.0 - out).max().item() <= 1.01e-4


@pytest.mark.parametrize("value", [0.25, 1.0, 3.0])
def test_constant_gate_is_fixed(value: float) -> None:
    producer = GateProducer("eta", Gate(mode="constant", value=value), D, H, K)
    assert list(producer.parameters()) == []
    out = producer(_x())
    assert out.shape == (B, T, H)
    assert torch.equal(out, torch.full((B, T, H), value))


def test_retnet_gate_is_the_per_head_schedule() -> None:
    producer = GateProducer("alpha", Gate(mode="retnet", value=0.97), D, H, K)
    out = producer(_x())
    expected = torch.tensor([1 - 2.0 ** (-5 - h) for h in range(H)])
    assert out.shape == (B, T, H)
    assert torch.allclose(out, expected.expand(B, T, H), rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="alpha only"):
        GateProducer("eta", Gate(mode="retnet", value=0.5), D, H, K)


@pytest.mark.parametrize("mode", ["head", "channel", "constant"])
def test_multistep_eta_has_a_step_axis(mode: str) -> None:
    producer = GateProducer("eta", Gate(mode=mode, value=0.5), D, H, K, steps=3)
    out = producer(_x())
    assert out.shape == ((B, T, 3, H, K) if mode == "channel" else (B, T, 3, H))
    assert torch.allclose(out, torch.full_like(out, 0.5), rtol=1e-6)


def test_channel_rank_sets_the_low_rank_projection() -> None:
    producer = GateProducer("alpha", Gate(mode="channel", value=0.9, rank=6), D, H, K)
    assert producer.down.weight.shape == (6, D)
    assert producer.proj.weight.shape == (H * K, 6)


def test_unknown_gate_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown gate 'beta'"):
        GateProducer("beta", Gate(), D, H, K)


@pytest.mark.parametrize("mode", ["head", "channel"])
@pytest.mark.parametrize(("value", "ratio"), [(0.02, 2.0), (0.5, 6.0), (2.0, 2.5), (0.3, 1.01)])
def test_bounded_eta_starts_at_its_value_and_stays_below_max(mode: str, value: float, ratio: float) -> None:
    gate = Gate(mode=mode, value=value, max_ratio=ratio, rank=4 if mode == "channel" else None)
    upper = ratio * value
    producer = GateProducer("eta", gate, D, H, K)
    torch.testing.assert_close(producer(_x()).detach(), torch.full((B, T, *producer.shape_suffix), value),
                               rtol=1e-5, atol=0.0)
    for scale in (1.0, 100.0):  # saturated projections reach the ends of the range, not past them
        _randomise(producer, scale)
        eta = producer(_x())
        assert eta.min() > 0 and eta.max() <= upper
    assert eta.max() > 0.99 * upper  # the range really reaches up to max_ratio * value
    unbounded = GateProducer("eta", Gate(mode=mode, value=value, rank=gate.rank), D, H, K)
    _randomise(unbounded, 100.0)
    natural_top = 1.0 if value < 1.0 else math.inf  # sigmoid below 1, softplus from 1 up
    if upper < natural_top:
        assert unbounded(_x()).max() > upper  # without max the same weights leave the range


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"mode": "constant", "max_ratio": 2.0}, "mode 'head' or 'channel'"), ({"max_ratio": 1.0}, "greater than 1"),
     ({"max_ratio": 0.5}, "greater than 1"), ({"max_ratio": 1e4}, "less than or equal to 1000")],
)
def test_bad_max_is_refused_naming_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Gate(**{"mode": "head", "value": 0.02, **fields})


def test_max_on_a_gate_other_than_eta_is_refused() -> None:
    from miras_search.errors import ConfigError
    from miras_search.presets import preset

    spec = preset("memora").model_dump()
    spec["retention"]["alpha"]["max_ratio"] = 1.001
    with pytest.raises(ConfigError, match=r"alpha\.max_ratio is not used"):
        preset("memora", retention=spec["retention"])


@pytest.mark.parametrize("mode", ["head", "channel", "mamba"])
@pytest.mark.parametrize("name", ["alpha", "eta", "delta"])
def test_a_gate_is_stored_heads_first_with_the_values_of_the_projections_layout(
    monkeypatch, name: str, mode: str,
) -> None:
    """A gate is squashed in the heads-first layout the memory reads (no second copy for the
    memory, gradients in its own layout); the values and gradients are those of a squash in the
    projection's [B, T, H(, C)] layout."""
    from miras_search.model import gates

    if mode == "mamba" and name != "alpha":
        pytest.skip("mamba is a decay schedule for alpha only")
    producer = GateProducer(name, Gate(mode=mode, value=0.7, rank=4 if mode == "channel" else None), D, H, K)
    _randomise(producer, scale=1.0)
    x = _x(3).requires_grad_()
    stored = producer(x)
    (stored_grad,) = torch.autograd.grad(stored.square().sum(), x)
    monkeypatch.setattr(gates, "_heads_first_storage", lambda z, steps: z)
    flat = producer(x)
    (flat_grad,) = torch.autograd.grad(flat.square().sum(), x)
    assert stored.shape == flat.shape and flat.is_contiguous()
    assert stored.transpose(1, 2).is_contiguous() and not stored.is_contiguous()
    torch.testing.assert_close(stored, flat, rtol=1e-6, atol=1e-7)  # vectorised tails round apart
    torch.testing.assert_close(stored_grad, flat_grad, rtol=1e-6, atol=1e-7)
