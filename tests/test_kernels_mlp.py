"""Triton chunked 2-layer MLP memory == its PyTorch reference (outputs and every gradient), and the
reference == miras_search.memory's chunked form.

Without CUDA the kernels run in Triton's interpreter, which Triton reads when a kernel is decorated
(first import of the kernels), so tests/conftest.py sets TRITON_INTERPRET before any import. The interpreter is
slow: CPU cases use K = 16 and a hidden dim of 32 or 64.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F

CUDA = torch.cuda.is_available()  # without it, conftest.py has set TRITON_INTERPRET=1

from kernel_checks import (  # noqa: E402
    assert_last_head_as_alone,
    assert_lm_trains_the_same_through_the_kernel,
    per_head_preset,
    rel_err,
)

from miras_search.kernels import (  # noqa: E402
    BiasConfig,
    KernelFallbackWarning,
    KernelInputError,
    kernel_for,
)
from miras_search.kernels.dispatch import bias_config, shape_problem  # noqa: E402
from miras_search.kernels.limits import mlp_hidden_tile, mlp_shape_problem  # noqa: E402
from miras_search.kernels.mlp_chunk import (  # noqa: E402
    MlpMemoryConfig,
    chunk_mlp_memory,
    naive_chunk_mlp_memory,
)
from miras_search.memory import MemoryGates, MemoryRule, memory_forward  # noqa: E402
from miras_search.presets import preset  # noqa: E402
from miras_search.schema import ModelPoint  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
NAMES = ("q", "k", "v", "eta", "w1", "w2", "alpha", "delta", "theta")
gpu_only = pytest.mark.skipif(not CUDA, reason="needs CUDA")
# a kernel that quietly fell back to the PyTorch form would pass every comparison here
pytestmark = pytest.mark.filterwarnings("error::miras_search.kernels.KernelFallbackWarning")


def huber_threshold(bias: str, B, T, H, K, rand) -> torch.Tensor:
    """delta [B, T, H] where both branches of the Huber bias occur. ||e|| is about sqrt(2K).

    The continuous biases take thresholds near ||e||, through their kink. huber_switch jumps there
    (e below, delta * tanh(c e) above): a token near the threshold changes branch under rounding
    and moves the memory by O(eta), so no precision could match float64 (Yaad at T=200, K=32:
    1e-7 of input noise moved the float64 reference by 4e-2). Its thresholds sit far below or
    far above the error norms instead; test_named_model_comparisons_are_well_posed checks it."""
    if bias == "huber_switch":
        return torch.where(rand(B, T, H) < 0.5, 0.1, 8.0 * K**0.5).double()
    return rand(B, T, H) * K**0.5 + 0.3


def make_inputs(B, T, H, K, hidden, bias="l2", retention="l2", seed=0, momentum=False) -> dict:
    """Float64 CPU inputs: unit-norm q and k (as the block makes them), gates in their ranges, the
    Huber threshold where both branches occur (huber_threshold), initial parameters as the rule
    draws them."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    init = 0.1 if retention == "kl" else 1.0
    return {
        "q": F.normalize(randn(B, T, H, K), dim=-1),
        "k": F.normalize(randn(B, T, H, K), dim=-1),
        "v": randn(B, T, H, K),
        # a stable inner loop keeps fp32 vs fp64 well-posed; the smooth switch's l1 branch has a
        # slope of delta * sharpness in each of the K coordinates, so its step shrinks with K
        "eta": 0.1 * rand(B, T, H) + 0.02 if bias != "huber_switch"
        else (0.02 * rand(B, T, H) + 0.02) * min(1.0, 16 / K) ** 1.5,
        # keys are unit-norm: W1 k has unit-size entries (scaled by 1 / sqrt(K), the memory's
        # output was so small that its LayerNorm multiplied every rounding error)
        "w1": init * randn(H, hidden, K),
        "w2": init * randn(H, K, hidden) / (hidden**0.5 if retention != "kl" else 1.0),
        "alpha": 0.2 * rand(B, T, H) + 0.8 if retention != "none" else None,
        "delta": huber_threshold(bias, B, T, H, K, rand) if bias.startswith("huber") else None,
        "theta": 0.5 * rand(B, T, H) + 0.4 if momentum else None,
    }


