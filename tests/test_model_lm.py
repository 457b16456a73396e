"""The language model and the factory: every preset builds and runs, sizes, forms, hybrids, errors."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

from miras_search.errors import (
    BadTokens,
    ConfigError,
    MirasError,
    NonFiniteError,
    SequenceTooLong,
    UnsupportedPoint,
)
from miras_search.model import (
    AttentionMixer,
    MemoryMixer,
    MirasLM,
    build_model,
    layer_state_sizes,
    param_count,
    state_size,
)
from miras_search.presets import PRESET_AXES, preset, preset_names
from miras_search.schema import ModelPoint
from miras_search.schema.algorithm import MemoryAlgorithm

TINY = {"d_model": 16, "n_heads": 2, "n_layers": 2, "max_seq_len": 128}


def tiny(name: str, block: dict[str, Any] | None = None, **train: Any) -> Any:
    """The preset at a tiny size (d 16, 2 heads of 8, 2 layers); ``train`` overrides train fields."""
    train = {**PRESET_AXES[name].get("train", {}), "seq_len": 32, "batch_size": 2, **train}
    return preset(name, block={**TINY, **(block or {})}, train=train)


def _tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


def _built(point: Any, seed: int = 0, dtype: torch.dtype = torch.float32) -> MirasLM:
    torch.manual_seed(seed)
    return build_model(point, "cpu").to(dtype)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_builds_and_gives_finite_logits(name: str) -> None:
    model = _built(tiny(name))
    for length in (1, 7):
        logits = model(_tokens(2, length))
        assert logits.shape == (2, length, 260)
        assert logits.dtype == torch.float32
        assert torch.isfinite(logits).all()
    logits, loss = model(_tokens(2, 7), _tokens(2, 7, seed=1))
    # an untrained byte model is close to uniform over the vocabulary
    assert abs(loss.item() - torch.log(torch.tensor(260.0)).item()) < 0.5


@pytest.mark.parametrize("name", preset_names())
def test_param_count_equals_the_built_model(name: str) -> None:
    point = preset(name)  # default block size: d 256, 4 layers
    model = build_model(point, "cpu")
    assert param_count(point) == sum(p.numel() for p in model.parameters())


def test_param_count_counts_tied_embeddings_once() -> None:
    tied = tiny("gated_deltanet")
    untied = tiny("gated_deltanet", block={"tie_embeddings": False})
    assert param_count(untied) - param_count(tied) == 260 * 16
    model = build_model(tied, "cpu")
    assert model.head.weight is model.embed.weight


def test_state_size_formulas() -> None:
    # gated_deltanet: matrix memory, H*K*V with H 4, K = V = 256 / 4
    assert state_size(preset("gated_deltanet")) == 4 * 64 * 64
    # titans: 2-layer MLP memory with expansion 4 (K*4K + 4K*V per head) and a momentum of the same size
    assert state_size(preset("titans")) == 2 * 4 * (64 * 256 + 256 * 64)
    # transformer: full-context key/value cache over train.seq_len tokens
    assert state_size(preset("transformer")) == 4 * (64 + 64) * 256
    # a windowed hybrid: memory, swa layers alternate; the mean over layers
    hybrid = preset("gated_deltanet", block={"layer_pattern": ["memory", "swa"], "window": 32})
    assert layer_state_sizes(hybrid) == [4 * 64 * 64, 4 * 128 * 32] * 2
    assert state_size(hybrid) == (4 * 64 * 64 + 4 * 128 * 32) // 2


@pytest.mark.parametrize(
    "name", ["gated_deltanet", "deltaproduct", "gla", "retnet", "ttt_mlp", "moneta", "yaad", "memora", "titans"]
)
def test_recurrent_and_chunked_b1_give_the_same_logits(name: str) -> None:
    point = tiny(name)
    model = _built(point, dtype=torch.float64)
    tokens = _tokens(2, 9)
    model.set_memory_form(mode="recurrent")
    recurrent = model(tokens)
    model.set_memory_form(mode="chunked", chunk_size=1)
    chunked = model(tokens)
    assert _rel_err(chunked, recurrent) <= 1e-6


def test_train_mode_and_chunk_size_are_honoured_by_the_factory() -> None:
    # ttt_linear forces the minibatch form, so chunks longer than 1 token change the outputs
    tokens = _tokens(1, 13)
    logits = {}
    for key, train in {
        "recurrent": {"mode": "recurrent"},
        "b1": {"mode": "chunked", "chunk_size": 1},
        "b4": {"mode": "chunked", "chunk_size": 4},
    }.items():
        model = _built(tiny("ttt_linear", chunk_form="minibatch", **train), dtype=torch.float64)
        mixers = [m for m in model.modules() if isinstance(m, MemoryMixer)]
        assert len(mixers) == 2
        assert all(m.mode == train["mode"] for m in mixers)
        assert all(m.chunk_size == train.get("chunk_size", 16) for m in mixers)
        logits[key] = model(tokens)
    assert _rel_err(logits["b1"], logits["recurrent"]) <= 1e-6
    assert _rel_err(logits["b4"], logits["recurrent"]) > 1e-4


def test_chunk_form_auto_resolves_per_point() -> None:
    forms = {
        name: {m.chunk_form for m in build_model(tiny(name), "cpu").modules() if isinstance(m, MemoryMixer)}
        for name in ("gated_deltanet", "ttt_linear", "moneta")
    }
    assert forms == {"gated_deltanet": {"exact_delta"}, "ttt_linear": {"minibatch"}, "moneta": {"minibatch"}}


@pytest.mark.parametrize("name", ["gated_deltanet", "moneta", "transformer"])
def test_outputs_are_causal(name: str) -> None:
    model = _built(tiny(name))
    tokens = _tokens(1, 11)
    changed = tokens.clone()
    changed[0, 6] = (changed[0, 6] + 1) % 256
    a, b = model(tokens), model(changed)
    assert torch.equal(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_memory_swa_pattern_builds_and_runs() -> None:
    point = tiny("gated_deltanet", block={"n_layers": 4, "layer_pattern": ["memory", "swa"], "window": 3})
    model = _built(point)
    kinds = [type(layer.mixers[0]).__name__ for layer in model.layers]
    assert kinds == ["MemoryMixer", "AttentionMixer"] * 2
    assert all(layer.mixers[0].window == 3 for layer in model.layers[1::2])
    assert torch.isfinite(model(_tokens(2, 7))).all()
    assert param_count(point) == sum(p.numel() for p in model.parameters())


def test_samba_puts_swa_after_memory_in_every_memory_layer() -> None:
    point = tiny("moneta", block={"hybrid": "samba", "window": 4})
    model = _built(point)
    for layer in model.layers:
        first, second = layer.mixers
        assert isinstance(first, MemoryMixer)
        assert isinstance(second, AttentionMixer) and second.window == 4
    logits = model(_tokens(2, 9))
    assert logits.shape == (2, 9, 260) and torch.isfinite(logits).all()


@pytest.mark.parametrize("conv_size", [0, 2])
def test_attention_window_limits_the_receptive_field(conv_size: int) -> None:
    # 2 layers of windowed attention (window 3), each behind a short conv of conv_size taps:
    # position t sees tokens t - 2 * (2 + max(conv_size - 1, 0)) .. t only
    block = {**TINY, "conv_size": conv_size}
    model = _built(preset("transformer", memory={"kind": "none", "window": 3}, block=block, train={"seq_len": 32}))
    reach = 2 * (2 + max(conv_size - 1, 0))
    tokens = _tokens(1, 16)
    changed = tokens.clone()
    changed[0, 2] = (changed[0, 2] + 1) % 256
    a, b = model(tokens), model(changed)
    assert not torch.allclose(a[:, 2 : 3 + reach], b[:, 2 : 3 + reach])
    assert torch.equal(a[:, 3 + reach :], b[:, 3 + reach :])


def test_sequence_too_long_names_the_field() -> None:
    model = _built(tiny("gated_deltanet", block={"max_seq_len": 8}, seq_len=8, batch_size=1))
    model(_tokens(1, 8))
    with pytest.raises(SequenceTooLong, match=r"block\.max_seq_len"):
        model(_tokens(1, 9))


_IDS = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(("tokens", "targets", "words"), [
    (_IDS.float(), None, "tokens must hold integer token ids (any integer dtype, e.g. torch.long), not torch.float32"),
    (_IDS[0], None, "tokens must be [batch, time], got shape (12,) (one sequence: tokens[None])"),
    (_IDS.tolist(), None, "tokens must be a torch tensor [batch, time] of token ids, not list"),
    (_IDS[:, :0], None, "tokens is empty"),
    (_IDS.clone().index_fill_(1, torch.tensor([3]), 300), None, "tokens hold id 300, outside [0, 260)"),
    (_IDS - 300, None, "outside [0, 260)"),
    (_IDS, _IDS[:, 1:], "targets have shape (2, 11), tokens (2, 12)"),
    (_IDS, _IDS.clone().fill_(999), "targets hold id 999, outside [0, 260)"),
    (_IDS, torch.full_like(_IDS, -100), "every target is IGNORE_INDEX (-100)"),
    (_IDS, _IDS > 3, "targets must hold integer token ids"),
])
def test_bad_tokens_are_named_before_the_forward(tokens: Any, targets: Any, words: str) -> None:
    """Before: torch's IndexError / 'Expected tensor for argument #1' or a NaN loss blamed on the lr."""
    model = _built(tiny("gated_deltanet"))
    with pytest.raises(BadTokens, match=re.escape(words)):
        model(tokens, targets)


