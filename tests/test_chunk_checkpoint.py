"""Deep memories at large sizes run their PyTorch chunk updates checkpointed (the backward
recomputes each chunk from its start state): same outputs and gradients, far less kept for the
backward pass, and the memory estimate knows it. Without it, moneta at the paper's size (B=8,
T=2048, 12 heads of 64, 12 layers) ran out of a 141 GB GPU (benchmarks/results/gpu_check_h200_study)."""

from __future__ import annotations

import pytest
import torch

import miras_search.memory.chunked as chunked
from miras_search.memory import MemoryRule, memory_forward
from miras_search.memory.testing import random_inputs
from miras_search.model.memory_estimate import estimate_memory
from miras_search.presets import preset

DEEP = ["moneta", "yaad", "memora", "titans", "ttt_mlp"]


def _inputs(name: str, length: int, dtype=torch.float64):
    rule = MemoryRule.from_point(preset(name))
    channel = tuple(g for g, mode in rule.gate_modes.items() if mode == "channel")
    return rule, random_inputs(rule, 2, length, 2, 8, dtype=dtype, channel=channel, requires_grad=True, seed=length)


def _run(rule, inputs, threshold, monkeypatch):
    monkeypatch.setattr(chunked, "CHECKPOINT_LAYER_BYTES", threshold)
    q, k, v, gates, params = inputs
    out = memory_forward(rule, q, k, v, gates, params, chunk_size=4, kernel="torch")
    leaves = [x for x in (q, k, v, gates.eta, gates.alpha, gates.theta, gates.delta, *params) if x is not None]
    weight = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    return out, torch.autograd.grad((out * weight).sum(), leaves)


@pytest.mark.parametrize("length", [1, 7, 23])
@pytest.mark.parametrize("name", DEEP)
def test_checkpointed_updates_give_the_same_outputs_and_gradients(name, length, monkeypatch):
    rule, inputs = _inputs(name, length)
    plain, plain_grads = _run(rule, inputs, 2**62, monkeypatch)
    kept, kept_grads = _run(rule, inputs, 0, monkeypatch)
    torch.testing.assert_close(kept, plain, rtol=1e-12, atol=1e-12)
    for got, want in zip(kept_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def _saved_bytes(name: str, threshold: int, monkeypatch) -> int:
    monkeypatch.setattr(chunked, "CHECKPOINT_LAYER_BYTES", threshold)
    rule, (q, k, v, gates, params) = _inputs(name, 64, torch.float32)
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        memory_forward(rule, q, k, v, gates, params, chunk_size=16, kernel="torch")
    return sum(seen.values())


@pytest.mark.parametrize("name", ["moneta", "titans"])
def test_checkpointed_updates_keep_far_less_for_the_backward(name, monkeypatch):
    assert _saved_bytes(name, 0, monkeypatch) * 3 < _saved_bytes(name, 2**62, monkeypatch)


def test_only_large_deep_layers_are_checkpointed():
    paper = dict(batch=8, heads=12, length=2048)
    assert chunked.checkpoints_updates(**paper, widths=[64, 256])  # moneta at the paper's size
    assert not chunked.checkpoints_updates(**paper, widths=[64])  # a matrix memory: never
    assert not chunked.checkpoints_updates(batch=8, heads=4, length=256, widths=[32, 128])  # a proxy trial


def test_the_estimate_counts_checkpointed_updates(monkeypatch):
    paper = preset("moneta", block={"d_model": 768, "n_layers": 12, "n_heads": 12},
                   train={"batch_size": 8, "seq_len": 2048, "tokens": 8 * 2048})
    small = preset("moneta")  # a proxy trial's size: not checkpointed, the estimate unchanged
    checkpointed, small_default = estimate_memory(paper).total, estimate_memory(small).total
    monkeypatch.setattr(chunked, "CHECKPOINT_LAYER_BYTES", 2**62)
    assert estimate_memory(paper).total > 2 * checkpointed
    assert checkpointed < 141e9  # fits an H200 now
    assert estimate_memory(small).total == small_default