def reference(inputs, config, bias, chunk_size, dtype=torch.float32) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The float64 reference on ``inputs`` rounded to ``dtype`` (what a kernel of that dtype
    sees): [o, the gradient of every input in NAMES order], and the upstream gradient do
    [B, T, H, K] it used (seeded, rounded to ``dtype``)."""
    names = [n for n in NAMES if inputs[n] is not None]
    ref = {n: inputs[n].to(dtype).double().requires_grad_() for n in names}
    o_ref = naive_chunk_mlp_memory(**ref, config=config, bias=bias, chunk_size=chunk_size)
    do = torch.randn(o_ref.shape, generator=torch.Generator().manual_seed(1)).to(dtype).double()
    return [o_ref, *torch.autograd.grad(o_ref, [ref[n] for n in names], do)], do


def check(inputs, config, bias, chunk_size, dtype=torch.float32, tol=5e-3, device=DEVICE, hidden_tile=None):
    """Kernel (dtype, on ``device``; the hidden-tiled one with ``hidden_tile``) against the
    float64 reference: o and every gradient."""
    names = [n for n in NAMES if inputs[n] is not None]
    fast = {n: inputs[n].to(device, dtype).requires_grad_() for n in names}
    o = chunk_mlp_memory(**fast, config=config, bias=bias, chunk_size=chunk_size, hidden_tile=hidden_tile)
    (o_ref, *grads_ref), do = reference(inputs, config, bias, chunk_size, dtype)
    grads = torch.autograd.grad(o, [fast[n] for n in names], do.to(device, dtype))
    assert o.dtype == dtype and o.shape == o_ref.shape
    errors = {"o": rel_err(o.cpu(), o_ref)}
    errors |= {f"d{n}": rel_err(g.cpu(), gr) for n, g, gr in zip(names, grads, grads_ref, strict=True)}
    bad = {name: err for name, err in errors.items() if not err <= tol}
    assert not bad, f"relative errors above {tol}: {bad}"


# ---- kernel == reference (CPU interpreter: small shapes) -----------------------------------
NAMED = {
    "moneta": (MlpMemoryConfig("gelu", True, "lq", q=4.0), BiasConfig("lp", p=3.0)),
    "yaad": (MlpMemoryConfig("gelu", True, "l2", gradient_at="previous"),
             BiasConfig("huber_switch", sharpness=1.0, relative_sharpness=True)),
    "memora": (MlpMemoryConfig("gelu", True, "kl", scale=1.0), BiasConfig("l2")),
    "ttt_mlp": (MlpMemoryConfig("gelu", True, "none"), BiasConfig("l2")),
    "titans": (MlpMemoryConfig("gelu", True, "l2", gradient_at="previous"), BiasConfig("l2")),  # + momentum
}


def named_inputs(name: str, B, T, H, K, hidden, seed=0) -> dict:
    config, bias = NAMED[name]
    return make_inputs(B, T, H, K, hidden, bias.kind, config.retention, seed, momentum=name == "titans")


@pytest.mark.gpu
@pytest.mark.parametrize("name", NAMED)
@pytest.mark.parametrize("T", [1, 7, 63, 100])
def test_named_models_odd_lengths(name, T):
    config, bias = NAMED[name]
    check(named_inputs(name, 1, T, 2, 16, 64), config, bias, 16)


@pytest.mark.parametrize("retention", ["none", "l2", "lq"])
@pytest.mark.parametrize("bias", ["l2", "huber_switch"])
def test_momentum_with_every_retention(retention, bias):
    config = MlpMemoryConfig("silu", True, retention)
    check(make_inputs(1, 37, 1, 16, 32, bias, retention, momentum=True), config, BiasConfig(bias), 16)


@pytest.mark.parametrize("bias", ["dot", "l2", "lp", "huber_coordinate", "huber_norm", "huber_switch", "robust"])
@pytest.mark.parametrize("retention", ["none", "l2", "lq", "kl"])
def test_every_bias_and_retention(bias, retention):
    config = MlpMemoryConfig("gelu", True, retention)
    check(make_inputs(1, 21, 1, 16, 32, bias, retention), config, BiasConfig(bias), 16)


@pytest.mark.gpu
@pytest.mark.parametrize("gradient_at", ["retained", "previous"])
@pytest.mark.parametrize("momentum", [False, True])
def test_l2_retention_takes_the_gradient_where_it_says(gradient_at, momentum):
    """'retained': at beta_i W_0 (Gated DeltaNet's order, whose alpha gradient also flows through
    the key pass); 'previous': at W_0 (Titans, Yaad)."""
    config = MlpMemoryConfig("gelu", True, "l2", gradient_at=gradient_at)
    check(make_inputs(1, 37, 2, 16, 32, "huber_switch", momentum=momentum), config, BiasConfig("huber_switch"), 16)


def test_the_two_gradient_points_give_different_memories():
    x = make_inputs(1, 21, 1, 16, 32, "l2")
    x["alpha"] = 0.5 * x["alpha"]  # strong decay: the points differ a lot
    outs = [naive_chunk_mlp_memory(**x, config=MlpMemoryConfig("gelu", True, "l2", gradient_at=at),
                                   bias="l2", chunk_size=16) for at in ("retained", "previous")]
    assert rel_err(outs[0], outs[1]) > 1e-2


@pytest.mark.parametrize("activation", ["gelu", "silu", "relu"])
@pytest.mark.parametrize("layer_norm", [True, False])
def test_activations_and_layer_norm(activation, layer_norm):
    config = MlpMemoryConfig(activation, layer_norm, "l2")
    check(make_inputs(2, 37, 1, 16, 32), config, "l2", 16)


@pytest.mark.parametrize("chunk_size", [16, 32, 64])
def test_chunk_sizes(chunk_size):
    config, bias = NAMED["memora"]
    check(make_inputs(1, 70, 1, 16, 32, "l2", "kl"), config, bias, chunk_size)


def test_absolute_sharpness_switch():
    """The l1 branch as delta tanh(10 e) (an absolute sharpness), beside the named Yaad's relative one."""
    config = MlpMemoryConfig("gelu", True, "l2", gradient_at="previous")
    check(make_inputs(1, 37, 2, 16, 32, "huber_switch"), config, BiasConfig("huber_switch"), 16)


def test_hard_sign_switch():
    config = MlpMemoryConfig("gelu", True, "l2")
    bias = BiasConfig("huber_switch", smooth=False)
    check(make_inputs(1, 21, 1, 16, 32, "huber_switch"), config, bias, 16)


def test_kl_weights_that_underflow_float32_keep_finite_exact_gradients():
    """Logits spread over hundreds make entries of c softmax(...) underflow float32: the kernel
    carries the log-weights, so its gradients stay finite and equal the float64 reference (it
    took log(max(W, tiny)), whose gradient 1 / W overflowed)."""
    config, bias = NAMED["memora"]
    inputs = named_inputs("memora", 1, 23, 2, 16, 32, seed=3)
    spread = torch.linspace(0.0, 150.0, 16, dtype=torch.float64)
    inputs["w1"] = inputs["w1"] + spread  # rows over K: exp(-150) < float32's smallest normal
    inputs["w2"] = inputs["w2"] + torch.linspace(0.0, 150.0, 32, dtype=torch.float64)
    assert (torch.softmax(inputs["w1"].float(), -1) < torch.finfo(torch.float32).tiny).any()
    check(inputs, config, bias, chunk_size=16)


def test_lq_accumulators_whose_powers_overflow_float32_stay_exact():
    """|A|^q at q = 6 overflows float32 at |A| = 1e8; the norm (and W = A / n(A)) does not."""
    config = MlpMemoryConfig("gelu", True, "lq", q=6.0)
    inputs = make_inputs(1, 21, 2, 16, 32, "l2", "lq", seed=4)
    inputs["w1"] = inputs["w1"] * 1e8
    inputs["w2"] = inputs["w2"] * 1e8
    check(inputs, config, BiasConfig("l2"), chunk_size=16)


ELASTIC_CASES = [  # smooth surrogate or exact soft threshold, momentum, alpha's mode, T, chunk
    (True, False, "head", 1, 16), (True, False, "head", 63, 16), (False, False, "head", 37, 32),
    (True, True, "head", 21, 16), (False, True, "channel", 40, 16), (True, False, "channel", 100, 64),
]


def elastic_inputs(momentum: bool, alpha: str, T: int, hidden: int = 32, seed: int = 0) -> dict:
    x = make_inputs(1, T, 2, 16, hidden, "l2", "elastic", seed=seed, momentum=momentum)
    return channel_alpha(x, hidden) if alpha == "channel" else x


@pytest.mark.gpu
@pytest.mark.parametrize(("smooth", "momentum", "alpha", "T", "chunk_size"), ELASTIC_CASES)
def test_elastic_retention(smooth, momentum, alpha, T, chunk_size):
    """Elastic retention (W' = shrink(raw) at each chunk's end, read exactly by its last token):
    the backward takes shrink' at the raw end map it recomputes on chip. gamma = 0.05 zeroes
    some of W2's entries (about 0.18 in size) in the exact case."""
    config = MlpMemoryConfig("silu", True, "elastic", threshold=0.05, smooth=smooth)
    check(elastic_inputs(momentum, alpha, T, seed=T), config, BiasConfig("l2"), chunk_size)


def test_elastic_threshold_matters():
    """The two shrinks and a wider gamma give different memories (the kernels read the gamma and
    the variant they are given): the comparisons above can fail."""
    x = {n: (t.float() if t is not None else None) for n, t in elastic_inputs(False, "head", 37).items()}
    outs = [chunk_mlp_memory(**x, config=MlpMemoryConfig("silu", True, "elastic", threshold=gamma, smooth=smooth),
                             chunk_size=16) for gamma, smooth in ((0.05, True), (0.05, False), (0.2, False))]
    assert min(rel_err(a, b) for a, b in ((outs[0], outs[1]), (outs[1], outs[2]), (outs[0], outs[2]))) > 1e-3


