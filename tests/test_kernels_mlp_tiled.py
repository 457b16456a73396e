"""The hidden-tiled MLP-memory kernel (kernels/mlp_chunk/tiled.py) == the float64 reference:
outputs and every gradient, over every retention, momentum, the biases, both layer-norm settings,
chunk sizes and odd lengths, per-head and channel-wise gates (the named Moneta's and Yaad's);
and the shapes that pick it.

On a CPU the kernel runs in Triton's interpreter with K = 16 and the hidden dim in 2 or 4 tiles
of 16 (``hidden_tile`` forces the tiled layout, which dispatch picks only where W does not fit
on chip); the GPU cases run it at the paper's shapes (K = 64, hidden 256, chunks 16 and 64).
"""

from __future__ import annotations

import pytest
import torch
from kernel_checks import per_head_preset, rel_err
from test_kernels_mlp import (
    CUDA,
    ELASTIC_CASES,
    NAMED,
    channel_alpha,
    channel_delta,
    channel_eta,
    check,
    elastic_inputs,
    gpu_only,
    make_inputs,
    memora_inputs,
    named_inputs,
    reference,
)

from miras_search.kernels import BiasConfig, KernelInputError, kernel_for
from miras_search.kernels.dispatch import shape_problem
from miras_search.kernels.limits import MLP_HIDDEN_TILE, mlp_hidden_tile, mlp_shape_problem
from miras_search.kernels.mlp_chunk import MlpMemoryConfig, chunk_mlp_memory
from miras_search.memory import MemoryRule
from miras_search.presets import preset
from miras_search.schema import ModelPoint

pytestmark = pytest.mark.filterwarnings("error::miras_search.kernels.KernelFallbackWarning")


# ---- kernel == reference (CPU interpreter: small shapes, 2 or 4 hidden tiles) --------------
@pytest.mark.gpu
@pytest.mark.parametrize(("name", "T", "hidden"), [
    ("titans", 100, 32),  # momentum
    ("moneta", 63, 32),  # lq: whole-matrix norms over tiles
    ("memora", 7, 64),  # kl: W2's row softmax over 4 tiles; a lag token per chunk
    ("yaad", 1, 32),  # huber_switch, one token
    ("ttt_mlp", 37, 32),
])
def test_tiled_named_models(name, T, hidden):
    config, bias = NAMED[name]
    check(named_inputs(name, 1, T, 2, 16, hidden), config, bias, 16, hidden_tile=16)


@pytest.mark.parametrize("name", ["titans", "moneta", "memora"])
def test_paper_head_takes_the_tiled_kernel_by_itself(name):
    """K = 64, hidden 256 with no hidden_tile: fp32 inputs exceed the whole-W tiles, so the
    kernel walks 8 tiles of 32 (two segments: the interpreter is slow at this width)."""
    config, bias = NAMED[name]
    assert mlp_hidden_tile(64, 256, 16, "fp32") == MLP_HIDDEN_TILE == 32
    check(named_inputs(name, 1, 20, 1, 64, 256), config, bias, 16)


@pytest.mark.parametrize("retention", ["none", "lq"])
def test_tiled_momentum_with_the_end_maps(retention):
    """Momentum beside lq (its end map) and none (Titans' l2 above; kl has no kernel with
    momentum)."""
    config = MlpMemoryConfig("silu", True, retention)
    check(make_inputs(1, 21, 1, 16, 32, "l2", retention, momentum=True), config, BiasConfig("l2"), 16,
          hidden_tile=16)


@pytest.mark.parametrize(("bias", "activation", "layer_norm"), [
    ("dot", "relu", False), ("robust", "silu", True), ("huber_coordinate", "gelu", False),
    ("lp", "silu", False), ("huber_norm", "relu", True),
])
def test_tiled_biases_activations_and_retain_first(bias, activation, layer_norm):
    """l2 retention with the gradient at the retained memory (alpha also flows through the key
    pass), each bias's backward, with and without the LayerNorm."""
    config = MlpMemoryConfig(activation, layer_norm, "l2")
    check(make_inputs(1, 21, 1, 16, 32, bias, "l2", seed=5), config, BiasConfig(bias), 16, hidden_tile=16)


@pytest.mark.parametrize(("name", "chunk_size"), [("memora", 64), ("titans", 32)])
def test_tiled_chunk_sizes(name, chunk_size):
    config, bias = NAMED[name]
    check(named_inputs(name, 1, 70, 1, 16, 32), config, bias, chunk_size, hidden_tile=16)