def test_tokens_of_any_integer_type_and_some_ignored_targets_are_read() -> None:
    model = _built(tiny("gated_deltanet"))
    targets = _IDS.clone()
    targets[:, :5] = -100
    _, loss = model(_IDS.int(), targets)
    assert torch.isfinite(loss)


_DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]


@pytest.mark.parametrize("dtype", _DTYPES)
def test_ids_of_every_integer_dtype_are_checked_in_a_wide_type(dtype: torch.dtype) -> None:
    """Before: uint8 [[5, 2, 3]] said 'id 5, outside [0, 260)' (260 wrapped in uint8) and uint8
    [[1, 2, 3]] raised embedding's raw RuntimeError (Byte indices)."""
    model = build_model({"preset": "moneta", "block": {"d_model": 16, "n_heads": 2, "n_layers": 1}}, device="cpu")
    ids = torch.tensor([[5, 2, 3], [1, 2, 127]], dtype=dtype)
    logits = model(ids)
    assert torch.equal(logits, model(ids.long()))
    _, loss = model(ids, ids)
    assert torch.equal(loss, model(ids.long(), ids.long())[1])
    if dtype.is_signed:
        negative = torch.tensor([[1, -3, 2]], dtype=dtype)
        with pytest.raises(BadTokens, match=re.escape("tokens hold id -3, outside [0, 260)")):
            model(negative)
        with pytest.raises(BadTokens, match=re.escape("targets hold id -3, outside [0, 260)")):
            model(ids[:1], negative)
    if dtype != torch.int8:  # int8 holds no id >= 260: every positive int8 is in range
        high = torch.tensor([[1, 2, 255 if dtype == torch.uint8 else 300]], dtype=dtype)
        if dtype == torch.uint8:
            model(high)  # 255 is a byte: in range
        else:
            with pytest.raises(BadTokens, match=re.escape("tokens hold id 300, outside [0, 260)")):
                model(high)
            with pytest.raises(BadTokens, match=re.escape("targets hold id 300, outside [0, 260)")):
                model(ids[:1], high)
    if dtype != torch.uint8:
        _, loss = model(ids, torch.full_like(ids, -100).index_fill_(1, torch.tensor([0]), 4))
        assert torch.isfinite(loss)