def test_chunk_of_every_token_is_the_recurrence():
    """With a segment per token the reference is the token-by-token recurrence of
    miras_search.memory (mode='recurrent'); kernels need chunk >= 16, so this checks the reference."""
    rule = MemoryRule.from_point(preset("yaad"))
    x = make_inputs(1, 9, 2, 8, 32, "huber_switch")
    gates = MemoryGates(x["eta"], x["alpha"], None, x["delta"])
    o_rec = memory_forward(rule, x["q"], x["k"], x["v"], gates, [x["w1"], x["w2"]], mode="recurrent")
    config, bias = NAMED["yaad"]
    o = naive_chunk_mlp_memory(**x, config=config, bias=bias, chunk_size=1)
    assert rel_err(o, o_rec) < 1e-10


# ---- reference == miras_search.memory's chunked form (float64, CPU) ------------------------
HEAD = {"mode": "head"}
_BIASES = {
    "dot": {"kind": "dot"}, "l2": {"kind": "l2"}, "lp": {"kind": "lp", "p": 3.0},
    "huber_norm": {"kind": "huber", "variant": "norm", "delta": HEAD},
    "huber_switch": {"kind": "huber", "variant": "switch", "delta": HEAD},
    "robust": {"kind": "robust", "radius": 0.3},
}
_RETENTIONS = {
    "none": {"kind": "none"}, "l2": {"kind": "l2", "alpha": HEAD},
    "l2_previous": {"kind": "l2", "gradient_at": "previous", "alpha": HEAD},
    "lq": {"kind": "lq", "q": 4.0, "alpha": HEAD}, "kl": {"kind": "kl", "scale": 2.0, "alpha": HEAD},
    "elastic": {"kind": "elastic", "threshold": 0.02, "alpha": HEAD},
    "elastic_hard": {"kind": "elastic", "threshold": 0.02, "smooth": False, "alpha": HEAD},
}


def mlp_point(bias: str, retention: str, activation: str = "gelu", layer_norm: bool = True,
              algorithm: str = "gd") -> ModelPoint:
    momentum = {"theta": {"mode": "head"}} if algorithm == "momentum" else {}
    return ModelPoint.model_validate({
        "memory": {"kind": "mlp", "depth": 2, "expansion": 4, "activation": activation,
                   "layer_norm": layer_norm},
        "bias": _BIASES[bias], "retention": _RETENTIONS[retention],
        "algorithm": {"kind": algorithm, "eta": HEAD, **momentum},
    })


# kl: test_kl_reference_equals_memory_chunked_form (with momentum it has no kernel)
@pytest.mark.parametrize("bias", list(_BIASES))
@pytest.mark.parametrize("retention", [name for name in _RETENTIONS if name != "kl"])
@pytest.mark.parametrize(("activation", "layer_norm", "algorithm"),
                         [("gelu", True, "gd"), ("silu", False, "gd"), ("gelu", True, "momentum")])
def test_reference_equals_memory_chunked_form(bias, retention, activation, layer_norm, algorithm):
    point = mlp_point(bias, retention, activation, layer_norm, algorithm)
    run = kernel_for(point)
    assert run is not None
    rule = MemoryRule.from_point(point)
    x = make_inputs(2, 37, 2, 8, 32, bias, retention.split("_")[0], seed=3, momentum=algorithm == "momentum")
    params = [p.double() for p in rule.initial_parameters(2, 8, 8)]
    gates = MemoryGates(x["eta"], x["alpha"], x["theta"], x["delta"])
    o_memory = memory_forward(rule, x["q"], x["k"], x["v"], gates, params, "chunked", 16)
    config = run.keywords["config"]
    o_ref = naive_chunk_mlp_memory(x["q"], x["k"], x["v"], x["eta"], *params, x["alpha"], x["theta"],
                                   x["delta"], config=config, bias=bias_config(point.bias), chunk_size=16)
    assert rel_err(o_ref, o_memory) < 1e-10


