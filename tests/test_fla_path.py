"""flash-linear-attention as the GPU path: which points map to which fla op, and the mapping
itself checked on CPU through fla's naive (plain torch) functions against our float64 recurrence.

fla's naive functions compute in float32 whatever their inputs (they cast), so the forward
outputs agree to float32 round-off (1e-5 relative here) and gradients to 1e-4; a wrong gate
convention (decay vs log-decay, read scale, state layout, Longhorn's step) is off by O(1).
The GPU tests (``-m gpu``) run fla's chunk kernels in bf16 against the float64 recurrence.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from miras_search.memory import MemoryRule, memory_forward
from miras_search.memory.fla_path import (
    FlaCall,
    fla_call,
    fla_gated_backward_problem,
    fla_op,
    fla_problem,
    uses_gated_dqkwg,
)
from miras_search.memory.kernel_path import kernel_problem
from miras_search.memory.testing import random_inputs
from miras_search.model.mixer import resolved_chunk_form
from miras_search.presets import preset

COVERED = {
    "deltanet": "delta_rule",
    "gated_deltanet": "gated_delta_rule",
    "longhorn": "delta_rule",
    "deltaproduct": "gated_delta_product",
    "linear_attention": "simple_gla",
    "retnet": "simple_gla",
    "mamba2": "simple_gla",
    "lightning_attention": "simple_gla",
    "gla": "gla",
    "hgrn2": "gla",
    "rwkv7": "dplr_delta_rule",
}
NOT_COVERED = ["ttt_linear", "titans", "moneta", "yaad", "memora", "ttt_mlp", "transformer"]
LENGTHS = [1, 7, 63, 100]


def _rule_and_form(name: str) -> tuple[MemoryRule, str]:
    point = preset(name)
    return MemoryRule.from_point(point), resolved_chunk_form(point)


@pytest.mark.parametrize("name", sorted(COVERED))
def test_presets_map_to_their_fla_op(name: str) -> None:
    rule, form = _rule_and_form(name)
    assert fla_op(rule, "chunked", form) == (COVERED[name], "")


@pytest.mark.parametrize("name", NOT_COVERED)
def test_other_presets_have_no_fla_op_and_say_why(name: str) -> None:
    rule, form = _rule_and_form(name)
    op, reason = fla_op(rule, "chunked", form)
    assert op is None
    assert reason


def test_forms_that_fla_does_not_compute_are_refused() -> None:
    rule, _ = _rule_and_form("gated_deltanet")
    assert fla_op(rule, "recurrent", "exact_delta")[0] is None
    op, reason = fla_op(rule, "chunked", "minibatch")  # the paper's approximation, not the delta rule
    assert op is None and "mini-batch" in reason
    titans_order = MemoryRule.from_point(preset("gated_deltanet", retention={
        "kind": "l2", "alpha": {"mode": "head", "value": 0.95}, "gradient_at": "previous"}))
    assert fla_op(titans_order, "chunked", "exact_delta")[0] is None
    windowed = MemoryRule.from_point(preset("gated_deltanet", bias={"kind": "l2", "window": 4}))
    op, reason = fla_op(windowed, "chunked", "exact_delta")  # Atlas's Omega window: not fla's
    assert op is None and "Omega window" in reason


def test_cpu_tensors_run_our_path() -> None:
    rule, form = _rule_and_form("gated_deltanet")
    q = torch.zeros(1, 4, 2, 8)
    assert "CUDA" in fla_problem(rule, q, "chunked", form)
    reason = kernel_problem(rule, q, q, 16, "auto", "chunked", form)
    assert reason is not None and "fla" in reason
    assert kernel_problem(rule, q, q, 16, "torch", "chunked", form) == "train.kernel is 'torch'"


# --- the mapping, through fla's naive functions ------------------------------------------------

def _naive(call: FlaCall) -> torch.Tensor:
    """fla's naive reference for the op ``call`` names: o [B, T, H, V]."""
    if call.op in ("delta_rule", "gated_delta_rule"):
        from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule
        g = call.g if call.g is not None else torch.zeros_like(call.beta)
        return naive_recurrent_gated_delta_rule(
            call.q, call.k, call.v, beta=call.beta, g=g, scale=1.0, initial_state=call.initial_state
        )[0]
    if call.op == "gated_delta_product":
        from fla.ops.gated_delta_product.naive import naive_recurrent_gated_delta_product
        return naive_recurrent_gated_delta_product(
            call.q, call.k, call.v, call.g, call.beta, scale=1.0, initial_state=call.initial_state,
            num_householder=call.steps,
        )[0]
    if call.op == "simple_gla":
        from fla.ops.simple_gla.naive import naive_recurrent_simple_gla
        g = call.g if call.g is not None else call.q.new_zeros(call.q.shape[:3])
        return naive_recurrent_simple_gla(call.q, call.k, call.v, g, scale=1.0,
                                          initial_state=call.initial_state)[0]
    assert call.op in ("gla", "dplr_delta_rule")
    # naive_recurrent_gla and dplr_recurrence read with K^-0.5 fixed; the mapped call reads with 1
    q = call.q * math.sqrt(call.q.shape[-1])
    if call.op == "dplr_delta_rule":
        from fla.ops.generalized_delta_rule.dplr.naive import dplr_recurrence
        gk = call.g if call.g is not None else torch.zeros_like(call.k)
        # in float32 throughout, as fla's other naive functions (it casts all but a)
        heads_first = [x.float().transpose(1, 2) for x in (q, call.k, call.v, call.a, call.beta, gk)]
        h0 = None if call.initial_state is None else call.initial_state.float()
        return dplr_recurrence(*heads_first, initial_state=h0)[0].transpose(1, 2)
    from fla.ops.gla.naive import naive_recurrent_gla
    return naive_recurrent_gla(q, call.k, call.v, call.g, initial_state=call.initial_state)[0]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _channel(rule: MemoryRule) -> tuple[str, ...]:
    return tuple(name for name, mode in rule.gate_modes.items() if mode == "channel")


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("name", sorted(COVERED))
def test_mapping_matches_fla_naive_forward_and_gradients(name: str, length: int) -> None:
    pytest.importorskip("fla.ops", reason="fla-core is not installed (pip install fla-core, or "
                        "the dev / gpu extra): the mapping is checked through its naive functions")
    rule, form = _rule_and_form(name)
    q, k, v, gates, params = random_inputs(rule, 2, length, 2, 8, seed=length, channel=_channel(rule),
                                           requires_grad=True)
    if rule.learned_init is False and name in ("deltanet", "gated_deltanet"):
        # a learned initial state (init 'learned') exercises the state mapping too
        rule.init = "learned"
        torch.manual_seed(length)
        params = [p.double().requires_grad_(True) for p in rule.initial_parameters(2, 8, 8)]
    expected = memory_forward(rule, q, k, v, gates, params, mode="recurrent")
    call = fla_call(rule, q, k, v, gates, params, torch.float64, op=fla_op(rule, "chunked", form)[0])
    assert call.op == COVERED[name]
    got = _naive(call)
    assert got.shape == expected.shape
    assert _rel(got.double(), expected) < 1e-5

    weight = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    leaves = [x for x in (q, k, v, gates.eta, gates.alpha, gates.write_key, *params) if x is not None]
    want = torch.autograd.grad((expected * weight).sum(), leaves)
    have = torch.autograd.grad((got.double() * weight).sum(), leaves)
    for leaf_want, leaf_have in zip(want, have, strict=True):
        assert _rel(leaf_have, leaf_want) < 1e-4