@pytest.mark.parametrize("given", ["moneta", {"preset": "moneta", "block": {"n_layers": 1}}, "point_file"])
def test_the_factory_takes_a_preset_name_a_mapping_or_a_point_file(given: Any, tmp_path) -> None:
    if given == "point_file":
        given = tmp_path / "p.yaml"
        given.write_text("preset: moneta\nblock: {n_layers: 1}\n")
    expected = preset("moneta") if given == "moneta" else preset("moneta", block={"n_layers": 1})
    assert param_count(given) == param_count(expected)
    assert isinstance(build_model(given, "cpu"), MirasLM)


def test_the_factory_names_what_a_point_can_be() -> None:
    with pytest.raises(MirasError, match=r"point: expected a ModelPoint, a preset name .* got int"):
        build_model(3, "cpu")
    with pytest.raises(ConfigError, match=r"memory\.kind"):
        build_model({"memory": {"kind": "banana"}}, "cpu")


def test_non_finite_forward_raises() -> None:
    model = _built(tiny("gated_deltanet"))
    with torch.no_grad():
        model.embed.weight[5] = float("nan")
    tokens = _tokens(1, 7)
    tokens[0, 3] = 5
    with pytest.raises(NonFiniteError, match="NaN or inf") as caught:
        model(tokens)
    assert "precision fp32" not in str(caught.value)  # it runs in fp32 already
    with pytest.raises(NonFiniteError, match="loss"):
        model(tokens, _tokens(1, 7, seed=2))
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(NonFiniteError) as caught:
        model(tokens)
    assert "use train.precision fp32" in str(caught.value) and "algorithm.eta" in str(caught.value)
    assert "chunk_size" not in str(caught.value)  # the exact chunked delta rule: any chunk, same math


