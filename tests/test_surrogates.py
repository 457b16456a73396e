"""The smooth surrogates' sharpness c: below the derived bounds the smooth step is a descent step
(the error shrinks) wherever the exact step is one; above them it overshoots. Checked through
the memory itself (one step of a matrix memory with a unit key) and on dense error grids."""

from __future__ import annotations

import pytest
import torch

from miras_search.memory import MemoryGates, MemoryRule, memory_forward
from miras_search.memory.surrogates import huber_sharpness_bound, lp_sharpness_bound
from miras_search.presets import preset
from miras_search.schema import HuberBias, LpBias, ModelPoint
from miras_search.space.search_space import SearchSpace

DIM = 6


def _one_step_errors(bias: dict, error: torch.Tensor, eta: float, delta: float) -> torch.Tensor:
    """The error W_1 k - v after one gd step of a matrix memory (unit key k, W_0 k - v = error):
    error [N, DIM] (N tokens in N independent batch rows) -> [N, DIM]."""
    point = ModelPoint.model_validate({
        "memory": {"kind": "matrix", "init": "learned"}, "bias": bias,
        "retention": {"kind": "none"}, "algorithm": {"kind": "gd"},
    })
    rule = MemoryRule.from_point(point)
    n = error.shape[0]
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(1, DIM, DIM, generator=gen, dtype=torch.float64)
    k = torch.nn.functional.normalize(torch.randn(n, 1, 1, DIM, generator=gen, dtype=torch.float64), dim=-1)
    v = (k @ w0[0].T) - error.view(n, 1, 1, DIM)  # so that W_0 k - v = error
    full = torch.full((n, 1, 1), 1.0, dtype=torch.float64)
    gates = MemoryGates(eta=eta * full, delta=delta * full if "delta" in rule.needs() else None)
    out = memory_forward(rule, k, k, v, gates, [w0], mode="recurrent")  # read at q = k
    return (out - v).view(n, DIM)


def _errors(scale: float, n: int = 400, seed: int = 1) -> torch.Tensor:
    """Errors whose coordinates span many magnitudes (from 1e-4 * scale up to 10 * scale)."""
    gen = torch.Generator().manual_seed(seed)
    magnitude = scale * 10 ** (torch.rand(n, DIM, generator=gen, dtype=torch.float64) * 5 - 4)
    return magnitude * torch.where(torch.rand(n, DIM, generator=gen) < 0.5, -1.0, 1.0).double()


@pytest.mark.parametrize(("eta", "delta"), [(0.5, 1.0), (1.0, 0.2), (0.1, 4.0)])
def test_smooth_switch_is_a_descent_step_below_the_bound_and_overshoots_above(eta, delta) -> None:
    bound = huber_sharpness_bound(eta, delta)  # kappa = ||k||^2 = 1
    error = _errors(10.0 * delta)
    error = error[error.norm(dim=-1) > delta]  # the l1 branch
    switch = {"kind": "huber", "variant": "switch", "delta": {"mode": "head"}}
    after = _one_step_errors({**switch, "sharpness": 0.99 * bound}, error, eta, delta)
    assert (after.abs() < error.abs()).all()  # every coordinate's error shrinks: descent
    after = _one_step_errors({**switch, "sharpness": 1.5 * bound}, error, eta, delta)
    assert (after.abs() > error.abs()).any()  # small coordinates jump past zero
    exact = _one_step_errors({**switch, "smooth": False}, error, eta, delta)
    overshoot = exact.abs() >= error.abs()
    assert overshoot.any()  # the exact sign overshoots near 0, where the smooth one does not


@pytest.mark.parametrize("rho", [0.5, 1.0])
def test_threshold_relative_sharpness_is_a_descent_step_for_any_threshold(rho) -> None:
    """c = rho / delta_t: the l1 branch is never steeper than the l2 branch, for every delta."""
    for delta in (0.05, 1.0, 30.0):
        error = _errors(10.0 * delta, seed=2)
        bias = {"kind": "huber", "variant": "switch", "delta": {"mode": "head"},
                "sharpness": rho, "sharpness_scale": "threshold"}
        for eta in (0.3, 1.0, 1.9):  # below 2: the l2 branch's own descent range
            after = _one_step_errors(bias, error, eta, delta)
            assert (after.abs() < error.abs()).all(), (delta, eta)


