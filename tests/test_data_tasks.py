"""Synthetic recall tasks: determinism, layout invariants, exact lengths, clear errors."""

from __future__ import annotations

import pytest
import torch

from miras_search.data import (
    BOS,
    IGNORE_INDEX,
    MQAR,
    PAD,
    SEP,
    VOCAB_SIZE,
    NeedleInHaystack,
    NoisyRecall,
    SelectiveCopy,
)
from miras_search.errors import MirasError

TASKS = [
    MQAR(vocab_size=32, num_pairs=5, num_queries=3),
    NoisyRecall(vocab_size=20, noise_vocab=7, num_pairs=4, num_queries=3, key_len=2, value_len=3),
    SelectiveCopy(vocab_size=9, num_tokens=5),
    NeedleInHaystack(needle="passkey"),
    NeedleInHaystack(needle="number", digits=7),
    NeedleInHaystack(needle="uuid", depth=0.5),
]
IDS = [t.task + ("/" + t.needle if isinstance(t, NeedleInHaystack) else "") for t in TASKS]


def _length(task) -> int:
    return task.min_seq_len() + 63  # an odd amount of slack


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_same_seed_same_batch_other_seed_other_batch(task):
    T = _length(task)
    a = task.batch(3, step=4, seed=11, seq_len=T)
    b = task.batch(3, step=4, seed=11, seq_len=T)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    for other in (
        task.batch(3, step=4, seed=12, seq_len=T),
        task.batch(3, step=5, seed=11, seq_len=T),
        task.batch(3, step=4, seed=11, split="validation", seq_len=T),
    ):
        assert not torch.equal(a.inputs, other.inputs)


@pytest.mark.parametrize("task", TASKS, ids=IDS)
@pytest.mark.parametrize("slack", [0, 1, 7, 100])
def test_shapes_dtypes_and_vocab(task, slack):
    T = task.min_seq_len() + slack
    batch = task.batch(2, step=0, seq_len=T)
    assert batch.inputs.shape == batch.targets.shape == (2, T)
    assert batch.inputs.dtype == batch.targets.dtype == torch.long
    assert int(batch.inputs.min()) >= 0 and int(batch.inputs.max()) < VOCAB_SIZE
    scored = batch.targets[batch.answer_mask]
    assert scored.numel() > 0 and int(scored.min()) >= 0 and int(scored.max()) < VOCAB_SIZE
    # Teacher forcing: an answer target is the next input token (the last has no next input).
    shifted = batch.targets[:, :-1]
    mask = shifted != IGNORE_INDEX
    assert torch.equal(shifted[mask], batch.inputs[:, 1:][mask])


@pytest.mark.parametrize("T", [13, 63, 100])
def test_mqar_every_query_answer_is_in_context_and_unique(T):
    task = MQAR(vocab_size=64, num_pairs=4, num_queries=3)
    batch = task.batch(16, step=1, seq_len=T)
    N = task.num_pairs
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist(), strict=True):
        keys, values = inputs[0 : 2 * N : 2], inputs[1 : 2 * N : 2]
        assert len(set(keys)) == N and all(k < 32 for k in keys) and all(32 <= v < 64 for v in values)
        answers = [t for t, y in enumerate(targets) if y != IGNORE_INDEX]
        assert len(answers) == task.queries
        assert all(t >= 2 * N for t in answers)
        asked = [inputs[t] for t in answers]
        assert len(set(asked)) == len(asked)
        for t in answers:
            assert targets[t] == values[keys.index(inputs[t])]
        others = [x for i, x in enumerate(inputs[2 * N :], start=2 * N) if i not in answers and i - 1 not in answers]
        assert set(others) <= {PAD}


def _find(seq: list[int], part: list[int]) -> list[int]:
    return [i for i in range(len(seq) - len(part) + 1) if seq[i : i + len(part)] == part]