@pytest.mark.parametrize(("name", "train", "names_chunk"), [
    ("moneta", {"chunk_size": 8}, True),  # the minibatch form: a smaller chunk is another algorithm
    ("moneta", {"chunk_size": 1}, False),  # already the recurrence
    ("moneta", {"chunk_size": 8, "mode": "recurrent"}, False),
    ("transformer", {}, False),
])
def test_non_finite_advice_names_the_chunk_size_where_it_changes_the_inner_loop(
    name: str, train: dict[str, Any], names_chunk: bool,
) -> None:
    model = _built(tiny(name, **train))
    with torch.no_grad():
        model.embed.weight[5] = float("nan")
    tokens = _tokens(1, 7)
    tokens[0, 3] = 5
    with pytest.raises(NonFiniteError) as caught:
        model(tokens)
    assert ("smaller train.chunk_size (now 8" in str(caught.value)) == names_chunk


def test_unbuildable_point_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    # a rule that needs a gate the point does not define is named in the error
    from miras_search.model import mixer

    real = mixer.MemoryRule.from_point

    class NeedsTheta:
        def __init__(self, rule: Any) -> None:
            self.rule = rule

        def __getattr__(self, name: str) -> Any:
            return getattr(self.rule, name)

        def needs(self) -> set[str]:
            return {*self.rule.needs(), "theta"}

    monkeypatch.setattr(mixer.MemoryRule, "from_point", lambda point: NeedsTheta(real(point)))
    with pytest.raises(UnsupportedPoint, match="theta"):
        build_model(tiny("gated_deltanet"), "cpu")


@pytest.mark.parametrize("name", preset_names())
def test_every_parameter_gets_a_gradient(name: str) -> None:
    model = _built(tiny(name))
    _, loss = model(_tokens(2, 7), _tokens(2, 7, seed=1))
    loss.backward()
    # a channel gate's rank-down projection feeds an up projection that starts at zero (the gate
    # starts at its value), so its first gradient is zero by design; it is still connected
    lora_down = {n for n, _ in model.named_parameters() if ".gates." in n and n.endswith("down.weight")}
    missing = [
        n for n, p in model.named_parameters()
        if p.grad is None or (n not in lora_down and not p.grad.abs().sum() > 0)
    ]
    assert missing == []


@pytest.mark.parametrize("kind", [k for k, o in MemoryAlgorithm.registry.items() if o.examples()])
def test_every_registered_algorithm_builds_and_trains(kind: str) -> None:
    """No option of the algorithm axis is refused by the factory (newton was, and is gone)."""
    base = tiny("gated_deltanet").model_dump()
    point = ModelPoint.model_validate({**base, "algorithm": MemoryAlgorithm.registry[kind].examples()[0]})
    assert param_count(point) > 0
    model = _built(point)
    logits, loss = model(_tokens(2, 9), _tokens(2, 9, seed=1))
    loss.backward()
    assert torch.isfinite(logits).all() and torch.isfinite(loss)


@pytest.mark.parametrize("name", ["gated_deltanet", "deltaproduct", "longhorn"])
def test_exact_delta_chunks_equal_the_recurrence(name: str) -> None:
    # chunk_form 'auto' picks the exact chunked delta rule here: any chunk size is exact
    model = _built(tiny(name, chunk_size=5), dtype=torch.float64)
    tokens = _tokens(2, 13)
    chunked = model(tokens)
    model.set_memory_form(mode="recurrent")
    assert _rel_err(chunked, model(tokens)) <= 1e-6