def inference_cases() -> list:
    """(inputs, config, bias) of every layout variant whose slots the no-grad forward reuses."""
    elastic = MlpMemoryConfig("silu", True, "elastic", threshold=0.05, smooth=False)
    return [
        pytest.param(lambda name=name: (named_inputs(name, 1, 40, 1, 16, 32), *NAMED[name]), id=name)
        for name in ("moneta", "memora", "titans")
    ] + [
        pytest.param(lambda: (named_channel_inputs("yaad", 1, 40, 1, 16, 32), *NAMED["yaad"]), id="yaad-channel-gates"),
        pytest.param(lambda: (channel_momentum_inputs("moneta", 1, 40, 1, 16, 32), *NAMED["moneta"]),
                     id="moneta-channel-momentum"),
        # elastic: the one slot holds W_0, then each raw end map in turn
        pytest.param(lambda: (elastic_inputs(True, "head", 40), elastic, BiasConfig("l2")), id="elastic-momentum"),
    ]


@pytest.mark.parametrize("case", inference_cases())
def test_tiled_inference_updates_the_state_in_place(case):
    """Without gradients the forward keeps one state slot and updates it in place (walks B and
    C rewrite the tile they read): same outputs as the forward that stores every segment."""
    inputs, config, bias = case()
    x = {n: (t.float() if t is not None else None) for n, t in inputs.items()}
    stored = chunk_mlp_memory(**{n: (t.requires_grad_() if n == "q" else t) for n, t in x.items()},
                              config=config, bias=bias, chunk_size=16, hidden_tile=16)
    with torch.no_grad():
        in_place = chunk_mlp_memory(**x, config=config, bias=bias, chunk_size=16, hidden_tile=16)
    assert rel_err(in_place, stored.detach()) < 1e-6


# ---- channel-wise gates (CPU interpreter) ------------------------------------------------------
def named_channel_inputs(name: str, B, T, H, K, hidden, seed=0) -> dict:
    """A named model's inputs with its own channel-wise gates (test_kernels_mlp's channel_*):
    Moneta's and Memora's eta and alpha [B, T, H, K + hidden], Yaad's also its threshold delta
    [B, T, H, K]."""
    x = named_inputs(name, B, T, H, K, hidden, seed)
    if name == "yaad":
        x = channel_delta(x)
    return channel_alpha(channel_eta(x, hidden), hidden)


@pytest.mark.parametrize(("name", "T", "hidden", "chunk_size"), [
    ("moneta", 1, 32, 16), ("moneta", 37, 64, 16), ("moneta", 63, 32, 16),  # lq, lp: eta, alpha
    ("yaad", 1, 64, 16), ("yaad", 7, 32, 16), ("yaad", 63, 32, 16),  # + delta per value channel
    ("yaad", 70, 32, 32),
])
def test_tiled_named_models_with_channel_gates(name, T, hidden, chunk_size):
    """Moneta's and Yaad's own gates: W1's K input channels decay on chip, W2's per hidden tile."""
    config, bias = NAMED[name]
    check(named_channel_inputs(name, 1, T, 2, 16, hidden, seed=T), config, bias, chunk_size, hidden_tile=16)


@pytest.mark.parametrize(("name", "T"), [("moneta", 7), ("moneta", 37), ("yaad", 63), ("titans", 37)])
def test_tiled_channel_eta_with_per_head_alpha(name, T):
    """A step per input channel beside the per-head decays (Titans: with momentum)."""
    config, bias = NAMED[name]
    check(channel_eta(named_inputs(name, 1, T, 2, 16, 32, seed=T), 32), config, bias, 16, hidden_tile=16)


@pytest.mark.parametrize(("gradient_at", "bias", "eta"), [
    ("retained", "l2", "channel"),  # the key pass at the channel-wise retained point
    ("previous", "huber_coordinate", "head"),  # per-head eta; delta per value channel
])
def test_tiled_channel_alpha_beside_other_gates(gradient_at, bias, eta):
    config = MlpMemoryConfig("silu", True, "l2", gradient_at=gradient_at)
    x = make_inputs(1, 37, 2, 16, 32, bias, "l2", seed=11)
    x = channel_delta(x) if bias.startswith("huber") else x
    x = channel_alpha(channel_eta(x, 32) if eta == "channel" else x, 32)
    check(x, config, BiasConfig(bias), 16, hidden_tile=16)


