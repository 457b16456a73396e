"""Step rules on tiny hand-computed cases, each bias gradient against autograd of its loss, the
hand-written MLP backprop against autograd, and the public API's errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from miras_search.errors import UnsupportedPoint
from miras_search.memory import MemoryGates, MemoryRule, memory_forward, softmax_attention
from miras_search.memory.networks import Network
from miras_search.presets import preset
from miras_search.schema import HuberBias, LpBias, ModelPoint, RobustBias
from miras_search.testing import phi_problems

D64 = torch.float64


def _one_token(point: ModelPoint, k, v, q, eta, alpha=None, delta=None, params=()):
    """One token, one head, batch 1, 2x2 matrix memory: inputs are plain 2-vectors."""
    def vec(x):
        return torch.tensor(x, dtype=D64).view(1, 1, 1, 2)

    def gate(x):
        return None if x is None else torch.tensor([[[x]]], dtype=D64)

    gates = MemoryGates(eta=gate(eta), alpha=gate(alpha), delta=gate(delta))
    rule = MemoryRule.from_point(point)
    params = [torch.tensor(p, dtype=D64).unsqueeze(0) for p in params]
    outs = [memory_forward(rule, vec(q), vec(k), vec(v), gates, params, **form).view(2)
            for form in ({"mode": "recurrent"}, {"chunk_size": 1}, {"chunk_size": 4})]
    for out in outs[1:]:
        assert torch.allclose(out, outs[0], rtol=1e-12, atol=1e-12)
    return outs[0]


def test_moneta_step_lp3_lq4() -> None:
    # A_0 = I (learned), q = 4: ||A_0||_4 = 2^(1/4), n(A_0) = sqrt(2), W_0 = I / sqrt(2).
    # k = [1, 0], v = [0, 1]: e = W_0 k - v = [0.70711, -1];
    # exact lp (p = 3): g = 3 sign(e) |e|^2 = [1.5, -3]; G = g k^T = [[1.5, 0], [-3, 0]].
    # eta = 0.1, alpha = 0.5: A_1 = 0.5 I - 0.1 G = [[0.35, 0], [0.3, 0.5]];
    # ||A_1||_4^2 = sqrt(0.35^4 + 0.3^4 + 0.5^4) = sqrt(0.08560625) = 0.292585;
    # W_1 = A_1 / 0.292585; q = [1, 1]: o = [0.35, 0.8] / 0.292585 = [1.196232, 2.734244].
    point = ModelPoint(memory={"kind": "matrix"}, bias={"kind": "lp", "p": 3.0, "smooth": False},
                       retention={"kind": "lq", "q": 4.0}, algorithm={"kind": "gd"})
    out = _one_token(point, k=[1, 0], v=[0, 1], q=[1, 1], eta=0.1, alpha=0.5,
                     params=[[[1.0, 0.0], [0.0, 1.0]]])
    assert torch.allclose(out, torch.tensor([1.196232, 2.734244], dtype=D64), atol=1e-6)


@pytest.mark.parametrize(
    ("delta", "smooth", "expected"),
    [(1.0, True, [0.15, 0.2]), (1.0, False, [0.15, 0.2]),
     (0.25, False, [0.125, 0.125]), (0.25, True, [0.124381844, 0.124916162])],
)
def test_yaad_switch_both_branches(delta: float, smooth: bool, expected: list[float]) -> None:
    # W_0 = 0 (so alpha W_0 = 0 too), k = [1, 0], v = [0.3, 0.4]: e = -v, ||e|| = 0.5; eta = 0.5.
    # delta = 1 >= 0.5: l2 branch, g = e; W_1 = -0.5 e k^T -> o = W_1 [1, 0] = [0.15, 0.2].
    # delta = 0.25 < 0.5: l1 branch. Exact: g = 0.25 sign(e) = [-0.25, -0.25] -> o = [0.125, 0.125].
    # Smooth (sharpness 10): g = 0.25 tanh(10 e) = 0.25 [tanh(-3), tanh(-4)]
    #   = 0.25 [-0.99505475, -0.99932930] -> o = -0.5 g = [0.12438184, 0.12491616].
    point = ModelPoint(
        memory={"kind": "matrix"},
        bias={"kind": "huber", "variant": "switch", "delta": {"mode": "head"}, "smooth": smooth,
              "sharpness": 10.0},
        retention={"kind": "l2"}, algorithm={"kind": "gd"},
    )
    out = _one_token(point, k=[1, 0], v=[0.3, 0.4], q=[1, 0], eta=0.5, alpha=0.9, delta=delta)
    assert torch.allclose(out, torch.tensor(expected, dtype=D64), atol=1e-9)


def test_l2_retention_retains_then_learns() -> None:
    # W_0 = I (learned init), alpha = 0.5, eta = 0.5, k = [1, 0], v = [0, 1], q = [1, 1].
    # The gradient is taken at the retained P = 0.5 I: e = P k - v = [0.5, -1];
    # G = e k^T = [[0.5, 0], [-1, 0]]; W_1 = P - 0.5 G = [[0.25, 0], [0.5, 0.5]] -> o = [0.25, 1].
    # (At W_0 instead: e = [1, -1], W_1 = [[0, 0], [0.5, 0.5]], o = [0, 1].)
    point = ModelPoint(memory={"kind": "matrix", "init": "learned"}, bias={"kind": "l2"},
                       retention={"kind": "l2"}, algorithm={"kind": "gd"})
    out = _one_token(point, k=[1, 0], v=[0, 1], q=[1, 1], eta=0.5, alpha=0.5,
                     params=[[[1.0, 0.0], [0.0, 1.0]]])
    assert torch.allclose(out, torch.tensor([0.25, 1.0], dtype=D64), atol=1e-12)


def test_l2_retention_at_the_previous_memory_learns_then_retains() -> None:
    # Titans' and Yaad's order, same case: e = W_0 k - v = [1, -1]; G = [[1, 0], [-1, 0]];
    # W_1 = 0.5 W_0 - 0.5 G = [[0, 0], [0.5, 0.5]] -> o = [0, 1].
    point = ModelPoint(memory={"kind": "matrix", "init": "learned"}, bias={"kind": "l2"},
                       retention={"kind": "l2", "gradient_at": "previous"}, algorithm={"kind": "gd"})
    out = _one_token(point, k=[1, 0], v=[0, 1], q=[1, 1], eta=0.5, alpha=0.5,
                     params=[[[1.0, 0.0], [0.0, 1.0]]])
    assert torch.allclose(out, torch.tensor([0.0, 1.0], dtype=D64), atol=1e-12)


def test_exact_delta_form_refuses_the_previous_gradient_point() -> None:
    data = preset("gated_deltanet").model_dump()
    data["retention"]["gradient_at"] = "previous"
    point = ModelPoint.model_validate(data)
    assert not point.uses_exact_delta()  # train.chunk_form 'auto' picks the minibatch form
    with pytest.raises(ValueError, match="gradient_at 'retained'"):
        ModelPoint.model_validate({**data, "train": {**data["train"], "chunk_form": "exact_delta"}})
    rule = MemoryRule.from_point(point)
    x = torch.randn(1, 5, 1, 4, dtype=D64)
    gates = MemoryGates(eta=torch.full((1, 5, 1), 0.5, dtype=D64), alpha=torch.full((1, 5, 1), 0.9, dtype=D64))
    with pytest.raises(UnsupportedPoint, match="gradient_at 'previous'"):
        memory_forward(rule, x, x, x, gates, [], chunk_form="exact_delta")


def test_memora_one_kl_step() -> None:
    # param 0 -> W_0 = softmax rows = [[0.5, 0.5], [0.5, 0.5]] (c = 1).
    # k = [1, 0], v = [1, 0]: e = W_0 k - v = [-0.5, 0.5]; G = e k^T = [[-0.5, 0], [0.5, 0]].
    # eta = 1, alpha = 0.5: rows of 0.5 log W_0 - G: [l + 0.5, l], [l - 0.5, l] (l = 0.5 log 0.5);
    # softmax: [e^.5, 1] / (e^.5 + 1) = [0.622459, 0.377541], and [0.377541, 0.622459].
    # q = [1, 0]: o = first column = [0.622459, 0.377541].
    point = ModelPoint(memory={"kind": "matrix"}, bias={"kind": "l2"},
                       retention={"kind": "kl", "scale": 1.0}, algorithm={"kind": "gd"})
    out = _one_token(point, k=[1, 0], v=[1, 0], q=[1, 0], eta=1.0, alpha=0.5,
                     params=[[[0.0, 0.0], [0.0, 0.0]]])
    assert torch.allclose(out, torch.tensor([0.622459, 0.377541], dtype=D64), atol=1e-6)


@pytest.mark.parametrize("delta", [0.2, 5.0])
def test_bias_gradient_is_the_loss_gradient(delta: float) -> None:
    """Every registered bias whose phi is exact (the conformance suite's list) against autograd
    of its loss, with the threshold below and above the errors."""
    assert phi_problems(delta=delta) == []


def test_biases_loss_is_the_documented_loss() -> None:
    """The classes' losses against the formulas written out here (so that phi_problems compares
    against the right thing)."""
    gen = torch.Generator().manual_seed(0)
    e, v = (torch.randn(6, generator=gen, dtype=D64) for _ in range(2))
    d = torch.tensor([0.7], dtype=D64)

    def huber(x):
        return torch.where(x.abs() <= d, 0.5 * x.square(), d * (x.abs() - d / 2))

    cases = [
        (LpBias(p=3.0, smooth=False), e.abs().pow(3).sum()),
        (LpBias(p=1.5, smooth=False), e.abs().pow(1.5).sum()),
        (HuberBias(variant="coordinate"), huber(e).sum()),
        (HuberBias(variant="norm"), huber(e.norm()).sum()),
        (RobustBias(radius=0.3), 0.5 * e.square().sum() + 0.3 * e.norm()),
    ]
    for bias, expected in cases:
        assert torch.allclose(bias.loss(e, v, d), expected, rtol=1e-12), bias.label()


def test_smooth_lp_surrogate() -> None:
    pred, v = torch.tensor([0.5, -2.0, 0.0], dtype=D64), torch.zeros(3, dtype=D64)
    got = LpBias(p=3.0, smooth=True, sharpness=10.0, eps=1e-6).grad(pred, v, None)
    expected = 3 * torch.tanh(10 * pred) * (pred.square() + 1e-6)
    assert torch.allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("activation", ["gelu", "silu", "relu"])
@pytest.mark.parametrize("layer_norm", [True, False])
@pytest.mark.parametrize("depth", [2, 3])
def test_mlp_hand_backprop_matches_autograd(activation: str, layer_norm: bool, depth: int) -> None:
    net = Network("mlp", depth, 2, activation, layer_norm)
    gen = torch.Generator().manual_seed(depth)
    ws = [torch.randn(2, 3, o, i, generator=gen, dtype=D64, requires_grad=True)
          for o, i in net.shapes(5, 5)]
    x = torch.randn(2, 3, 4, 5, generator=gen, dtype=D64)
    v = torch.randn(2, 3, 4, 5, generator=gen, dtype=D64)
    pred, cache = net.run(lambda layer, z: z @ ws[layer].mT, x)
    expected = torch.autograd.grad(0.5 * (pred - v).square().sum(), ws)
    got = [delta.mT @ inp for delta, inp in net.backward(ws, cache, pred - v)]
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e, rtol=1e-10, atol=1e-12)


# ---- API ---------------------------------------------------------------------------------


def test_every_algorithm_option_defines_its_own_step() -> None:
    """Every registered algorithm has a step of its own (none falls back to another's), and an
    unknown kind is refused by the schema."""
    from miras_search.schema.algorithm import MemoryAlgorithm

    assert all(option.step is not MemoryAlgorithm.step for option in MemoryAlgorithm.registry.values())
    assert "newton" not in MemoryAlgorithm.registry
    with pytest.raises(ValidationError):
        ModelPoint(algorithm={"kind": "newton"})


@pytest.mark.parametrize(
    ("name", "needs", "steps", "n_params"),
    [("gated_deltanet", {"eta", "alpha"}, 1, 0), ("titans", {"eta", "alpha", "theta"}, 1, 2),
     ("yaad", {"eta", "alpha", "delta"}, 1, 2), ("moneta", {"eta", "alpha"}, 1, 2),
     ("memora", {"eta", "alpha"}, 1, 2), ("deltaproduct", {"eta", "alpha"}, 2, 0),
     ("ttt_linear", {"eta"}, 1, 1), ("linear_attention", {"eta"}, 1, 0)],
)
def test_rule_needs_and_parameters(name: str, needs: set, steps: int, n_params: int) -> None:
    rule = MemoryRule.from_point(preset(name))
    assert rule.needs() == needs
    assert rule.steps_per_token == steps
    params = rule.initial_parameters(3, 8, 8)
    assert len(params) == n_params
    if name in ("titans", "moneta"):
        assert [tuple(p.shape) for p in params] == [(3, 32, 8), (3, 8, 32)]


def test_exact_delta_refuses_other_points() -> None:
    rule = MemoryRule.from_point(preset("moneta"))
    q = torch.randn(1, 3, 2, 4)
    gates = MemoryGates(eta=torch.full((1, 3, 2), 0.1), alpha=torch.full((1, 3, 2), 0.9))
    with pytest.raises(UnsupportedPoint, match="exact_delta"):
        memory_forward(rule, q, q, q, gates, rule.initial_parameters(2, 4, 4),
                       chunk_form="exact_delta")


def test_missing_gate_is_named() -> None:
    rule = MemoryRule.from_point(preset("titans"))
    q = torch.randn(1, 3, 2, 4)
    gates = MemoryGates(eta=torch.full((1, 3, 2), 0.1), alpha=torch.full((1, 3, 2), 0.9))
    with pytest.raises(ValueError, match="theta"):
        memory_forward(rule, q, q, q, gates, rule.initial_parameters(2, 4, 4))


def test_bf16_autocast_runs_state_in_float32() -> None:
    rule = MemoryRule.from_point(preset("gated_deltanet"))
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 20, 2, 8, generator=gen)
    k = F.normalize(torch.randn(1, 20, 2, 8, generator=gen), dim=-1)
    v = torch.randn(1, 20, 2, 8, generator=gen)
    gates = MemoryGates(eta=torch.rand(1, 20, 2, generator=gen), alpha=torch.full((1, 20, 2), 0.95))
    reference = memory_forward(rule, q, k, v, gates, [])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = memory_forward(rule, q.bfloat16(), k.bfloat16(), v.bfloat16(), gates, [])
    assert out.dtype == torch.bfloat16
    assert ((out.float() - reference).norm() / reference.norm()).item() < 2e-2
    assert memory_forward(rule, q.double(), k.double(), v.double(), gates, []).dtype == D64


@pytest.mark.parametrize("window", [None, 1, 5, 100])
def test_softmax_attention(window: int | None) -> None:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 23, 3, 4, generator=gen, dtype=D64) for _ in range(3))
    scores = torch.einsum("bthk,bihk->bhti", q, k) / 2.0
    pos = torch.arange(23)
    allowed = (pos[:, None] >= pos[None, :])
    if window is not None:
        allowed &= pos[:, None] - pos[None, :] < window
    expected = torch.einsum(
        "bhti,bihv->bthv", scores.masked_fill(~allowed, float("-inf")).softmax(-1), v
    )
    assert torch.allclose(softmax_attention(q, k, v, window=window), expected, atol=1e-12)
    rule = MemoryRule.from_point(preset("transformer"))
    assert rule.needs() == set() and rule.initial_parameters(3, 4, 4) == []
