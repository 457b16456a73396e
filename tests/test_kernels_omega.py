"""Atlas's Omega window on the chunk kernels (kernels/omega.py): c' entries per token, gd on the
matrix and MLP kernels, momentum on the matrix kernel (its momentum mask).

The matrix and MLP kernels with a window (float32; Triton's interpreter without a GPU) against
the PyTorch chunked form in float64 (``miras_search.memory.materialised``), forward and every
gradient (gamma's included), over odd lengths, chunk sizes, windows that need padding entries
(3 at chunk 16 runs 4 entries per token), per-head and per-lag gammas, channel-wise gates, the
biases with a threshold and momentum (S joining W once per token, at its last entry);
test_atlas.py checks the kernel against the paper's Eq. 9 loop.
"""

from __future__ import annotations

import pytest
import torch

from miras_search.errors import UnsupportedPoint
from miras_search.memory import MemoryRule, memory_forward
from miras_search.memory.kernel_path import atlas_problem, kernel_problem
from miras_search.schema import ModelPoint
from miras_search.testing import check_kernel
from miras_search.testing.conformance import case_inputs

pytest.importorskip("triton")
from miras_search.kernels import kernel_for
from miras_search.kernels.dispatch import shape_problem
from miras_search.kernels.matrix_chunk import naive_chunk_matrix_memory, recurrent_matrix_memory
from miras_search.kernels.omega import window_entries, window_problem

pytestmark = pytest.mark.filterwarnings("error::miras_search.kernels.KernelFallbackWarning")
CUDA = torch.cuda.is_available()

CHANNEL = {"mode": "channel"}
CASES = {
    "matrix-l2": dict(memory={"kind": "matrix"}, bias={"kind": "l2", "window": 2},
                      retention={"kind": "l2"}, algorithm={"kind": "gd"}),
    "matrix-previous-per-lag": dict(
        memory={"kind": "matrix", "init": "learned"},
        bias={"kind": "l2", "window": 3, "gamma": {"mode": "channel", "value": 0.5}},
        retention={"kind": "l2", "gradient_at": "previous", "alpha": CHANNEL},
        algorithm={"kind": "gd", "eta": CHANNEL}),
    "matrix-huber-no-retention": dict(
        memory={"kind": "matrix"},
        bias={"kind": "huber", "variant": "coordinate", "window": 4, "delta": CHANNEL},
        retention={"kind": "none"}, algorithm={"kind": "gd"}),
    "matrix-dot": dict(memory={"kind": "matrix"}, bias={"kind": "dot", "window": 2},
                       retention={"kind": "l2"}, algorithm={"kind": "gd"}),
    "matrix-momentum": dict(memory={"kind": "matrix"}, bias={"kind": "l2", "window": 2},
                            retention={"kind": "l2"}, algorithm={"kind": "momentum"}),
    "matrix-momentum-previous-per-lag": dict(
        memory={"kind": "matrix", "init": "learned"},
        bias={"kind": "huber", "variant": "coordinate", "window": 3, "delta": CHANNEL,
              "gamma": {"mode": "channel", "value": 0.5}},
        retention={"kind": "l2", "gradient_at": "previous"}, algorithm={"kind": "momentum", "eta": CHANNEL}),
    "matrix-momentum-no-retention": dict(
        memory={"kind": "matrix"}, bias={"kind": "dot", "window": 4},
        retention={"kind": "none"}, algorithm={"kind": "momentum"}),
    "mlp-l2-per-lag": dict(
        memory={"kind": "mlp", "expansion": 2},
        bias={"kind": "l2", "window": 4, "gamma": {"mode": "channel", "value": 0.5}},
        retention={"kind": "l2", "alpha": CHANNEL}, algorithm={"kind": "gd", "eta": CHANNEL}),
    "mlp-lp-previous": dict(
        memory={"kind": "mlp", "expansion": 2}, bias={"kind": "lp", "p": 3.0, "window": 3},
        retention={"kind": "l2", "gradient_at": "previous"}, algorithm={"kind": "gd"}),
    "mlp-huber-switch": dict(
        memory={"kind": "mlp", "expansion": 2},
        bias={"kind": "huber", "variant": "switch", "window": 2, "delta": CHANNEL},
        retention={"kind": "none"}, algorithm={"kind": "gd"}),
}
LENGTHS = [(1, 16), (7, 8), (63, 16), (100, 16)]
# the channel-wise MLP case runs the interpreter's slowest kernel (per-channel decayed scores):
# 37 tokens there, where 100 took half a minute
CASE_LENGTHS = [(name, length, chunk) for name in CASES for length, chunk in LENGTHS
                if name != "mlp-l2-per-lag" or length < 63] + [("mlp-l2-per-lag", 37, 16)]


