"""The MAD tasks (Poli et al., 2024): layouts, where the loss is taken, that every answer is
determined by the context (or, for memorization, by the fixed map), splits, determinism, errors."""

from __future__ import annotations

import pytest
import torch

from miras_search.data import (
    IGNORE_INDEX,
    MAD_TASKS,
    PAD,
    PRESETS,
    SEP,
    VOCAB_SIZE,
    MadCompression,
    MadFuzzyRecall,
    MadMemorization,
    MadNoisyRecall,
    MadRecall,
    MadSelectiveCopy,
    mad_preset,
    mad_scores,
    parse_data_spec,
    parse_data_specs,
)
from miras_search.errors import ConfigError

TASKS = [
    MadRecall(vocab_size=16),
    MadNoisyRecall(vocab_size=24, noise_vocab=8, frac_noise=0.5),
    MadFuzzyRecall(vocab_size=12, key_len=2, value_len=3),
    MadSelectiveCopy(vocab_size=10, num_tokens=5),
    MadCompression(vocab_size=12),
    MadMemorization(vocab_size=40),
]
IDS = [t.task for t in TASKS]


def _sequence(batch, row: int) -> list[int]:
    """The T + 1 tokens of a teacher-forced row: inputs and the last target."""
    return [*batch.inputs[row].tolist(), int(batch.targets[row, -1])]


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_same_seed_same_batch_other_seed_step_or_split_other_batch(task):
    T = task.min_seq_len() + 63
    a = task.batch(4, step=3, seed=5, seq_len=T)
    b = task.batch(4, step=3, seed=5, seq_len=T)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    for other in (task.batch(4, step=3, seed=6, seq_len=T), task.batch(4, step=4, seed=5, seq_len=T),
                  task.batch(4, step=3, seed=5, split="validation", seq_len=T)):
        assert not torch.equal(a.inputs, other.inputs)


@pytest.mark.parametrize("task", TASKS, ids=IDS)
@pytest.mark.parametrize("slack", [0, 1, 7, 100])
@pytest.mark.parametrize("split", ["train", "validation"])
def test_shapes_vocab_and_answers(task, slack, split):
    T = task.min_seq_len() + slack
    batch = task.batch(3, step=0, seq_len=T, split=split)
    assert batch.inputs.shape == batch.targets.shape == (3, T)
    assert batch.inputs.dtype == batch.targets.dtype == torch.long
    assert int(batch.inputs.min()) >= 0 and int(batch.inputs.max()) < VOCAB_SIZE
    scored = batch.targets[batch.answer_mask]
    assert scored.numel() > 0 and int(scored.min()) >= 0
    assert int(scored.max()) < task.vocab_size  # answers are task symbols, never PAD or SEP
    assert batch.answer_mask.any(dim=1).all()  # every row asks something


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_train_and_validation_sequences_do_not_overlap(task):
    T = 40 if not isinstance(task, MadFuzzyRecall) else 64
    train = {tuple(r) for s in range(8) for r in task.batch(16, step=s, seq_len=T).inputs.tolist()}
    val = {tuple(r) for s in range(8) for r in task.batch(16, step=s, seq_len=T, split="validation").inputs.tolist()}
    assert len(train) == len(val) == 128 and not train & val


def _recall_answers_from_context(task: MadRecall, T: int) -> None:
    S = task.symbols()
    K = S // 2
    batch = task.batch(32, step=2, seq_len=T, split="validation")
    queries = 0
    for row in range(32):
        seq, targets = _sequence(batch, row), batch.targets[row].tolist()
        start = 1 if seq[0] == PAD else 0
        assert seq.count(PAD) == start == (T + 1) % 2
        pairs = [(seq[i], seq[i + 1]) for i in range(start, len(seq), 2)]
        seen: dict[int, int] = {}
        expected = [IGNORE_INDEX] * len(targets)
        for j, (k, v) in enumerate(pairs):
            if k >= S:  # a noise slot: two noise symbols
                assert S <= k < S + task.noise_vocab and S <= v < S + task.noise_vocab
                continue
            assert k < K <= v < S
            if k in seen:
                assert seen[k] == v  # one map per sequence
                expected[start + 2 * j] = v  # the target at the key is its value
            seen[k] = v
        assert targets == expected
        assert targets[-1] != IGNORE_INDEX  # the last pair repeats a key
        queries += sum(t != IGNORE_INDEX for t in targets)
    assert queries >= 32  # one per row at least: the last pair


