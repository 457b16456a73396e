"""The `transformer` preset is the paper's Transformer++: RoPE, RMSNorm, SwiGLU, no short conv;
the memory layers take no RoPE (the Miras block has none)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from miras_search.memory import softmax_attention
from miras_search.model import mixer as mixer_module
from miras_search.model.factory import build_model
from miras_search.model.layers import SwiGLU, rotary_reference
from miras_search.model.mixer import AttentionMixer, MemoryMixer
from miras_search.presets import preset

BLOCK = {"d_model": 32, "n_heads": 2, "n_layers": 2}


def test_transformer_is_transformer_plus_plus() -> None:
    model = build_model(preset("transformer", block=BLOCK), "cpu")
    assert isinstance(model.norm, nn.RMSNorm)
    for layer in model.layers:
        (attention,) = layer.mixers
        assert isinstance(attention, AttentionMixer)
        assert attention.convs is None and attention.window is None
        assert all(isinstance(norm, nn.RMSNorm) for norm in (*layer.mixer_norms, layer.mlp_norm))
        assert isinstance(layer.mlp, SwiGLU)


def test_softmax_attention_in_the_miras_block_keeps_its_short_conv() -> None:
    model = build_model(preset("transformer", memory={"kind": "none", "short_conv": True}, block=BLOCK), "cpu")
    assert all(layer.mixers[0].convs is not None for layer in model.layers)


def _last_output_after_shuffling_the_past(layer: AttentionMixer) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 9, BLOCK["d_model"], generator=gen, dtype=torch.float64)
    shuffled = torch.cat([x[:, torch.randperm(8, generator=gen)], x[:, 8:]], dim=1)
    return layer(x)[:, -1], layer(shuffled)[:, -1]


def test_transformer_positions_come_from_rope_alone(monkeypatch) -> None:
    """Without a conv, the last token's output sees the past as a set unless RoPE rotates q, k."""
    layer = build_model(preset("transformer", block=BLOCK), "cpu").double().layers[0].mixers[0]
    before, after = _last_output_after_shuffling_the_past(layer)
    assert (before - after).abs().max() > 1e-6  # RoPE: order matters
    monkeypatch.setattr(mixer_module, "rotary", lambda x: x)
    before, after = _last_output_after_shuffling_the_past(layer)
    assert torch.allclose(before, after, rtol=1e-12, atol=1e-12)  # no other source of position


@pytest.mark.parametrize("name", ["gated_deltanet", "moneta"])
def test_memory_layers_take_no_rope(monkeypatch, name: str) -> None:
    def no_rope(x):
        raise AssertionError("a memory layer applied RoPE")

    monkeypatch.setattr(mixer_module, "rotary", no_rope)
    model = build_model(preset(name, block=BLOCK), "cpu")
    assert model.memory_mixers() and all(isinstance(m, MemoryMixer) for m in model.memory_mixers())
    model(torch.randint(0, 256, (1, 5)))  # runs: no rotary call
    with pytest.raises(AssertionError, match="applied RoPE"):  # the spy does catch attention's
        build_model(preset("transformer", block=BLOCK), "cpu")(torch.randint(0, 256, (1, 5)))


def _attention_written_out(layer: AttentionMixer, x: torch.Tensor) -> torch.Tensor:
    """The layer's map with rotary tables rebuilt per call and autograd's backwards: x [B, T, D]."""
    batch, length, _ = x.shape
    h, k, v = layer.n_heads, layer.key_dim, layer.value_dim
    q, key, val = layer.q_proj(x), layer.k_proj(x), layer.v_proj(x)
    if layer.convs is not None:
        q, key, val = (conv.reference(t) for conv, t in zip(layer.convs, (q, key, val), strict=True))
    q = rotary_reference(q.view(batch, length, h, k))
    key = rotary_reference(key.view(batch, length, h, k))
    o = softmax_attention(q, key, val.view(batch, length, h, v), window=layer.window)
    return layer.o_proj(o.reshape(batch, length, h * v))


@pytest.mark.parametrize("length", [1, 7, 63, 100])
@pytest.mark.parametrize(("conv_size", "window"), [(0, None), (4, None), (0, 5)])
def test_attention_matches_its_written_out_form(length: int, conv_size: int, window: int | None) -> None:
    """The layer (cached rotary tables, rotary's and ShortConv's hand-written backwards) against
    the same map written out: outputs and gradients, float64, relative error <= 1e-12."""
    torch.manual_seed(length + conv_size)
    layer = AttentionMixer(12, 3, 4, 5, window=window, conv_size=conv_size).double()
    x = torch.randn(2, length, 12, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, length, 12, dtype=torch.float64)
    leaves = [x, *layer.parameters()]
    fast = layer(x)
    slow = _attention_written_out(layer, x)
    for a, b in zip((fast, *torch.autograd.grad(fast, leaves, upstream)),
                    (slow, *torch.autograd.grad(slow, leaves, upstream)), strict=True):
        assert (a - b).norm() <= 1e-12 * b.norm()  # zero where T = 1 makes q and k irrelevant

