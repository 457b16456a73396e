"""Corpus haystacks of NIAH come from the split of the corpus that the mix's text source uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from miras_search.data import EOS, MQAR, DataMix, NeedleInHaystack, TextCorpus
from miras_search.data._task import SyntheticTask

NEEDLE_END = b"Remember it. "  # the passkey needle sentence ends so; depth 0 puts it first
QUESTION = b"\nWhat is the pass key?"


def _haystacks(task: NeedleInHaystack, split: str, steps: int = 10) -> list[bytes]:
    """The haystack text of every row of ``steps`` batches of 4 (needle at depth 0)."""
    out = []
    for step in range(steps):
        for row in task.batch(4, step=step, seed=0, split=split).inputs.tolist():
            body = bytes(row[1:])
            out.append(body[body.index(NEEDLE_END) + len(NEEDLE_END) : body.rindex(QUESTION)])
    return out


def _text(tokens: np.ndarray) -> bytes:
    return np.where(tokens == EOS, ord("\n"), tokens).astype(np.uint8).tobytes()


def test_the_mix_gives_corpus_haystacks_its_text_sources_val_fraction():
    corpus = NeedleInHaystack(haystack="corpus")
    assert DataMix([TextCorpus(val_fraction=0.2), corpus]).specs[1].val_fraction == 0.2
    both = DataMix([TextCorpus(val_fraction=0.1), TextCorpus(val_fraction=0.2), corpus])
    assert both.specs[2].val_fraction == 0.2  # the largest: no source's validation text trains
    mine = corpus.model_copy(update={"val_fraction": 0.3})
    assert DataMix([TextCorpus(val_fraction=0.2), mine]).specs[1].val_fraction == 0.3
    assert DataMix([MQAR(), corpus]).specs[1].val_fraction is None
    assert DataMix([TextCorpus(val_fraction=0.2), NeedleInHaystack()]).specs[1].val_fraction is None


@pytest.mark.parametrize("split", ["train", "validation"])
def test_noise_haystacks_are_seeded_as_before(split):
    task = NeedleInHaystack(needle="uuid", seq_len=300)
    ours = task.batch(3, step=7, seed=2, split=split)
    base = SyntheticTask.batch(task, 3, step=7, seed=2, split=split)
    assert torch.equal(ours.inputs, base.inputs) and torch.equal(ours.targets, base.targets)


def test_haystacks_come_from_the_text_sources_split():
    """QA B6 (s2c_niah_haystack.py): with TextCorpus(val_fraction=0.2), 14/80 training NIAH rows
    held text of that source's validation split. Each haystack must be text of the same split of
    that source; text that both splits hold (near-duplicate documents) cannot fail this, and the
    old haystacks (the train split at val_fraction 0.05) fail it 10 times in these 40 rows."""
    mix = DataMix([TextCorpus(val_fraction=0.2), NeedleInHaystack(haystack="corpus", seq_len=512, depth=0.0)])
    store, niah = mix.sources[0].store, mix.sources[1]
    for split in ("train", "validation"):
        text = _text(np.asarray(store.tokens(split)))
        haystacks = _haystacks(niah, split)
        assert all(len(hay) > 300 for hay in haystacks)
        outside = [hay[:60] for hay in haystacks if hay not in text]
        assert not outside, f"{split} haystacks that are not {split} text: {outside}"
