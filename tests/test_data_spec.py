"""answer_accuracy on hand-made inputs, DataSpec parsing errors, and the weighted mixture."""

from __future__ import annotations

import pytest
import torch

from miras_search.data import (
    IGNORE_INDEX,
    MQAR,
    DataMix,
    NeedleInHaystack,
    SelectiveCopy,
    answer_accuracy,
    iter_batches,
    parse_data_spec,
    parse_data_specs,
    sequence_accuracy,
)
from miras_search.errors import ConfigError, MirasError

X = IGNORE_INDEX


def _logits(predictions: list[list[int]], vocab: int = 5) -> torch.Tensor:
    """[B, T, V] logits whose argmax is ``predictions``."""
    return torch.nn.functional.one_hot(torch.tensor(predictions), vocab).float() * 3.0 - 1.0


def test_answer_accuracy_counts_only_answer_positions():
    logits = _logits([[1, 2, 3, 4], [0, 0, 0, 0]])
    targets = torch.tensor([[X, 2, 0, X], [X, X, X, 0]])  # answers: 2 right, 0 wrong, 0 right
    assert answer_accuracy(logits, targets) == pytest.approx(2 / 3)
    assert sequence_accuracy(logits, targets) == pytest.approx(1 / 2)
    all_right = torch.tensor([[X, 2, 3, 4], [0, X, X, X]])
    assert answer_accuracy(logits, all_right) == 1.0 and sequence_accuracy(logits, all_right) == 1.0
    # A wrong prediction at an ignored position changes nothing.
    assert answer_accuracy(_logits([[4, 2, 3, 4], [0, 1, 1, 1]]), all_right) == 1.0


def test_sequence_accuracy_leaves_out_rows_without_answers():
    logits = _logits([[1, 2, 3], [0, 0, 0], [4, 4, 4]])
    targets = torch.tensor([[X, X, X], [0, 0, X], [4, 3, X]])
    assert sequence_accuracy(logits, targets) == pytest.approx(1 / 2)
    assert answer_accuracy(logits, targets) == pytest.approx(3 / 4)


def test_accuracy_errors():
    with pytest.raises(MirasError, match="no answer positions"):
        answer_accuracy(_logits([[1, 2]]), torch.tensor([[X, X]]))
    with pytest.raises(MirasError, match=r"logits must be \[B, T, V\]"):
        answer_accuracy(_logits([[1, 2]]), torch.tensor([[1, 2, 3]]))


def test_accuracy_of_a_perfect_and_a_uniform_predictor_on_a_task():
    batch = MQAR(vocab_size=64, num_pairs=6).batch(8, step=0, seq_len=41)
    perfect = torch.nn.functional.one_hot(batch.targets.clamp(min=0), 260).float()
    assert answer_accuracy(perfect, batch.targets) == 1.0
    constant = torch.zeros(8, 41, 260)
    constant[..., 0] = 1.0  # always predicts id 0, never a value (values are 32..63)
    assert answer_accuracy(constant, batch.targets) == 0.0


def test_parse_specs_builds_each_task():
    specs = parse_data_specs(
        [
            {"task": "mqar", "num_pairs": 8, "weight": 2},
            {"task": "noisy_recall"},
            {"task": "selective_copy", "num_tokens": 3},
            {"task": "niah", "needle": "uuid", "seq_len": 301},
            {"task": "text"},
            {"task": "files", "paths": ["a.txt"], "field": "body"},
            {"task": "hf", "name": "user/set"},
        ]
    )
    assert [s.task for s in specs] == ["mqar", "noisy_recall", "selective_copy", "niah", "text", "files", "hf"]
    assert isinstance(specs[0], MQAR) and specs[0].weight == 2
    assert parse_data_spec(specs[3]) == specs[3]
    assert parse_data_spec(specs[0].model_dump()) == specs[0]


@pytest.mark.parametrize(
    ("data", "where", "what"),
    [
        ([{"task": "mqar", "num_pairs": 500}], "data.0", "num_pairs"),
        ([{"task": "mqar"}, {"task": "nope"}], "data.1", "'task' must be one of"),
        ([{"task": "niah", "needle": "name"}], "data.0.niah.needle", "passkey"),
        ([{"task": "text", "weight": 0}], "data.0.text.weight", "greater than 0"),
        ([{"task": "selective_copy", "colour": 1}], "data.0.selective_copy.colour", "Extra inputs"),
        ([{"task": "files"}], "data.0.files.paths", "required"),
        ([], "data", "at least one"),
    ],
)
def test_parse_errors_name_the_field(data, where, what):
    with pytest.raises(ConfigError) as error:
        parse_data_specs(data)
    assert where in str(error.value) and what in str(error.value)


def test_mixture_follows_the_weights_and_is_deterministic():
    mix = DataMix([MQAR(num_pairs=4, weight=3.0), SelectiveCopy(num_tokens=4, weight=1.0)])
    picks = [mix.pick(step, seed=1) for step in range(600)]
    share = picks.count(0) / len(picks)
    assert 0.68 < share < 0.82, share  # 0.75 expected; +-3.5 standard deviations
    assert picks == [mix.pick(step, seed=1) for step in range(600)]
    assert picks != [mix.pick(step, seed=2) for step in range(600)]
    name, batch = mix.batch(2, step=3, seed=1, seq_len=33)
    assert name == mix.names[picks[3]] and batch.inputs.shape == (2, 33)


def test_mixture_with_a_length_per_task():
    mix = DataMix([NeedleInHaystack(seq_len=199), MQAR(num_pairs=2)])
    shapes = {mix.batch(1, step=s, seq_len=17)[1].inputs.shape[1] for s in range(20)}
    assert shapes == {199, 17}


def test_iter_batches_matches_single_batches():
    task = SelectiveCopy(num_tokens=3)
    batches = list(iter_batches(task, 2, seed=4, seq_len=13, start=5, stop=8))
    assert len(batches) == 3
    for step, batch in zip(range(5, 8), batches, strict=True):
        assert torch.equal(batch.inputs, task.batch(2, step=step, seed=4, seq_len=13).inputs)


def test_a_source_without_its_task_names_the_task_key():
    """`{file: ...}` (no task) said "Unable to extract tag using discriminator 'task'"."""
    with pytest.raises(ConfigError, match=r"0\.task: required key 'task' is missing"):
        parse_data_specs([{"file": "x.txt"}])
