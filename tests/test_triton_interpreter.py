"""The test-time wrapper of Triton's interpreter (``tests/triton_interpreter.py``): a launch whose
kernel calls a ``@triton.jit`` helper many times swaps the language once, computes what it
computed before, and leaves triton.language as it found it."""

from __future__ import annotations

import os

import pytest

triton = pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("the wrapper is for Triton's interpreter (TRITON_INTERPRET=1)", allow_module_level=True)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton.language as tl  # noqa: E402
import triton_interpreter  # noqa: E402
from triton.runtime import interpreter  # noqa: E402


@triton.jit
def _scaled(x, scale):
    return x * scale + 1.0


@triton.jit
def _repeat_helper(x_ptr, out_ptr, N: tl.constexpr, STEPS: tl.constexpr):
    offsets = tl.arange(0, N)
    x = tl.load(x_ptr + offsets)
    for _ in range(STEPS):
        x = _scaled(x, 0.5)
    tl.store(out_ptr + offsets, x)


def _launch(steps: int) -> torch.Tensor:
    x = torch.arange(8, dtype=torch.float32)
    out = torch.empty_like(x)
    _repeat_helper[(2,)](x, out, N=8, STEPS=steps)
    return out


def test_the_wrapper_is_installed_once():
    assert getattr(interpreter._patch_lang, "_skips_repeats", False)
    assert triton_interpreter.install() is False  # a second install wraps nothing


def test_a_launch_swaps_the_language_once_and_computes_the_same(monkeypatch):
    scans = []
    scan = interpreter._patch_builtin
    monkeypatch.setattr(interpreter, "_patch_builtin", lambda *a, **k: (scans.append(1), scan(*a, **k))[1])
    out = _launch(steps=5)
    expected = np.arange(8, dtype=np.float64)
    for _ in range(5):
        expected = expected * 0.5 + 1.0
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)
    once = len(scans)
    scans.clear()
    _launch(steps=25)  # 2 programs x 25 helper calls: still one swap per launch
    assert once > 0 and len(scans) == once


def test_the_launch_restores_the_language():
    before = {name: getattr(tl, name) for name in ("zeros", "load", "arange", "range")}
    _launch(steps=3)
    assert {name: getattr(tl, name) for name in before} == before
    assert not triton_interpreter._swapped
