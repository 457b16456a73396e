"""A point's identity leaves out the fields its settings never read (a gate's ``value`` in the
modes retnet, alibi and mamba): keys, encoding into spaces, preset names and old studies."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import optuna
import pytest
import yaml
from test_study import TINY_SPACE, run_inline, trials_of, write_study
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.presets import is_preset_point, preset, preset_names
from miras_search.schema import Gate, ModelPoint, canonical_data, unused_paths
from miras_search.space.search_space import SearchSpace
from miras_search.study.records import point_key, stored_key

ROOT = Path(__file__).resolve().parents[1]


def old_key(point: ModelPoint) -> str:
    """``point_key`` as versions before this change computed it (every field, name aside)."""
    text = json.dumps(point.model_dump(mode="json", exclude={"name"}), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def with_alpha(point: ModelPoint, **fields) -> ModelPoint:
    data = point.model_dump(mode="json")
    data["retention"]["alpha"] = {**data["retention"]["alpha"], **fields}
    return ModelPoint.model_validate(data)


@pytest.mark.parametrize(("mode", "used"), [
    ("constant", True), ("head", True), ("channel", True),
    ("retnet", False), ("alibi", False), ("mamba", False),
])
def test_the_key_ignores_value_exactly_where_the_mode_ignores_it(mode, used):
    base = preset("gated_deltanet")
    one, two = with_alpha(base, mode=mode, value=0.9, a_init=None, dt_init=None), with_alpha(
        base, mode=mode, value=0.99, a_init=None, dt_init=None)
    assert ("value" in Gate(mode=mode).unused_fields()) is not used
    assert (point_key(one) == point_key(two)) is not used
    assert (("retention", "alpha", "value") in unused_paths(one)) is not used


def test_a_point_without_unused_fields_keeps_its_old_key():
    for name in ("moneta", "titans", "deltanet", "atlas"):
        point = preset(name)
        assert not unused_paths(point)
        assert point_key(point) == old_key(point)
    assert point_key(preset("mamba2")) != old_key(with_alpha(preset("mamba2"), value=0.95))


def test_canonical_data_drops_only_the_unused_fields():
    data = canonical_data(preset("retnet"))
    assert "value" not in data["retention"]["alpha"] and data["retention"]["alpha"]["mode"] == "retnet"
    assert data["algorithm"]["eta"] == preset("retnet").model_dump(mode="json")["algorithm"]["eta"]


def test_a_preset_with_another_unused_value_still_carries_the_preset_name():
    point = with_alpha(preset("mamba2"), value=0.3).model_copy(update={"name": "mamba2"})
    assert is_preset_point(point)
    assert not is_preset_point(with_alpha(preset("mamba2"), dt_init=[0.01, 0.1]).model_copy(
        update={"name": "mamba2"}))


@pytest.mark.parametrize("space_file", sorted((ROOT / "spaces").glob("*.yaml")), ids=lambda p: p.stem)
def test_presets_of_every_decay_mode_encode_into_the_shipped_spaces(space_file):
    space = SearchSpace.load(space_file)
    drawn_modes = "miras-full" in space_file.stem
    for name in preset_names():
        params = space.encode(preset(name), axes_only=True)
        if params is None:
            assert not drawn_modes, f"{name} does not encode into {space_file.name}"
            continue
        rebuilt = space.point_from_trial(optuna.trial.FixedTrial(params))
        assert canonical_data(rebuilt)["retention"] == canonical_data(preset(name))["retention"]


SPACE_OLD_STYLE = {  # draws value beside the mode, also under the modes that ignore it
    "type": "space", "name": "old", "preset": "moneta",
    "params": {"retention": {"kind": {"choice": {"l2": {"alpha": {
        "mode": {"choice": {"head": {}, "retnet": {}, "mamba": {"a_init": {"choice": [[1.0, 16.0], [0.0, 16.0]]},
                                                                    "dt_init": [0.001, 0.1]}}},
        "value": {"float": [0.8, 0.99]}}}}}}},
}
SPACE_NEW_STYLE = {  # draws value only where the mode reads it
    "type": "space", "name": "new", "preset": "moneta",
    "params": {"retention": {"kind": {"choice": {"l2": {"alpha": {
        "mode": {"choice": {"head": {"value": {"float": [0.8, 0.99]}}, "retnet": {},
                            "mamba": {"a_init": {"choice": [[1.0, 16.0], [0.0, 16.0]]}, "dt_init": [0.001, 0.1]}}}}}}}}},
}


@pytest.mark.parametrize("space_data", [SPACE_OLD_STYLE, SPACE_NEW_STYLE], ids=["old", "new"])
def test_encode_holds_a_decay_whatever_its_unused_value(space_data):
    space = SearchSpace.from_dict(space_data)
    for name in ("mamba2", "gated_deltanet", "retnet"):
        decay = preset("moneta").model_copy(update={"retention": preset(name).retention})
        for value in (0.5, 0.95, 0.3):  # 0.5 and 0.3 lie outside the old space's value range
            assert space.encode(with_alpha(decay, value=value)) is not None, (name, value)
            assert space.encode(with_alpha(decay, value=value), axes_only=True) is not None
        head = with_alpha(decay, mode="head", value=0.5, a_init=None, dt_init=None)
        assert space.encode(head) is None  # a used value the space cannot draw
        assert space.encode(with_alpha(head, value=0.9)) is not None


def test_a_study_stored_with_old_keys_resumes_reusing_its_results_and_anchor(tmp_path):
    one_point = {**TINY_SPACE, "params": {"algorithm": {"kind": {"choice": ["gd"]}}}}
    path = write_study(tmp_path, one_point, trials=1, sampler={"kind": "random", "anchors": ["gated_deltanet"]})
    assert run_inline(path).ran == 1
    # the journal rewritten as an earlier version wrote it: the preset's decay carried value
    # 0.95, and the key was taken with it
    first = trials_of(path)[0]
    old_point = with_alpha(ModelPoint.model_validate(first.user_attrs["point"]), value=0.95)
    journals = [f for f in tmp_path.rglob("*") if f.is_file() and first.user_attrs["point_key"] in f.read_text(errors="ignore")]
    assert len(journals) == 1
    text = journals[0].read_text()
    old_text = text.replace(first.user_attrs["point_key"], old_key(old_point)).replace(
        '"mode":"mamba","value":0.5,', '"mode":"mamba","value":0.95,')
    assert old_text.count(old_key(old_point)) and old_text.count('"value":0.95')
    journals[0].write_text(old_text)
    stored = trials_of(path)[0].user_attrs
    assert stored["point_key"] == old_key(old_point) != point_key(old_point) == stored_key(stored)

    result = CliRunner().invoke(app, ["resume", str(path), "--inline", "--trials", "3"])
    assert result.exit_code == 0, result.output
    trials = trials_of(path)
    assert [t.user_attrs.get("anchor") for t in trials] == ["gated_deltanet", None, None]  # not queued again
    assert all(t.user_attrs.get("reused_from") == 0 for t in trials[1:])  # the same model: not trained again


def test_validate_warns_about_a_draw_some_points_leave_unused(tmp_path):
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(yaml.safe_dump(SPACE_OLD_STYLE))
    new.write_text(yaml.safe_dump(SPACE_NEW_STYLE))
    result = CliRunner().invoke(app, ["validate", str(old), str(new)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "old.yaml" in warnings[0], result.output
    assert "retention.alpha.value" in result.output and "'retnet'" in result.output and "'mamba'" in result.output
    assert "'head'" not in result.output
    assert SearchSpace.from_dict(SPACE_NEW_STYLE).unused_draws() == []


def test_the_shipped_spaces_draw_no_unused_field():
    for space_file in sorted((ROOT / "spaces").glob("*.yaml")):
        assert SearchSpace.load(space_file).unused_draws() == [], space_file.name
