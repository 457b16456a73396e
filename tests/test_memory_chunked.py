"""The chunked forms against their oracles, forward and gradients, float64 on CPU.

- chunked with chunk_size=1 == the token-by-token recurrence;
- chunked with b in {4, 16} == the slow loop that materialises every per-token weight with the
  same chunk semantics (miras_search.memory.reference_chunk);
- exact_delta with b in {4, 16} == the recurrence.
Gradients are compared w.r.t. q, k, v, every gate and the initial parameters.
"""

from __future__ import annotations

import random

import pytest

from miras_search.memory import MemoryRule
from miras_search.presets import preset, preset_names
from miras_search.schema import AXES, ModelPoint, exact_delta_applies
from miras_search.testing import axis_cases, uncovered_kinds
from miras_search.testing import check_forms as _check

MEMORY_PRESETS = [name for name in preset_names() if preset(name).memory.kind != "none"]
EXACT_PRESETS = [name for name in MEMORY_PRESETS if exact_delta_applies(preset(name))]
# RWKV-7's separate write key has only the exact chunked form (no minibatch semantics)
MINIBATCH_PRESETS = [name for name in MEMORY_PRESETS
                     if MemoryRule.from_point(preset(name)).write_key != "lerp"]


@pytest.mark.parametrize("length", [1, 7, 63, 100])
@pytest.mark.parametrize("name", MEMORY_PRESETS)
def test_preset_chunk_one_is_the_recurrence(name: str, length: int) -> None:
    _check(MemoryRule.from_point(preset(name)), length, 1, "recurrent")


@pytest.mark.parametrize("length", [7, 63, 100])
@pytest.mark.parametrize("chunk", [4, 16])
@pytest.mark.parametrize("name", MINIBATCH_PRESETS)
def test_preset_chunked_matches_materialised_reference(name: str, chunk: int, length: int) -> None:
    _check(MemoryRule.from_point(preset(name)), length, chunk, "reference")


@pytest.mark.parametrize("length", [7, 63, 100])
@pytest.mark.parametrize("chunk", [4, 16])
@pytest.mark.parametrize("name", EXACT_PRESETS)
def test_preset_exact_delta_is_the_recurrence(name: str, chunk: int, length: int) -> None:
    _check(MemoryRule.from_point(preset(name)), length, chunk, "exact")


# T = 257: forward only, one batch row (the recurrence over 257 tokens dominates the run time)
@pytest.mark.parametrize("name", ["gated_deltanet", "titans", "moneta", "yaad", "memora", "gla"])
def test_preset_long_sequence(name: str) -> None:
    rule = MemoryRule.from_point(preset(name))
    _check(rule, 257, 16, "reference", grads=False, batch=1)
    _check(rule, 257, 1, "recurrent", grads=False, batch=1)
    if exact_delta_applies(preset(name)):
        _check(rule, 257, 16, "exact", grads=False, batch=1)


# ---- every axis combination ModelPoint accepts (from the registries) ------------------------

COMBOS = axis_cases()


def test_every_registered_kind_is_covered() -> None:
    """Each registered option with examples lies in some valid combination: an option whose
    examples ModelPoint refuses everywhere would otherwise go unchecked."""
    assert uncovered_kinds(COMBOS) == {axis: set() for axis in AXES}


@pytest.mark.parametrize(("label", "point"), COMBOS, ids=[c[0] for c in COMBOS])
def test_every_combination_short(label: str, point: ModelPoint) -> None:
    rule = MemoryRule.from_point(point)
    _check(rule, 7, 1, "recurrent", batch=1)
    _check(rule, 7, 4, "reference", batch=1)
    if exact_delta_applies(point):
        _check(rule, 7, 4, "exact", batch=1)


_SAMPLED = random.Random(0).sample(COMBOS, 24)


@pytest.mark.parametrize(("label", "point"), _SAMPLED, ids=[c[0] for c in _SAMPLED])
def test_sampled_combinations_longer(label: str, point: ModelPoint) -> None:
    _check(MemoryRule.from_point(point), 63, 16, "reference", seed=3, batch=1)


@pytest.mark.parametrize(
    "memory",
    [{"kind": "mlp", "depth": 3, "expansion": 2, "activation": "silu", "layer_norm": False},
     {"kind": "mlp", "depth": 2, "expansion": 1, "activation": "relu", "layer_norm": True}],
)
@pytest.mark.parametrize("retention", ["l2", "lq", "kl"])
def test_mlp_variants(memory: dict, retention: str) -> None:
    point = ModelPoint(memory=memory, bias={"kind": "l2"}, retention={"kind": retention},
                       algorithm={"kind": "momentum"})
    rule = MemoryRule.from_point(point)
    _check(rule, 7, 1, "recurrent")
    _check(rule, 63, 16, "reference")


# ---- Memora's per-token read, recomputed in the backward pass above a size ------------------

@pytest.mark.parametrize("memory", [None, {"kind": "vector"}])
def test_checkpointed_mirror_read_is_the_same_function(monkeypatch, memory: dict | None) -> None:
    """Forced checkpointing (threshold 1 float) still matches the materialising reference in
    float64, forward and every gradient, and the read really went through the checkpoint."""
    import torch.utils.checkpoint

    from miras_search.memory import mirror_read

    fields = preset("memora").model_dump()
    if memory is not None:
        fields["memory"] = memory
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(args[0].__name__)
        return original(*args, **kwargs)

    monkeypatch.setattr(mirror_read, "CHECKPOINT_FLOATS", 1)
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    _check(MemoryRule.from_point(ModelPoint.model_validate(fields)), 63, 16, "reference")
    assert calls and set(calls) <= {"mirror_chunk_read", "mirror_diagonal_read"}