def channel_eta(x: dict, hidden: int, seed: int = 5) -> dict:
    """``x`` with a channel-wise eta [B, T, H, K + hidden] in the per-head eta's range."""
    B, T, H, K = x["q"].shape
    rand = torch.rand(B, T, H, K + hidden, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    low, high = float(x["eta"].min()), float(x["eta"].max())
    return {**x, "eta": low + (high - low) * rand}


@pytest.mark.parametrize("bias", ["l2", "lp", "huber_norm"])
@pytest.mark.parametrize("retention", ["none", "l2", "l2_previous", "lq"])
@pytest.mark.parametrize("algorithm", ["gd", "momentum"])
def test_reference_with_channel_eta_equals_memory_chunked_form(bias, retention, algorithm):
    """A channel-wise eta (one step per input channel of W1, then of W2) scales what each layer
    writes with: the reference equals the memory's chunked form, which applies it per channel."""
    point = mlp_point(bias, retention, "gelu", True, algorithm)
    point = point.model_copy(update={"algorithm": point.algorithm.model_copy(
        update={"eta": point.algorithm.eta.model_copy(update={"mode": "channel"})})})
    rule = MemoryRule.from_point(point)
    assert rule.gate_modes["eta"] == "channel"
    x = channel_eta(make_inputs(2, 37, 2, 8, 32, bias, retention.split("_")[0], seed=3,
                                momentum=algorithm == "momentum"), 32)
    params = [p.double() for p in rule.initial_parameters(2, 8, 8)]
    gates = MemoryGates(x["eta"], x["alpha"], x["theta"], x["delta"])
    o_memory = memory_forward(rule, x["q"], x["k"], x["v"], gates, params, "chunked", 16)
    config = kernel_for(mlp_point(bias, retention, "gelu", True, algorithm)).keywords["config"]
    o_ref = naive_chunk_mlp_memory(x["q"], x["k"], x["v"], x["eta"], *params, x["alpha"], x["theta"],
                                   x["delta"], config=config, bias=bias_config(point.bias), chunk_size=16)
    assert rel_err(o_ref, o_memory) < 1e-10
    head = naive_chunk_mlp_memory(x["q"], x["k"], x["v"], x["eta"].mean(-1), *params, x["alpha"],
                                  x["theta"], x["delta"], config=config, bias=bias_config(point.bias),
                                  chunk_size=16)
    assert rel_err(head, o_ref) > 1e-3  # the channels matter: not a per-head step in disguise


def channel_alpha(x: dict, hidden: int, seed: int = 6) -> dict:
    """``x`` with a channel-wise alpha [B, T, H, K + hidden] in (0.8, 1)."""
    B, T, H, K = x["q"].shape
    gen = torch.Generator().manual_seed(seed)
    return {**x, "alpha": 0.8 + 0.2 * torch.rand(B, T, H, K + hidden, generator=gen, dtype=torch.float64)}


def _with_channel_gates(point: ModelPoint, eta: bool, alpha: bool) -> ModelPoint:
    spec = point.model_dump()
    if eta:
        spec["algorithm"]["eta"].update(mode="channel", rank=None)
    if alpha:
        spec["retention"]["alpha"].update(mode="channel", rank=None)
    return ModelPoint.model_validate(spec)


@pytest.mark.parametrize("bias", ["l2", "huber_norm"])
@pytest.mark.parametrize("retention", ["l2", "l2_previous", "lq"])
@pytest.mark.parametrize(("algorithm", "eta"), [("gd", False), ("gd", True), ("momentum", True)])
def test_reference_with_channel_alpha_equals_memory_chunked_form(bias, retention, algorithm, eta):
    """A channel-wise alpha (a decay per input channel of W1, then of W2), alone or with a
    channel-wise eta: the reference equals the memory's chunked form."""
    point = _with_channel_gates(mlp_point(bias, retention, "gelu", True, algorithm), eta, True)
    rule = MemoryRule.from_point(point)
    assert rule.gate_modes["alpha"] == "channel"
    x = make_inputs(2, 37, 2, 8, 32, bias, retention.split("_")[0], seed=3, momentum=algorithm == "momentum")
    x = channel_alpha(channel_eta(x, 32) if eta else x, 32)
    params = [p.double() for p in rule.initial_parameters(2, 8, 8)]
    gates = MemoryGates(x["eta"], x["alpha"], x["theta"], x["delta"])
    o_memory = memory_forward(rule, x["q"], x["k"], x["v"], gates, params, "chunked", 16)
    config = kernel_for(mlp_point(bias, retention, "gelu", True, algorithm)).keywords["config"]
    kwargs = {"config": config, "bias": bias_config(point.bias), "chunk_size": 16}
    o_ref = naive_chunk_mlp_memory(x["q"], x["k"], x["v"], x["eta"], *params, x["alpha"], x["theta"],
                                   x["delta"], **kwargs)
    assert rel_err(o_ref, o_memory) < 1e-10
    head = naive_chunk_mlp_memory(x["q"], x["k"], x["v"], x["eta"], *params, x["alpha"].mean(-1),
                                  x["theta"], x["delta"], **kwargs)
    assert rel_err(head, o_ref) > 1e-4  # the channels matter


# ---- dispatch and the model path --------------------------------------------------------------
def test_dispatch_covers_the_mlp_family():
    """Per-head gates run on the kernel; so do Moneta's, Yaad's and Memora's own channel-wise
    gates (Memora's kl: its exact per-token read, on the whole-W kernels)."""
    covered = {name: kernel_for(per_head_preset(name)) is not None
               for name in ("moneta", "yaad", "memora", "ttt_mlp", "titans")}
    assert covered == {"moneta": True, "yaad": True, "memora": True, "ttt_mlp": True, "titans": True}
    assert all(kernel_for(preset(name)) is not None for name in ("moneta", "yaad", "memora"))
    assert kernel_for(preset("memora")).keywords["config"] == MlpMemoryConfig("gelu", True, "kl", scale=1.0)
    spec = per_head_preset("memora").model_dump()
    spec["algorithm"] = {"kind": "momentum", "eta": HEAD, "theta": HEAD}
    memora_momentum = ModelPoint.model_validate(spec)  # kl with momentum: W on chip or in tiles
    assert kernel_for(memora_momentum) is not None
    assert shape_problem(memora_momentum, 16, 16, 16, torch.bfloat16) is None
    assert shape_problem(memora_momentum, 64, 64, 32, torch.bfloat16) is None
    assert "(momentum with a channel-wise alpha)" in shape_problem(memora_momentum, 64, 64, 64, torch.bfloat16)
    moneta = kernel_for(per_head_preset("moneta")).keywords
    assert moneta["config"] == MlpMemoryConfig("gelu", True, "lq", q=4.0, scale=1.0)
    assert moneta["bias"].kind == "lp"
    assert kernel_for(per_head_preset("yaad")).keywords["config"].gradient_at == "previous"
    deep = ModelPoint.model_validate({
        "memory": {"kind": "mlp", "depth": 3}, "bias": {"kind": "l2"},
        "retention": {"kind": "l2", "alpha": HEAD}, "algorithm": {"kind": "gd", "eta": HEAD},
    })
    assert kernel_for(deep) is None


def test_shape_problem_names_the_dims():
    rule = MemoryRule.from_point(preset("moneta"))  # expansion 4
    assert shape_problem(rule, 16, 16, 16) is None
    assert "hidden=96" in shape_problem(rule, 24, 24, 16)
    assert "chunk_size 8" in shape_problem(rule, 16, 16, 8)
    # past the on-chip tiles (kernels.limits.MLP_MAX_TILES, by the precision of the products:
    # Moneta's LayerNorm takes fp32-accurate ones also for bf16 inputs) the hidden dim is tiled,
    # up to K = 64; past that, refused with both reasons
    assert shape_problem(MemoryRule.from_point(per_head_preset("moneta")), 64, 64, 64, torch.bfloat16) is None
    # with Moneta's channel-wise eta and alpha as well (the tiled kernel takes them)
    assert shape_problem(rule, 64, 64, 64, torch.bfloat16) is None
    problem = shape_problem(rule, 128, 128, 16, torch.bfloat16)
    assert "K=128, hidden=512" in problem and "tf32x3 products" in problem
    assert "chunk x (K + hidden)" in problem and "K <= 64" in problem


def test_weights_stay_on_chip_where_they_fit():
    """mlp_hidden_tile is None (W on chip, chunk.py) inside MLP_MAX_TILES, else a hidden tile."""
    assert mlp_hidden_tile(32, 128, 32, "tf32x3") is None
    assert mlp_hidden_tile(64, 256, 16, "tf32x3") is not None  # K x hidden
    # tf32x3 keeps [chunk, chunk] tiles as fp32 operands: chunk 64 overflows where ieee fits
    assert mlp_hidden_tile(16, 64, 64, "tf32x3") is not None
    assert mlp_hidden_tile(16, 64, 64, "fp32") is None
    assert mlp_hidden_tile(32, 128, 32, "fp32") is None
    assert mlp_hidden_tile(32, 128, 64, "fp32") is not None  # chunk x (K + hidden)
    # bf16 operands (no LayerNorm, l2 retention) take twice the room and more
    assert mlp_hidden_tile(64, 256, 32, "bf16") is None
    assert mlp_hidden_tile(64, 128, 64, "bf16") is not None
    assert mlp_hidden_tile(128, 128, 32, "bf16") is None
    assert "K=128, hidden=512" in mlp_shape_problem(128, 512, 16, "bf16")


def test_a_shape_too_big_for_the_chip_is_refused_before_launch():
    x = {n: (t.to(torch.bfloat16) if t is not None else None) for n, t in make_inputs(1, 5, 1, 128, 512).items()}
    with pytest.raises(KernelInputError, match=r"chunk x \(K \+ hidden\) tile \(10240 elements\).*K <= 64"):
        chunk_mlp_memory(**x, chunk_size=16)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["moneta", "yaad", "titans"])
def test_forced_kernel_through_memory_forward(name):
    """train.kernel 'triton' routes the named models (with per-head gates) to the MLP kernel:
    outputs and the gradients of q and of the learned initial memory equal the PyTorch chunked
    form's."""
    rule = MemoryRule.from_point(per_head_preset(name))
    x = named_inputs(name, 2, 29, 2, 16, 64)
    fast = {n: t.to(DEVICE, torch.float32) for n, t in x.items() if t is not None}
    params = [p.to(DEVICE, torch.float32).requires_grad_() for p in rule.initial_parameters(2, 16, 16)]
    fast["q"].requires_grad_()
    gates = MemoryGates(fast["eta"], fast["alpha"], fast.get("theta"), fast.get("delta"))
    outs, grads = [], []
    for kernel in ("triton", "torch"):
        o = memory_forward(rule, fast["q"], fast["k"], fast["v"], gates, params, chunk_size=16, kernel=kernel)
        outs.append(o)
        grads.append(torch.autograd.grad(o.square().sum(), [fast["q"], *params]))
    assert rel_err(outs[0], outs[1]) < 5e-3
    for g_fast, g_ref in zip(*grads, strict=True):
        assert rel_err(g_fast, g_ref) < 5e-3


