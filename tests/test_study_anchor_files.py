"""Anchors that are the user's own point files (as Optuna users enqueue their own points)."""

from __future__ import annotations

import pytest
import yaml
from test_study import run_inline, trials_of, write_study

from miras_search.errors import ConfigError
from miras_search.points import load_point
from miras_search.study import load_study_file

MINE = {"preset": "gated_deltanet", "name": "ignored",
        "block": {"d_model": 32, "n_heads": 2, "n_layers": 2, "max_seq_len": 512}}


def test_a_point_file_anchor_is_measured_first_as_written(tmp_path):
    (tmp_path / "points").mkdir()
    (tmp_path / "points" / "mine.yaml").write_text(yaml.safe_dump(MINE))
    path = write_study(tmp_path, trials=2, sampler={"kind": "random", "anchors": ["points/mine.yaml"]})
    run_inline(path)
    trials = trials_of(path)
    first = trials[0]
    assert first.user_attrs["anchor"] == "points/mine.yaml"
    stored = first.user_attrs["point"]
    assert stored["block"]["n_layers"] == 2  # its own block (outside the space's, which has 1)
    assert stored["name"] == "mine"
    expected = load_point(tmp_path / "points" / "mine.yaml")
    assert {k: stored[k] for k in ("memory", "bias", "retention", "algorithm")} == \
        expected.model_dump(mode="json", include={"memory", "bias", "retention", "algorithm"})
    assert stored["train"]["tokens"] == 896  # the study's budget
    run_inline(path, trials=3)  # a resume does not queue it again
    assert sum(t.user_attrs.get("anchor") == "points/mine.yaml" for t in trials_of(path)) == 1


def test_a_missing_or_bad_anchor_file_is_refused_before_the_study_starts(tmp_path):
    path = write_study(tmp_path, sampler={"kind": "random", "anchors": ["moneta", "nowhere.yaml"]})
    with pytest.raises(ConfigError) as error:
        load_study_file(path)
    assert "sampler.anchors.1" in str(error.value) and "nowhere.yaml" in str(error.value)
    (tmp_path / "bad.yaml").write_text("preset: moneta\nbias: {kind: lp, p: 9}\n")
    path = write_study(tmp_path, sampler={"kind": "random", "anchors": ["bad.yaml"]})
    with pytest.raises(ConfigError, match=r"bias\.p"):
        load_study_file(path)
    path = write_study(tmp_path, sampler={"kind": "random", "anchors": ["mamba9"]})
    with pytest.raises(ConfigError, match="or a point file"):
        load_study_file(path)
