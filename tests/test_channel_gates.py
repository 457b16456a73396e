"""Channel-wise gates for every memory: eta and alpha per input channel of each memory layer, the
Huber threshold delta per value channel (the paper's gates through a low-rank projection).

The recurrence, the chunked form and its materialising oracle are compared for every axis
combination with channel-wise gates in tests/test_memory_chunked.py; here: what a channel-wise
gate means (layer by layer, written out by hand), the Huber metric, the gate producer's width,
and the kernels' refusal (the PyTorch form runs instead, saying why).
"""

from __future__ import annotations

import pytest
import torch

CUDA = torch.cuda.is_available()  # without it, conftest.py has set TRITON_INTERPRET=1

from miras_search.errors import UnsupportedPoint  # noqa: E402
from miras_search.memory import MemoryGates, MemoryRule, memory_forward  # noqa: E402
from miras_search.memory.inputs import layer_gates  # noqa: E402
from miras_search.memory.kernel_path import kernel_problem  # noqa: E402
from miras_search.memory.testing import random_inputs  # noqa: E402
from miras_search.model import build_model  # noqa: E402
from miras_search.presets import preset  # noqa: E402
from miras_search.schema import HuberBias, ModelPoint  # noqa: E402


def _mlp_point(algorithm: str = "gd", **gates: str) -> ModelPoint:
    """A 2-layer MLP memory (expansion 2), l2 retention retaining first, gd (or ``algorithm``);
    gates by mode."""
    return ModelPoint(
        memory={"kind": "mlp", "depth": 2, "expansion": 2, "layer_norm": True},
        bias={"kind": "huber", "variant": "switch", "delta": {"mode": gates.get("delta", "head")}},
        retention={"kind": "l2", "alpha": {"mode": gates.get("alpha", "head")}},
        algorithm={"kind": algorithm, "eta": {"mode": gates.get("eta", "head")}},
    )


def test_channel_width_is_each_layers_input_channels_and_value_channels_for_delta():
    rule = MemoryRule.from_point(_mlp_point(eta="channel", alpha="channel", delta="channel"))
    assert rule.channel_width("eta", 8, 8) == 8 + 16  # layer 1 takes K = 8, layer 2 the 16 hidden
    assert rule.channel_width("alpha", 8, 8) == 24
    assert rule.channel_width("delta", 8, 8) == 8
    matrix = MemoryRule.from_point(preset("gla"))
    assert matrix.channel_width("alpha", 8, 4) == 8


def test_layer_gates_splits_per_layer_and_names_a_wrong_width():
    gate = torch.arange(24.0).view(1, 1, 1, 24)
    first, second = layer_gates(gate, [8, 16])
    assert first.flatten().tolist() == list(range(8))
    assert second.flatten().tolist() == list(range(8, 24))
    per_head = torch.ones(1, 1, 1, 1)
    assert all(g is per_head for g in layer_gates(per_head, [8, 16]))
    with pytest.raises(ValueError, match=r"8\+16 = 24"):
        layer_gates(torch.ones(1, 1, 1, 20), [8, 16])


def _one_step_by_hand(rule: MemoryRule, w: list[torch.Tensor], k, v, eta, alpha, delta):
    """One micro-step of a 2-layer MLP memory written out with autograd: the gradient at the
    retained point W_l diag(alpha_l), W_l <- W_l diag(alpha_l) - eta_l-scaled gradient, column by
    column (channel j of layer l's input has its own eta and alpha)."""
    etas, alphas = layer_gates(eta, [8, 16]), layer_gates(alpha, [8, 16])
    point = [(w_l * a_l).detach().requires_grad_(True) for w_l, a_l in zip(w, alphas, strict=True)]
    pred = rule.network.forward(point, k)
    e = pred - v
    # Huber switch, written from its loss: 1/2 ||e||^2 inside, delta-weighted l1 outside
    g = rule.bias.grad(pred, v, delta)
    grads = torch.autograd.grad((pred * g.detach()).sum(), point)
    assert e.shape == g.shape
    return [p.detach() - eta_l * gr for p, eta_l, gr in zip(point, etas, grads, strict=True)]