# ---- inputs the kernel refuses ------------------------------------------------------------------
def test_bad_inputs_name_the_argument():
    x = {n: (t.float() if t is not None else None) for n, t in make_inputs(1, 5, 1, 16, 32).items()}
    with pytest.raises(KernelInputError, match="chunk_size"):
        chunk_mlp_memory(**x, chunk_size=8)
    with pytest.raises(KernelInputError, match="w2 must have shape"):
        chunk_mlp_memory(**{**x, "w2": x["w2"][:, :, :16]})
    odd = {n: (t.float() if t is not None else None) for n, t in make_inputs(1, 5, 1, 24, 32).items()}
    with pytest.raises(KernelInputError, match="powers of two"):
        chunk_mlp_memory(**odd)
    with pytest.raises(KernelInputError, match="delta"):
        chunk_mlp_memory(**x, bias="huber_switch")
    with pytest.raises(KernelInputError, match="smooth=True"):
        chunk_mlp_memory(**x, bias=BiasConfig("lp", smooth=False))
    with pytest.raises(KernelInputError, match="retention 'bregman'"):
        MlpMemoryConfig(retention="bregman")
    with pytest.raises(KernelInputError, match="threshold must be > 0"):
        MlpMemoryConfig(retention="elastic", threshold=0.0)


# ---- bf16 inputs (on a CPU through the interpreter, patched to round and multiply as a GPU) ---
@pytest.mark.gpu
@pytest.mark.usefixtures("bf16_interpreter")
@pytest.mark.parametrize("name", NAMED)
def test_bf16_named_models(name):
    """The named models' LayerNorm takes tf32x3 products (kernels.precision); bf16 loads,
    stores and rounding still run."""
    config, bias = NAMED[name]
    check(named_inputs(name, 1, 37, 2, 16, 64), config, bias, 16, dtype=torch.bfloat16, tol=2e-2)


@pytest.mark.gpu
@pytest.mark.usefixtures("bf16_interpreter")
@pytest.mark.parametrize("retention", ["none", "l2", "lq", "elastic"])
@pytest.mark.parametrize("bias", ["l2", "dot", "huber_norm", "robust"])
def test_bf16_products(retention, bias):
    """Without LayerNorm the kernel multiplies bf16 operands (fp32 accumulation)."""
    config = MlpMemoryConfig("gelu", False, retention)
    check(make_inputs(1, 37, 2, 16, 64, bias, retention), config, BiasConfig(bias), 16,
          dtype=torch.bfloat16, tol=2e-2)


# ---- GPU: wider heads, bf16 ----------------------------------------------------------------------
# the widest shapes kernels.limits admits for each precision of the products
WIDE_SHAPES = [(32, 128, 32), (128, 32, 16)]
WIDE_FP32 = (2, 200, 4)  # B, T, H
WIDE_BF16 = (2, 130, 2)


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("name", list(NAMED))
@pytest.mark.parametrize(("K", "hidden", "chunk"), WIDE_SHAPES)
def test_gpu_wide_heads(name, K, hidden, chunk):
    config, bias = NAMED[name]
    check(named_inputs(name, *WIDE_FP32, K, hidden), config, bias, chunk)


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("name", list(NAMED))
@pytest.mark.parametrize(("K", "hidden", "chunk"), WIDE_SHAPES)
def test_gpu_bf16(name, K, hidden, chunk):
    """bf16 inputs; the named models' LayerNorm takes tf32x3 products (kernels.precision)."""
    config, bias = NAMED[name]
    check(named_inputs(name, *WIDE_BF16, K, hidden), config, bias, chunk, dtype=torch.bfloat16, tol=2e-2)


@pytest.mark.parametrize("name", list(NAMED))
@pytest.mark.parametrize(("B", "T", "H", "K", "hidden", "chunk", "tol"), [
    (1, 100, 2, 16, 64, 16, 5e-3),  # test_named_models_odd_lengths, longest
    *[(*WIDE_FP32, *shape, 5e-3) for shape in WIDE_SHAPES],
    *[(*WIDE_BF16, *shape, 2e-2) for shape in WIDE_SHAPES],
    # test_kernels_mlp_tiled.test_gpu_paper_shapes (the paper's K = 64, hidden 256)
    (2, 130, 2, 64, 256, 16, 5e-3), (2, 130, 2, 64, 256, 64, 2e-2),
])
def test_named_model_comparisons_are_well_posed(name, B, T, H, K, hidden, chunk, tol):
    """The kernel comparisons above can pass and can fail: 1e-7 of relative noise on the inputs
    (fp32 rounding) moves the float64 reference's o and gradients by under a tenth of the test's
    tolerance, and a step size 10 % off moves o or a gradient by over four times it. (The first
    GPU run found Yaad's inner loop chaotic at K = 128: 1e-7 of noise moved it by 50 %.)"""
    config, bias = NAMED[name]
    inputs = named_inputs(name, B, T, H, K, hidden)
    values = reference(inputs, config, bias, chunk, torch.float64)[0]
    g = torch.Generator().manual_seed(2)
    noisy = {n: None if t is None else t * (1 + 1e-7 * torch.randn(t.shape, generator=g, dtype=t.dtype))
             for n, t in inputs.items()}
    moved = [rel_err(a, b) for a, b in zip(reference(noisy, config, bias, chunk, torch.float64)[0], values, strict=True)]
    assert max(moved) < tol / 10, f"1e-7 of input noise moves the reference by {max(moved):.1e}"
    off = reference(inputs | {"eta": 0.9 * inputs["eta"]}, config, bias, chunk, torch.float64)[0]
    assert max(rel_err(a, b) for a, b in zip(off, values, strict=True)) > 4 * tol


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("bias", ["l2", "dot", "robust"])
@pytest.mark.parametrize(("K", "hidden", "chunk"), [(64, 256, 32), (128, 128, 32)])
def test_gpu_bf16_products(bias, K, hidden, chunk):
    """bf16 inputs and bf16 products (no LayerNorm, l2 retention) at their widest shapes."""
    config = MlpMemoryConfig("silu", False, "l2")
    check(make_inputs(2, 130, 2, K, hidden, bias, "l2"), config, BiasConfig(bias), chunk,
          dtype=torch.bfloat16, tol=2e-2)


