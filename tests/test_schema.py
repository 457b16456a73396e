"""The axis schemas: defaults, cross-axis rules, presets and YAML round trips."""

from __future__ import annotations

import typing

import pytest
import yaml
from pydantic import ValidationError

from miras_search.errors import ConfigError
from miras_search.points import load_point, point_from_dict, point_to_yaml
from miras_search.presets import NAMED_MODELS, PRESET_AXES, preset, preset_names
from miras_search.schema import ModelPoint
from miras_search.schema.gates import MODE_FIELDS, Gate, GateMode
from miras_search.yamlio import MAX_VALUES, parse_yaml


def test_every_preset_is_a_valid_point_with_its_table_axes():
    expected = {
        "linear_attention": ("matrix", "dot", "none", "gd"),
        "retnet": ("matrix", "dot", "l2", "gd"),
        "gla": ("matrix", "dot", "l2", "gd"),
        "mamba2": ("matrix", "dot", "l2", "gd"),
        "deltanet": ("matrix", "l2", "none", "gd"),
        "gated_deltanet": ("matrix", "l2", "l2", "gd"),
        "longhorn": ("matrix", "l2", "none", "implicit"),
        "deltaproduct": ("matrix", "l2", "l2", "multistep"),
        "ttt_linear": ("matrix", "l2", "none", "gd"),
        "ttt_mlp": ("mlp", "l2", "none", "gd"),
        "titans": ("mlp", "l2", "l2", "momentum"),
        "transformer": ("none", "dot", "none", "none"),
        "moneta": ("mlp", "lp", "lq", "gd"),
        "yaad": ("mlp", "huber", "l2", "gd"),
        "memora": ("mlp", "l2", "kl", "gd"),
        "rwkv7": ("matrix", "l2", "l2", "gd"),
        "hgrn2": ("matrix", "dot", "l2", "gd"),
        "lightning_attention": ("matrix", "dot", "l2", "gd"),
        "atlas": ("mlp", "l2", "l2", "muon"),
        "omeganet": ("mlp", "l2", "l2", "gd"),
        "deeptransformer": ("mlp", "dot", "none", "gd"),
    }
    assert set(preset_names()) == set(expected)
    for name, axes in expected.items():
        point = preset(name)
        assert tuple(point.axes.values()) == axes, name
        assert point.name == name


def test_named_models_carry_the_paper_hyperparameters():
    moneta, yaad, memora = (preset(n) for n in NAMED_MODELS)
    assert (moneta.memory.depth, moneta.memory.expansion) == (2, 4)
    assert moneta.bias.p == 3.0 and moneta.retention.q == 4.0
    assert yaad.bias.variant == "switch" and yaad.bias.delta.data_dependent
    assert memora.retention.kind == "kl" and memora.retention.scale > 0


def test_gated_deltanet_uses_the_exact_delta_rule_and_ttt_the_minibatch_form():
    assert preset("gated_deltanet").uses_exact_delta()
    assert not preset("ttt_linear").uses_exact_delta()
    assert not preset("moneta").uses_exact_delta()


@pytest.mark.parametrize(
    ("data", "field", "needle"),
    [
        ({"memory": {"kind": "mlp"}, "bias": {"kind": "l2"}, "algorithm": {"kind": "implicit"}},
         "algorithm.kind", "needs bias 'l2' and memory 'matrix'"),
        ({"memory": {"kind": "none"}, "algorithm": {"kind": "gd"}}, "algorithm.kind", "memory 'none'"),
        ({"memory": {"kind": "none"}, "bias": {"kind": "l2"}, "algorithm": {"kind": "none"}},
         "bias.kind", "needs bias 'dot'"),
        ({"memory": {"kind": "mlp"}, "block": {"key_dim": 16, "value_dim": 32}},
         "block.value_dim", "equal key and value dims"),
        ({"memory": {"kind": "matrix", "init": "zeros"}, "retention": {"kind": "kl"}},
         "memory.init", "positive"),
        ({"bias": {"kind": "l2"}, "algorithm": {"kind": "implicit", "eta": {"mode": "channel"}}},
         "algorithm.eta.mode", "channel"),
        ({"bias": {"kind": "dot"}, "train": {"chunk_form": "exact_delta"}}, "train.chunk_form",
         "exact_delta"),
        ({"train": {"seq_len": 4096}, "block": {"max_seq_len": 1024}}, "train.seq_len", "max_seq_len"),
    ],
)
def test_cross_axis_rules_name_the_field(data, field, needle):
    with pytest.raises(ConfigError) as caught:
        point_from_dict(data, "point.yaml")
    (problem,) = caught.value.problems
    assert problem.path == field
    assert needle in problem.message


def test_every_broken_cross_axis_rule_is_reported():
    data = {"memory": {"kind": "vector"}, "bias": {"kind": "l2"},
            "block": {"key_dim": 16, "value_dim": 32, "max_seq_len": 64},
            "algorithm": {"kind": "implicit", "eta": {"mode": "channel"}},
            "train": {"seq_len": 128}}
    with pytest.raises(ConfigError) as caught:
        point_from_dict(data, "point.yaml")
    paths = [problem.path for problem in caught.value.problems]
    assert paths == ["algorithm.kind", "algorithm.eta.mode", "block.value_dim", "train.seq_len"]
    assert all(": " not in problem.message.split(" ")[0] for problem in caught.value.problems)


