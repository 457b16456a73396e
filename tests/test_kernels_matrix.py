"""Triton chunked matrix memory == its PyTorch reference: outputs and every gradient.

Without CUDA the kernels run in Triton's interpreter. Triton 3.x reads TRITON_INTERPRET when a
kernel is decorated (when kernels.matrix_chunk.chunk is first imported), so tests/conftest.py sets
it before any import. The interpreter is slow: CPU cases use the smallest shapes.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

CUDA = torch.cuda.is_available()  # without it, conftest.py has set TRITON_INTERPRET=1

# triton after TRITON_INTERPRET: its own jit helpers (tl.zeros...) read it when imported
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from kernel_checks import (  # noqa: E402
    assert_last_head_as_alone,
    assert_lm_trains_the_same_through_the_kernel,
    rel_err,
)

from miras_search.kernels import (  # noqa: E402
    BIAS_KINDS,
    BiasConfig,
    KernelInputError,
    available,
    kernel_for,
)
from miras_search.kernels.common import _slot  # noqa: E402
from miras_search.kernels.matrix_chunk import (  # noqa: E402
    chunk_matrix_memory,
    naive_chunk_matrix_kl,
    naive_chunk_matrix_memory,
    recurrent_matrix_memory,
)
from miras_search.kernels.matrix_chunk.chunk import _launch_config, pick_backward  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
NAMES = ("q", "k", "v", "eta", "alpha", "theta", "delta", "initial_state")
gpu_only = pytest.mark.skipif(not CUDA, reason="needs CUDA")
# a kernel that quietly fell back to the PyTorch form would pass every comparison here
pytestmark = pytest.mark.filterwarnings("error::miras_search.kernels.KernelFallbackWarning")


def make_inputs(B, T, H, K, V, bias="l2", alpha="head", momentum=False, w0=True, seed=0,
                eta="head", delta="head"):
    """Random inputs in float64 on the CPU; gates in their ranges, keys unit-norm (as in the block).
    eta: per head [B, T, H] or per key channel [B, T, H, K]; delta: per head or per value channel."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    eta_scale = 0.1 if bias == "lp" else 0.9  # lp grows like e^2: a small step keeps it stable
    inputs = {
        "q": randn(B, T, H, K),
        "k": torch.nn.functional.normalize(randn(B, T, H, K), dim=-1),
        "v": randn(B, T, H, V),
        "eta": eta_scale * rand(B, T, H, *((K,) if eta == "channel" else ())) + 0.05,
        "alpha": {"none": None, "head": 0.2 * rand(B, T, H) + 0.8,
                  "channel": 0.2 * rand(B, T, H, K) + 0.8}[alpha],
        "theta": 0.5 * rand(B, T, H) + 0.4 if momentum else None,
        # thresholds around ||e|| (~sqrt(V)) and |e_i| (~1), so both Huber branches occur
        "delta": (rand(B, T, H, *((V,) if delta == "channel" else ()))
                  * (V**0.5 if bias in ("huber_norm", "huber_switch") else 1.5) + 0.2
                  if bias.startswith("huber") else None),
        "initial_state": 0.3 * randn(H, V, K) if w0 else None,
    }
    return inputs


def check(inputs, bias, chunk_size, dtype=torch.float32, tol=5e-3, backward="fused", device=DEVICE,
          gradient_at="retained", lq=None):
    """Run kernel (dtype, on ``device``) and float64 reference; compare o and all gradients.
    ``lq``: lq retention's exponent q (None: the linear retention; 'kl': kl retention)."""
    names = [n for n in NAMES if inputs[n] is not None]
    fast = {n: inputs[n].to(device, dtype).requires_grad_() for n in names}
    # the reference sees the kernel's own inputs: rounded to dtype, then computed in float64
    ref = {n: inputs[n].to(dtype).double().requires_grad_() for n in names}
    if lq == "kl":  # kl retention (c = 1.3): the reference takes the initial log-weights
        o = chunk_matrix_memory(**fast, bias=bias, chunk_size=chunk_size, retention="kl", kl_scale=1.3)
        log_w0 = None if "initial_state" not in ref else math.log(1.3) + ref["initial_state"].log_softmax(-1)
        o_ref = naive_chunk_matrix_kl(**{n: ref[n] for n in ref if n != "initial_state"}, log_w0=log_w0,
                                      bias=bias, chunk_size=chunk_size, scale=1.3)
    else:
        retention = {"retention": "lq", "lq_exponent": lq} if lq is not None else {}
        o = chunk_matrix_memory(**fast, bias=bias, chunk_size=chunk_size, backward=backward,
                                gradient_at=gradient_at, **retention)
        o_ref = naive_chunk_matrix_memory(**ref, bias=bias, chunk_size=chunk_size, gradient_at=gradient_at,
                                          **retention)
    do = torch.randn(o_ref.shape, generator=torch.Generator().manual_seed(1)).to(dtype).double()
    grads = torch.autograd.grad(o, [fast[n] for n in names], do.to(device, dtype))
    grads_ref = torch.autograd.grad(o_ref, [ref[n] for n in names], do)
    assert o.dtype == dtype and o.shape == o_ref.shape
    errors = {"o": rel_err(o.cpu(), o_ref)}
    errors |= {f"d{n}": rel_err(g.cpu(), gr) for n, g, gr in zip(names, grads, grads_ref, strict=True)}
    bad = {name: err for name, err in errors.items() if not err <= tol}
    assert not bad, f"relative errors above {tol}: {bad}"


