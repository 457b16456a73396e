"""A space's ranges and nodes: a step that does not fit its range, and an unknown key inside a
range or a constraint, are errors that name the field and what is allowed."""

from __future__ import annotations

import pytest

from miras_search.errors import ConfigError
from miras_search.space import SearchSpace

BASE = {"block": {"d_model": 64, "n_heads": 2, "n_layers": 2}}


def _problems(params: dict, **extra) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        SearchSpace.from_dict({"name": "s", "base": BASE, "params": params, **extra})
    return [str(problem) for problem in caught.value.problems]


@pytest.mark.parametrize(("node", "message"), [
    ({"float": [0.001, 0.01], "step": 0.1}, "'step' 0.1 is larger than the range [0.001, 0.01]"),
    ({"float": [0.001, 0.01], "step": 0.004},
     "'step' 0.004 does not divide the range [0.001, 0.01]: its grid would end at 0.009"),
])
def test_a_float_step_that_does_not_fit_its_range_is_refused(node, message):
    (problem,) = _problems({"train": {"lr": node}})
    assert problem.startswith("params.train.lr") and message in problem


def test_an_int_step_that_does_not_divide_its_range_is_refused():
    (problem,) = _problems({"block": {"n_layers": {"int": [1, 4], "step": 2}}})
    assert "'step' 2 does not divide the range [1, 4]: its grid would end at 3" in problem


@pytest.mark.parametrize(("section", "field", "node"), [
    ("block", "n_layers", {"int": [2, 8], "step": 2}),
    ("train", "lr", {"float": [0.001, 0.009], "step": 0.001}),
    ("train", "lr", {"float": [0.1, 0.9], "step": 0.1}),
    ("train", "lr", {"float": [0.005, 0.005], "step": 0.1}),
])
def test_steps_that_fit_are_kept(section, field, node):
    space = SearchSpace.from_dict({"name": "s", "base": BASE, "params": {section: {field: node}}})
    values = {getattr(getattr(point, section), field) for point in space.sample(12, seed=0)}
    low, high = node.get("int") or node["float"]
    assert all(low - 1e-12 <= value <= high + 1e-12 for value in values)


def test_an_unknown_key_in_a_range_lists_the_range_keys():
    (problem,) = _problems({"block": {"n_layers": {"int": [2, 4], "lg": True}}})
    assert problem.startswith("params.block.n_layers.lg")
    assert "unknown key (did you mean 'log'?); allowed keys here: log, int, step" in problem


def test_an_unknown_key_in_a_constraint_lists_the_constraint_keys():
    problems = _problems({"block": {"n_layers": {"choice": [2, 4]}}},
                         constraints=[{"when": {"block.n_layers": 2}, "exec": "x"}])
    assert any(p.startswith("constraints.0.exec") and "allowed keys here: when, require, forbid" in p
               for p in problems), problems


@pytest.mark.parametrize(("test", "where"), [
    ({"bias.kind": "banana"}, "constraints.0.when.bias.kind"),
    ({"bias.kind": {"in": ["l2", "banana"]}}, "constraints.0.when.bias.kind.in"),
    ({"block.n_layers": {"not_in": [0]}}, "constraints.0.when.block.n_layers.not_in"),
])
def test_a_constraint_value_the_field_cannot_take_is_refused(test, where):
    problems = _problems({"bias": {"kind": {"choice": ["l2", "lp"]}}},
                         constraints=[{"when": test, "forbid": {"bias.kind": "lp"}}])
    assert any(p.startswith(where) and "the test could never match" in p for p in problems), problems


def test_constraint_values_the_field_takes_are_kept():
    space = SearchSpace.from_dict({"name": "s", "base": BASE,
                                   "params": {"bias": {"kind": {"choice": ["l2", "lp"]}}},
                                   "constraints": [{"when": {"bias.kind": {"in": ["lp"]}},
                                                    "forbid": {"block.n_layers": {"in": [2]}}}]})
    assert {p.bias.kind for p in space.sample(8, seed=0)} == {"l2"}


@pytest.mark.parametrize(("test", "words"), [
    ({"block.n_layers": "2"}, "'2' is text, while block.n_layers holds int values: write 2 without quotes"),
    ({"block.n_layers": {"in": [4, "2"]}}, "'2' is text"),
    ({"train.lr": "0.003"}, "'0.003' is text, while train.lr holds float values: write 0.003"),
])
def test_a_number_written_as_text_in_a_constraint_is_refused(test, words):
    """A drawn value is compared as the point holds it, so '2' would never equal 2."""
    problems = _problems({"block": {"n_layers": {"choice": [2, 4]}}},
                         constraints=[{"when": test, "forbid": {"train.chunk_size": 16}}])
    assert any("constraints.0.when" in p and words in p and "could never match" in p for p in problems), problems