@pytest.mark.parametrize(("window", "chunk", "entries"), [
    (2, 16, 2), (3, 16, 4), (4, 16, 4), (5, 16, None), (2, 32, 2), (3, 32, None), (2, 64, None),
    (2, 8, 2), (3, 8, 4), (8, 8, 8), (2, 1, 16), (16, 1, 16), (2, 12, None),
])
def test_window_entries(window: int, chunk: int, entries: int | None) -> None:
    """The fewest entries per token whose chunk (chunk x entries) the kernels take."""
    assert window_entries(window, chunk) == entries
    assert (window_problem(window, chunk) is None) == (entries is not None)


@pytest.mark.parametrize(("name", "length", "chunk"), CASE_LENGTHS)
def test_window_kernel_equals_the_pytorch_chunked_form(name: str, length: int, chunk: int) -> None:
    point = ModelPoint(**CASES[name])
    assert kernel_for(point) is not None and kernel_for(MemoryRule.from_point(point)) is not None
    check_kernel(point, length=length, chunk=chunk)


@pytest.mark.parametrize("name", ["matrix-l2", "mlp-huber-switch"])
def test_window_of_two_at_chunk_32(name: str) -> None:
    check_kernel(ModelPoint(**CASES[name]), length=70, chunk=32)


def test_bf16_inputs_within_the_kernels_tolerance() -> None:
    """bf16 q, k, v (the GPU's training dtype) through the window entries: within 2e-2 of the
    float64 form, as every kernel's bf16 tests."""
    rule = MemoryRule.from_point(ModelPoint(**CASES["mlp-l2-per-lag"]))
    q, k, v, gates, params = case_inputs(rule, 37, batch=1, dim=16)
    with torch.no_grad():
        wide = memory_forward(rule, q, k, v, gates, params, chunk_size=16)
        narrow = [x.to(torch.bfloat16) for x in (q, k, v)]
        gates32 = type(gates)(**{n: None if x is None else x.float() for n, x in vars(gates).items()})
        got = memory_forward(rule, *narrow, gates32, [p.float() for p in params], chunk_size=16, kernel="triton")
    assert got.dtype == torch.bfloat16
    assert ((got.double() - wide).norm() / wide.norm()).item() < 2e-2


@pytest.mark.parametrize(("case", "axes", "needle"), [
    ("mlp-lp-previous", {"algorithm": {"kind": "momentum"}}, "on a matrix memory only"),
    ("matrix-momentum", {"retention": {"kind": "l2", "alpha": CHANNEL}}, "channel-wise alpha"),
    ("matrix-l2", {"algorithm": {"kind": "muon"}}, "muon"),
])
def test_window_with_momentum_elsewhere_or_muon_has_no_kernel(case: str, axes: dict, needle: str) -> None:
    """The window runs with momentum on the matrix kernel only, with alpha per head or none and
    retention none, l2 or lq (its momentum mask); elsewhere the PyTorch form runs and says why."""
    point = ModelPoint(**{**CASES[case], **axes})
    rule = MemoryRule.from_point(point)
    assert kernel_for(point) is None and kernel_for(rule) is None
    q, k, v, gates, params = case_inputs(rule, 5, batch=1, dim=16)
    assert needle in atlas_problem(rule, q, v)
    with pytest.raises(UnsupportedPoint, match="cannot run this memory layer"):
        memory_forward(rule, q.float(), k.float(), v.float(), gates, params, chunk_size=16, kernel="triton")


@pytest.mark.parametrize("lq", [False, True])
@pytest.mark.parametrize("alpha", [True, False])
@pytest.mark.parametrize("length", [1, 7, 63, 100])
def test_momentum_mask_chunked_reference_equals_its_token_loop(length: int, alpha: bool, lq: bool) -> None:
    """The matrix kernel's reference with a momentum mask (W_t = alpha_t W_{t-1} + m_t S_t)
    equals its token-by-token loop in float64, and the mask matters."""
    g = torch.Generator().manual_seed(length)
    shape = (2, length, 2)
    q, k, v = (torch.randn(*shape, 8, generator=g, dtype=torch.float64) / 3 for _ in range(3))
    eta = 0.1 + 0.4 * torch.rand(shape, generator=g, dtype=torch.float64)
    decay = 1 - 0.1 * torch.rand(shape, generator=g, dtype=torch.float64) if alpha else None
    theta = 0.4 + 0.5 * torch.rand(shape, generator=g, dtype=torch.float64)
    mask = (torch.rand(shape, generator=g) < 0.5).double()
    retention = {"retention": "lq", "lq_exponent": 3.0} if lq else {}
    chunked = naive_chunk_matrix_memory(q, k, v, eta, decay, theta, chunk_size=16, momentum_mask=mask, **retention)
    loop = recurrent_matrix_memory(q, k, v, eta, decay, theta, chunk_size=16, momentum_mask=mask, **retention)
    torch.testing.assert_close(chunked, loop, rtol=1e-10, atol=1e-12)
    unmasked = naive_chunk_matrix_memory(q, k, v, eta, decay, theta, chunk_size=16, **retention)
    assert length == 1 or not torch.allclose(chunked, unmasked)