@pytest.mark.gpu
def test_interpreter_or_gpu_available():
    assert available()


# ---- the reference itself: chunk loop == token loop (gradients at chunk starts) -------------
@pytest.mark.parametrize("bias", BIAS_KINDS)
@pytest.mark.parametrize(("alpha", "momentum"), [("head", False), ("channel", False), ("head", True), ("channel", True)])
def test_naive_chunk_form_matches_token_loop(bias, alpha, momentum):
    x = make_inputs(2, 13, 2, 6, 5, bias, alpha, momentum)
    for chunk_size in (1, 4, 5):
        a = naive_chunk_matrix_memory(**x, bias=bias, chunk_size=chunk_size)
        b = recurrent_matrix_memory(**x, bias=bias, chunk_size=chunk_size)
        assert rel_err(a, b) < 1e-10


def test_reference_chunk_one_is_plain_recurrence():
    """C = 1, l2 bias, l2 retention, Gated DeltaNet's order (retain, then learn):
    W_t = alpha_t W_{t-1} - eta_t (alpha_t W_{t-1} k_t - v_t) k_t^T."""
    x = make_inputs(1, 9, 1, 4, 3, "l2", "head", w0=False)
    W = torch.zeros(3, 4, dtype=torch.float64)
    outs = []
    for t in range(9):
        kt, vt = x["k"][0, t, 0], x["v"][0, t, 0]
        W = x["alpha"][0, t, 0] * W
        W = W - x["eta"][0, t, 0] * torch.outer(W @ kt - vt, kt)
        outs.append(W @ x["q"][0, t, 0])
    o = naive_chunk_matrix_memory(**x, bias="l2", chunk_size=1)
    assert rel_err(o[0, :, 0], torch.stack(outs)) < 1e-12


def test_reference_chunk_one_with_the_previous_gradient_point_is_titans_order():
    """gradient_at 'previous': W_t = alpha_t W_{t-1} - eta_t (W_{t-1} k_t - v_t) k_t^T."""
    x = make_inputs(1, 9, 1, 4, 3, "l2", "head", w0=False)
    W = torch.zeros(3, 4, dtype=torch.float64)
    outs = []
    for t in range(9):
        kt, vt = x["k"][0, t, 0], x["v"][0, t, 0]
        W = x["alpha"][0, t, 0] * W - x["eta"][0, t, 0] * torch.outer(W @ kt - vt, kt)
        outs.append(W @ x["q"][0, t, 0])
    o = naive_chunk_matrix_memory(**x, bias="l2", chunk_size=1, gradient_at="previous")
    assert rel_err(o[0, :, 0], torch.stack(outs)) < 1e-12


# ---- kernel == reference (CPU interpreter: smallest shapes) ---------------------------------
@pytest.mark.parametrize(("bias", "alpha", "momentum", "backward"), [
    ("l2", "head", False, "fused"), ("l2", "channel", False, "fused"), ("l2", "head", True, "split"),
    ("huber_switch", "head", True, "fused"), ("lp", "channel", False, "split"),
])
@pytest.mark.gpu
def test_the_previous_gradient_point(bias, alpha, momentum, backward):
    """Titans' order (errors at W_0, not at beta_i W_0): outputs and every gradient, the alpha
    gradient included (it no longer flows through the errors)."""
    x = make_inputs(1, 37, 2, 16, 16, bias, alpha, momentum)
    x["alpha"] = x["alpha"] * 0.8  # a strong decay, so that the two orders differ
    check(x, bias, 16, backward=backward, gradient_at="previous")
@pytest.mark.parametrize("bias", BIAS_KINDS)
def test_every_bias(bias):
    check(make_inputs(1, 21, 2, 16, 16, bias, "head"), bias, 16)


def test_hard_sign_switch():
    """huber_switch with smooth=False: delta * sign(e) in the l1 branch."""
    bias = BiasConfig("huber_switch", smooth=False)
    check(make_inputs(1, 21, 1, 16, 16, "huber_switch", "head", True), bias, 16)


@pytest.mark.parametrize("backward", ["fused", "split"])
def test_relative_sharpness_switch(backward):
    """huber_switch with relative_sharpness: delta tanh(sharpness e / delta) in the l1 branch (its
    delta gradient has the extra - x sech^2(x) term)."""
    bias = BiasConfig("huber_switch", sharpness=1.0, relative_sharpness=True)
    check(make_inputs(1, 37, 2, 16, 16, "huber_switch", "head", True), bias, 16, backward=backward)


@pytest.mark.parametrize("T", [1, 7, 63, 100])
def test_odd_lengths(T):
    check(make_inputs(1, T, 1, 16, 16, "l2", "head"), "l2", 16)


