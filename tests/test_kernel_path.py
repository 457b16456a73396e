"""memory_forward's kernel switch: auto / triton / torch, and the errors when a kernel cannot run.

Without CUDA a forced kernel runs in Triton's interpreter, which Triton reads when the kernels are
decorated (first import), so tests/conftest.py sets TRITON_INTERPRET before anything imports them.
"""

from __future__ import annotations

import pytest
import torch

CUDA = torch.cuda.is_available()  # without it, conftest.py has set TRITON_INTERPRET=1

from miras_search.errors import UnsupportedPoint  # noqa: E402
from miras_search.memory import MemoryGates, MemoryRule, memory_forward  # noqa: E402
from miras_search.presets import preset  # noqa: E402

# a kernel that quietly fell back to the PyTorch form would pass every comparison here
pytestmark = pytest.mark.filterwarnings("error::miras_search.kernels.KernelFallbackWarning")

def _inputs(point_name: str, device: str, dtype=torch.float32, T: int = 37):
    rule = MemoryRule.from_point(preset(point_name))
    gen = torch.Generator().manual_seed(0)
    B, H, K = 2, 2, 16
    q, k = (torch.nn.functional.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1) for _ in range(2))
    v = torch.randn(B, T, H, K, generator=gen)
    eta = torch.rand(B, T, H, generator=gen) * 0.5 + 0.1
    alpha = torch.rand(B, T, H, generator=gen) * 0.1 + 0.9
    needs = rule.needs()
    gates = MemoryGates(
        eta=eta, alpha=alpha if "alpha" in needs else None,
        theta=torch.full((B, T, H), 0.8) if "theta" in needs else None,
        delta=torch.full((B, T, H), 1.0) if "delta" in needs else None,
    )
    params = [p.to(device, dtype) for p in rule.initial_parameters(H, K, K)]
    moved = [x.to(device, dtype) for x in (q, k, v)]
    gates = MemoryGates(**{n: (None if g is None else g.to(device)) for n, g in vars(gates).items()})
    return rule, moved, gates, params


def _assert_kernel_matches_pytorch(rule, q, k, v, gates, params) -> None:
    """The forced kernel and the PyTorch chunked form agree: outputs and d/dq, rel. err <= 5e-3."""
    fused = memory_forward(rule, q, k, v, gates, params, chunk_size=16, kernel="triton")
    reference = memory_forward(rule, q, k, v, gates, params, chunk_size=16, kernel="torch")
    assert ((fused - reference).norm() / reference.norm()).item() <= 5e-3
    (g_fused,) = torch.autograd.grad(fused.square().sum(), q)
    (g_ref,) = torch.autograd.grad(reference.square().sum(), q)
    assert ((g_fused - g_ref).norm() / g_ref.norm()).item() <= 5e-3


def test_forcing_triton_on_an_uncovered_point_names_the_reason():
    if CUDA:
        pytest.skip("this checks the CPU error")
    rule, (q, k, v), gates, params = _inputs("longhorn", "cpu")  # implicit step: no kernel
    with pytest.raises(UnsupportedPoint, match=r"train\.kernel 'triton'.*algorithm 'implicit'"):
        memory_forward(rule, q, k, v, gates, params, chunk_size=16, kernel="triton")


def test_auto_falls_back_to_pytorch_where_no_kernel_runs():
    rule, (q, k, v), gates, params = _inputs("ttt_linear", "cpu")
    auto = memory_forward(rule, q, k, v, gates, params, chunk_size=16, kernel="auto")
    torch_form = memory_forward(rule, q, k, v, gates, params, chunk_size=16, kernel="torch")
    assert torch.equal(auto, torch_form)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("name", ["ttt_linear", "mamba2", "gla", "linear_attention", "titans", "ttt_mlp"])
def test_auto_uses_the_kernel_and_matches_pytorch_on_gpu(name):
    rule, (q, k, v), gates, params = _inputs(name, "cuda")
    for tensor in (q, k, v):
        tensor.requires_grad_(True)
    _assert_kernel_matches_pytorch(rule, q, k, v, gates, params)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["ttt_linear", "mamba2"])
def test_forced_kernel_runs_under_the_interpreter_and_matches_pytorch(name):
    """On CPU, train.kernel 'triton' runs the kernel through Triton's interpreter (the wiring
    that CUDA uses by default): same outputs and input gradients as the PyTorch chunked form."""
    if CUDA:
        pytest.skip("the GPU test covers this")
    pytest.importorskip("triton")
    rule, (q, k, v), gates, params = _inputs(name, "cpu", T=21)
    q.requires_grad_(True)
    _assert_kernel_matches_pytorch(rule, q, k, v, gates, params)