@pytest.mark.parametrize("name", ["deltaproduct", "gated_deltanet", "retnet", "gla"])
def test_one_head_and_trailing_unit_gates_map_too(name: str) -> None:
    """H = 1 (a per-head gate [B, T, 1] is not a channel-wise one) and gates given as [..., H, 1]."""
    pytest.importorskip("fla.ops", reason="fla-core is not installed")
    rule, form = _rule_and_form(name)
    q, k, v, gates, params = random_inputs(rule, 2, 7, 1, 8, channel=_channel(rule))
    expected = memory_forward(rule, q, k, v, gates, params, mode="recurrent")
    op = fla_op(rule, "chunked", form)[0]
    assert _rel(_naive(fla_call(rule, q, k, v, gates, params, torch.float64, op)).double(), expected) < 1e-5
    if not _channel(rule):
        unit = type(gates)(**{f: None if getattr(gates, f) is None else getattr(gates, f).unsqueeze(-1)
                              for f in ("eta", "alpha", "theta", "delta")})
        got = _naive(fla_call(rule, q, k, v, unit, params, torch.float64, op)).double()
        assert _rel(got, expected) < 1e-5


RWKV7_AXES = {
    "retention": {"kind": "l2", "gradient_at": "previous", "alpha": {"mode": "channel", "value": 0.95}},
    "algorithm": {"kind": "gd", "write_key": "lerp", "eta": {"mode": "channel", "value": 0.5}},
}