@pytest.mark.parametrize(("alpha", "momentum", "w0"), [
    ("none", False, False), ("channel", False, True), ("head", True, True), ("none", True, False),
    ("channel", True, True), ("channel", True, False),
])
def test_retention_and_momentum(alpha, momentum, w0):
    check(make_inputs(1, 37, 2, 16, 16, "l2", alpha, momentum, w0), "l2", 16)


@pytest.mark.parametrize(("bias", "alpha", "momentum"), [
    ("l2", "head", False), ("l2", "channel", False), ("huber_switch", "head", True),
    ("robust", "none", False), ("lp", "head", True), ("dot", "channel", False),
    ("huber_switch", "channel", True),
])
@pytest.mark.parametrize("T", [7, 63])
def test_split_backward(bias, alpha, momentum, T):
    """backward='split' (a sequential state-gradient pass, then every chunk in parallel) gives
    the same gradients as the reference."""
    check(make_inputs(1, T, 2, 16, 16, bias, alpha, momentum), bias, 16, backward="split")


@pytest.mark.parametrize(("bias", "alpha", "momentum"), [
    ("dot", "channel", False), ("huber_switch", "head", True), ("robust", "channel", False),
    ("lp", "channel", True),
])
def test_chunk_32_and_unequal_dims(bias, alpha, momentum):
    """K != V, neither a power of two (padded tiles), chunk size 32."""
    check(make_inputs(2, 45, 1, 20, 24, bias, alpha, momentum), bias, 32)


# ---- bf16 inputs (on a CPU through the interpreter, patched to round and multiply as a GPU) ---
@pytest.mark.gpu
@pytest.mark.usefixtures("bf16_interpreter")
@pytest.mark.parametrize("bias", BIAS_KINDS)
@pytest.mark.parametrize(("alpha", "momentum"), [("head", True), ("channel", False)])
def test_bf16_every_bias(bias, alpha, momentum):
    """bf16 products, tf32x3 for the sharp Huber biases (kernels.precision)."""
    check(make_inputs(1, 37, 2, 16, 16, bias, alpha, momentum), bias, 16, torch.bfloat16, 2e-2)


# ---- GPU: realistic dims, bf16 ---------------------------------------------------------------
GPU_GATES = [("head", False), ("channel", False), ("head", True), ("channel", True)]


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("bias", BIAS_KINDS)
@pytest.mark.parametrize(("alpha", "momentum"), GPU_GATES)
def test_gpu_fp32_biases(bias, alpha, momentum):
    check(make_inputs(2, 100, 2, 64, 64, bias, alpha, momentum), bias, 32)


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize(("alpha", "momentum"), GPU_GATES)
@pytest.mark.parametrize("dims", [(128, 128), (48, 96), (16, 128), (128, 16)])
def test_gpu_fp32_dims(alpha, momentum, dims):
    K, V = dims
    check(make_inputs(2, 100, 2, K, V, "l2", alpha, momentum), "l2", 64)


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("T", [1, 7, 63, 100, 300])
@pytest.mark.parametrize("chunk_size", [16, 32, 64])
def test_gpu_lengths_and_chunks(T, chunk_size):
    check(make_inputs(2, T, 2, 64, 64, "l2", "head", True), "l2", chunk_size)


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("bias", BIAS_KINDS)
@pytest.mark.parametrize(("alpha", "momentum"), GPU_GATES)
def test_gpu_bf16(bias, alpha, momentum):
    """Every bias: huber_switch and huber_coordinate (whose derivatives jump, so that bf16
    operands flipped branches and moved results by percents) take tf32x3 products."""
    check(make_inputs(2, 100, 2, 64, 64, bias, alpha, momentum), bias, 32, torch.bfloat16, 2e-2)


@gpu_only
@pytest.mark.parametrize(("bias", "alpha", "momentum", "dim"), [
    ("l2", "head", True, 256), ("dot", "channel", False, 256), ("huber_norm", "head", True, 128),
])
@pytest.mark.gpu
def test_gpu_bf16_widest(bias, alpha, momentum, dim):
    """The widest heads kernels.limits admits in bf16 (tiled biases 256, row-norm ones 128)."""
    check(make_inputs(1, 100, 2, dim, dim, bias, alpha, momentum), bias, 64, torch.bfloat16, 2e-2)


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize(("alpha", "momentum"), GPU_GATES)
@pytest.mark.parametrize("dim", [64, 128])
def test_gpu_split_backward(alpha, momentum, dim):
    check(make_inputs(2, 300, 4, dim, dim, "l2", alpha, momentum), "l2", 64, backward="split")
    check(make_inputs(2, 300, 4, dim, dim, "l2", alpha, momentum), "l2", 64, torch.bfloat16, 2e-2,
          backward="split")


def _gdn_inputs(T: int, H: int, D: int) -> dict:
    """bf16 Gated DeltaNet inputs on the GPU, made there (a CPU float64 copy would be 10+ GB)."""
    g = torch.Generator(device=DEVICE).manual_seed(0)
    bf16 = {"device": DEVICE, "dtype": torch.bfloat16}
    return {
        "q": torch.randn(1, T, H, D, generator=g, **bf16),
        "k": torch.nn.functional.normalize(torch.randn(1, T, H, D, generator=g, **bf16), dim=-1),
        "v": torch.randn(1, T, H, D, generator=g, **bf16),
        "eta": 0.5 * torch.rand(1, T, H, generator=g, **bf16) + 0.05,
        "alpha": 0.05 * torch.rand(1, T, H, generator=g, **bf16) + 0.95,
        "initial_state": 0.3 * torch.randn(H, D, D, generator=g, **bf16),
    }