def test_a_channel_wise_step_decays_and_steps_each_input_channel_of_each_layer():
    rule = MemoryRule.from_point(_mlp_point(eta="channel", alpha="channel", delta="channel"))
    q, k, v, gates, params = random_inputs(rule, 1, 1, 2, 8, channel=("eta", "alpha", "delta"))
    assert gates.eta.shape[-1] == 24 and gates.alpha.shape[-1] == 24 and gates.delta.shape[-1] == 8
    out = memory_forward(rule, q, k, v, gates, params, mode="recurrent")
    w0 = [p.unsqueeze(0) for p in params]  # [1, H, out, in]

    def heads_first(x):
        return x.transpose(1, 2)  # [B, T, H, c] -> [B, H, T, c]

    new_w = _one_step_by_hand(rule, w0, heads_first(k), heads_first(v), heads_first(gates.eta),
                              heads_first(gates.alpha), heads_first(gates.delta))
    expected = rule.network.forward(new_w, heads_first(q)).transpose(1, 2)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", ["coordinate", "norm", "switch"])
def test_a_channel_wise_threshold_with_equal_channels_is_the_per_head_rule(variant: str):
    gen = torch.Generator().manual_seed(0)
    pred, v = torch.randn(2, 2, 9, 8, generator=gen, dtype=torch.float64), torch.zeros(2, 2, 9, 8)
    delta = 0.5 + 3.0 * torch.rand(2, 2, 9, 1, generator=gen, dtype=torch.float64)
    rule = HuberBias(variant=variant, smooth=True, sharpness=1.0, sharpness_scale="threshold")
    torch.testing.assert_close(rule.grad(pred, v, delta.expand(-1, -1, -1, 8)), rule.grad(pred, v, delta),
                               rtol=1e-12, atol=1e-12)


def test_a_channel_wise_threshold_measures_the_error_per_channel():
    rule = HuberBias(variant="switch", smooth=False)
    e = torch.tensor([[[[0.5, 3.0]]]], dtype=torch.float64)
    # ||e / delta|| = ||(0.5, 1.5)|| > 1: the l1 branch, delta_j sign(e_j)
    g = rule.grad(e, torch.zeros_like(e), torch.tensor([[[[1.0, 2.0]]]], dtype=torch.float64))
    assert g.flatten().tolist() == [1.0, 2.0]
    # ||e / delta|| = ||(0.1, 0.5)|| <= 1: the l2 branch, g = e
    g = rule.grad(e, torch.zeros_like(e), torch.tensor([[[[5.0, 6.0]]]], dtype=torch.float64))
    assert g.flatten().tolist() == [0.5, 3.0]


def test_the_model_produces_channel_wise_gates_of_the_layers_width():
    spec = _mlp_point(eta="channel", alpha="channel", delta="channel").model_dump()
    spec["block"].update({"d_model": 32, "n_heads": 2, "n_layers": 1})
    point = ModelPoint.model_validate(spec)
    model = build_model(point, "cpu")
    mixer = next(m for m in model.modules() if hasattr(m, "gates") and hasattr(m, "rule"))
    x = torch.randn(2, 5, 32)
    assert mixer.gates["eta"](x).shape == (2, 5, 2, 16 + 32)
    assert mixer.gates["alpha"](x).shape == (2, 5, 2, 48)
    assert mixer.gates["delta"](x).shape == (2, 5, 2, 16)
    logits = model(torch.randint(0, 256, (2, 7)))
    assert torch.isfinite(logits).all()


def _assert_kernel_equals_pytorch(rule: MemoryRule, gate: str, length: int) -> None:
    """The forced kernel (Triton's interpreter without a GPU) runs ``rule`` with ``gate``
    channel-wise, and its outputs equal the PyTorch chunked form's."""
    q, k, v, gates, params = random_inputs(rule, 1, length, 2, 16, channel=(gate,), dtype=torch.float32)
    if CUDA:
        q, k, v = (x.cuda() for x in (q, k, v))
        gates = MemoryGates(**{n: None if g is None else g.cuda() for n, g in vars(gates).items()})
        params = [p.cuda() for p in params]
    assert kernel_problem(rule, q, v, 16, "triton") is None
    fused = memory_forward(rule, q, k, v, gates, params, chunk_size=16, kernel="triton")
    torch_form = memory_forward(rule, q, k, v, gates, params, chunk_size=16, kernel="torch")
    assert ((fused - torch_form).norm() / torch_form.norm()).item() < 5e-3


@pytest.mark.parametrize(("gate", "algorithm"), [("eta", "gd"), ("alpha", "gd"), ("delta", "gd"),
                                               ("alpha", "momentum")])
