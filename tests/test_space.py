"""Search spaces: sampling, conditional branches, constraints, encoding and the shipped files."""

from __future__ import annotations

from collections import Counter

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miras_search.errors import ConfigError
from miras_search.presets import preset, preset_names
from miras_search.schema import (
    ALGORITHM_KINDS,
    BIAS_KINDS,
    MEMORY_KINDS,
    RETENTION_KINDS,
    ModelPoint,
)
from miras_search.space import InfeasiblePoint, SearchSpace
from miras_search.space.constraints import first_violated

CONDITIONAL = {
    "name": "conditional",
    "preset": "moneta",
    "params": {
        "memory": {"depth": {"int": [2, 4]}},
        "bias": {"kind": {"choice": {
            "l2": {},
            "lp": {"p": {"float": [1.0, 4.0], "step": 0.5}},
            "huber": {"variant": {"choice": ["coordinate", "switch"]}},
        }}},
        "one_of": {"fast": {"train": {"chunk_size": 64}}, "exact": {"train": {"chunk_size": 1}}},
    },
    "constraints": [{"when": {"memory.depth": 4}, "forbid": {"bias.kind": "huber"}}],
}


def test_conditional_parameters_exist_only_under_their_choice():
    space = SearchSpace.from_dict(CONDITIONAL)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        data = space.suggest(trial)
        kind = data["bias"]["kind"]
        seen.add(kind)
        names = set(trial.params)
        assert ("bias.kind=lp/bias.p" in names) == (kind == "lp")
        assert ("bias.kind=huber/bias.variant" in names) == (kind == "huber")
        assert data["train"]["chunk_size"] == {"fast": 64, "exact": 1}[trial.params["one_of"]]
        if kind == "lp":
            assert data["bias"]["p"] in [1.0 + 0.5 * i for i in range(7)]
    assert seen == {"l2", "lp", "huber"}


def test_sampled_points_respect_constraints_and_ranges():
    space = SearchSpace.from_dict(CONDITIONAL)
    points = space.sample(40, seed=1)
    assert len(points) == 40
    for point in points:
        assert 2 <= point.memory.depth <= 4
        assert not (point.memory.depth == 4 and point.bias.kind == "huber")
        assert point.retention.kind == "lq"  # from the base preset


def test_point_from_trial_reports_the_broken_constraint():
    space = SearchSpace.from_dict(CONDITIONAL)
    trial = optuna.trial.FixedTrial(
        {"memory.depth": 4, "bias.kind": "huber", "bias.kind=huber/bias.variant": "switch",
         "one_of": "fast"}
    )
    with pytest.raises(InfeasiblePoint, match="constraint 1"):
        space.point_from_trial(trial)


def test_encode_reproduces_a_point_and_rejects_points_outside():
    space = SearchSpace.from_dict(CONDITIONAL)
    for point in space.sample(10, seed=2):
        params = space.encode(point)
        assert params is not None
        rebuilt = space.point_from_trial(optuna.trial.FixedTrial(params))
        assert rebuilt.model_copy(update={"name": point.name}) == point  # sample() labels its points
    outside = preset("moneta").model_copy(update={"memory": preset("moneta").memory.model_copy(update={"depth": 5})})
    assert space.encode(outside) is None


def test_shipped_spaces_validate_and_sample(root):
    for path in sorted((root / "spaces").glob("*.yaml")):
        space = SearchSpace.load(path)
        assert space.sample(3, seed=0)


def test_full_space_covers_every_option_of_the_four_axes(root):
    space = SearchSpace.load(root / "spaces" / "miras-full.yaml")
    points = space.sample(400, seed=0)
    covered = {axis: {p.axes[axis] for p in points} for axis in ("memory", "bias", "retention", "algorithm")}
    assert covered["memory"] == set(MEMORY_KINDS)
    assert covered["bias"] == set(BIAS_KINDS)
    assert covered["retention"] == set(RETENTION_KINDS)
    assert covered["algorithm"] == set(ALGORITHM_KINDS)
    for name in preset_names():  # every Table-1 model's axes lie in the full space
        assert space.encode(preset(name), axes_only=True) is not None, name