def test_the_matrix_kernel_refuses_a_mask_it_cannot_apply() -> None:
    from miras_search.kernels.bias import KernelInputError
    from miras_search.kernels.matrix_chunk import chunk_matrix_memory

    x = torch.randn(1, 4, 1, 16)
    gate, mask = torch.full((1, 4, 1), 0.5), torch.ones(1, 4, 1)
    with pytest.raises(KernelInputError, match="momentum_mask is for momentum"):
        chunk_matrix_memory(x, x, x, gate, momentum_mask=mask, chunk_size=16)  # gd
    with pytest.raises(KernelInputError, match="momentum_mask is for momentum"):
        chunk_matrix_memory(x, x, x, gate, torch.full((1, 4, 1, 16), 0.9), gate, momentum_mask=mask, chunk_size=16)
    with pytest.raises(KernelInputError, match="momentum_mask must have shape"):
        chunk_matrix_memory(x, x, x, gate, None, gate, momentum_mask=mask[:, :2], chunk_size=16)


def test_a_window_the_chunk_cannot_hold_names_the_fields() -> None:
    """Window 4 at chunk 32 would need 128-token kernel chunks: the PyTorch form runs, and the
    reason names bias.window and chunk_size; the same window at chunk 16 runs the kernel."""
    rule = MemoryRule.from_point(ModelPoint(**CASES["mlp-l2-per-lag"]))
    reason = shape_problem(rule, 16, 16, 32)
    assert "bias.window" in reason and "chunk_size 32" in reason
    assert shape_problem(rule, 16, 16, 16) is None
    q, _, v, _, _ = case_inputs(rule, 5, batch=1, dim=16)
    assert "bias.window" in kernel_problem(rule, q.float(), v.float(), 32, "triton")
    assert kernel_problem(rule, q.float(), v.float(), 16, "triton") is None


def test_the_wrapped_kernel_refuses_a_chunk_it_cannot_hold() -> None:
    run = kernel_for(ModelPoint(**CASES["matrix-l2"]))
    x = torch.randn(1, 4, 1, 16)
    with pytest.raises(ValueError, match="chunk_size 64"):
        run(x, x, x, torch.ones(1, 4, 1), gamma=torch.ones(1, 4, 1), chunk_size=64)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (the paper's head dim in the interpreter takes minutes)")
@pytest.mark.parametrize("name", ["matrix-previous-per-lag", "matrix-momentum-previous-per-lag", "mlp-l2-per-lag"])
def test_gpu_paper_head_dim(name: str) -> None:
    """K = 64 (the MLP's hidden 128), T = 300, chunk 16 (64-entry kernel chunks), bf16 inputs:
    within 2e-2 of the float64 PyTorch form."""
    rule = MemoryRule.from_point(ModelPoint(**CASES[name]))
    q, k, v, gates, params = (x.cuda() if isinstance(x, torch.Tensor) else x
                              for x in case_inputs(rule, 300, batch=2, dim=64))
    gates = type(gates)(**{n: None if x is None else x.cuda() for n, x in vars(gates).items()})
    params = [p.cuda() for p in params]
    with torch.no_grad():
        wide = memory_forward(rule, q, k, v, gates, params, chunk_size=16, kernel="torch")
        gates32 = type(gates)(**{n: None if x is None else x.float() for n, x in vars(gates).items()})
        got = memory_forward(rule, *(x.to(torch.bfloat16) for x in (q, k, v)), gates32,
                             [p.float() for p in params], chunk_size=16, kernel="triton")
    assert ((got.double() - wide).norm() / wide.norm()).item() < 2e-2


@pytest.mark.parametrize("which", ["_fwd_kernel", "_bwd_kernel"])
def test_a_refused_launch_falls_back_to_the_reference_with_the_mask(monkeypatch, refused_launch, which) -> None:
    """A matrix-kernel launch that does not fit the GPU falls back to the PyTorch reference,
    which takes the momentum mask too: the launched kernel's outputs and gradients."""
    from miras_search.kernels import KernelFallbackWarning
    from miras_search.kernels.matrix_chunk import chunk as matrix_chunk

    g = torch.Generator().manual_seed(3)
    shape = (1, 37, 2)
    q, k, v = (torch.randn(*shape, 16, generator=g) / 4 for _ in range(3))
    gates = (0.1 + 0.4 * torch.rand(shape, generator=g), 1 - 0.1 * torch.rand(shape, generator=g),
             0.4 + 0.5 * torch.rand(shape, generator=g))
    mask = (torch.rand(shape, generator=g) < 0.5).float()

    def run() -> list[torch.Tensor]:
        leaves = [x.clone().requires_grad_() for x in (q, k, v, *gates)]
        o = matrix_chunk.chunk_matrix_memory(*leaves, chunk_size=16, momentum_mask=mask)
        return [o, *torch.autograd.grad(o.square().sum(), leaves)]

    launched = run()
    monkeypatch.setattr(matrix_chunk, which, refused_launch)
    with pytest.warns(KernelFallbackWarning, match="does not fit this GPU"):
        fallen_back = run()
    for got, want in zip(fallen_back, launched, strict=True):
        assert ((got - want).norm() / want.norm()).item() < 1e-5
