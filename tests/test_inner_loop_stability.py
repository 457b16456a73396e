"""The named deep-memory models start with an inner loop that is not chaotic, except Yaad's.

A memory that a token's rounding can swing (a chaotic inner loop: perturbations grow by a fixed
factor per token) makes a language model's outputs and gradients depend on noise, and such a
model trains badly: Memora with a kl step of 0.5 moved the logits below by 18 % under 1e-13 of
relative noise and trained to 6.0 val_bpb on the quickstart budget, 4.4 at its step of 0.1
(benchmarks/results/inner_loop_stability_cpu.txt). Yaad at the paper's form (threshold 1.0,
below every ||e||, so every token takes the smooth sign) is still chaotic: 37 %, 6.6 val_bpb.
"""

from __future__ import annotations

import pytest

from miras_search.model.sensitivity import noise_sensitivity
from miras_search.presets import preset
from miras_search.schema import ModelPoint

NOISE = 1e-12
BOUND = 1e-3


def _logits_moved_by_noise(spec: dict, d_model: int, n_heads: int) -> float:
    """noise_sensitivity of ``spec`` as a 2-layer LM over 512 tokens."""
    spec["block"].update({"d_model": d_model, "n_heads": n_heads, "n_layers": 2, "max_seq_len": 512})
    return noise_sensitivity(ModelPoint.model_validate(spec), NOISE, tokens=512)


YAAD_IS_CHAOTIC = pytest.mark.xfail(strict=True, reason=(
    "Yaad's smooth-sign branch takes every token at its initial threshold (presets.py); a "
    "threshold above ||e|| is stable but leaves the switch unused: open question"))


@pytest.mark.parametrize("name", ["moneta", pytest.param("yaad", marks=YAAD_IS_CHAOTIC), "memora", "titans",
                                  "ttt_mlp"])
@pytest.mark.parametrize(("d_model", "n_heads"), [(64, 2), (128, 2)])  # head dims 32 and 64
def test_named_deep_memories_respond_smoothly_at_their_initial_gates(name, d_model, n_heads):
    moved = _logits_moved_by_noise(preset(name).model_dump(), d_model, n_heads)
    assert moved < BOUND, f"{NOISE:g} of noise on the embeddings moved {name}'s logits by {moved:.1e}"


def test_the_check_sees_memoras_old_chaotic_step():
    spec = preset("memora").model_dump()
    spec["algorithm"]["eta"]["value"] = 0.5
    assert _logits_moved_by_noise(spec, 64, 2) > 0.1


def test_a_yaad_threshold_above_the_errors_is_stable():
    """||e|| is about sqrt(d_v) at init (5.7 at head dim 32, 8 at 64): a threshold of 16 keeps
    every token on the quadratic branch, and the loop smooth."""
    spec = preset("yaad").model_dump()
    spec["bias"]["delta"]["value"] = 16.0
    assert _logits_moved_by_noise(spec, 64, 2) < BOUND
