"""A number field takes no boolean: ``true`` in a point, a space or a study file is an error naming
the field (pydantic's lax mode would read it as 1); a string that spells a number is that number,
and YAML 1.2's exponent floats (``1e-3``) load as numbers."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.errors import ConfigError
from miras_search.points import point_from_dict
from miras_search.schema import ModelPoint
from miras_search.space import SearchSpace
from miras_search.yamlio import parse_yaml


@pytest.mark.parametrize(("data", "path", "shown"), [
    ({"block": {"n_heads": True}}, "block.n_heads", "a boolean (true)"),
    ({"bias": {"kind": "lp", "p": False}}, "bias.p", "a boolean (false)"),
    ({"retention": {"kind": "l2", "alpha": {"value": True}}}, "retention.alpha.value", "a boolean (true)"),
])
def test_a_boolean_in_a_number_field_is_named(data, path, shown):
    with pytest.raises(ConfigError) as caught:
        point_from_dict(data)
    problem, = caught.value.problems
    assert problem.path == path
    assert problem.message == f"a number is needed, not {shown}"


def test_numbers_and_optional_numbers_still_validate():
    point = ModelPoint.model_validate({"block": {"d_model": 64, "n_heads": 4}, "train": {"lr": 1}})
    assert point.train.lr == 1.0 and isinstance(point.train.lr, float)
    spelled = ModelPoint.model_validate({"block": {"d_model": "64"}, "train": {"lr": "1e-3"}})  # PyYAML's
    assert spelled.block.d_model == 64 and spelled.train.lr == 1e-3
    assert ModelPoint.model_validate({"memory": {"kind": "none", "window": None}, "algorithm": {"kind": "none"}}).memory.window is None


def test_a_range_of_booleans_is_refused():
    with pytest.raises(ConfigError, match=r"params.block.n_layers.int.*a number is needed, not a boolean"):
        SearchSpace.from_dict({"name": "s", "params": {"block": {"n_layers": {"int": [True, 4]}}}})


@pytest.mark.parametrize(("text", "value"), [("1e-3", 1e-3), ("5E4", 5e4), ("-2.5e+2", -250.0),
                                             ("1.0e-3", 1e-3), ("'1e-3'", "1e-3"), ("1e", "1e")])
def test_yaml_exponent_floats_are_numbers_and_quoted_ones_strings(text, value):
    data, _ = parse_yaml(f"x: {text}\n", "t.yaml")
    assert data["x"] == value and type(data["x"]) is type(value)


def test_the_cli_names_the_field_and_its_line(tmp_path):
    (tmp_path / "p.yaml").write_text("block:\n  d_model: 64\n  n_heads: yes\n")
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "p.yaml")], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "block.n_heads (line 3): a number is needed, not a boolean (true)" in result.output