@pytest.mark.parametrize("T", [36, 63, 101])
def test_noisy_recall_keys_unique_and_answers_recallable(T):
    task = NoisyRecall(vocab_size=10, noise_vocab=5, num_pairs=3, num_queries=2, key_len=2, value_len=2)
    assert task.min_seq_len() == 20
    batch = task.batch(16, step=2, seq_len=T)
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist(), strict=True):
        sep = inputs.index(SEP)
        assert inputs.count(SEP) == 1 and sep == T - task.queries * task.pair_len
        context, query = inputs[:sep], [*inputs[sep + 1 :], targets[-1]]
        assert sum(1 for x in context if x >= task.vocab_size) >= len(context) - task.num_pairs * task.pair_len
        answers = [y for y in targets if y != IGNORE_INDEX]
        assert len(answers) == task.queries * task.value_len
        for q in range(task.queries):
            pair = query[q * task.pair_len : (q + 1) * task.pair_len]
            key, value = pair[: task.key_len], pair[task.key_len :]
            hits = _find(context, key)
            assert len(hits) == 1, "every queried key occurs once in the context"
            start = hits[0] + task.key_len
            assert context[start : start + task.value_len] == value
            assert answers[q * task.value_len : (q + 1) * task.value_len] == value


@pytest.mark.parametrize("T", [10, 17, 63])
def test_selective_copy_answers_are_the_data_tokens_in_order(T):
    task = SelectiveCopy(vocab_size=5, num_tokens=5)
    batch = task.batch(8, step=0, seq_len=T)
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist(), strict=True):
        sep = inputs.index(SEP)
        data = [x for x in inputs[:sep] if x != PAD]
        assert len(data) == task.num_tokens and sep == T - task.num_tokens
        assert [y for y in targets if y != IGNORE_INDEX] == data
        assert all(y == IGNORE_INDEX for y in targets[: sep])


@pytest.mark.parametrize("needle", ["passkey", "number", "uuid"])
@pytest.mark.parametrize("slack", [0, 1, 77])
def test_niah_needle_once_and_answer_at_the_end(needle, slack):
    task = NeedleInHaystack(needle=needle)
    T = task.min_seq_len() + slack
    batch = task.batch(4, step=3, seq_len=T)
    assert bool((batch.inputs[:, 0] == BOS).all())
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist(), strict=True):
        answer = bytes(y for y in targets if y != IGNORE_INDEX)
        assert len(answer) == task._value_len()
        assert targets[-len(answer) :] == list(answer)
        context = bytes(inputs[1 : T - len(answer) + 1])
        assert context.count(answer) == 1, "the value is stated exactly once before the question"
        sentence = {"passkey": b"The pass key is ", "number": b"magic number is: ", "uuid": b"magic uuid is: "}
        assert context.count(sentence[needle] + answer) == 1


def test_niah_depth_moves_the_needle():
    T = 600
    shallow = NeedleInHaystack(depth=0.0).batch(1, step=0, seq_len=T)
    deep = NeedleInHaystack(depth=1.0).batch(1, step=0, seq_len=T)
    at = [bytes(b.inputs[0].tolist()[1:]).find(b"The pass key") for b in (shallow, deep)]
    assert at[0] < 10 and at[1] > T - NeedleInHaystack().min_seq_len() - 120


def test_seq_len_comes_from_the_spec_or_the_caller():
    task = MQAR(num_pairs=2, seq_len=21)
    assert task.batch(1, step=0).inputs.shape == (1, 21)
    assert task.batch(1, step=0, seq_len=99).inputs.shape == (1, 21)  # the spec's own wins
    with pytest.raises(MirasError, match="no seq_len"):
        MQAR().batch(1, step=0)
    with pytest.raises(MirasError, match="at least 63 tokens"):
        MQAR(num_pairs=16).batch(1, step=0, seq_len=62)
    assert MQAR(num_pairs=16).batch(1, step=0, seq_len=63).inputs.shape == (1, 63)


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (MQAR, {"num_pairs": 200}, "num_pairs"),
        (MQAR, {"num_pairs": 4, "num_queries": 5}, "num_queries"),
        (MQAR, {"num_pairs": 4, "seq_len": 10}, "seq_len"),
        (NoisyRecall, {"vocab_size": 200, "noise_vocab": 100}, "noise_vocab"),
        (NoisyRecall, {"vocab_size": 4, "key_len": 1, "num_pairs": 3}, "num_pairs"),
        (NeedleInHaystack, {"depth": 1.5}, "depth"),
        (SelectiveCopy, {"num_tokens": 0}, "num_tokens"),
    ],
)
def test_bad_parameters_name_the_field(cls, kwargs, field):
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)