def test_gate_ranges_are_checked_per_role():
    with pytest.raises(ValidationError, match=r"alpha\.value must lie in"):
        ModelPoint(retention={"kind": "l2", "alpha": {"value": 1.5}})
    with pytest.raises(ValidationError, match=r"theta\.value"):
        ModelPoint(algorithm={"kind": "momentum", "theta": {"value": 1.0}})
    with pytest.raises(ValidationError, match="only the retention gate alpha"):
        ModelPoint(algorithm={"kind": "gd", "eta": {"mode": "retnet"}})
    with pytest.raises(ValidationError, match="'rank' is only used"):
        ModelPoint(algorithm={"kind": "gd", "eta": {"mode": "head", "rank": 8}})


def test_budget_must_cover_one_batch():
    with pytest.raises(ValidationError, match=r"tokens \(100\) do not cover one batch \(batch_size 4 x seq_len 64 = 256\)"):
        ModelPoint(train={"tokens": 100, "batch_size": 4, "seq_len": 64})


@pytest.mark.parametrize("name", list(PRESET_AXES))
def test_point_yaml_round_trip_is_unchanged(name):
    point = preset(name)
    text = point_to_yaml(point)
    again = point_from_dict(yaml.safe_load(text))
    assert again == point
    assert point_to_yaml(again) == text
    full = point_to_yaml(point, compact=False)
    assert point_from_dict(yaml.safe_load(full)) == point


def test_preset_plus_overrides_replaces_a_section_whose_kind_changes():
    point = point_from_dict({"preset": "moneta", "bias": {"kind": "huber"}})
    assert point.bias.kind == "huber" and point.retention.kind == "lq"
    point = point_from_dict({"preset": "moneta", "bias": {"p": 2.5}})
    assert point.bias.kind == "lp" and point.bias.p == 2.5


def test_load_point_accepts_files_and_preset_names(root):
    assert load_point("yaad") == preset("yaad")
    point = load_point(root / "tests" / "data" / "good" / "moneta_override.yaml")
    assert point.bias.p == 2.5 and point.block.d_model == 64 and point.retention.kind == "lq"
    with pytest.raises(ConfigError, match="no such point file, and no preset of that name"):
        load_point("no-such-model")
    with pytest.raises(ConfigError, match="did you mean 'moneta'"):
        load_point("monetta")


def test_a_point_file_that_changes_a_preset_is_named_after_its_file(tmp_path):
    path = tmp_path / "my-point.yaml"
    path.write_text("preset: moneta\nbias: {kind: lp, p: 2.5}\n")
    assert load_point(path).name == "my-point"
    path.write_text("preset: moneta\nblock: {d_model: 64}\n")  # Moneta's axes at another size
    assert load_point(path).name == "moneta"
    path.write_text("preset: moneta\nname: mine\nbias: {kind: lp, p: 2.5}\n")
    assert load_point(path).name == "mine"


def test_preset_overrides_raise_config_errors_naming_the_field():
    """The Python API's preset(name, **overrides) reports as point files do."""
    with pytest.raises(ConfigError, match=r"bias\.p: Input should be less than or equal to 4 \(got 9\)"):
        preset("moneta", bias={"kind": "lp", "p": 9})
    with pytest.raises(ConfigError, match=r"block\.d_modle: unknown key \(did you mean 'd_model'\?\); allowed keys here: d_model"):
        preset("moneta", block={"d_modle": 64})
    with pytest.raises(ConfigError, match="unknown preset 'monetta' \\(did you mean 'moneta'\\?\\)"):
        preset("monetta")


@pytest.mark.parametrize(("text", "kind"), [("preset: [moneta]\n", "list"), ("preset: {a: 1}\n", "mapping")])
def test_point_preset_must_be_a_name(tmp_path, text, kind):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_point(path)
    message = str(caught.value)
    assert f"preset (line 1): 'preset' must be a preset name, not a {kind}" in message
    assert f"known presets: {', '.join(PRESET_AXES)}" in message


# --- YAML reading: keys, merge keys and aliases ------------------------------------------------


def _yaml_error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, "t.yaml")
    return str(caught.value)


@pytest.mark.parametrize("text", ["memory:\n  kind: matrix\nbias: [l2\n", "memory:\n  kind: matrix\nbias: [l2"])
def test_yaml_syntax_error_at_the_end_names_the_last_line(text):
    """PyYAML marks an error at the end of the stream on the line after the last one."""
    assert "<top level> (line 3): YAML syntax error" in _yaml_error(text)


def test_yaml_syntax_error_names_where_the_unclosed_part_starts():
    message = _yaml_error("a: 1\nb: [1, 2\nc: 3\n")
    assert "(line 3): YAML syntax error: while parsing a flow sequence that starts on line 2;" in message
    assert "(line 2): YAML syntax error: mapping values" in _yaml_error("a: 1\n  b: 2\n")