def channel_momentum_inputs(name: str, B, T, H, K, hidden, seed=0) -> dict:
    """A named model's inputs with momentum (theta [B, T, H] in (0.4, 0.9)) and a channel-wise
    alpha: Titans' with an alpha per channel, Moneta's, Yaad's and Memora's own channel-wise gates."""
    if name == "titans":
        return channel_alpha(named_inputs(name, B, T, H, K, hidden, seed), hidden)
    gen = torch.Generator().manual_seed(seed + 100)
    theta = 0.5 * torch.rand(B, T, H, generator=gen, dtype=torch.float64) + 0.4
    return named_channel_inputs(name, B, T, H, K, hidden, seed) | {"theta": theta}


@pytest.mark.parametrize(("name", "T", "hidden", "chunk_size"), [
    ("titans", 1, 32, 16), ("titans", 37, 64, 16), ("titans", 70, 32, 32),
    ("moneta", 7, 32, 16), ("moneta", 63, 32, 16),  # lq; eta and alpha per channel
    ("yaad", 37, 32, 16),  # + delta per value channel
])
def test_tiled_momentum_with_channel_alpha(name, T, hidden, chunk_size):
    """The chunk-start momentum reaches each read through cv per input channel and every write
    through D[t, i] per channel (kernels.channel_momentum, the scores summed step by step: W1's
    on chip, W2's per hidden tile); theta's gradient gathers over the tiles and both layers."""
    config, bias = NAMED[name]
    check(channel_momentum_inputs(name, 1, T, 2, 16, hidden, seed=T), config, bias, chunk_size, hidden_tile=16)


@pytest.mark.parametrize("retention", ["l2", "lq"])
def test_tiled_momentum_with_channel_alpha_at_the_retained_point(retention):
    """l2 / lq with the gradient at the retained memory: the key pass's input scales are the
    channel decays, so alpha's gradient also takes walk E's part; a channel-wise eta beside."""
    config = MlpMemoryConfig("silu", True, retention)
    x = make_inputs(1, 37, 2, 16, 32, "huber_coordinate", retention, seed=4, momentum=True)
    check(channel_delta(channel_alpha(channel_eta(x, 32), 32)), config, BiasConfig("huber_coordinate"), 16,
          hidden_tile=16)


@pytest.mark.usefixtures("bf16_interpreter")
@pytest.mark.parametrize(("name", "gates"), [
    ("moneta", named_inputs), ("titans", named_inputs),  # per-head gates
    ("moneta", named_channel_inputs), ("yaad", named_channel_inputs),  # their own channel-wise ones
    ("titans", channel_momentum_inputs),  # momentum with a channel-wise alpha
])
def test_tiled_bf16_inputs(name, gates):
    """bf16 loads and stores (the named models' LayerNorm takes fp32-accurate products)."""
    config, bias = NAMED[name]
    check(gates(name, 1, 37, 2, 16, 32), config, bias, 16, dtype=torch.bfloat16, tol=2e-2, hidden_tile=16)


# ---- elastic retention over hidden tiles (CPU interpreter) ---------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize(("smooth", "momentum", "alpha", "T", "chunk_size"), ELASTIC_CASES)
def test_tiled_elastic_retention(smooth, momentum, alpha, T, chunk_size):
    """Elastic's slots past the initial one hold the raw end map: each segment reads shrink(X)
    (walk F takes shrink' back into the state's gradient), its last token the exact
    W' = shrink(X')."""
    config = MlpMemoryConfig("silu", True, "elastic", threshold=0.05, smooth=smooth)
    check(elastic_inputs(momentum, alpha, T, seed=T), config, BiasConfig("l2"), chunk_size, hidden_tile=16)


@pytest.mark.usefixtures("bf16_interpreter")
@pytest.mark.parametrize(("smooth", "momentum"), [(True, False), (False, True)])
def test_tiled_elastic_bf16_inputs(smooth, momentum):
    """bf16 loads and stores; behind the LayerNorm the products are tf32x3."""
    config = MlpMemoryConfig("silu", True, "elastic", threshold=0.05, smooth=smooth)
    check(elastic_inputs(momentum, "channel", 37), config, BiasConfig("l2"), 16, dtype=torch.bfloat16, tol=2e-2,
          hidden_tile=16)


@pytest.mark.usefixtures("bf16_interpreter")
def test_tiled_memora_with_momentum_bf16_inputs():
    config, bias = NAMED["memora"]
    check(channel_momentum_inputs("memora", 1, 37, 2, 16, 32), config, bias, 16, dtype=torch.bfloat16, tol=2e-2,
          hidden_tile=16)


