"""Bad input through the Python API (README, "From Python"): each names the argument and what it
takes, as a MirasError / ConfigError, never a TypeError or AttributeError from deep inside."""

from __future__ import annotations

import re
from typing import Any

import pytest

import miras_search as ms
from miras_search.errors import ConfigError, MirasError

TINY_BLOCK = {"d_model": 16, "n_heads": 2, "n_layers": 1, "max_seq_len": 64}


@pytest.fixture(scope="module")
def space() -> ms.SearchSpace:
    return ms.SearchSpace.from_dict({"name": "s", "base": {"block": TINY_BLOCK, "train": {"seq_len": 32}},
                                     "params": {"block": {"n_layers": {"choice": [1, 2]}}}})


@pytest.mark.parametrize(("n", "seed", "words"), [
    (-1, 0, "sample: n must be a whole number >= 0, not -1"),
    ("2", 0, "sample: n must be a whole number >= 0, not '2'"),
    (True, 0, "not True"),
    (2, "x", "sample: seed must be a whole number >= 0, not 'x'"),
    (2, -3, "seed must be a whole number >= 0, not -3"),
])
def test_sample_names_a_bad_count_or_seed(space: ms.SearchSpace, n: Any, seed: Any, words: str) -> None:
    with pytest.raises(MirasError, match=re.escape(words)):
        space.sample(n, seed=seed)


def test_sample_of_none_is_empty_and_of_some_is_that_many(space: ms.SearchSpace) -> None:
    assert space.sample(0) == [] and len(space.sample(3, seed=1)) == 3


@pytest.mark.parametrize("data", ["moneta", None, ["memory"], 3])
def test_point_from_dict_says_a_point_is_a_mapping(data: Any) -> None:
    with pytest.raises(ConfigError, match="a point is a mapping of its fields"):
        ms.point_from_dict(data)


@pytest.mark.parametrize("context", [0, -5, 2.5, "8", True])
def test_state_size_names_a_bad_context(context: Any) -> None:
    with pytest.raises(MirasError, match=r"context: a number of tokens >= 1"):
        ms.state_size("gated_deltanet", context=context)


def test_point_to_yaml_takes_what_the_factory_takes() -> None:
    text = ms.point_to_yaml({"preset": "moneta", "block": {"n_layers": 3}})
    assert ms.point_from_dict(__import__("yaml").safe_load(text)) == ms.preset("moneta", block={"n_layers": 3})
    assert ms.point_to_yaml("moneta") == ms.point_to_yaml(ms.preset("moneta"))


def test_run_trial_validates_a_mapping_config_and_names_another_type() -> None:
    point = ms.preset("moneta", block=TINY_BLOCK, train={"seq_len": 32})
    with pytest.raises(ConfigError, match=r"tokens: Input should be greater than or equal to 1"):
        ms.run_trial(point, {"tokens": -100})
    with pytest.raises(MirasError, match="config: expected a TrialConfig or a mapping of its fields, not int"):
        ms.run_trial(point, 5)
    with pytest.raises(MirasError, match="point: expected a ModelPoint"):
        ms.run_trial(3.5, {"tokens": 1024})
    result = ms.run_trial("gated_deltanet", {"tokens": 1024, "batch_size": 2, "seq_len": 32, "eval_batches": 1})
    assert result.status == "complete", result


@pytest.mark.parametrize("name", [None, 5, ["moneta"]])
def test_preset_says_a_name_is_text(name: Any) -> None:
    with pytest.raises(ConfigError, match="a preset's name is text, one of linear_attention"):
        ms.preset(name)


@pytest.mark.parametrize(("call", "words"), [
    (lambda: ms.SearchSpace.load({"type": "space"}), "SearchSpace.load: expected a space file's path; got dict"),
    (lambda: ms.load_point(None), "load_point: expected a point file's path or a preset name; got NoneType"),
])
def test_loaders_name_what_they_take(call: Any, words: str) -> None:
    with pytest.raises(MirasError, match=re.escape(words)):
        call()


def test_trial_records_take_a_study_or_a_study_file(tmp_path) -> None:
    from _fake_study import fake_study

    from miras_search.report.table import trial_records

    study_file = fake_study(tmp_path)
    records = trial_records(study_file)
    assert records and {"number", "state", "val_bpb"} <= set(records[0])
    with pytest.raises(MirasError, match=re.escape("expected an optuna.Study or a study YAML file; got int")):
        trial_records(3)
    with pytest.raises(MirasError, match="does not exist"):
        trial_records(tmp_path / "missing.yaml")
