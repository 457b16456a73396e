"""MemoryInputs.split: the same pieces as slice, with one full-length gradient in the backward."""

from __future__ import annotations

import pytest
import torch

from miras_search.memory import MemoryRule
from miras_search.memory.inputs import prepare_inputs
from miras_search.memory.testing import random_inputs
from miras_search.presets import preset


@pytest.mark.parametrize("length", [1, 7, 63, 100])
@pytest.mark.parametrize("name", ["gated_deltanet", "titans", "yaad"])
def test_split_gives_the_slices(name: str, length: int) -> None:
    rule = MemoryRule.from_point(preset(name))
    q, k, v, gates, _ = random_inputs(rule, 2, length, 2, 4)
    x = prepare_inputs(q, k, v, gates, rule.steps_per_token, False, torch.float64)
    for size in (1, 4, 16):
        pieces = x.split(size)
        assert len(pieces) == -(-length // size)
        for i, piece in enumerate(pieces):
            expected = x.slice(i * size, min((i + 1) * size, length))
            for field in ("q", "k", "v", "eta", "alpha", "theta", "delta"):
                got, want = getattr(piece, field), getattr(expected, field)
                assert (got is None and want is None) or torch.equal(got, want)
    first, rest = x.split([1, length - 1])
    assert first.length == 1 and rest.length == length - 1