@pytest.mark.gpu
def test_kernel_problem_says_which_path_a_call_takes(monkeypatch):
    import triton

    from miras_search.memory.kernel_path import kernel_problem

    monkeypatch.setattr(triton, "__version__", "3.9.0")  # one the limits were measured with

    # a forced kernel takes CPU tensors only in the interpreter, which a CUDA machine does not run
    rule, (q, _, v), _, _ = _inputs("gated_deltanet", "cuda" if CUDA else "cpu")
    assert kernel_problem(rule, q, v, 16, "torch") == "train.kernel is 'torch'"
    assert "not recurrent / minibatch" in kernel_problem(rule, q, v, 16, "auto", mode="recurrent")
    assert "chunk_size 8" in kernel_problem(rule, q, v, 8, "triton")
    if CUDA:
        assert kernel_problem(rule, q, v, 16, "auto") is None
        assert kernel_problem(rule, q.cpu(), v.cpu(), 16, "triton") == "the inputs are not on a CUDA device"
    else:
        assert kernel_problem(rule, q, v, 16, "auto") == "the inputs are not on a CUDA device"
        assert kernel_problem(rule, q, v, 16, "triton") is None  # forced: the interpreter runs it
    attention = MemoryRule.from_point(preset("transformer"))
    assert kernel_problem(attention, q, v, 16, "auto") == "the layer is softmax attention"


def test_token_tensors_past_int32_run_pytorch(monkeypatch):
    """The kernels index tokens with int32 offsets: past 2^31 elements of [B, T, H, D] a forced
    kernel says so and auto takes the PyTorch form (shapes on the meta device: nothing is
    allocated; on CPU the forced kernel would run in the interpreter)."""
    import triton

    from miras_search.kernels.limits import MAX_TOKEN_ELEMENTS, token_tensor_problem
    from miras_search.memory.kernel_path import kernel_problem

    assert token_tensor_problem(1, MAX_TOKEN_ELEMENTS, 1, 1) is None
    assert "2147483648 elements" in token_tensor_problem(2, 2**24, 4, 16)
    assert "B x H = 8192 x 16" in token_tensor_problem(8192, 1, 16, 16)
    assert token_tensor_problem(4095, 1, 16, 16) is None  # 65520 sequences
    if CUDA:
        pytest.skip("the forced path below runs on CPU tensors only without CUDA")
    monkeypatch.setattr(triton, "__version__", "3.9.0")
    rule = MemoryRule.from_point(preset("gated_deltanet"))
    q = torch.empty(2, 2**24, 8, 16, device="meta")
    assert "int32 offsets" in kernel_problem(rule, q, q, 16, "triton")
    assert kernel_problem(rule, q[:, : 2**22], q[:, : 2**22], 16, "triton") is None


@pytest.mark.gpu
def test_trials_report_which_memory_layers_ran_a_kernel():
    """kernel_share: on this CPU the memory layers run the PyTorch form (auto needs CUDA), on a
    GPU the covered point runs its kernel in every layer (bf16 autocast). Points with no memory
    layer report none. (Here rather than in test_trial.py: the GPU machine lacks the study stack.)"""
    from miras_search.schema import ModelPoint
    from miras_search.trial import TrialConfig, run_trial

    config = TrialConfig.model_validate({"data": [{"task": "text"}], "tokens": 1024, "batch_size": 4,
                                         "seq_len": 32, "eval_batches": 1})
    results = {}
    for name in ("moneta", "transformer"):
        spec = preset(name).model_dump()
        spec["block"].update({"d_model": 32, "n_heads": 2, "n_layers": 1, "max_seq_len": 512})
        results[name] = run_trial(ModelPoint.model_validate(spec), config)
        assert results[name].ok, results[name].reason
    assert results["moneta"].metrics["kernel_share"] == (1.0 if CUDA else 0.0)
    assert "kernel_share" not in results["transformer"].metrics


@pytest.mark.gpu
def test_auto_leaves_triton_versions_older_than_the_limits_alone(monkeypatch):
    import triton

    from miras_search.kernels.limits import triton_calibrated
    from miras_search.memory.kernel_path import kernel_problem

    assert triton_calibrated("3.6.0") and triton_calibrated("3.10.1") and triton_calibrated("4.0.0")
    assert not triton_calibrated("3.2.0") and not triton_calibrated("2.3.1")
    rule, (q, _, v), _, _ = _inputs("gated_deltanet", "cuda" if CUDA else "cpu")
    monkeypatch.setattr(triton, "__version__", "3.2.0")
    assert "Triton 3.2.0 is older than 3.6" in kernel_problem(rule, q, v, 16, "auto")
    if not CUDA:
        assert kernel_problem(rule, q, v, 16, "triton") is None  # forced: still runs


@pytest.mark.gpu
@pytest.mark.parametrize("gradient_at", ["retained", "previous"])
def test_both_gradient_points_of_l2_retention_run_on_the_matrix_kernel(gradient_at):
    """Gated DeltaNet's order and Titans' order: the kernel equals the PyTorch chunked form."""
    if CUDA:
        pytest.skip("the GPU tests cover the kernels")
    pytest.importorskip("triton")
    from miras_search.schema import ModelPoint

    data = preset("gated_deltanet").model_dump()
    data["retention"]["gradient_at"] = gradient_at
    _, (q, k, v), gates, params = _inputs("gated_deltanet", "cpu", T=21)
    gates = MemoryGates(eta=gates.eta, alpha=gates.alpha * 0.7)  # a strong decay: the orders differ
    rule = MemoryRule.from_point(ModelPoint.model_validate(data))
    q.requires_grad_(True)
    _assert_kernel_matches_pytorch(rule, q, k, v, gates, params)