def test_full_space_draws_memory_kinds_evenly_and_rejects_nothing(root):
    # A flat attention-vs-recurrent split used to give attention (16 distinct points) over half
    # of all draws, and a quarter of the recurrent draws broke a cross-axis rule.
    space = SearchSpace.load(root / "spaces" / "miras-full.yaml")
    points = space.sample(400, seed=1, max_attempts=400)  # ConfigError if any draw is rejected
    shares = Counter(p.memory.kind for p in points)
    assert set(shares) == set(MEMORY_KINDS)
    assert all(0.18 <= count / 400 <= 0.32 for count in shares.values()), shares


_SPACE_HEAD = "type: space\nname: t\npreset: moneta\n"


def _load_error(tmp_path, body: str) -> str:
    """The message of the ConfigError that loading a space file ``_SPACE_HEAD + body`` raises."""
    path = tmp_path / "t.yaml"
    path.write_text(_SPACE_HEAD + body)
    with pytest.raises(ConfigError) as caught:
        SearchSpace.load(path)
    return str(caught.value)


@pytest.mark.parametrize(("body", "where", "needle"), [
    ("params:\n  one_of: [a, b]\n", "params.one_of (line 5)", "must be a mapping of option name"),
    ("params:\n  one_of: {a: 5, b: {train: {chunk_size: 16}}}\n", "params.one_of.a (line 5)",
     "must be a mapping of the parameters it sets"),
    ("params:\n  one_of: {}\n", "params.one_of (line 5)", "at least one option"),
    ("params:\n  one_of: {choice: [a, b]}\n", "params.one_of (line 5)", "got a {choice: ...} node"),
    ("params:\n  bias:\n    kind:\n      choice:\n        l2: {}\n        lp: {one_of: 3}\n",
     "params.bias.kind.choice.lp.one_of (line 9)", "must be a mapping of option name"),
], ids=["list", "option-not-mapping", "empty", "choice-node", "inside-a-branch"])
def test_malformed_one_of_names_its_path_and_shape(tmp_path, body, where, needle):
    message = _load_error(tmp_path, body)
    assert where in message and needle in message