@pytest.mark.parametrize("T", [3, 8, 63, 100])
def test_recall_scores_exactly_the_values_of_repeated_keys(T):
    _recall_answers_from_context(MadRecall(vocab_size=12), T)


@pytest.mark.parametrize("T", [8, 63, 100])
@pytest.mark.parametrize("frac_noise", [0.0, 0.2, 0.8])
def test_noisy_recall_noise_is_never_a_key_value_or_answer(T, frac_noise):
    task = MadNoisyRecall(vocab_size=20, noise_vocab=6, frac_noise=frac_noise)
    _recall_answers_from_context(task, T)
    batch = task.batch(64, step=0, seq_len=T, split="validation")
    share = float(((batch.inputs >= 14) & (batch.inputs < 20)).float().mean())
    P = (T + 1) // 2  # pairs; one of the first P - 1 and the last are never noise
    assert abs(share - frac_noise * (P - 2) / P) < 0.03 + 2 / T


def test_recall_trains_on_every_token_unless_told_otherwise():
    for task in (MadRecall(), MadFuzzyRecall(), MadNoisyRecall()):
        train = task.batch(4, step=0, seq_len=64)
        seq = torch.cat([train.inputs, train.targets[:, -1:]], dim=1)
        assert torch.equal(train.targets, torch.where(seq[:, 1:] == PAD, IGNORE_INDEX, seq[:, 1:]))
        answers = task.model_copy(update={"loss_on": "answers"})
        a, v = answers.batch(4, step=0, seq_len=64), answers.batch(4, step=0, seq_len=64, split="validation")
        assert torch.equal(a.inputs, train.inputs)  # the same draw, fewer targets
        assert a.answer_mask.sum() < train.answer_mask.sum()
        assert 0 < int(v.answer_mask.sum()) <= int(v.inputs.ne(PAD).sum()) // 2 + 1  # values only


def _segments(seq: list[int], K: int) -> list[tuple[tuple[int, ...], tuple[int, ...], int]]:
    """(key, value, position of the value's first token) of a fuzzy-recall sequence."""
    out, i = [], 0
    while seq[i] == PAD:
        i += 1
    while i < len(seq):
        k0 = i
        while i < len(seq) and seq[i] < K:
            i += 1
        v0 = i
        while i < len(seq) and seq[i] >= K:
            i += 1
        out.append((tuple(seq[k0:v0]), tuple(seq[v0:i]), v0))
    return out


@pytest.mark.parametrize("split", ["train", "validation"])
@pytest.mark.parametrize("T", [10, 64, 129])
def test_fuzzy_recall_scores_every_value_token_of_a_repeated_key(split, T):
    task = MadFuzzyRecall(vocab_size=12, key_len=2, value_len=3, loss_on="answers")
    S = task.symbols()
    K = S // 2
    batch = task.batch(32, step=1, seq_len=T, split=split)
    lengths = set()
    for row in range(32):
        seq, targets = _sequence(batch, row), batch.targets[row].tolist()
        assert PAD not in seq[seq.index(next(t for t in seq if t != PAD)):]  # PAD only in front
        expected = [IGNORE_INDEX] * len(targets)
        seen: dict[tuple[int, ...], tuple[int, ...]] = {}
        segments = _segments(seq, K)
        for key, value, at in segments:
            assert 1 <= len(key) <= task.key_len and 1 <= len(value) <= task.value_len
            assert len(set(key)) == len(key) and len(set(value)) == len(value)  # distinct tokens
            assert all(K <= t < S for t in value)
            lengths.add(len(key))
            if key in seen:
                assert seen[key] == value
                expected[at - 1 : at - 1 + len(value)] = list(value)
            seen[key] = value
        assert targets == expected
        assert segments[-1][0] in {k for k, _, _ in segments[:-1]}  # the probe, asked at the end
    if split == "validation":
        assert lengths == {task.key_len}  # MAD prompts at the longest key
    elif T > 10:
        assert lengths == set(range(1, task.key_len + 1))


@pytest.mark.parametrize("T", [12, 13, 100])
def test_selective_copy_copies_the_data_in_order_onto_blanks(T):
    task = MadSelectiveCopy(vocab_size=10, num_tokens=5)
    batch = task.batch(8, step=0, seq_len=T, split="validation")
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist(), strict=True):
        sep = inputs.index(SEP)
        assert sep == T - 6 and inputs[sep + 1 :] == [PAD] * 5  # the answers are never fed back
        data = [t for t in inputs[:sep] if t != PAD]
        assert len(data) == 5 and all(0 <= t < 8 for t in data)
        assert targets == [IGNORE_INDEX] * (sep + 1) + data