@pytest.mark.gpu
@gpu_only
def test_gpu_stored_states_past_int32():
    """B x H x segments x hidden x K of the stored start states past 2^31 (two 9 GB fp32 tensors:
    T = 139264, H = 64, K = 32, hidden 128, chunk 16): the last head, whose states sit past the
    int32 range, gives what it gives alone. int32 offsets wrapped there, which crashes the
    backward or reads another head's states."""
    B, T, H, K, HD, C = 1, 139264, 64, 32, 128, 16
    assert B * H * (T // C) * HD * K > 2**31
    config, bias = MlpMemoryConfig("silu", False, "l2"), BiasConfig("l2")
    g = torch.Generator(device=DEVICE).manual_seed(0)
    bf16 = {"device": DEVICE, "dtype": torch.bfloat16}
    x = {
        "q": F.normalize(torch.randn(B, T, H, K, generator=g, **bf16), dim=-1),
        "k": F.normalize(torch.randn(B, T, H, K, generator=g, **bf16), dim=-1),
        "v": torch.randn(B, T, H, K, generator=g, **bf16),
        "eta": 0.1 * torch.rand(B, T, H, generator=g, **bf16) + 0.02,
        "w1": torch.randn(H, HD, K, generator=g, **bf16) / K**0.5,
        "w2": torch.randn(H, K, HD, generator=g, **bf16) / HD**0.5,
        "alpha": 0.05 * torch.rand(B, T, H, generator=g, **bf16) + 0.95,
    }
    run = partial(chunk_mlp_memory, config=config, bias=bias, chunk_size=C)
    assert_last_head_as_alone(run, x, per_head=("w1", "w2"))


def test_token_tensors_past_int32_are_refused():
    """q past 2^31 elements: a KernelInputError naming the shape, before any launch (meta device:
    nothing is allocated)."""
    meta = {"device": "meta", "dtype": torch.bfloat16}
    q, k, v = (torch.empty(2, 2**24, 8, 16, **meta) for _ in range(3))
    eta = torch.empty(2, 2**24, 8, **meta)
    w1, w2 = torch.empty(8, 32, 16, **meta), torch.empty(8, 16, 32, **meta)
    with pytest.raises(KernelInputError, match=r"int32 offsets: \[B, T, H, D\] = \[2, 16777216, 8, 16\]"):
        chunk_mlp_memory(q, k, v, eta, w1, w2, config=MlpMemoryConfig(retention="none"))


@pytest.mark.gpu
@gpu_only
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_gpu_inputs_on_another_gpu():
    """Triton launches on the current CUDA device; inputs on cuda:1 while cuda:0 is current run
    on theirs (kernels.launch.on_device), forward and backward."""
    config, bias = NAMED["titans"]
    with torch.cuda.device(0):
        check(named_inputs("titans", 1, 37, 2, 16, 64), config, bias, 16, device="cuda:1")


# ---- a kernel that does not fit the GPU falls back to the reference --------------------------
@pytest.mark.parametrize("which", ["_fwd_kernel", "_bwd_kernel"])
def test_out_of_resources_falls_back_with_a_warning(monkeypatch, refused_launch, which):
    from miras_search.kernels.mlp_chunk import chunk as mlp_chunk

    config, bias = NAMED["moneta"]
    x = make_inputs(1, 21, 1, 16, 32, bias.kind, config.retention)
    monkeypatch.setattr(mlp_chunk, which, refused_launch)
    with pytest.warns(KernelFallbackWarning, match="does not fit this GPU"):
        check(x, config, bias, 16)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["moneta", "titans"])
def test_language_model_trains_the_same_through_the_kernel(name):
    """A whole LM (train.kernel 'triton' vs 'torch'): same logits and parameter gradients."""
    spec = per_head_preset(name).model_dump()
    spec["block"].update(d_model=32, n_heads=2, n_layers=1)
    assert_lm_trains_the_same_through_the_kernel(spec, DEVICE)


@pytest.mark.gpu
@pytest.mark.parametrize("retention", ["none", "l2", "lq"])
@pytest.mark.parametrize("momentum", [False, True])
@pytest.mark.parametrize("T", [1, 7, 37])
def test_kernel_with_channel_eta(retention, momentum, T):
    """The on-chip kernel with a step per input channel (the named models' eta): output and every
    gradient, the channel-wise eta's included, against the float64 reference."""
    config = MlpMemoryConfig("gelu", True, retention)
    x = channel_eta(make_inputs(1, T, 2, 16, 32, "l2", retention, seed=T, momentum=momentum), 32)
    check(x, config, BiasConfig("l2"), 16)


@pytest.mark.gpu
@pytest.mark.parametrize(("name", "chunk_size"), [("moneta", 16), ("yaad", 32), ("titans", 16)])
def test_named_models_with_channel_eta(name, chunk_size):
    config, bias = NAMED[name]
    check(channel_eta(named_inputs(name, 1, 40, 1, 16, 32, seed=2), 32), config, bias, chunk_size)


def test_channel_alpha_with_momentum_takes_both_layouts():
    """Momentum with a channel-wise alpha runs channel.py's kernels where W fits on chip (lq with
    momentum's share of it) and the hidden-tiled one up to chunk x K = 2048; a shape past both
    is a shape problem naming the limit (the PyTorch form runs)."""
    assert mlp_hidden_tile(16, 64, 16, "tf32x3", lq_momentum=True) is None  # W on chip
    assert mlp_shape_problem(64, 256, 32, "tf32x3", channel_momentum=True) is None  # tiles
    assert mlp_shape_problem(64, 256, 64, "tf32x3") is None  # per-head gates: chunk 64 too
    assert mlp_shape_problem(64, 256, 64, "bf16", channel_momentum=True) is None  # bf16 products: 140 KiB
    problem = mlp_shape_problem(64, 256, 64, "tf32x3", channel_momentum=True)
    assert "chunk x K <= 2048 (momentum with a channel-wise alpha)" in problem
    x = channel_alpha(make_inputs(1, 8, 1, 64, 256, "l2", "l2", momentum=True), 256)
    with pytest.raises(KernelInputError, match=r"momentum with a channel-wise alpha"):
        chunk_mlp_memory(**{n: x[n].float() for n in NAMES if x[n] is not None},
                         config=MlpMemoryConfig(retention="l2"), chunk_size=64)


@pytest.mark.gpu
@pytest.mark.parametrize(("retention", "gradient_at", "eta", "bias", "T"), [
    ("l2", "retained", "head", "l2", 1), ("l2", "retained", "channel", "l2", 37),
    ("l2", "previous", "channel", "huber_switch", 37), ("lq", "retained", "channel", "lp", 37),
    ("lq", "retained", "head", "l2", 7), ("none_alpha", "retained", "head", "l2", 20),
])
def test_kernel_with_channel_alpha_and_momentum(retention, gradient_at, eta, bias, T):
    """Momentum with a decay per input channel of W1 and W2 (channel.py, kernels.channel_momentum):
    output and every gradient, theta's and alpha's per channel included, against the float64
    reference; 'none_alpha': l2 retention whose decays saturate (alpha ~ 1e-3 on some tokens)."""
    saturate = retention == "none_alpha"
    retention = "l2" if saturate else retention
    config = MlpMemoryConfig("gelu", True, retention, q=4.0, gradient_at=gradient_at)
    x = make_inputs(1, T, 2, 16, 32, bias, retention, seed=T, momentum=True)
    x = channel_alpha(channel_eta(x, 32) if eta == "channel" else x, 32)
    if saturate:
        x["alpha"][:, 3:6, :, ::3] = 1e-3
    check(x, config, BiasConfig(bias), 16, tol=5e-3 if not saturate else 2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["moneta", "yaad", "titans"])
