"""Our PyTorch form of fla's gated ``chunk_bwd_dqkwg`` (the kernel fla refuses on Hopper with
Triton 3.4 to 3.7.0, fla issue #640) against fla's own Triton kernel, and fla's dispatch routing
exactly the refused calls to it.

On a CPU fla's kernel runs in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1;
its autotuner is cut to one config, since the interpreter cannot time configs). Both compute in
float32 from float32 inputs, so they agree to float32 round-off (1e-5 relative); a wrong decay
term, mask or chunk-end gradient is off by O(1). Odd lengths (1, 7, 37, 100) end in a partial
chunk, whose last token carries the chunk-end decay's gradient.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from miras_search.memory import fla_dqkwg
from miras_search.memory.fla_dqkwg import chunk_bwd_dqkwg_gated, register_fla_backend

chunk_o = pytest.importorskip("fla.ops.common.chunk_o", reason="fla-core is not installed")
fla_utils = pytest.importorskip("fla.utils", reason="fla-core is not installed")

CHUNK = 16


@pytest.fixture
def fla_kernel(monkeypatch):
    """fla's chunk_bwd_dqkwg (its Triton kernel) where it runs here, with one autotune config."""
    if torch.cuda.is_available():
        if fla_dqkwg.fla_refuses_gated_dqkwg():
            pytest.skip("fla refuses its gated kernel on this GPU (the case our form is for)")
    else:
        autotuner = chunk_o.chunk_bwd_kernel_dqkwg.fn
        monkeypatch.setattr(autotuner, "configs", autotuner.configs[:1])
    return chunk_o.chunk_bwd_dqkwg


def dqkwg_inputs(length: int, heads: int = 2, value_heads: int = 2, state_v_first: bool = False,
                 with_w: bool = True, dtype: torch.dtype = torch.float32, seed: int = 0) -> dict:
    """Random arguments of chunk_bwd_dqkwg: B=2, K=16, V=32, chunks of 16, g a chunk-local
    cumulative log2-decay (each step in (-1, 0])."""
    gen = torch.Generator().manual_seed(seed)
    batch, key_dim, value_dim = 2, 16, 32
    n_chunks = -(-length // CHUNK)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)

    state_shape = (batch, n_chunks, value_heads) + ((value_dim, key_dim) if state_v_first else (key_dim, value_dim))
    steps = -torch.rand(batch, length, value_heads, generator=gen)
    g = torch.cat([steps[:, i:i + CHUNK].cumsum(1) for i in range(0, length, CHUNK)], dim=1)
    return dict(
        q=randn(batch, length, heads, key_dim), k=randn(batch, length, heads, key_dim),
        v=randn(batch, length, value_heads, value_dim), do=randn(batch, length, value_heads, value_dim),
        h=randn(*state_shape), dh=randn(*state_shape), g=g,
        w=randn(batch, length, value_heads, key_dim) if with_w else None,
        dv=randn(batch, length, value_heads, value_dim) if with_w else None,
        scale=0.25, state_v_first=state_v_first, chunk_size=CHUNK,
    )


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("length", [1, 7, 37, 100])
@pytest.mark.parametrize(("heads", "value_heads", "state_v_first", "with_w"), [
    (2, 2, False, True),    # gated_delta_rule
    (2, 2, True, True),     # states stored [V, K]
    (1, 2, False, False),   # grouped values, no w (simple_gla)
])
def test_matches_fla_kernel(fla_kernel, length, heads, value_heads, state_v_first, with_w) -> None:
    args = dqkwg_inputs(length, heads, value_heads, state_v_first, with_w, seed=length)
    want = fla_kernel(**args)
    have = chunk_bwd_dqkwg_gated(**args)
    for name, w, h in zip(("dq", "dk", "dw", "dg"), want, have, strict=True):
        if w is None:
            assert h is None, name
            continue
        assert h.shape == w.shape and h.dtype == w.dtype, name
        assert rel(h, w) < 1e-5, f"{name}: {rel(h, w):.2e}"


def test_bfloat16_inputs_give_their_dtypes_and_the_float32_result() -> None:
    args = dqkwg_inputs(37, dtype=torch.bfloat16)
    wide = {key: value.float() if isinstance(value, torch.Tensor) else value for key, value in args.items()}
    have, want = chunk_bwd_dqkwg_gated(**args), chunk_bwd_dqkwg_gated(**wide)
    assert [x.dtype for x in have] == [torch.bfloat16] * 3 + [torch.float32]
    for h, w in zip(have, want, strict=True):
        assert rel(h, w) < 1e-2  # only the outputs' bf16 rounding


def test_the_gradient_of_a_chunk_end_decay_is_checked(fla_kernel) -> None:
    """A mutation check on what the chunk-end term adds: dropping it is caught (not round-off)."""
    args = dqkwg_inputs(37, seed=3)
    want = fla_kernel(**args)[3]
    dropped = chunk_bwd_dqkwg_gated(**{**args, "h": torch.zeros_like(args["h"])})[3]
    assert rel(dropped, want) > 1e-2


@pytest.mark.parametrize("refusing", [True, False])
def test_fla_dispatch_sends_only_refused_calls_to_our_form(fla_kernel, monkeypatch, refusing) -> None:
    """fla's own chunk_bwd_dqkwg (its dispatch wrapper) with our backend registered: where fla's
    guard would raise (the flags of a Hopper GPU with Triton 3.6), gated calls come to us and
    ungated ones still go to fla's kernel; elsewhere nothing comes to us."""
    assert register_fla_backend()
    monkeypatch.setattr(fla_utils, "IS_NVIDIA_HOPPER", refusing)
    monkeypatch.setattr(fla_utils, "TRITON_ABOVE_3_4_0", True)
    monkeypatch.setattr(fla_utils, "TRITON_ABOVE_3_7_1", False)
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return chunk_bwd_dqkwg_gated(*args, **kwargs)

    monkeypatch.setattr(fla_dqkwg, "chunk_bwd_dqkwg_gated", counted)
    args = dqkwg_inputs(23, seed=5)
    gated = chunk_o.chunk_bwd_dqkwg(**args)
    assert len(calls) == (1 if refusing else 0)
    expected = inspect.unwrap(fla_kernel)(**args)  # fla's own kernel, past the dispatch
    for g, e in zip(gated, expected, strict=True):
        assert rel(g, e) < 1e-5
    chunk_o.chunk_bwd_dqkwg(**{**args, "g": None})
    assert len(calls) == (1 if refusing else 0)  # an ungated call never comes to us


def test_no_registration_is_claimed_where_fla_bypasses_its_backends(monkeypatch) -> None:
    """With FLA_DISABLE_BACKEND_DISPATCH=1 fla never asks a backend: the refused backward must be
    reported, not claimed fixed."""
    monkeypatch.setenv("FLA_DISABLE_BACKEND_DISPATCH", "1")
    register_fla_backend.cache_clear()
    try:
        assert register_fla_backend() is False
    finally:
        register_fla_backend.cache_clear()