@pytest.mark.parametrize("T", [3, 4, 31, 100])
def test_compression_rebuilds_the_sequence_from_blanks(T):
    batch = MadCompression(vocab_size=12).batch(8, step=0, seq_len=T)
    L = (T - 1) // 2
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist(), strict=True):
        lead = T - 2 * L - 1
        data = inputs[lead : lead + L]
        assert inputs[:lead] == [PAD] * lead and all(0 <= t < 11 for t in data)
        assert inputs[lead + L] == SEP and inputs[lead + L + 1 :] == [PAD] * L
        assert targets == [IGNORE_INDEX] * (lead + L + 1) + data


def test_memorization_map_is_fixed_one_to_one_and_the_only_source_of_the_answers():
    task = MadMemorization(vocab_size=40)
    table = task.value_map().tolist()
    assert len(table) == 19 and len(set(table)) == 19 and all(19 <= v < 39 for v in table)
    assert MadMemorization(vocab_size=40).value_map().tolist() == table
    assert MadMemorization(vocab_size=40, map_seed=1).value_map().tolist() != table
    for seed, split, T in ((0, "train", 32), (3, "validation", 33)):
        batch = task.batch(8, step=1, seed=seed, split=split, seq_len=T)
        lead = T % 2
        keys, seps = batch.inputs[:, lead::2], batch.inputs[:, lead + 1 :: 2]
        assert (seps == SEP).all() and (keys < 19).all()
        assert batch.targets[:, lead + 1 :: 2].tolist() == [[table[k] for k in row] for row in keys.tolist()]
        assert (batch.targets[:, lead::2] == IGNORE_INDEX).all()
        assert not torch.isin(batch.targets[:, lead + 1 :: 2], batch.inputs).any()  # never in the context


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"task": "mad_noisy_recall", "vocab_size": 16, "noise_vocab": 15}, "vocab_size", "at least 2 symbols"),
        ({"task": "mad_recall", "frac_noise": 0.3}, "frac_noise", "noise_vocab >= 1"),
        ({"task": "mad_noisy_recall", "frac_noise": 1.0}, "frac_noise", "less than 1"),
        ({"task": "mad_fuzzy_recall", "vocab_size": 7, "key_len": 4}, "key_len", "exceeds the 3 symbols"),
        ({"task": "mad_selective_copy", "num_tokens": 16, "seq_len": 33}, "seq_len", "at least 34 tokens"),
        ({"task": "mad_memorization", "vocab_size": 300}, "vocab_size", "less than or equal to 257"),
        ({"task": "mad_recall", "vocab_size": 512}, "vocab_size", "less than or equal to 256"),
        ({"task": "mad_compression", "vocab_size": 2}, "vocab_size", "greater than or equal to 4"),
        ({"task": "mad_recall", "loss_on": "keys"}, "loss_on", "'all' or 'answers'"),
        ({"task": "mad_recal"}, "task", "must be one of"),
    ],
)
def test_bad_parameters_name_the_problem(spec, field, words):
    with pytest.raises(ConfigError) as info:
        parse_data_spec(spec)
    message = str(info.value)
    assert words in message and "Traceback" not in message
    assert field in message


def test_presets_validate_and_hold_every_mad_task():
    for name in PRESETS:
        specs = parse_data_specs(mad_preset(name))
        assert {s.task for s in specs} == set(MAD_TASKS)
        for spec in specs:
            assert spec.batch(2, step=0).inputs.shape == (2, spec.seq_len)
    levels = parse_data_specs(mad_preset("mad-levels"))
    assert len(levels) == 41 and max(s.seq_len for s in levels) == 1024
    assert mad_preset("mad")[0] is not PRESETS["mad"][0]  # a copy: editing it changes no preset


def test_mad_score_is_the_mean_over_tasks_of_the_mean_over_levels():
    scores = mad_scores([("mad_recall", 1.0), ("mad_recall", 0.5), ("mad_compression", 0.25), ("mqar", 0.0)])
    assert scores == {"mad/mad_recall": 0.75, "mad/mad_compression": 0.25, "mad_score": 0.5}
    assert mad_scores([("mqar", 1.0), ("niah", 1.0)]) == {}