@pytest.mark.gpu
@gpu_only
def test_gpu_buffers_past_int32():
    """Buffers past 2^31 elements, where int32 offsets wrapped (a crash, or another head's data):
    the stored per-chunk states (B x H x chunks x V x K: T = 139264, H = 16, K = V = 128,
    chunk 16: 9 GB in fp32, and the split backward's state gradients as many) and the backward's
    per-V-tile gradient partials (tiles x B x T x H x K at T = 278528, chunk 64). The last head,
    whose data sit past the int32 range, gives what it gives alone."""
    H, D = 16, 128
    tiles = D // _launch_config(D, D, BiasConfig("l2"), backward=True)[1]
    for T, chunk_size, backward in ((139264, 16, "fused"), (139264, 16, "split"), (278528, 64, "fused")):
        stored, partials = H * (T // chunk_size) * D * D, tiles * T * H * D
        assert max(stored, partials) > 2**31
        run = partial(chunk_matrix_memory, bias="l2", chunk_size=chunk_size, backward=backward)
        assert_last_head_as_alone(run, _gdn_inputs(T, H, D), per_head=("initial_state",))
        torch.cuda.empty_cache()


@triton.jit
def _slot_probe(out, count, size):
    i_bh = tl.program_id(0)
    tl.store(out + i_bh, _slot(i_bh, count - 1, count, size))


@pytest.mark.gpu
def test_stored_state_offsets_do_not_wrap():
    """_slot, which places every kernel's per-chunk stored states, computes in int64: program
    100 of 2^20 slots of 2^14 elements sits at 2^40 + ..., far past int32 (where it wrapped)."""
    count, size, programs = 2**20, 2**14, 101
    out = torch.zeros(programs, dtype=torch.int64, device=DEVICE)
    _slot_probe[(programs,)](out, count, size)
    assert out.tolist() == [(i * count + count - 1) * size for i in range(programs)]


def test_token_tensors_past_int32_are_refused():
    """q past 2^31 elements: a KernelInputError naming the shape, before any launch (shapes on
    the meta device: nothing is allocated)."""
    B, T, H, K = 2, 2**24, 8, 16  # 2^32 elements
    meta = {"device": "meta", "dtype": torch.bfloat16}
    q, k, v = (torch.empty(B, T, H, K, **meta) for _ in range(3))
    eta = torch.empty(B, T, H, **meta)
    with pytest.raises(KernelInputError, match=r"int32 offsets: \[B, T, H, D\] = \[2, 16777216, 8, 16\]"):
        chunk_matrix_memory(q, k, v, eta, chunk_size=16)


@pytest.mark.gpu
@gpu_only
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("backward", ["fused", "split"])
def test_gpu_inputs_on_another_gpu(backward):
    """Triton launches on the current CUDA device; inputs on cuda:1 while cuda:0 is current run
    on theirs (kernels.launch.on_device), forward and backward."""
    with torch.cuda.device(0):
        check(make_inputs(1, 37, 2, 32, 32, momentum=True), "l2", 16, backward=backward, device="cuda:1")


# ---- errors and dispatch -------------------------------------------------------------------
def test_unknown_backward_is_refused():
    x = {n: (t.float() if t is not None else None) for n, t in make_inputs(1, 5, 1, 16, 16).items()}
    with pytest.raises(KernelInputError, match="backward must be 'auto', 'fused' or 'split'"):
        chunk_matrix_memory(**x, backward="parallel")


@pytest.mark.gpu
def test_auto_backward_splits_long_sequences_of_wide_heads(monkeypatch):
    """'auto' (the default, so the factory's choice) runs the split backward where it was timed
    faster (128 chunks or more, V >= 128) and the fused one elsewhere."""
    from miras_search.kernels.matrix_chunk import chunk as chunk_module

    assert pick_backward(8192, 64, 128) == "split"
    assert pick_backward(8129, 64, 128) == "split"  # 128 chunks, the last one short
    assert pick_backward(8128, 64, 128) == "fused"
    assert pick_backward(2048, 16, 256) == "split"
    assert pick_backward(8192, 64, 64) == "fused"
    chosen = []
    monkeypatch.setattr(chunk_module.ChunkMatrixMemory, "apply", lambda *args: chosen.append(args[-3]))
    for T, V in ((8192, 128), (8192, 64), (2048, 128)):
        q = torch.empty(1, T, 1, V, device="meta")
        chunk_matrix_memory(q, q, q, torch.empty(1, T, 1, device="meta"), chunk_size=64)
    assert chosen == [True, False, False]  # the split flag


def test_bad_inputs_name_the_field():
    x = {n: (t.float() if t is not None else None) for n, t in make_inputs(1, 5, 1, 16, 16).items()}
    with pytest.raises(KernelInputError, match="eta"):
        chunk_matrix_memory(**(x | {"eta": x["eta"][..., None]}), chunk_size=16)
    with pytest.raises(KernelInputError, match="chunk_size"):
        chunk_matrix_memory(**x, chunk_size=24)
    with pytest.raises(KernelInputError, match="delta"):
        chunk_matrix_memory(**x, bias="huber_norm", chunk_size=16)
    with pytest.raises(KernelInputError, match="bias kind"):
        chunk_matrix_memory(**x, bias="cosine", chunk_size=16)
    wide = {n: (t.float() if t is not None else None) for n, t in make_inputs(1, 5, 1, 64, 128, "robust").items()}
    with pytest.raises(KernelInputError, match=r"K, V in 16\.\.64 with the row-norm biases .* and fp32 products"):
        chunk_matrix_memory(**wide, bias="robust", chunk_size=16)


def test_dispatch_covers_the_matrix_points():
    from miras_search.presets import preset
    from miras_search.schema import ModelPoint

    covered = {name: kernel_for(preset(name)) is not None for name in (
        "linear_attention", "retnet", "gla", "mamba2", "deltanet", "gated_deltanet",
        "ttt_linear", "longhorn", "titans", "moneta", "yaad", "memora", "transformer")}
    assert covered == {
        "linear_attention": True, "retnet": True, "gla": True, "mamba2": True, "deltanet": True,
        "gated_deltanet": True, "ttt_linear": True, "longhorn": False, "titans": True,
        # Moneta's and Yaad's channel-wise gates, and Memora's exact per-token kl read, are on
        # the MLP kernels
        "moneta": True, "yaad": True, "memora": True, "transformer": False,
    }
    data = preset("gated_deltanet").model_dump()
    data["retention"]["gradient_at"] = "previous"
    assert kernel_for(ModelPoint.model_validate(data)).keywords["gradient_at"] == "previous"


def test_dispatch_kernel_runs_with_its_bias():
    from miras_search.presets import preset

    point = preset("gated_deltanet")
    x = make_inputs(1, 19, 1, 16, 16, "l2", "head")
    fn = kernel_for(point)
    o = fn(**{n: (t.to(DEVICE, torch.float32) if t is not None else None) for n, t in x.items()}, chunk_size=16)
    o_ref = naive_chunk_matrix_memory(**x, bias="l2", chunk_size=16)
    assert rel_err(o.cpu(), o_ref) < 5e-3


@pytest.mark.gpu
def test_saturated_channel_gate_stays_finite():
    """Channel-wise alpha near 0 (a saturated gate: e^-11.5 per token decays a chunk by far more
    than e^-60): the kernel sums such chunks with differences of exponents instead of overflowing
    exp(-lb). Outputs and gradients equal the reference and are finite. The alpha gradient is
    compared as d/d(log alpha) = alpha * dL/dalpha: at alpha = 1e-5, dL/dalpha is 1e5 times a
    sum with cancellations, which fp32 only gets to ~1e-2 (the fp32 reference as well)."""
    x = make_inputs(1, 37, 1, 16, 16, "l2", "channel")
    x["alpha"] = x["alpha"].clone()
    x["alpha"][:, 2:14, :, :8] = 1e-5  # half the channels forget almost everything: lb ~ -138
    names = [n for n in NAMES if x[n] is not None]
    for chunk_size in (16, 32):
        fast = {n: x[n].to(DEVICE, torch.float32).requires_grad_() for n in names}
        ref = {n: x[n].clone().requires_grad_() for n in names}
        o = chunk_matrix_memory(**fast, bias="l2", chunk_size=chunk_size)
        o_ref = naive_chunk_matrix_memory(**ref, bias="l2", chunk_size=chunk_size)
        do = torch.randn(o_ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        grads = torch.autograd.grad(o, [fast[n] for n in names], do.to(DEVICE, torch.float32))
        grads_ref = torch.autograd.grad(o_ref, [ref[n] for n in names], do)
        errors = {"o": rel_err(o.cpu(), o_ref)}
        for name, g, g_ref in zip(names, grads, grads_ref, strict=True):
            if name == "alpha":
                g, g_ref = g.cpu() * fast["alpha"].detach().cpu(), g_ref * x["alpha"]
            assert torch.isfinite(g).all(), f"d{name} is not finite"
            errors[f"d{name}"] = rel_err(g.cpu(), g_ref)
        bad = {name: err for name, err in errors.items() if not err <= 5e-3}
        assert not bad, f"chunk {chunk_size}: relative errors above 5e-3: {bad}"


def test_shape_problem_keeps_row_norm_biases_to_the_rows_that_fit():
    """auto dispatch must see the row-norm limit too, or a wide fp32 point would raise inside
    the kernel instead of running the PyTorch form."""
    from miras_search.kernels.dispatch import shape_problem
    from miras_search.presets import preset
    from miras_search.schema import ModelPoint

    spec = preset("gated_deltanet").model_dump()
    spec["bias"] = {"kind": "huber", "variant": "switch"}
    switch = ModelPoint.model_validate(spec)
    assert kernel_for(switch) is not None
    assert shape_problem(switch, 64, 64, 64, torch.bfloat16) is None
    # huber_switch takes fp32-accurate (tf32x3) products, which need fp32's room
    assert "16..64 with the row-norm biases" in shape_problem(switch, 128, 128, 64, torch.bfloat16)
    norm = ModelPoint.model_validate(spec | {"bias": {"kind": "huber", "variant": "norm"}})
    assert shape_problem(norm, 128, 128, 64, torch.bfloat16) is None
    assert "and bf16 products" in shape_problem(norm, 256, 256, 64, torch.bfloat16)
    assert "and fp32 products" in shape_problem(norm, 128, 128, 64, torch.float32)
    gdn = preset("gated_deltanet")
    assert shape_problem(gdn, 256, 256, 64, torch.bfloat16) is None
    assert "16..128 with this bias and fp32 products" in shape_problem(gdn, 256, 256, 64, torch.float32)
    assert "16..256" in shape_problem(gdn, 512, 512, 64, torch.bfloat16)


# ---- channel-wise eta (a step per key channel) and delta (a threshold per value channel) ----
@pytest.mark.parametrize(("bias", "alpha", "momentum", "delta"), [
    ("l2", "head", False, "head"), ("lp", "channel", False, "head"), ("l2", "none", True, "head"),
    ("huber_coordinate", "channel", False, "channel"), ("huber_switch", "head", True, "channel"),
    ("robust", "channel", False, "head"),
])
def test_naive_channel_eta_matches_token_loop(bias, alpha, momentum, delta):
    x = make_inputs(2, 13, 2, 6, 5, bias, alpha, momentum, eta="channel", delta=delta)
    for chunk_size in (1, 4, 5):
        a = naive_chunk_matrix_memory(**x, bias=bias, chunk_size=chunk_size)
        b = recurrent_matrix_memory(**x, bias=bias, chunk_size=chunk_size)
        assert rel_err(a, b) < 1e-10


def test_channel_eta_of_equal_channels_is_the_per_head_step():
    """A channel-wise eta that is the same in every key channel is the per-head step."""
    x = make_inputs(1, 21, 2, 16, 16, "huber_switch", "head", True)
    wide = dict(x, eta=x["eta"].unsqueeze(-1).expand(-1, -1, -1, 16).contiguous())
    f32 = {n: (t.to(DEVICE, torch.float32) if t is not None else None) for n, t in x.items()}
    o = chunk_matrix_memory(**f32, bias="huber_switch", chunk_size=16)
    o_wide = chunk_matrix_memory(**dict(f32, eta=wide["eta"].to(DEVICE, torch.float32)),
                                 bias="huber_switch", chunk_size=16)
    assert rel_err(o_wide.cpu(), o.cpu()) < 1e-6


@pytest.mark.parametrize(("bias", "alpha", "momentum", "delta", "backward"), [
    ("l2", "head", False, "head", "fused"), ("l2", "channel", False, "head", "fused"),
    ("lp", "head", True, "head", "split"), ("dot", "channel", False, "head", "split"),
    ("huber_coordinate", "channel", False, "channel", "fused"),
    ("huber_switch", "head", True, "channel", "split"), ("huber_norm", "none", False, "head", "fused"),
])
@pytest.mark.parametrize("T", [7, 37])
def test_channel_eta_and_delta(bias, alpha, momentum, delta, backward, T):
    """eta [B, T, H, K] (and delta [B, T, H, V] where the bias takes it) against the reference:
    output and every gradient, both backwards, either gradient point."""
    x = make_inputs(1, T, 2, 16, 16, bias, alpha, momentum, eta="channel", delta=delta)
    check(x, bias, 16, backward=backward, gradient_at="previous" if momentum else "retained")


def test_channel_delta_of_the_norm_variant_is_refused():
    x = make_inputs(1, 5, 1, 16, 16, "huber_norm", delta="channel")
    f32 = {n: (t.float() if t is not None else None) for n, t in x.items()}
    with pytest.raises(KernelInputError, match="one Huber threshold per token"):
        chunk_matrix_memory(**f32, bias="huber_norm", chunk_size=16)



# ---- lq retention (Moneta's): W = A / ||A||_q^(q-2), normalised at chunk ends ---------------
@pytest.mark.parametrize(("bias", "alpha", "momentum", "eta"), [
    ("l2", "head", False, "head"), ("lp", "channel", False, "channel"), ("l2", "none", True, "head"),
    ("huber_switch", "head", True, "channel"), ("dot", "channel", False, "head"),
    ("robust", "head", False, "head"),
])
def test_naive_lq_matches_token_loop(bias, alpha, momentum, eta):
    """The chunked lq reference equals the token loop (gradients at r(A_0) A_0, the chunk's last
    token reading r(A_C) A_C), short last chunks included."""
    x = make_inputs(2, 13, 2, 6, 5, bias, alpha, momentum, eta=eta)
    for chunk_size in (1, 4, 5, 16):
        a = naive_chunk_matrix_memory(**x, bias=bias, chunk_size=chunk_size, retention="lq", lq_exponent=4.0)
        b = recurrent_matrix_memory(**x, bias=bias, chunk_size=chunk_size, retention="lq", lq_exponent=4.0)
        assert rel_err(a, b) < 1e-10


@pytest.mark.parametrize(("bias", "alpha", "momentum", "eta", "backward"), [
    ("l2", "head", False, "head", "fused"), ("lp", "channel", False, "channel", "fused"),
    ("l2", "none", True, "head", "split"), ("huber_switch", "head", True, "channel", "fused"),
    ("lp", "head", True, "channel", "split"), ("huber_coordinate", "channel", False, "head", "split"),
])
@pytest.mark.parametrize("T", [1, 7, 37])
def test_lq_retention(bias, alpha, momentum, eta, backward, T):
    """lq retention (q = 4, Moneta's) against the reference: output and every gradient, the
    initial accumulator's included, a short last chunk (whose last token reads the exact memory)."""
    check(make_inputs(1, T, 2, 16, 16, bias, alpha, momentum, eta=eta), bias, 16, backward=backward, lq=4.0)


@pytest.mark.parametrize("lq", [2.0, 3.0, 6.0])
def test_lq_exponents_and_unequal_dims(lq):
    """Other exponents (q = 2 is the l2 retention with a constant read scale), K != V, chunk 32."""
    check(make_inputs(1, 45, 1, 20, 24, "l2", "head", False), "l2", 32, lq=lq)


def test_lq_without_an_initial_state():
    """A zero accumulator sits at the norm's floor: no NaN, and the gradients match."""
    check(make_inputs(1, 23, 1, 16, 16, "l2", "head", True, w0=False), "l2", 16, lq=4.0)


def test_bad_lq_settings_are_refused():
    x = {n: (t.float() if t is not None else None) for n, t in make_inputs(1, 5, 1, 16, 16).items()}
    with pytest.raises(KernelInputError, match="retention must be"):
        chunk_matrix_memory(**x, retention="elastic")
    with pytest.raises(KernelInputError, match="lq_exponent"):
        chunk_matrix_memory(**x, retention="lq", lq_exponent=float("nan"))
    wide = {n: (t.float() if t is not None else None) for n, t in make_inputs(1, 5, 1, 128, 128).items()}
    with pytest.raises(KernelInputError, match="lq retention"):
        chunk_matrix_memory(**wide, retention="lq")


# ---- the new gates in bf16: emulated on a CPU, and on a GPU at realistic dims ---------------
MATRIX_GATE_CASES = [  # bias, alpha, momentum, eta, delta, lq
    ("l2", "channel", False, "channel", "head", None),
    ("huber_switch", "head", True, "channel", "channel", None),
    ("lp", "head", True, "head", "head", 4.0),
    ("huber_coordinate", "channel", False, "channel", "channel", 4.0),
    ("lp", "channel", True, "channel", "head", 4.0),  # Moneta's axes with momentum
    ("huber_switch", "channel", True, "head", "channel", None),
]


@pytest.mark.gpu
@pytest.mark.usefixtures("bf16_interpreter")
@pytest.mark.parametrize(("bias", "alpha", "momentum", "eta", "delta", "lq"), MATRIX_GATE_CASES)
def test_bf16_channel_eta_and_lq(bias, alpha, momentum, eta, delta, lq):
    x = make_inputs(1, 37, 2, 16, 16, bias, alpha, momentum, eta=eta, delta=delta)
    check(x, bias, 16, torch.bfloat16, 2e-2, lq=lq)


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize(("bias", "alpha", "momentum", "eta", "delta", "lq"), MATRIX_GATE_CASES)
@pytest.mark.parametrize("backward", ["fused", "split"])
def test_gpu_channel_eta_and_lq(bias, alpha, momentum, eta, delta, lq, backward):
    """Channel-wise eta / delta and lq retention at head dim 64, T = 300 (a short last chunk),
    fp32 and bf16."""
    x = make_inputs(2, 300, 2, 64, 64, bias, alpha, momentum, eta=eta, delta=delta)
    check(x, bias, 64, backward=backward, lq=lq)
    check(x, bias, 64, torch.bfloat16, 2e-2, backward=backward, lq=lq)


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("backward", ["fused", "split"])
def test_gpu_lq_widest(backward):
    """lq keeps the whole matrix in one program: 128 with bf16 products (kernels.limits)."""
    x = make_inputs(1, 200, 2, 128, 128, "lp", "head", True, eta="channel")
    check(x, "lp", 64, torch.bfloat16, 2e-2, backward=backward, lq=4.0)


# ---- kl retention (Memora's): every token reads c softmax_row of its own log-space state ----
@pytest.mark.parametrize(("bias", "alpha", "eta", "delta", "w0"), [
    ("l2", "head", "head", "head", True), ("l2", "channel", "channel", "head", True),
    ("huber_switch", "channel", "channel", "channel", True), ("lp", "none", "head", "head", False),
    ("dot", "head", "head", "head", True), ("robust", "channel", "head", "head", True),
    ("huber_coordinate", "head", "channel", "channel", True),
])
@pytest.mark.parametrize("T", [1, 7, 37])
def test_kl_retention(bias, alpha, eta, delta, w0, T):
    """kl retention against its reference (c = 1.3): output and every gradient, the initial
    parameter's included (through the row softmax), segments of one token (each chunk's lag
    token) and short last chunks."""
    check(make_inputs(1, T, 2, 16, 16, bias, alpha, False, w0, eta=eta, delta=delta), bias, 16, lq="kl")


@pytest.mark.parametrize(("bias", "alpha", "eta", "w0"), [
    ("l2", "head", "head", True), ("huber_switch", "head", "channel", True), ("lp", "none", "head", False),
    ("robust", "head", "channel", True), ("l2", "channel", "channel", True),
])
@pytest.mark.parametrize("T", [1, 7, 37])
def test_kl_retention_with_momentum(bias, alpha, eta, w0, T):
    """kl with momentum (alpha per head or per key channel): the log-space step carried across
    segments, the momentum gate's gradient included."""
    check(make_inputs(1, T, 2, 16, 16, bias, alpha, True, w0, eta=eta), bias, 16, lq="kl")


def test_kl_chunk_32_and_unequal_dims():
    """K != V (both powers of two), chunk 32, several V-tiles of a tiled bias."""
    check(make_inputs(2, 45, 1, 16, 128, "l2", "channel", False, eta="channel"), "l2", 32, lq="kl")


@pytest.mark.gpu
@pytest.mark.usefixtures("bf16_interpreter")
@pytest.mark.parametrize(("bias", "alpha", "eta", "momentum"), [
    ("l2", "channel", "channel", False), ("huber_switch", "head", "head", False), ("l2", "channel", "channel", True),
])
def test_bf16_kl(bias, alpha, eta, momentum):
    """bf16 inputs, tf32x3 products (kernels.precision: kl's softmax reads)."""
    x = make_inputs(1, 37, 2, 16, 16, bias, alpha, momentum, eta=eta)
    check(x, bias, 16, torch.bfloat16, 2e-2, lq="kl")


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize(("bias", "alpha", "eta", "momentum", "dim"), [
    ("l2", "channel", "channel", False, 64), ("huber_switch", "channel", "channel", False, 64),
    ("lp", "head", "head", False, 128), ("l2", "head", "channel", True, 64), ("l2", "channel", "channel", True, 128),
])
def test_gpu_kl(bias, alpha, eta, momentum, dim):
    x = make_inputs(2, 300, 2, dim, dim, bias, alpha, momentum, eta=eta)
    check(x, bias, 64, lq="kl")
    check(x, bias, 64, torch.bfloat16, 2e-2, lq="kl")


def test_bad_kl_settings_are_refused():
    x = {n: (t.float() if t is not None else None)
         for n, t in make_inputs(1, 5, 1, 16, 16, alpha="channel").items()}
    with pytest.raises(KernelInputError, match="kl_scale"):
        chunk_matrix_memory(**x, retention="kl", kl_scale=0.0)
    odd = {n: (t.float() if t is not None else None) for n, t in make_inputs(1, 5, 1, 24, 16).items()}
    with pytest.raises(KernelInputError, match="powers of two"):
        chunk_matrix_memory(**odd, retention="kl")


def test_dispatch_covers_the_named_models_axes_on_a_matrix_memory():
    """Moneta's (lp, lq), Yaad's (switch, a threshold per value channel) and Memora's (kl) bias,
    retention and channel-wise gates on a matrix memory have a kernel, with momentum too."""
    from miras_search.presets import preset
    from miras_search.schema import ModelPoint

    def on_matrix(name: str, **changes: dict) -> ModelPoint:
        spec = preset(name).model_dump()
        spec["memory"] = {"kind": "matrix", "init": "learned"}
        for axis, fields in changes.items():
            spec[axis] = {**spec[axis], **fields}
        if spec["algorithm"]["kind"] == "momentum":  # gd's fields that momentum lacks
            spec["algorithm"] = {"kind": "momentum", "eta": spec["algorithm"]["eta"]}
        return ModelPoint.model_validate(spec)

    for name, retention in (("moneta", "lq"), ("yaad", "l2"), ("memora", "kl")):
        point = on_matrix(name)
        assert point.algorithm.eta.mode == "channel"
        assert kernel_for(point).keywords["retention"] == retention
    assert kernel_for(on_matrix("moneta", algorithm={"kind": "momentum"})).keywords["retention"] == "lq"
    assert kernel_for(on_matrix("memora", algorithm={"kind": "momentum"})).keywords["retention"] == "kl"
    for name in ("moneta", "memora"):
        per_head = on_matrix(name, algorithm={"kind": "momentum"}, retention={"alpha": {"mode": "head"}})
        assert kernel_for(per_head) is not None


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["moneta", "yaad", "memora"])
def test_language_model_on_a_matrix_memory_trains_the_same_through_the_kernel(name):
    """A whole LM with a named model's bias, retention and channel-wise gates on a matrix memory
    (train.kernel 'triton' vs 'torch'): same logits and parameter gradients, gates included."""
    from miras_search.presets import preset

    spec = preset(name).model_dump()
    spec["memory"] = {"kind": "matrix", "init": "learned"}
    spec["block"].update(d_model=32, n_heads=2, n_layers=1)
    assert_lm_trains_the_same_through_the_kernel(spec, DEVICE)