def test_channel_eta_through_memory_forward(name):
    """A point with a channel-wise eta and per-head alpha / delta runs the kernel (forced, in the
    interpreter here; 'auto' on a GPU) with the PyTorch form's outputs and gradients, eta's too."""
    spec = per_head_preset(name).model_dump()
    spec["algorithm"]["eta"].update(mode="channel", rank=None)
    rule = MemoryRule.from_point(ModelPoint.model_validate(spec))
    assert rule.gate_modes["eta"] == "channel" and kernel_for(rule) is not None
    B, T, H, K = 1, 23, 2, 16
    x = channel_eta(make_inputs(B, T, H, K, 4 * K, "l2", "l2", seed=4, momentum=name == "titans"), 4 * K)
    gates = MemoryGates(x["eta"].to(DEVICE, torch.float32).requires_grad_(), x["alpha"].to(DEVICE, torch.float32),
                        None if x["theta"] is None else x["theta"].to(DEVICE, torch.float32),
                        torch.full((B, T, H), 1.0, device=DEVICE) if "delta" in rule.needs() else None)
    q, k, v = (x[n].to(DEVICE, torch.float32).requires_grad_() for n in "qkv")
    params = [p.to(DEVICE, torch.float32) for p in rule.initial_parameters(H, K, K)]
    outs = {}
    for kernel in ("triton", "torch"):
        o = memory_forward(rule, q, k, v, gates, params, chunk_size=16, kernel=kernel)
        outs[kernel] = [o, *torch.autograd.grad(o.square().sum(), [q, k, v, gates.eta])]
    for fused, reference in zip(outs["triton"], outs["torch"], strict=True):
        assert rel_err(fused.double().cpu(), reference.double().cpu()) < 5e-3


@pytest.mark.gpu
@pytest.mark.parametrize(("retention", "gradient_at"), [("l2", "retained"), ("l2", "previous"), ("lq", "retained")])
@pytest.mark.parametrize("eta", ["head", "channel"])
@pytest.mark.parametrize("T", [1, 7, 37])
def test_kernel_with_channel_alpha(retention, gradient_at, eta, T):
    """A decay per input channel of W1 and of W2 (channel.py): output and every gradient, alpha's
    per channel included, against the float64 reference."""
    config = MlpMemoryConfig("gelu", True, retention, q=4.0, gradient_at=gradient_at)
    x = make_inputs(1, T, 2, 16, 32, "l2", retention, seed=T)
    x = channel_alpha(channel_eta(x, 32) if eta == "channel" else x, 32)
    check(x, config, BiasConfig("l2"), 16)


@pytest.mark.gpu
def test_moneta_as_named_through_memory_forward():
    """Moneta's own gates (channel-wise eta and alpha; lq retention, lp bias) run the kernel
    (forced here, in the interpreter) with the PyTorch form's outputs and gradients."""
    rule = MemoryRule.from_point(preset("moneta"))
    assert kernel_for(rule) is not None
    B, T, H, K = 1, 21, 2, 16
    x = channel_alpha(channel_eta(make_inputs(B, T, H, K, 4 * K, "lp", "lq", seed=8), 4 * K), 4 * K)
    gates = MemoryGates(*(x[n].to(DEVICE, torch.float32).requires_grad_() for n in ("eta", "alpha")))
    q, k, v = (x[n].to(DEVICE, torch.float32).requires_grad_() for n in "qkv")
    params = [p.to(DEVICE, torch.float32) for p in rule.initial_parameters(H, K, K)]
    outs = {}
    for kernel in ("triton", "torch"):
        o = memory_forward(rule, q, k, v, gates, params, chunk_size=16, kernel=kernel)
        outs[kernel] = [o, *torch.autograd.grad(o.square().sum(), [q, k, v, gates.eta, gates.alpha])]
    for fused, reference in zip(outs["triton"], outs["torch"], strict=True):
        assert rel_err(fused.double().cpu(), reference.double().cpu()) < 5e-3


def channel_delta(x: dict, seed: int = 7) -> dict:
    """``x`` with a Huber threshold per value channel [B, T, H, K], around the per-head one / sqrt(K)
    (a channel-wise threshold tests ||e / delta|| <= 1)."""
    B, T, H, K = x["q"].shape
    gen = torch.Generator().manual_seed(seed)
    spread = 0.5 + torch.rand(B, T, H, K, generator=gen, dtype=torch.float64)
    return {**x, "delta": x["delta"][..., None] / K**0.5 * spread}


@pytest.mark.gpu
@pytest.mark.parametrize("bias", [BiasConfig("huber_coordinate"), BiasConfig("huber_switch", sharpness=1.0),
                                  BiasConfig("huber_switch", sharpness=1.0, relative_sharpness=True)])
@pytest.mark.parametrize("alpha", ["head", "channel"])
@pytest.mark.parametrize("T", [7, 37])
def test_kernel_with_channel_delta(bias, alpha, T):
    """A Huber threshold per value channel (Yaad's): output and every gradient, delta's per channel
    included, against the float64 reference, with per-head and channel-wise alpha."""
    config = MlpMemoryConfig("gelu", True, "l2", gradient_at="previous")
    x = channel_delta(make_inputs(1, T, 2, 16, 32, bias.kind, "l2", seed=T))
    x = channel_alpha(channel_eta(x, 32), 32) if alpha == "channel" else x
    check(x, config, bias, 16)


@pytest.mark.gpu
def test_yaad_as_named_through_memory_forward():
    """Yaad's own gates (channel-wise eta, alpha and threshold; the switch with relative sharpness)
    run the kernel (forced here, in the interpreter) with the PyTorch form's outputs and gradients."""
    rule = MemoryRule.from_point(preset("yaad"))
    assert kernel_for(rule) is not None
    B, T, H, K = 1, 21, 2, 16
    x = make_inputs(B, T, H, K, 4 * K, "huber_switch", "l2", seed=9)
    x = channel_alpha(channel_eta(channel_delta(x), 4 * K), 4 * K)
    gates = MemoryGates(*(x[n].to(DEVICE, torch.float32).requires_grad_() for n in ("eta", "alpha")), None,
                        x["delta"].to(DEVICE, torch.float32).requires_grad_())
    q, k, v = (x[n].to(DEVICE, torch.float32).requires_grad_() for n in "qkv")
    params = [p.to(DEVICE, torch.float32) for p in rule.initial_parameters(H, K, K)]
    outs = {}
    for kernel in ("triton", "torch"):
        o = memory_forward(rule, q, k, v, gates, params, chunk_size=16, kernel=kernel)
        leaves = [q, k, v, gates.eta, gates.alpha, gates.delta]
        outs[kernel] = [o, *torch.autograd.grad(o.square().sum(), leaves)]
    for fused, reference in zip(outs["triton"], outs["torch"], strict=True):
        assert rel_err(fused.double().cpu(), reference.double().cpu()) < 5e-3


# ---- Memora: kl retention's exact per-token read (channel.py, W on chip) ------------------------
KL_GATES = [("gd", False, False), ("gd", True, True), ("gd", True, False), ("gd", False, True),
            ("momentum", False, False), ("momentum", True, False)]