def test_one_of_with_a_single_option_is_accepted(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(_SPACE_HEAD + "params:\n  one_of: {only: {train: {chunk_size: 16}}}\n")
    assert SearchSpace.load(path).sample(1)[0].train.chunk_size == 16


@pytest.mark.parametrize(("body", "needle"), [
    ("lr: {float: [0.001, .nan]}", "ends must be finite numbers, got [0.001, nan]"),
    ("lr: {float: [0.001, .inf]}", "ends must be finite numbers, got [0.001, inf]"),
    ("lr: {float: [-.inf, .inf]}", "ends must be finite numbers, got [-inf, inf]"),
    ("lr: {float: [0.001, 0.01], step: .nan}", "'step' must be a finite positive number, got nan"),
    ("lr: {float: [0.001, 0.01], step: .inf}", "'step' must be a finite positive number, got inf"),
])
def test_float_ranges_and_steps_must_be_finite(tmp_path, body, needle):
    message = _load_error(tmp_path, f"params:\n  train: {{{body}}}\n")
    assert "params.train.lr (line 5)" in message and needle in message


@pytest.mark.parametrize(("test", "operator", "needle"), [
    ("{in: 2}", "in", "'in' needs a list of values"),
    ("{not_in: x}", "not_in", "'not_in' needs a list of values"),
    ("{min: abc}", "min", "'min' needs a finite number"),
    ("{max: true}", "max", "'max' needs a finite number"),
    ("{max: .nan}", "max", "'max' needs a finite number"),
])
def test_constraint_operators_need_the_right_kind_of_value(tmp_path, test, operator, needle):
    body = f"constraints:\n  - when: {{memory.depth: {test}}}\n    forbid: {{bias.kind: lp}}\n"
    message = _load_error(tmp_path, body)
    assert f"constraints.0.when.memory.depth.{operator} (line 5)" in message and needle in message


def test_unsatisfiable_constraints_are_reported():
    """Each rule alone can hold; together they reject every draw, which only sampling finds."""
    space = SearchSpace.from_dict({
        "name": "never", "params": {"memory": {"kind": {"choice": ["matrix", "mlp"]}}},
        "constraints": [{"require": {"memory.kind": "matrix"}}, {"require": {"memory.kind": "mlp"}}],
    })
    with pytest.raises(ConfigError, match="satisfy the space's rules"):
        space.sample(1)


def test_a_require_no_draw_can_meet_is_refused_on_load():
    with pytest.raises(ConfigError, match=r"constraints\.0\.require\.memory\.kind: memory\.kind takes only "
                                          r"\{choice: \['matrix', 'mlp'\]\} in this space.*could never match"):
        SearchSpace.from_dict({
            "name": "never", "params": {"memory": {"kind": {"choice": ["matrix", "mlp"]}}},
            "constraints": [{"require": {"memory.kind": "vector"}}],
        })


# --- property-based: random spaces sample only valid points --------------------------------

_AXIS_OPTIONS = {
    "memory.kind": ["vector", "matrix", "mlp", "none"],
    "bias.kind": ["dot", "l2", "lp", "huber", "robust"],
    "retention.kind": ["none", "l2", "lq", "kl", "elastic", "bregman"],
    "algorithm.kind": ["gd", "momentum", "implicit", "multistep", "none"],
}


@st.composite
def random_spaces(draw):
    params: dict = {}
    for dotted, options in _AXIS_OPTIONS.items():
        chosen = draw(st.lists(st.sampled_from(options), min_size=1, max_size=len(options), unique=True))
        section, key = dotted.split(".")
        params[section] = {key: {"choice": chosen}}
    if draw(st.booleans()):
        params["block"] = {"d_model": {"choice": [32, 64]}, "n_heads": {"int": [1, 2]}}
    if draw(st.booleans()):
        low = draw(st.integers(1, 8))
        params.setdefault("train", {})["chunk_size"] = {"int": [low, low + draw(st.integers(0, 8))]}
    constraints = []
    # a test no draw can pass is refused on load: the rule is drawn only where it can act
    if "mlp" in params["memory"]["kind"]["choice"] and "kl" in params["retention"]["kind"]["choice"] \
            and draw(st.booleans()):
        constraints.append({"when": {"memory.kind": "mlp"}, "forbid": {"retention.kind": "kl"}})
    return {"name": "random", "params": params, "constraints": constraints}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=random_spaces(), seed=st.integers(0, 2**16))
def test_random_spaces_sample_only_valid_points(spec, seed):
    space = SearchSpace.from_dict(spec)
    try:
        points = space.sample(3, seed=seed)
    except ConfigError as error:  # no valid point in this random space: a clean, named error
        assert "satisfy the space's rules" in str(error)
        return
    for point in points:
        again = ModelPoint.model_validate(point.model_dump())
        assert again == point
        assert first_violated(point.model_dump(mode="json"), space.spec.constraints) is None
        for dotted in _AXIS_OPTIONS:
            section, key = dotted.split(".")
            chosen = spec["params"][section][key]["choice"]
            assert getattr(getattr(point, section), key) in chosen


# --- every value a space can give a field is one the schema allows ----------------------------

_BIAS_ALLOWED = "allowed: " + ", ".join(BIAS_KINDS)
_SMALL_BASE = "base:\n  block: {d_model: 32, n_heads: 2, n_layers: 1}\n"