# ---- Memora: kl retention's exact per-token read over hidden tiles (CPU interpreter) -------------
@pytest.mark.parametrize(("T", "hidden", "chunk_size"), [
    (1, 32, 16), (7, 64, 16), (37, 32, 16), (63, 32, 16), (70, 32, 32), (37, 32, 64),
])
@pytest.mark.parametrize("gates", ["channel", "head"])
def test_tiled_memora(T, hidden, chunk_size, gates):
    """Every token reads its own c softmax_row of the log-space state: W1's rows (over K) whole
    in each tile, W2's over the hidden tiles (an online softmax per token and row, and the
    backward's weights from its log-sum-exp); output and every gradient, Memora's own channel-wise
    eta and alpha and per-head ones."""
    config, bias = NAMED["memora"]
    check(memora_inputs(1, T, 2, 16, hidden, seed=T, channel=gates == "channel"), config, bias, chunk_size,
          hidden_tile=16)


@pytest.mark.gpu
@pytest.mark.parametrize(("T", "hidden", "chunk_size", "gates"), [
    (1, 32, 16, "channel"), (7, 64, 16, "channel"), (37, 32, 16, "head"), (63, 32, 16, "channel"),
    (70, 32, 32, "channel"),
])
def test_tiled_memora_with_momentum(T, hidden, chunk_size, gates):
    """kl with momentum over hidden tiles: each token's log-space state carries cv_t S and its
    steps' D_t (kl_read's _mom_ch reads; W2's rows by the online softmax over tiles, whose
    log-sum-exp the backward's weights take); S's and theta's gradients over both layers."""
    config, bias = NAMED["memora"]
    x = memora_inputs(1, T, 2, 16, hidden, seed=T, channel=gates == "channel")
    theta = 0.5 * torch.rand(1, T, 2, generator=torch.Generator().manual_seed(T), dtype=torch.float64) + 0.4
    check(x | {"theta": theta}, config, bias, chunk_size, hidden_tile=16)


def test_tiled_kl_weights_that_underflow_float32():
    """Logits spread over 150 (test_kernels_mlp's whole-W case): entries of W2's rows underflow
    float32 in some tiles and not others; the online softmax and the log-weights stay exact."""
    config, bias = NAMED["memora"]
    inputs = memora_inputs(1, 23, 2, 16, 32, seed=3)
    inputs["w1"] = inputs["w1"] + torch.linspace(0.0, 150.0, 16, dtype=torch.float64)
    inputs["w2"] = inputs["w2"] + torch.linspace(0.0, 150.0, 32, dtype=torch.float64)
    check(inputs, config, bias, chunk_size=16, hidden_tile=16)


@pytest.mark.usefixtures("bf16_interpreter")
def test_tiled_memora_bf16_inputs():
    """bf16 loads and stores; kl and the LayerNorm take fp32-accurate (tf32x3) products."""
    config, bias = NAMED["memora"]
    check(memora_inputs(1, 37, 2, 16, 32), config, bias, 16, dtype=torch.bfloat16, tol=2e-2, hidden_tile=16)


# ---- which layout a shape gets ---------------------------------------------------------------
def test_paper_shapes_are_admitted_with_hidden_tiles():
    """K = 64, hidden 256 at chunks 16 to 64: the named models (LayerNorm: tf32x3 products for
    bf16 inputs) take the tiled kernel, fp32 inputs up to chunk 32; shapes whose W fits keep the
    whole one."""
    for products, chunks in (("tf32x3", (16, 32, 64)), ("fp32", (16, 32))):
        for chunk in chunks:
            assert mlp_shape_problem(64, 256, chunk, products) is None
            assert mlp_hidden_tile(64, 256, chunk, products) == MLP_HIDDEN_TILE
    assert "chunk x K <= 2048" in mlp_shape_problem(64, 256, 64, "fp32")  # ieee products: 248 KiB
    assert mlp_hidden_tile(64, 256, 32, "bf16") is None  # fits on chip whole
    assert mlp_hidden_tile(64, 256, 64, "bf16") == MLP_HIDDEN_TILE
    assert mlp_hidden_tile(16, 64, 16, "tf32x3") is None
    assert mlp_hidden_tile(64, 1024, 16, "tf32x3") == MLP_HIDDEN_TILE  # any hidden dim
    assert mlp_hidden_tile(32, 16, 64, "tf32x3") == 16  # (a tile of at most the hidden dim)
    moneta = MemoryRule.from_point(per_head_preset("moneta"))  # the tiled kernel: per-head eta
    assert shape_problem(moneta, 64, 64, 64, torch.bfloat16) is None
    problem = shape_problem(moneta, 128, 128, 16, torch.bfloat16)
    assert "tile (10240 elements)" in problem and "K <= 64" in problem