@pytest.mark.parametrize(("algorithm", "eta", "alpha"), KL_GATES)
@pytest.mark.parametrize("chunk_size", [16, 32])
def test_kl_reference_equals_memory_chunked_form(algorithm, eta, alpha, chunk_size):
    """kl retention (c = 2): every token of a chunk reads c softmax_row of its own log-space state
    (miras_search.memory.mirror_read) after the chunk's exact lag token; per-head and channel-wise
    gates, and momentum (which only the reference has)."""
    point = _with_channel_gates(mlp_point("l2", "kl", "gelu", True, algorithm), eta, alpha)
    rule = MemoryRule.from_point(point)
    x = make_inputs(2, 37, 2, 8, 32, "l2", "kl", seed=3, momentum=algorithm == "momentum")
    x = channel_eta(x, 32) if eta else x
    x = channel_alpha(x, 32) if alpha else x
    params = [p.double() for p in rule.initial_parameters(2, 8, 8)]
    gates = MemoryGates(x["eta"], x["alpha"], x["theta"], x["delta"])
    o_memory = memory_forward(rule, x["q"], x["k"], x["v"], gates, params, "chunked", chunk_size)
    o_ref = naive_chunk_mlp_memory(x["q"], x["k"], x["v"], x["eta"], *params, x["alpha"], x["theta"],
                                   None, config=MlpMemoryConfig("gelu", True, "kl", scale=2.0),
                                   bias="l2", chunk_size=chunk_size)
    assert rel_err(o_ref, o_memory) < 1e-10


def memora_inputs(B, T, H, K, hidden, seed=0, channel=True) -> dict:
    """Memora's inputs with its own channel-wise eta and alpha [B, T, H, K + hidden], or per-head
    ones (``channel`` False)."""
    x = named_inputs("memora", B, T, H, K, hidden, seed)
    return channel_alpha(channel_eta(x, hidden, seed + 1), hidden, seed + 2) if channel else x


@pytest.mark.parametrize(("T", "chunk_size"), [(1, 16), (7, 16), (37, 16), (63, 16), (70, 32), (37, 64)])
@pytest.mark.parametrize("gates", ["channel", "head"])
def test_memora_kernel_equals_reference(T, chunk_size, gates):
    """Memora's exact per-token read on the whole-W kernels, output and every gradient (q, k, v,
    eta, alpha, both weights), its own channel-wise gates and per-head ones, odd lengths."""
    config, bias = NAMED["memora"]
    check(memora_inputs(1, T, 2, 16, 32, seed=T, channel=gates == "channel"), config, bias, chunk_size)


@pytest.mark.parametrize(("name", "T", "chunk_size"), [("memora", 21, 16), ("memora", 40, 32), ("per_head", 37, 16)])
@pytest.mark.parametrize("layout", ["whole", "tiled"])
def test_memora_kernel_equals_memory_chunked_form(monkeypatch, name, T, chunk_size, layout):
    """memory_forward with kernel 'triton' (float32, forced: the interpreter on a CPU) equals the
    PyTorch chunked form (kernel 'torch') in float64: output and the gradients of q, k, v, eta,
    alpha and the learned initial weights, Memora as named and with per-head gates, with W on chip
    and (dispatch's pick of the layout patched) with the hidden dim in tiles of 16."""
    if layout == "tiled":
        from miras_search.kernels.mlp_chunk import chunk as mlp_chunk

        monkeypatch.setattr(mlp_chunk, "mlp_hidden_tile", lambda *args: 16)
    point = preset("memora") if name == "memora" else per_head_preset("memora")
    rule = MemoryRule.from_point(point)
    assert kernel_for(rule) is not None
    B, H, K = 1, 2, 16
    x = memora_inputs(B, T, H, K, 4 * K, seed=10, channel=name == "memora")
    params = [p.double() for p in rule.initial_parameters(H, K, K)]
    do = torch.randn(B, T, H, K, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    outs = {}
    for kernel, dtype in (("triton", torch.float32), ("torch", torch.float64)):
        leaves = [x[n].to(DEVICE, dtype).requires_grad_() for n in ("q", "k", "v", "eta", "alpha")]
        weights = [p.to(DEVICE, dtype).requires_grad_() for p in params]
        q, k, v, eta, alpha = leaves
        o = memory_forward(rule, q, k, v, MemoryGates(eta, alpha), weights, chunk_size=chunk_size,
                           kernel=kernel)
        outs[kernel] = [o, *torch.autograd.grad(o, leaves + weights, do.to(DEVICE, dtype))]
    for fused, reference in zip(outs["triton"], outs["torch"], strict=True):
        assert rel_err(fused.double().cpu(), reference.cpu()) < 5e-3


@pytest.mark.parametrize("alpha_mode", ["head", "channel"])
def test_memora_with_momentum_through_memory_forward(alpha_mode):
    """Memora's axes with momentum (forced kernel, float32) equal the PyTorch chunked form in
    float64 through memory_forward: output and the gradients of q, k, v, eta, alpha, theta."""
    spec = (preset("memora") if alpha_mode == "channel" else per_head_preset("memora")).model_dump()
    spec["algorithm"] = {"kind": "momentum", "eta": spec["algorithm"]["eta"], "theta": HEAD}
    rule = MemoryRule.from_point(ModelPoint.model_validate(spec))
    B, T, H, K = 1, 29, 2, 16
    x = memora_inputs(B, T, H, K, 4 * K, seed=11, channel=alpha_mode == "channel")
    x["theta"] = 0.4 + 0.5 * torch.rand(B, T, H, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    params = [p.double() for p in rule.initial_parameters(H, K, K)]
    do = torch.randn(B, T, H, K, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    outs = {}
    for kernel, dtype in (("triton", torch.float32), ("torch", torch.float64)):
        leaves = [x[n].to(DEVICE, dtype).requires_grad_() for n in ("q", "k", "v", "eta", "alpha", "theta")]
        q, k, v, eta, alpha, theta = leaves
        o = memory_forward(rule, q, k, v, MemoryGates(eta, alpha, theta), [p.to(DEVICE, dtype) for p in params],
                           chunk_size=16, kernel=kernel)
        outs[kernel] = [o, *torch.autograd.grad(o, leaves, do.to(DEVICE, dtype))]
    for fused, reference in zip(outs["triton"], outs["torch"], strict=True):
        assert rel_err(fused.double().cpu(), reference.cpu()) < 5e-3


@pytest.mark.gpu
@pytest.mark.parametrize(("alpha", "eta", "bias", "scale", "T"), [
    ("head", "head", "l2", 1.0, 1), ("head", "head", "l2", 1.3, 37), ("channel", "channel", "l2", 1.0, 37),
    ("channel", "head", "huber_switch", 1.0, 20), ("head", "channel", "lp", 1.0, 7),
])
def test_kl_retention_with_momentum(alpha, eta, bias, scale, T):
    """Memora's kl retention with momentum (channel.py: every token's exact map with the
    log-space step S, kernels.kl_read._kl_read_mom_ch): output and every gradient, theta's
    included, against the float64 reference; alpha per head (repeated per channel) or per channel."""
    x = make_inputs(1, T, 2, 16, 32, bias, "kl", seed=T, momentum=True)
    x = channel_eta(x, 32) if eta == "channel" else x
    x = channel_alpha(x, 32) if alpha == "channel" else x
    check(x, MlpMemoryConfig("gelu", True, "kl", scale=scale), BiasConfig(bias), 16)