@pytest.mark.parametrize(("gradient_at", "alpha", "eta"), [
    ("previous", "channel", "channel"),  # RWKV-7 itself
    ("retained", "channel", "channel"),  # the removal reads W diag(alpha_t): fla's a = alpha_t * k_t
    ("retained", "head", "head"),
    ("previous", "head", "channel"),
    (None, None, "head"),                # retention none: gk = 0
])
def test_generalized_delta_rule_variants_match_fla_naive(gradient_at, alpha, eta) -> None:
    """RWKV-7's rule with either gradient point, gates per head or per channel, no retention:
    fla's diagonal-plus-low-rank rule, forward and gradients (w.r.t. the write key too)."""
    pytest.importorskip("fla.ops", reason="fla-core is not installed")
    retention = ({"kind": "none"} if gradient_at is None else
                 {"kind": "l2", "gradient_at": gradient_at, "alpha": {"mode": alpha, "value": 0.95}})
    algorithm = {**RWKV7_AXES["algorithm"], "eta": {"mode": eta, "value": 0.5}}
    point = preset("rwkv7", retention=retention, algorithm=algorithm)
    rule, form = MemoryRule.from_point(point), resolved_chunk_form(point)
    assert fla_op(rule, "chunked", form) == ("dplr_delta_rule", "")
    q, k, v, gates, params = random_inputs(rule, 2, 63, 2, 8, seed=3, channel=_channel(rule),
                                           requires_grad=True, alpha_low=0.5)
    expected = memory_forward(rule, q, k, v, gates, params, mode="recurrent")
    got = _naive(fla_call(rule, q, k, v, gates, params, torch.float64)).double()
    assert _rel(got, expected) < 1e-5
    weight = torch.randn(expected.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    leaves = [x for x in (q, k, v, gates.eta, gates.alpha, gates.write_key) if x is not None]
    want = torch.autograd.grad((expected * weight).sum(), leaves)
    have = torch.autograd.grad((got * weight).sum(), leaves)
    for leaf_want, leaf_have in zip(want, have, strict=True):
        assert _rel(leaf_have, leaf_want) < 1e-4


def test_the_generalized_rule_check_sees_the_wrong_gradient_point() -> None:
    """Mapping RWKV-7's removal as if the gradient were taken at the retained memory (a =
    alpha_t * k_t) is caught: the check tells the two gradient points apart."""
    pytest.importorskip("fla.ops", reason="fla-core is not installed")
    rule, _ = _rule_and_form("rwkv7")
    q, k, v, gates, params = random_inputs(rule, 1, 31, 2, 8, channel=_channel(rule), alpha_low=0.3)
    expected = memory_forward(rule, q, k, v, gates, params, mode="recurrent")
    call = fla_call(rule, q, k, v, gates, params, torch.float64)
    call.a = call.a * gates.alpha
    assert _rel(_naive(call).double(), expected) > 1e-2


def test_the_check_sees_a_wrong_convention() -> None:
    """The naive comparison fails when the read scale is fla's default K^-0.5 instead of 1."""
    pytest.importorskip("fla.ops", reason="fla-core is not installed")
    rule, _ = _rule_and_form("gated_deltanet")
    q, k, v, gates, params = random_inputs(rule, 1, 7, 2, 8)
    expected = memory_forward(rule, q, k, v, gates, params, mode="recurrent")
    call = fla_call(rule, q, k, v, gates, params, torch.float64)
    call.q = call.q / math.sqrt(8)
    assert _rel(_naive(call).double(), expected) > 0.1


@pytest.mark.parametrize(("name", "gated"), [("gated_deltanet", True), ("retnet", True), ("mamba2", True),
                                             ("deltanet", False), ("linear_attention", False), ("gla", False),
                                             ("rwkv7", False)])
def test_which_ops_run_the_gated_dqkwg(name: str, gated: bool) -> None:
    rule, form = _rule_and_form(name)
    assert uses_gated_dqkwg(rule, fla_op(rule, "chunked", form)[0]) is gated


@pytest.mark.parametrize(("hopper", "triton_3_4", "triton_3_7_1", "registered", "refused"), [
    (True, True, False, True, False),    # fla issue #640: our chunk_bwd_dqkwg takes the call
    (True, True, False, False, True),    # ... an fla without backends: refused
    (True, True, True, False, False),    # a fixed Triton
    (False, True, False, False, False),  # not a Hopper GPU
    (True, False, False, False, False),  # Triton before the regression
])
def test_fla_gated_backward_is_refused_only_where_fla_refuses_it_and_no_backend_takes_it(
        monkeypatch, hopper, triton_3_4, triton_3_7_1, registered, refused) -> None:
    fla_utils = pytest.importorskip("fla.utils", reason="fla-core is not installed")
    import miras_search.memory.fla_path as fla_path

    monkeypatch.setattr(fla_utils, "IS_NVIDIA_HOPPER", hopper)
    monkeypatch.setattr(fla_utils, "TRITON_ABOVE_3_4_0", triton_3_4)
    monkeypatch.setattr(fla_utils, "TRITON_ABOVE_3_7_1", triton_3_7_1)
    monkeypatch.setattr(fla_path, "register_fla_backend", lambda: registered)
    fla_gated_backward_problem.cache_clear()
    try:
        reason = fla_gated_backward_problem()
    finally:
        fla_gated_backward_problem.cache_clear()
    assert (reason is not None) is refused
    if refused:
        assert "3.7.1" in reason and "#640" in reason


# --- on a GPU: fla's chunk kernels in bf16 against our float64 recurrence -----------------------

@pytest.mark.gpu
@pytest.mark.parametrize("length", [1, 100, 1000])
@pytest.mark.parametrize("name", sorted(COVERED))
def test_fla_kernels_match_the_float64_recurrence(name: str, length: int) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("fla.ops", reason="fla-core is not installed (the gpu extra)")
    rule, form = _rule_and_form(name)
    # the float64 reference runs on the GPU too (on the CPU it took most of the test step's time)
    q64, k64, v64, g64, p64 = _on_cuda(*random_inputs(rule, 2, length, 4, 64, seed=length,
                                                      channel=_channel(rule)), dtype=torch.float64)
    ref = memory_forward(rule, q64, k64, v64, g64, p64, mode="recurrent")
    qc, kc, vc, gc, pc = _on_cuda(q64, k64, v64, g64, p64, dtype=torch.float32)
    # where fla refuses its gated backward (Hopper with Triton 3.4 to 3.7.0), our path runs instead
    refused = fla_gated_backward_problem() if uses_gated_dqkwg(rule, COVERED[name]) else None
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert fla_problem(rule, qc, "chunked", form) == refused
        got = memory_forward(rule, qc, kc, vc, gc, pc, chunk_size=64, chunk_form=form, kernel="auto")
    assert _rel(got.double(), ref) < 2e-2

    weight = torch.randn(ref.shape, dtype=torch.float64, device=ref.device)
    want = torch.autograd.grad((ref * weight).sum(), [q64, k64, v64, g64.eta])
    have = torch.autograd.grad((got.double() * weight).sum(), [qc, kc, vc, gc.eta])
    for leaf_want, leaf_have in zip(want, have, strict=True):
        assert _rel(leaf_have.double(), leaf_want) < 5e-2


def _on_cuda(q, k, v, gates, params, dtype):
    """The inputs as new leaves on the GPU in ``dtype`` (gradients taken w.r.t. them)."""
    def leaf(x):
        return None if x is None else x.detach().to("cuda", dtype).requires_grad_(True)

    moved = type(gates)(**{f.name: leaf(getattr(gates, f.name)) for f in dataclasses.fields(gates)})
    return leaf(q), leaf(k), leaf(v), moved, [leaf(p) for p in params]


# --- the dispatch, with fla's kernels stood in for by its naive functions ----------------------

@pytest.fixture
def fla_here(monkeypatch):
    """As on a CUDA machine with fla installed: every covered call takes the fla path, whose
    kernels are fla's naive functions here. Yields the ops called."""
    pytest.importorskip("fla.ops", reason="fla-core is not installed")
    import miras_search.memory.fla_path as fla_path
    import miras_search.memory.kernel_path as kernel_path

    def problem(rule, q, mode="chunked", chunk_form="minibatch"):
        op, reason = fla_op(rule, mode, chunk_form)
        return reason if op is None else None

    called: list[str] = []

    def run(call):
        called.append(call.op)
        return _naive(call).to(call.q.dtype)

    monkeypatch.setattr(fla_path, "fla_problem", problem)
    monkeypatch.setattr(kernel_path, "fla_problem", problem)
    monkeypatch.setattr(fla_path, "run_fla", run)
    return called


@pytest.mark.parametrize("name", ["gated_deltanet", "deltaproduct", "gla", "retnet"])
def test_memory_forward_auto_routes_covered_points_to_fla(fla_here, name):
    rule, form = _rule_and_form(name)
    q, k, v, gates, params = random_inputs(rule, 2, 37, 2, 8, channel=_channel(rule))
    expected = memory_forward(rule, q, k, v, gates, params, mode="recurrent")
    got = memory_forward(rule, q, k, v, gates, params, chunk_size=16, chunk_form=form, kernel="auto")
    assert fla_here == [COVERED[name]]
    assert _rel(got, expected) < 1e-5
    # 'torch' never takes it, and neither does the token-by-token reference
    memory_forward(rule, q, k, v, gates, params, chunk_size=16, chunk_form=form, kernel="torch")
    memory_forward(rule, q, k, v, gates, params, mode="recurrent", kernel="auto")
    assert fla_here == [COVERED[name]]


@pytest.mark.parametrize("name", sorted(COVERED))
def test_a_model_runs_its_covered_layers_on_fla_with_the_same_output(fla_here, name):
    """The block's own gates (constant, retnet, per-head, channel-wise, HGRN2's key) go through
    the mapping: the model's loss equals the PyTorch path's."""
    from miras_search.model import build_model

    point = preset(name, block={"d_model": 32, "n_heads": 2, "n_layers": 2})
    torch.manual_seed(0)
    model = build_model(point, "cpu").double()
    tokens = torch.randint(0, 256, (2, 19))
    _, loss = model(tokens, tokens)
    assert model.kernel_problems() == [None, None]
    assert fla_here == [COVERED[name]] * 2
    model.set_memory_form(mode="recurrent")
    _, reference = model(tokens, tokens)
    assert abs(loss.item() - reference.item()) < 1e-5 * abs(reference.item())


def test_layers_fla_does_not_cover_report_why(fla_here):
    from miras_search.model import build_model

    tokens = torch.randint(0, 256, (2, 19))
    moneta = build_model(preset("moneta", block={"d_model": 32, "n_heads": 2, "n_layers": 1}), "cpu")
    moneta(tokens, tokens)
    assert all(problem is not None for problem in moneta.kernel_problems())