def test_bad_hidden_tiles_are_refused():
    x = {n: (t.float() if t is not None else None) for n, t in make_inputs(1, 5, 1, 16, 64).items()}
    for tile in (8, 24, 128):
        with pytest.raises(KernelInputError, match="hidden_tile must be a power of two"):
            chunk_mlp_memory(**x, hidden_tile=tile)


def test_dispatch_routes_the_named_models_at_the_paper_shapes():
    """At K = 64 (hidden 256) Moneta, Yaad and Memora with their own channel-wise gates, and with
    per-head ones (Titans too), get the kernel (hidden tiles) at every chunk (Memora: kl's exact
    per-token read); momentum with a channel-wise alpha, kl's included, takes hidden tiles up to
    chunk 32 (the PyTorch form runs at 64)."""
    rules = [MemoryRule.from_point(per_head_preset(name)) for name in ("moneta", "yaad", "memora", "titans")]
    rules += [MemoryRule.from_point(preset(name)) for name in ("moneta", "yaad", "memora")]
    for rule in rules:
        assert kernel_for(rule) is not None
        for chunk in (16, 32, 64):
            assert shape_problem(rule, 64, 64, chunk, torch.bfloat16) is None
            assert mlp_hidden_tile(64, 256, chunk, "tf32x3") == MLP_HIDDEN_TILE
    assert preset("yaad").retention.alpha.mode == "channel" and preset("yaad").bias.delta.mode == "channel"
    assert preset("memora").retention.kind == "kl" and preset("memora").retention.alpha.mode == "channel"
    spec = per_head_preset("titans").model_dump()
    spec["retention"]["alpha"].update(mode="channel", rank=None)
    channel_momentum = MemoryRule.from_point(ModelPoint.model_validate(spec))
    assert kernel_for(channel_momentum) is not None
    for chunk in (16, 32):
        assert shape_problem(channel_momentum, 64, 64, chunk, torch.bfloat16) is None
    assert "(momentum with a channel-wise alpha)" in shape_problem(channel_momentum, 64, 64, 64, torch.bfloat16)
    assert shape_problem(channel_momentum, 16, 16, 16, torch.bfloat16) is None
    spec = preset("memora").model_dump()
    spec["algorithm"] = {"kind": "momentum", "eta": spec["algorithm"]["eta"]}
    memora_momentum = MemoryRule.from_point(ModelPoint.model_validate(spec))
    for chunk in (16, 32):
        assert shape_problem(memora_momentum, 64, 64, chunk, torch.bfloat16) is None
    assert "(momentum with a channel-wise alpha)" in shape_problem(memora_momentum, 64, 64, 64, torch.bfloat16)


# ---- GPU: the paper's shapes ---------------------------------------------------------------------
PAPER = (2, 130, 2, 64, 256)  # B, T, H, K, hidden
PAPER_CASES = [(16, torch.bfloat16, 2e-2), (64, torch.bfloat16, 2e-2), (16, torch.float32, 5e-3)]


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("name", list(NAMED))
@pytest.mark.parametrize(("chunk_size", "dtype", "tol"), PAPER_CASES)
def test_gpu_paper_shapes(name, chunk_size, dtype, tol):
    """bf16 at chunks 16 and 64; fp32 (ieee products: chunk x K <= 2048) at 16.
    test_kernels_mlp.test_named_model_comparisons_are_well_posed checks these comparisons."""
    assert CUDA
    config, bias = NAMED[name]
    check(named_inputs(name, *PAPER), config, bias, chunk_size, dtype=dtype, tol=tol)


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("name", ["moneta", "yaad", "memora"])
@pytest.mark.parametrize(("chunk_size", "dtype", "tol"), PAPER_CASES)
def test_gpu_paper_shapes_with_channel_gates(name, chunk_size, dtype, tol):
    """Moneta, Yaad and Memora (kl's exact per-token read) with their own channel-wise gates at K = 64, hidden 256 (dispatch's layout:
    hidden tiles). test_channel_gate_comparisons_are_well_posed checks these comparisons."""
    assert CUDA
    config, bias = NAMED[name]
    assert mlp_hidden_tile(64, 256, chunk_size, "tf32x3") is not None
    check(named_channel_inputs(name, *PAPER), config, bias, chunk_size, dtype=dtype, tol=tol)


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("name", ["titans", "moneta", "yaad", "memora"])
@pytest.mark.parametrize(("chunk_size", "dtype", "tol"), [(16, torch.bfloat16, 2e-2), (32, torch.bfloat16, 2e-2),
                                                          (16, torch.float32, 5e-3)])