@pytest.mark.parametrize(("body", "where", "needle"), [
    (_SMALL_BASE + "params:\n  bias: {kind: {choice: [lp, l2, huberr]}}\n",
     "params.bias.kind.choice (line 7)", f"option 'huberr' is not allowed for bias.kind (did you mean 'huber'?); {_BIAS_ALLOWED}"),
    ("params:\n  bias:\n    kind:\n      choice:\n        - lp\n        - huberr\n",
     "params.bias.kind.choice (line 9)", f"option 'huberr' is not allowed for bias.kind (did you mean 'huber'?); {_BIAS_ALLOWED}"),
    ("params:\n  bias:\n    kind:\n      choice:\n        l2: {}\n        l3: {}\n",
     "params.bias.kind.choice.l3 (line 9)", f"option 'l3' is not allowed for bias.kind; {_BIAS_ALLOWED}"),
    ("params:\n  bias: {kind: huberr}\n",
     "params.bias.kind (line 5)", f"'huberr' is not allowed for bias.kind (did you mean 'huber'?); {_BIAS_ALLOWED}"),
    ("params:\n  memory: {activation: {choice: [gelu, tanh]}}\n",
     "params.memory.activation.choice (line 5)",
     "option 'tanh' is not allowed for memory.activation; allowed: gelu, silu, relu"),
    ("params:\n  one_of:\n    a: {retention: {alpha: {mode: {choice: [head, channnel]}}}}\n",
     "params.one_of.a.retention.alpha.mode.choice (line 6)",
     "option 'channnel' is not allowed for retention.alpha.mode (did you mean 'channel'?); allowed: constant, retnet, alibi, head, channel"),
    ("params:\n  bias:\n    kind:\n      choice:\n        huber: {variant: {choice: [norm, nrom]}}\n",
     "params.bias.kind.choice.huber.variant.choice (line 8)",
     "option 'nrom' is not allowed for bias.variant (did you mean 'norm'?); allowed: coordinate, norm, switch"),
    ("params:\n  memory: {depth: {choice: [2, 9]}}\n",
     "params.memory.depth.choice (line 5)",
     "option 9 is not allowed for memory.depth; allowed: an integer >= 2 and <= 8"),
], ids=["list", "block-list", "mapping-key", "fixed", "literal", "one-of", "branch", "number"])
def test_choice_options_outside_the_schema_are_named_with_the_allowed_values(
        tmp_path, body, where, needle):
    message = _load_error(tmp_path, body)
    assert f"{where}: {needle}" in message


@pytest.mark.parametrize(("body", "where", "needle"), [
    ("memory: {depth: {int: [0, 9]}}", "params.memory.depth (line 5)",
     "the range [0, 9] reaches outside the values memory.depth allows; "
     "allowed: an integer >= 2 and <= 8"),
    ("memory: {depth: {int: [10, 12]}}", "params.memory.depth (line 5)",
     "the range [10, 12] lies outside the values memory.depth allows"),
    ("train: {lr: {float: [0.0, 0.1]}}", "params.train.lr (line 5)",
     "allowed: a number > 0.0 and <= 1.0"),
    ("memory: {depth: {float: [2, 4]}}", "params.memory.depth (line 5)",
     "memory.depth takes integers; use {int: [low, high]}"),
    ("memory: {kind: {int: [1, 2]}}", "params.memory.kind (line 5)",
     "an {int: ...} range cannot set memory.kind; allowed: " + ", ".join(MEMORY_KINDS)),
], ids=["partly-outside", "wholly-outside", "open-bound", "float-on-int", "range-on-kind"])
def test_ranges_must_lie_within_the_fields_bounds(tmp_path, body, where, needle):
    message = _load_error(tmp_path, f"params:\n  {body}\n")
    assert f"{where}: " in message and needle in message


def test_ranges_within_the_bounds_and_integral_float_grids_are_accepted():
    space = SearchSpace.from_dict({"name": "ok", "preset": "moneta", "params": {
        "memory": {"depth": {"int": [2, 8]}, "expansion": {"float": [2, 4], "step": 1}},
        "train": {"lr": {"float": [1e-4, 1.0], "log": True}},
    }})
    assert all(2 <= p.memory.depth <= 8 for p in space.sample(5))