def test_channel_wise_mlp_gates_run_the_kernel_with_the_pytorch_forms_output(gate: str, algorithm: str):
    """The whole-W MLP kernels take each channel-wise gate, a decay per channel with momentum too."""
    rule = MemoryRule.from_point(_mlp_point(algorithm, **{gate: "channel"}))
    _assert_kernel_equals_pytorch(rule, gate, 16)


@pytest.mark.parametrize("gate", ["eta", "delta", "alpha"])
def test_channel_wise_matrix_gates_run_the_kernel_with_the_pytorch_forms_output(gate: str):
    """The matrix kernel takes, with momentum, a step per key channel, a Huber threshold per value
    channel and a decay per key channel."""
    point = ModelPoint(
        memory={"kind": "matrix"},
        bias={"kind": "huber", "variant": "switch", "delta": {"mode": "channel" if gate == "delta" else "head"}},
        retention={"kind": "l2", "alpha": {"mode": "channel" if gate == "alpha" else "head"}},
        algorithm={"kind": "momentum", "eta": {"mode": "channel" if gate == "eta" else "head"}},
    )
    _assert_kernel_equals_pytorch(MemoryRule.from_point(point), gate, 19)


@pytest.mark.parametrize("case", ["mlp-norm-channel-delta", "matrix-norm-channel-delta"])
def test_channel_wise_gates_without_a_kernel_run_the_pytorch_form(case: str):
    memory = {"kind": "matrix"} if case.startswith("matrix") else {
        "kind": "mlp", "depth": 2, "expansion": 2, "layer_norm": True}
    point = ModelPoint(  # a threshold per value channel of the norm variant
        memory=memory,
        bias={"kind": "huber", "variant": "norm", "delta": {"mode": "channel"}},
        retention={"kind": "l2", "alpha": {"mode": "head"}},
        algorithm={"kind": "gd", "eta": {"mode": "head"}},
    )
    rule = MemoryRule.from_point(point)
    q, k, v, gates, params = random_inputs(rule, 1, 16, 2, 16, channel=("delta",), dtype=torch.float32)
    if not CUDA:
        with pytest.raises(UnsupportedPoint, match="no kernel covers"):
            memory_forward(rule, q, k, v, gates, params, chunk_size=16, kernel="triton")
    assert kernel_problem(rule, q, v, 16, "triton") is not None
    auto = memory_forward(rule, q, k, v, gates, params, chunk_size=16, kernel="auto")
    torch_form = memory_forward(rule, q, k, v, gates, params, chunk_size=16, kernel="torch")
    torch.testing.assert_close(auto, torch_form)


@pytest.mark.parametrize("memory", ["matrix", "vector", "mlp"])
@pytest.mark.parametrize("length", [1, 7, 63, 100])
def test_separable_channel_decay_equals_the_full_coefficients(memory: str, length: int, monkeypatch):
    """Channel-wise decay without momentum reads with C_ti = beta_t / beta_i; with the floor
    raised above every chunk's log decay the full [b, b, c] tensor is formed instead."""
    from miras_search.memory import chunked

    spec = {"kind": memory} if memory != "mlp" else {"kind": "mlp", "depth": 2, "expansion": 2}
    point = ModelPoint(memory=spec, bias={"kind": "l2"}, retention={"kind": "l2", "alpha": {"mode": "channel"}},
                       algorithm={"kind": "gd", "eta": {"mode": "channel"}})
    rule = MemoryRule.from_point(point)
    inputs = random_inputs(rule, 2, length, 2, 8, channel=("eta", "alpha"), requires_grad=True, alpha_low=0.5)
    q, k, v, gates, params = inputs
    leaves = [x for x in (q, k, v, gates.eta, gates.alpha, *params) if x is not None]

    def run() -> list[torch.Tensor]:
        out = memory_forward(rule, q, k, v, gates, params, chunk_size=16, chunk_form="minibatch")
        return [out, *torch.autograd.grad(out.square().sum(), leaves)]

    separable = run()
    monkeypatch.setitem(chunked.SEPARABLE_LOG_FLOOR, torch.float64, float("inf"))
    full = run()
    for a, b in zip(separable, full, strict=True):
        assert ((a - b).norm() / b.norm().clamp_min(1e-30)).item() <= 1e-10
