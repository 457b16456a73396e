"""The kernels' reference (kernels.matrix_chunk.naive) == miras_search.memory's chunked
minibatch form, for every point the Triton kernel covers (float64, CPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from miras_search.kernels import kernel_for
from miras_search.kernels.dispatch import bias_config
from miras_search.kernels.matrix_chunk import naive_chunk_matrix_kl, naive_chunk_matrix_memory
from miras_search.memory import MemoryGates, MemoryRule, memory_forward
from miras_search.primitives import kl_log_weights
from miras_search.schema import ModelPoint
from miras_search.schema.bias import AttentionalBias
from miras_search.testing import axis_cases, check_kernel, kernel_cases
from miras_search.testing.conformance import axis_examples

HEAD = {"mode": "head"}
# every registered bias's examples, also with exact signs where it has the choice, that the
# matrix kernel covers (an Omega window's: test_kernels_omega.py)
BIASES = [
    {**example, **variant}
    for example in axis_examples()["bias"]
    for variant in ({}, {"smooth": False})
    if example.get("window", 1) == 1
    and (not variant or "smooth" in AttentionalBias.registry[example["kind"]].model_fields)
    and bias_config(AttentionalBias.registry[example["kind"]].model_validate({**example, **variant}))
]
# (alpha, algorithm, eta): a channel-wise eta steps each key channel; with a Huber bias of the
# coordinate or switch variant it also takes a threshold per value channel
GATES = [(None, "gd", "head"), ("head", "gd", "head"), ("channel", "gd", "head"),
         ("head", "momentum", "head"), ("channel", "gd", "channel"), (None, "momentum", "channel"),
         ("channel", "momentum", "channel")]


def point(bias: dict, alpha_mode: str | None, algorithm: str, eta_mode: str = "head",
          retention_kind: str = "l2") -> ModelPoint:
    """A matrix memory with these options; retention l2 (lq with ``retention_kind='lq'``: q = 4,
    Moneta's) with alpha in ``alpha_mode``, or none without it."""
    retention = {"kind": retention_kind, "alpha": {"mode": alpha_mode}} if alpha_mode else {"kind": "none"}
    if eta_mode == "channel" and bias.get("variant") in ("coordinate", "switch"):
        bias = {**bias, "delta": {"mode": "channel"}}
    return ModelPoint.model_validate({
        "memory": {"kind": "matrix", "init": "learned"}, "bias": bias, "retention": retention,
        "algorithm": {"kind": algorithm, "eta": {"mode": eta_mode}},
    })


def inputs(rule: MemoryRule, B: int = 2, T: int = 37, H: int = 2, K: int = 8) -> tuple:
    """(q, k, v, MemoryGates) in float64 for ``rule``: unit keys, each gate in its range and its
    rule's mode (per head, or per key / value channel)."""
    g = torch.Generator().manual_seed(0)

    def rand(gate: str, width: int, low: float, span: float) -> torch.Tensor | None:
        if gate not in rule.gate_modes:
            return None
        channel = (width,) if rule.gate_modes[gate] == "channel" else ()
        return span * torch.rand(B, T, H, *channel, generator=g, dtype=torch.float64) + low

    q = torch.randn(B, T, H, K, generator=g, dtype=torch.float64)
    k = F.normalize(torch.randn(B, T, H, K, generator=g, dtype=torch.float64), dim=-1)
    v = torch.randn(B, T, H, K, generator=g, dtype=torch.float64)
    gates = MemoryGates(rand("eta", K, 0.05, 0.3), rand("alpha", K, 0.8, 0.2), rand("theta", 1, 0.4, 0.5),
                        rand("delta", K, 0.3, 2.0))
    return q, k, v, gates


@pytest.mark.parametrize("bias", BIASES, ids=lambda b: b["kind"] + b.get("variant", "") + ("-hard" if b.get("smooth") is False else ""))
@pytest.mark.parametrize(("alpha_mode", "algorithm", "eta_mode"), GATES)
@pytest.mark.parametrize("retention_kind", ["l2", "lq"])
def test_reference_equals_memory_chunked_form(bias, alpha_mode, algorithm, eta_mode, retention_kind):
    if retention_kind == "lq" and alpha_mode is None:
        pytest.skip("lq always has a retention gate alpha")
    p = point(bias, alpha_mode, algorithm, eta_mode, retention_kind)
    kernel = kernel_for(p)
    assert kernel is not None
    rule, cfg = MemoryRule.from_point(p), bias_config(p.bias)
    q, k, v, gates = inputs(rule)
    params = [w.double() for w in rule.initial_parameters(2, 8, 8)]
    o_memory = memory_forward(rule, q, k, v, gates, params, "chunked", 16, "minibatch")
    lq = {"retention": "lq", "lq_exponent": 4.0} if retention_kind == "lq" else {}
    assert kernel.keywords["retention"] == p.retention.kind
    o_ref = naive_chunk_matrix_memory(q, k, v, gates.eta, gates.alpha, gates.theta, gates.delta, params[0],
                                      cfg, 16, **lq)
    assert ((o_memory - o_ref).norm() / o_ref.norm()).item() < 1e-10


KERNEL_CASES = kernel_cases(axis_cases())


@pytest.mark.parametrize(("label", "point"), KERNEL_CASES, ids=[c[0] for c in KERNEL_CASES])
def test_kernel_equals_memory_chunked_form(label: str, point: ModelPoint) -> None:
    """The conformance suite's kernel leg: the Triton kernel (float32; the interpreter without a
    GPU) against the PyTorch chunked form in float64, forward and every gradient, on the few
    registry cases that hold every option a kernel covers."""
    check_kernel(point)


@pytest.mark.parametrize(("bias", "alpha_mode", "algorithm"), [
    ({"kind": "l2"}, "channel", "gd"),
    ({"kind": "huber", "variant": "switch"}, None, "momentum"),
    ({"kind": "huber", "variant": "coordinate"}, "head", "gd"),
    ({"kind": "lp", "p": 3.0}, "head", "momentum"),
    ({"kind": "l2"}, "channel", "momentum"),
])
def test_kernel_with_a_channel_wise_eta_equals_memory(bias, alpha_mode, algorithm):
    """A matrix memory stepping each key channel on its own (and thresholding each value channel,
    for the Huber variants that take it) runs the Triton kernel, which equals the PyTorch form."""
    p = point(bias, alpha_mode, algorithm, "channel")
    assert p.algorithm.eta.mode == "channel" and kernel_for(p) is not None
    check_kernel(p)



@pytest.mark.parametrize(("bias", "alpha_mode", "algorithm", "eta_mode"), [
    ({"kind": "lp", "p": 3.0}, "head", "gd", "head"),
    ({"kind": "l2"}, "channel", "gd", "channel"),
    ({"kind": "huber", "variant": "switch"}, "head", "momentum", "channel"),
    ({"kind": "lp", "p": 3.0}, "channel", "momentum", "channel"),  # Moneta's axes with momentum
])
def test_kernel_with_lq_retention_equals_memory(bias, alpha_mode, algorithm, eta_mode):
    """A matrix memory with Moneta's lq retention runs the Triton kernel (the whole matrix in one
    program for its norm), which equals the PyTorch form: outputs and every gradient."""
    p = point(bias, alpha_mode, algorithm, eta_mode, "lq")
    assert kernel_for(p).keywords["retention"] == "lq"
    check_kernel(p)



@pytest.mark.parametrize("bias", BIASES, ids=lambda b: b["kind"] + b.get("variant", "") + ("-hard" if b.get("smooth") is False else ""))
@pytest.mark.parametrize(("alpha_mode", "eta_mode", "algorithm"), [
    ("head", "head", "gd"), ("channel", "channel", "gd"), ("head", "channel", "gd"), ("head", "channel", "momentum"),
    ("channel", "channel", "momentum"),
])
def test_kl_reference_equals_memory_chunked_form(bias, alpha_mode, eta_mode, algorithm):
    """naive_chunk_matrix_kl (segments with lag tokens, each token's exact map; momentum carried
    in log space) == the memory's chunked form with kl retention (c = 1.5), float64."""
    p = point(bias, alpha_mode, algorithm, eta_mode, "kl")
    data = p.model_dump()
    data["retention"]["scale"] = 1.5
    p = ModelPoint.model_validate(data)
    kernel = kernel_for(p)
    assert kernel is not None and kernel.keywords["retention"] == "kl"
    rule, cfg = MemoryRule.from_point(p), bias_config(p.bias)
    q, k, v, gates = inputs(rule)
    param = 0.3 * torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    o_memory = memory_forward(rule, q, k, v, gates, [param], "chunked", 16, "minibatch")  # param: raw W_0
    o_ref = naive_chunk_matrix_kl(q, k, v, gates.eta, gates.alpha, gates.delta, kl_log_weights(param, 1.5),
                                  cfg, 16, scale=1.5, theta=gates.theta)
    assert ((o_memory - o_ref).norm() / o_ref.norm()).item() < 1e-10


@pytest.mark.parametrize(("bias", "alpha_mode", "eta_mode", "algorithm"), [
    ({"kind": "l2"}, "channel", "channel", "gd"),  # Memora's axes on a matrix memory
    ({"kind": "huber", "variant": "switch"}, "head", "channel", "gd"),
    ({"kind": "lp", "p": 3.0}, "channel", "head", "gd"),
    ({"kind": "l2"}, "head", "channel", "momentum"),
    ({"kind": "l2"}, "channel", "channel", "momentum"),  # Memora's axes with momentum
])
def test_kernel_with_kl_retention_equals_memory(bias, alpha_mode, eta_mode, algorithm):
    """A matrix memory with kl retention runs the Triton kernel (kernels/matrix_chunk/kl.py),
    which equals the PyTorch form: outputs and every gradient."""
    p = point(bias, alpha_mode, algorithm, eta_mode, "kl")
    assert kernel_for(p).keywords["retention"] == "kl"
    check_kernel(p)


@pytest.mark.parametrize(("smooth", "algorithm", "alpha_mode"), [
    (True, "gd", "head"), (False, "momentum", "channel"), (False, "gd", "channel"),
])
def test_mlp_kernel_with_elastic_retention_equals_memory(smooth, algorithm, alpha_mode):
    """A 2-layer MLP memory with elastic retention (W' = shrink(raw) at each chunk's end, which
    its last token reads) runs the Triton kernel, equal to the PyTorch form over two chunks."""
    momentum = {"theta": HEAD} if algorithm == "momentum" else {}
    p = ModelPoint.model_validate({
        "memory": {"kind": "mlp", "depth": 2, "expansion": 2, "activation": "silu", "layer_norm": True},
        "bias": {"kind": "l2"},
        "retention": {"kind": "elastic", "threshold": 0.02, "smooth": smooth, "alpha": {"mode": alpha_mode}},
        "algorithm": {"kind": algorithm, "eta": HEAD, **momentum},
    })
    assert kernel_for(p).keywords["config"].retention == "elastic"
    check_kernel(p)