# --- the base point is checked before sampling --------------------------------------------------

@pytest.mark.parametrize(("body", "where", "needle"), [
    ("base: {block: {d_model: 7}}\n", "base.block.d_model (line 4)", "greater than or equal to 8"),
    ("base:\n  blok: {d_model: 32}\n", "base.blok (line 5)",
     "unknown key (did you mean 'block'?); allowed keys here: name"),
    ("base: {memory: {activation: tanh}}\n", "base.memory.activation (line 4)",
     "'gelu', 'silu' or 'relu'"),
    ("base: {algorithm: {kind: implicit}}\n", "base.algorithm.kind (line 4)",
     "algorithm 'implicit' needs bias 'l2' and memory 'matrix'"),
    ("base: {block: {d_model: 30}}\n", "base.block (line 4)", "must be divisible by n_heads"),
    ("params: {memory: 5}\n", "params.memory (line 4)",
     "memory is a section of the point and must be a mapping of its fields (allowed: kind,"),
], ids=["bound", "unknown-key", "literal", "cross-axis", "block-rule", "section-not-mapping"])
def test_a_bad_base_is_named_not_blamed_on_the_constraints(tmp_path, body, where, needle):
    message = _load_error(tmp_path, body)
    assert f"{where}: " in message and needle in message
    assert "satisfy the space's rules" not in message


def test_a_base_rule_that_the_params_can_meet_is_left_to_sampling():
    space = SearchSpace.from_dict({
        "name": "heads", "preset": "moneta", "base": {"block": {"d_model": 30}},
        "params": {"block": {"n_heads": {"choice": [2, 3]}}},
    })
    assert {p.block.n_heads for p in space.sample(6)} == {2, 3}


def test_params_that_never_meet_a_base_rule_are_named_as_params():
    space = {"name": "heads", "preset": "moneta", "base": {"block": {"d_model": 30}},
             "params": {"block": {"n_heads": {"choice": [4, 8]}}}}
    with pytest.raises(ConfigError) as caught:
        SearchSpace.from_dict(space).sample(1)
    (problem,) = caught.value.problems
    assert problem.path == "params"
    assert "d_model (30) must be divisible by n_heads" in problem.message


def test_constraints_that_forbid_everything_on_a_good_base_are_still_reported():
    space = SearchSpace.from_dict({
        "name": "never", "preset": "moneta", "base": {"block": {"d_model": 32, "n_heads": 2}},
        "params": {"bias": {"kind": {"choice": ["l2", "lp"]}}},
        "constraints": [{"forbid": {"block.n_heads": 2}, "message": "no two heads"}],
    })
    with pytest.raises(ConfigError, match=r"satisfy the space's rules.*no two heads"):
        space.sample(1)


def test_choice_options_equal_as_values_are_refused():
    """1, 1.0 and true are one value to Python and Optuna: a choice of them had 'size 3' but only
    ever sampled the first."""
    data = {"type": "space", "name": "t", "preset": "moneta",
            "params": {"memory": {"depth": {"choice": [2, 2.0, True]}}}}
    with pytest.raises(ConfigError, match=r"options 2 and 2\.0 are the same value to Optuna"):
        SearchSpace.from_dict(data)


def test_sampled_points_keep_a_preset_name_only_with_its_axes(root):
    space = SearchSpace.load(root / "spaces" / "quickstart.yaml")  # built on moneta
    points = space.sample(80, seed=0)
    axes = {"memory", "bias", "retention", "algorithm"}
    moneta = preset("moneta").model_dump(include=axes)
    for index, point in enumerate(points):
        if point.model_dump(include=axes) == moneta:
            assert point.name == "moneta"
        else:
            assert point.name == f"quickstart-{index}"
    # Moneta's axis kinds with another setting (p = 2, or hidden 2x) is a variant, not Moneta
    assert any(p.axes == preset("moneta").axes and p.name != "moneta" for p in points)