def _descent_violations(p: float, step: float, sharpness: float, eps: float = 1e-6) -> int:
    """Errors where the exact lp step is a descent step and the smooth one is not (LpBias)."""
    e = torch.logspace(-9, 3, 100_001, dtype=torch.float64)
    exact = LpBias.model_construct(p=p, smooth=False, sharpness=sharpness, eps=eps).grad(e, torch.zeros_like(e), None)
    smooth = LpBias.model_construct(p=p, smooth=True, sharpness=sharpness, eps=eps).grad(e, torch.zeros_like(e), None)
    return int(((step * exact / e < 2) & (step * smooth / e >= 2)).sum())


@pytest.mark.parametrize("p", [1.0, 1.5, 2.0, 3.0, 4.0])
@pytest.mark.parametrize("step", [0.5, 1.0, 1.9])
def test_lp_bound_keeps_the_smooth_step_a_descent_step(p: float, step: float) -> None:
    assert _descent_violations(p, step, lp_sharpness_bound(step, p, 1e-6)) == 0


@pytest.mark.parametrize(("p", "step"), [(2.0, 0.5), (3.0, 1.0), (3.0, 0.5)])
def test_lp_bound_is_tight_within_a_small_factor(p: float, step: float) -> None:
    assert _descent_violations(p, step, 8 * lp_sharpness_bound(step, p, 1e-6)) > 0


def test_moneta_default_sharpness_is_far_inside_its_bound() -> None:
    bias = preset("moneta").bias
    assert bias.sharpness <= lp_sharpness_bound(2.0, bias.p, bias.eps) / 1000


def test_yaad_takes_the_threshold_relative_sign_and_moneta_keeps_tanh_10e() -> None:
    """Yaad's l1 branch is delta tanh(e / delta) (sharpness 1, scale 'threshold'); the absolute
    form delta tanh(c e) stays available."""
    e = torch.linspace(-3, 3, 101, dtype=torch.float64).view(1, 1, -1, 1).repeat(1, 1, 1, 4)
    delta = torch.full((1, 1, 101, 1), 0.5, dtype=torch.float64)
    yaad = MemoryRule.from_point(preset("yaad")).bias
    assert isinstance(yaad, HuberBias) and yaad.sharpness_scale == "threshold" and yaad.sharpness == 1.0
    g = yaad.grad(e, torch.zeros_like(e), delta)
    large = e.norm(dim=-1, keepdim=True) > delta
    assert torch.allclose(g, torch.where(large, delta * torch.tanh(e / delta), e))
    absolute = HuberBias(variant="switch", smooth=True, sharpness=10.0).grad(e, torch.zeros_like(e), delta)
    assert torch.equal(absolute, torch.where(large, delta * torch.tanh(10.0 * e), e))
    moneta = MemoryRule.from_point(preset("moneta")).bias
    assert moneta.sharpness == 10.0


def test_spaces_search_the_sharpness(root) -> None:
    space = SearchSpace.load(root / "spaces" / "mlp-memory.yaml")
    points = space.sample(120, seed=0)
    switch = [p.bias for p in points if p.bias.kind == "huber" and p.bias.variant == "switch"]
    assert switch and {b.sharpness_scale for b in switch} == {"threshold"}
    assert len({round(b.sharpness, 6) for b in switch}) > 5
    assert all(0.25 <= b.sharpness <= 4.0 for b in switch)


def test_threshold_relative_sharpness_runs_on_the_kernels() -> None:
    pytest.importorskip("triton")
    from miras_search.kernels.dispatch import bias_config

    config = bias_config(preset("yaad").bias)
    assert config is not None and config.relative_sharpness and config.sharpness == 1.0
    absolute = preset("yaad", bias={**preset("yaad").bias.model_dump(), "sharpness_scale": "absolute"})
    assert not bias_config(absolute.bias).relative_sharpness
    assert bias_config(MemoryRule.from_point(preset("yaad")).bias).relative_sharpness