def test_a_number_in_a_constraint_matches_a_choice_written_as_text():
    space = SearchSpace.from_dict({"name": "s", "base": BASE,
                                   "params": {"block": {"n_layers": {"choice": ["1", "2"]}}},
                                   "constraints": [{"forbid": {"block.n_layers": 2}}]})
    assert {p.block.n_layers for p in space.sample(6, seed=0)} == {1}


@pytest.mark.parametrize("node", [{"low": 0.001, "high": 0.01, "log": True}, {"min": 1, "max": 2}])
def test_a_mapping_under_a_one_value_field_says_how_to_write_a_range(node):
    """An Optuna-style range under train.lr: one problem that shows the space's own forms."""
    (problem,) = _problems({"train": {"lr": node}})
    assert problem.startswith("params.train.lr.") and "train.lr holds one value, not a mapping" in problem
    assert "{float: [lo, hi]}" in problem and "{choice: [...]}" in problem


@pytest.mark.parametrize(("axis", "params", "refused"), [
    ("retention", {"kind": "l2", "alpha": {"value": {"float": [0.5, 1.5]}}}, "alpha.value must lie in (0.0, 1.0]"),
    ("algorithm", {"kind": "momentum", "theta": {"value": {"float": [0.5, 1.0]}}}, "theta.value must lie in (0.0, 1.0)"),
    ("retention", {"kind": "l2", "alpha": {"value": {"float": [0.5, 1.0]}}}, None),
    ("algorithm", {"kind": "gd", "eta": {"value": {"float": [0.01, 2.0], "log": True}}}, None),
])
def test_a_gate_range_must_lie_within_the_bound_its_axis_sets(axis, params, refused):
    spec = {"name": "s", "base": BASE, "params": {axis: params}}
    if refused is None:
        gate = next(name for name in params if name != "kind")
        low, high = params[gate]["value"]["float"]
        values = [getattr(getattr(p, axis), gate).value for p in SearchSpace.from_dict(spec).sample(8, seed=0)]
        assert all(low <= value <= high for value in values)
        return
    with pytest.raises(ConfigError) as caught:
        SearchSpace.from_dict(spec)
    (problem,) = caught.value.problems
    assert problem.path.endswith(".value") and "reaches outside the values" in problem.message
    assert refused in problem.message


@pytest.mark.parametrize(("params", "where", "lacking"), [
    ({"bias": {"kind": {"choice": {"l2": {}, "lp": {}}}, "p": 3}}, "params.bias.p", "bias kind l2 has no 'p'"),
    ({"bias": {"kind": {"choice": ["huber", "l2", "lp"]}, "p": {"float": [2, 4]}}}, "params.bias.p",
     "bias kinds huber and l2 have no 'p'"),
    ({"memory": {"kind": {"choice": ["matrix", "mlp"]}, "depth": 2}}, "params.memory.depth",
     "memory kind matrix has no 'depth'"),
    ({"one_of": {"a": {"retention": {"kind": {"choice": ["l2", "lq"]}, "q": 4}}}},
     "params.one_of.a.retention.q", "retention kind l2 has no 'q'"),
])
def test_a_key_beside_a_kind_choice_that_some_kinds_lack_is_refused(params, where, lacking):
    """Every draw of the kinds that lack it would be refused: a branch the sampler never reaches."""
    problems = [p for p in _problems(params) if p.startswith(where)]
    assert len(problems) == 1 and lacking in problems[0], problems
    assert "Set it inside the branches of the kinds that have it" in problems[0]


@pytest.mark.parametrize("params", [
    {"bias": {"kind": {"choice": {"l2": {}, "lp": {"p": 3}}}}},  # inside the branch
    {"bias": {"kind": {"choice": ["l2", "huber"]}, "window": 2}},  # a field of both
    {"memory": {"kind": {"choice": ["matrix", "mlp"]}, "feature_map": {"kind": "identity"}}},
])
def test_a_key_every_offered_kind_has_is_kept(params):
    space = SearchSpace.from_dict({"name": "s", "base": BASE, "params": params})
    assert len(space.sample(4, seed=0)) == 4