def test_yaml_complex_key_is_reported():
    message = _yaml_error("preset: moneta\nmeta:\n  ? [a, b]\n  : 1\n")
    assert "meta (line 3): a key must be a plain value (a name or a number), not a list" in message


def test_yaml_merge_keys_work_and_explicit_keys_override_them():
    text = (
        "preset: moneta\nmeta:\n  block: &b {d_model: 32, n_heads: 2, n_layers: 1}\n"
        "block:\n  <<: *b\n  n_layers: 2\n"
    )
    data, lines = parse_yaml(text, "t.yaml")
    assert data == yaml.safe_load(text)
    assert data["block"] == {"d_model": 32, "n_heads": 2, "n_layers": 2}
    assert lines[("block", "n_layers")] == 6 and lines[("block", "d_model")] == 3
    assert point_from_dict(data).block.n_layers == 2


def test_yaml_duplicate_explicit_keys_are_still_errors_next_to_a_merge():
    message = _yaml_error("a: &a {x: 1}\nb:\n  <<: *a\n  y: 1\n  y: 2\n")
    assert "b.y (line 5): duplicate key 'y' (first on line 4)" in message


def test_yaml_alias_bomb_is_refused_quickly():
    lines = ["preset: moneta", "meta:", "  l0: &l0 {" + ", ".join(f"k{i}: 1" for i in range(9)) + "}"]
    lines += [
        f"  l{level}: &l{level} {{" + ", ".join(f"k{i}: *l{level - 1}" for i in range(9)) + "}"
        for level in range(1, 8)
    ]
    message = _yaml_error("\n".join(lines))
    assert f"expand to more than {MAX_VALUES:,} values" in message


def test_yaml_alias_inside_its_own_anchor_is_refused():
    assert "used inside the value of its own anchor" in _yaml_error("meta: &a [1, *a]\n")


@pytest.mark.parametrize(("text", "where", "words"), [
    ("memory: {depth: 2}\n", "memory.kind (line 1)", "required key 'kind' is missing"),
    ("preset: moneta\nmemory: {kind: mlpp}\n", "memory.kind (line 2)", "expected tags: 'vector', 'matrix'"),
])
def test_tagged_sections_name_their_tag(tmp_path, text, where, words):
    """A section without its tag, or with an unknown one, names the tag key ('kind')."""
    path = tmp_path / "point.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_point(path)
    assert f"{where}: " in str(error.value) and words in str(error.value)


def test_changing_a_presets_gate_mode_drops_the_channel_rank_and_keeps_the_value():
    point = point_from_dict({"preset": "moneta", "retention": {"alpha": {"mode": "head"}}}, "point.yaml")
    assert point.retention.alpha.mode == "head"
    assert point.retention.alpha.value == preset("moneta").retention.alpha.value
    assert point.retention.alpha.rank is None


@pytest.mark.parametrize(("mode", "dropped"), [("head", {"a_init", "dt_init"}), ("channel", {"a_init", "dt_init"}),
                                               ("constant", {"a_init", "dt_init"})])
def test_leaving_mambas_decay_drops_its_init_ranges(mode, dropped):
    """gated_deltanet's alpha is Mamba2's decay with its own a_init / dt_init: a point (or a
    space's draw) that switches the mode does not inherit them, which every other mode refuses."""
    point = point_from_dict({"preset": "gated_deltanet", "retention": {"alpha": {"mode": mode}}}, "point.yaml")
    alpha = point.retention.alpha
    assert alpha.mode == mode and all(getattr(alpha, name) is None for name in dropped)


def test_a_field_the_new_mode_takes_is_kept_when_given_with_it():
    point = point_from_dict({"preset": "moneta", "algorithm": {"eta": {"mode": "head", "max_ratio": 4.0}}},
                            "point.yaml")
    assert point.algorithm.eta.mode == "head" and point.algorithm.eta.max_ratio == 4.0


@pytest.mark.parametrize("field", sorted(MODE_FIELDS))
def test_mode_fields_says_which_modes_take_each_field(field):
    """MODE_FIELDS (what a merge drops when a mode changes) and Gate's own refusals agree."""
    value = {"rank": 8, "max_ratio": 3.0, "a_init": (1.0, 16.0), "dt_init": (0.001, 0.1)}[field]
    for mode in typing.get_args(GateMode):
        if mode in MODE_FIELDS[field]:
            Gate(mode=mode, **{field: value})
        else:
            with pytest.raises(ValidationError, match=field):
                Gate(mode=mode, **{field: value})


def test_a_space_over_a_mamba_preset_may_search_other_decay_modes(tmp_path):
    """A space whose base is gated_deltanet and whose alpha mode is searched draws valid head /
    channel points (they once inherited Mamba2's a_init and were all infeasible)."""
    from miras_search.space import SearchSpace

    path = tmp_path / "space.yaml"
    path.write_text("type: space\nname: decay\npreset: gated_deltanet\nparams:\n  retention:\n    alpha:\n"
                    "      mode: {choice: [mamba, head, channel]}\n")
    modes = {point.retention.alpha.mode for point in SearchSpace.load(path).sample(12, seed=0)}
    assert modes == {"mamba", "head", "channel"}