def test_gpu_paper_shapes_momentum_with_channel_alpha(name, chunk_size, dtype, tol):
    """Momentum with a channel-wise alpha at K = 64, hidden 256 (dispatch's layout: hidden tiles,
    chunks up to 32). test_channel_momentum_comparisons_are_well_posed checks these comparisons."""
    assert CUDA
    config, bias = NAMED[name]
    assert mlp_shape_problem(64, 256, chunk_size, "tf32x3", channel_momentum=True) is None
    check(channel_momentum_inputs(name, *PAPER), config, bias, chunk_size, dtype=dtype, tol=tol)


ELASTIC_PAPER = MlpMemoryConfig("gelu", True, "elastic", threshold=0.01)
"""Elastic retention behind the named models' LayerNorm, gamma 0.01 (the smooth surrogate)."""


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("momentum", [False, True])
@pytest.mark.parametrize(("chunk_size", "dtype", "tol"), PAPER_CASES)
def test_gpu_paper_shapes_elastic(momentum, chunk_size, dtype, tol):
    """Elastic retention at K = 64, hidden 256 (hidden tiles: raw slots, walk F).
    test_elastic_comparisons_are_well_posed checks these comparisons."""
    assert CUDA
    check(make_inputs(*PAPER, "l2", "elastic", momentum=momentum), ELASTIC_PAPER, BiasConfig("l2"), chunk_size,
          dtype=dtype, tol=tol)


def assert_well_posed(inputs: dict, config: MlpMemoryConfig, bias: BiasConfig, chunk_size: int, tol: float) -> None:
    """As test_kernels_mlp.test_named_model_comparisons_are_well_posed for a GPU comparison at
    ``tol``: 1e-7 of input noise moves the float64 reference by under a tenth of the tolerance,
    a step size 10 % off by over four times it."""
    values = reference(inputs, config, bias, chunk_size, torch.float64)[0]
    g = torch.Generator().manual_seed(2)
    noisy = {n: None if t is None else t * (1 + 1e-7 * torch.randn(t.shape, generator=g, dtype=t.dtype))
             for n, t in inputs.items()}
    moved = [rel_err(a, b) for a, b in zip(reference(noisy, config, bias, chunk_size, torch.float64)[0], values,
                                           strict=True)]
    assert max(moved) < tol / 10, f"1e-7 of input noise moves the reference by {max(moved):.1e}"
    off = reference(inputs | {"eta": 0.9 * inputs["eta"]}, config, bias, chunk_size, torch.float64)[0]
    assert max(rel_err(a, b) for a, b in zip(off, values, strict=True)) > 4 * tol


@pytest.mark.parametrize("momentum", [False, True])
@pytest.mark.parametrize(("chunk_size", "tol"), [(16, 5e-3), (64, 2e-2)])
def test_elastic_comparisons_are_well_posed(momentum, chunk_size, tol):
    """For test_gpu_paper_shapes_elastic."""
    assert_well_posed(make_inputs(*PAPER, "l2", "elastic", momentum=momentum), ELASTIC_PAPER, BiasConfig("l2"),
                      chunk_size, tol)


@pytest.mark.parametrize("name", ["titans", "moneta", "yaad", "memora"])
@pytest.mark.parametrize(("chunk_size", "tol"), [(16, 5e-3), (32, 2e-2)])
def test_channel_momentum_comparisons_are_well_posed(name, chunk_size, tol):
    """For test_gpu_paper_shapes_momentum_with_channel_alpha."""
    config, bias = NAMED[name]
    assert_well_posed(channel_momentum_inputs(name, *PAPER), config, bias, chunk_size, tol)


@pytest.mark.parametrize("name", ["moneta", "yaad", "memora"])
@pytest.mark.parametrize(("chunk_size", "tol"), [(16, 5e-3), (64, 2e-2)])
def test_channel_gate_comparisons_are_well_posed(name, chunk_size, tol):
    """For test_gpu_paper_shapes_with_channel_gates."""
    config, bias = NAMED[name]
    assert_well_posed(named_channel_inputs(name, *PAPER), config, bias, chunk_size, tol)
