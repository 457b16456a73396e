"""What a space, point or study file is checked for before any draw: keys of a kind's branch
against that kind, a gate's bound at the gate's field, a constraint test's shape and whether any
draw can pass it, did-you-mean for misspelt names, odd YAML keys and files that are not spaces."""

from __future__ import annotations

import pytest

from miras_search.errors import ConfigError
from miras_search.points import point_from_dict
from miras_search.space import SearchSpace
from miras_search.study.spec import load_study_file
from miras_search.yamlio import parse_yaml

HEAD = "type: space\nname: t\npreset: moneta\n"  # moneta: mlp memory, lp bias, lq retention, gd


def _problems(tmp_path, body: str, head: str = HEAD) -> list[str]:
    """Each problem (``path (line N): message``) of the space file ``head + body``."""
    path = tmp_path / "s.yaml"
    path.write_text(head + body)
    with pytest.raises(ConfigError) as caught:
        SearchSpace.load(path)
    return [str(problem) for problem in caught.value.problems]


def _point_problems(text: str) -> list[str]:
    data, lines = parse_yaml(text, "p.yaml")
    with pytest.raises(ConfigError) as caught:
        point_from_dict(data, "p.yaml", lines)
    return [str(problem) for problem in caught.value.problems]


# --- 1. a key in the branch of a kind is a field of that kind -------------------------------

@pytest.mark.parametrize(("body", "expected"), [
    ("params:\n  bias:\n    kind:\n      choice:\n        l2: {p: 3}\n        lp: {p: 2}\n",
     "params.bias.kind.choice.l2.p (line 8): 'p' is not a field of the l2 bias (its fields: gamma, "
     "kind, window)"),
    ("params:\n  retention:\n    kind:\n      choice:\n        l2: {q: 4}\n        lq: {q: 3}\n",
     "params.retention.kind.choice.l2.q (line 8): 'q' is not a field of the l2 retention"),
    ("params:\n  memory:\n    kind:\n      choice:\n        matrix: {depth: 3}\n        mlp: {depth: 2}\n",
     "params.memory.kind.choice.matrix.depth (line 8): 'depth' is not a field of the matrix memory"),
    ("params:\n  algorithm:\n    kind:\n      choice:\n        none: {eta: {value: 0.1}}\n        gd: {}\n",
     "params.algorithm.kind.choice.none.eta.value (line 8): 'eta' is not a field of the none algorithm"),
    # beside a fixed kind, and where only the base sets it (moneta's bias is lp)
    ("params:\n  retention: {kind: l2, q: {choice: [2, 4]}}\n",
     "params.retention.q (line 5): 'q' is not a field of the l2 retention"),
    ("base:\n  bias: {kind: l2}\nparams:\n  bias: {gamma: {value: {float: [0.1, 0.9]}}, p: 3}\n",
     "params.bias.p (line 7): 'p' is not a field of the l2 bias"),
])
def test_a_key_of_a_kinds_branch_is_checked_against_that_kind(tmp_path, body, expected):
    problems = _problems(tmp_path, body)
    assert any(p.startswith(expected) for p in problems), problems


def test_keys_of_the_kind_in_effect_are_kept(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(HEAD + "params:\n  bias:\n    kind:\n      choice:\n        l2: {}\n"
                           "        lp: {p: {choice: [2, 3]}}\n"
                           "        huber: {variant: {choice: [coordinate, norm]}}\n"
                           "  one_of:\n    a: {retention: {kind: l2}}\n    b: {retention: {kind: lq, q: 3}}\n")
    points = SearchSpace.load(path).sample(24, seed=0)
    assert {p.bias.kind for p in points} == {"l2", "lp", "huber"}
    assert {p.retention.kind for p in points} == {"l2", "lq"}


def test_a_key_the_base_kind_lacks_is_kept_when_the_params_may_change_that_kind(tmp_path):
    """The base's retention is l2 (no q), but a one_of may make it lq (which has q): a draw can
    hold q, so the key is not refused (only what no draw can take is)."""
    path = tmp_path / "s.yaml"
    path.write_text(HEAD + "base:\n  retention: {kind: l2}\nparams:\n  retention: {q: 3}\n"
                           "  one_of:\n    a: {retention: {kind: lq}}\n    b: {memory: {depth: 2}}\n")
    SearchSpace.load(path)  # draws of b fail on q, but a draw of a can hold it


# --- 2. a gate's bound names the gate's field, never the union's tag --------------------------

GATE_POINT = ("name: x\nmemory: {kind: mlp}\nbias: {kind: l2}\nretention:\n  kind: lq\n  alpha:\n"
              "    mode: channel\n    value: 1.5\nalgorithm:\n  kind: gd\n  eta: {mode: channel, value: -1}\n")


def test_a_gate_bound_in_a_point_names_the_gates_value_and_line():
    problems = _point_problems(GATE_POINT)
    assert problems == ["retention.alpha.value (line 8): alpha.value must lie in (0.0, 1.0], got 1.5",
                        "algorithm.eta.value (line 11): eta.value must lie in (0.0, 1000.0], got -1.0"]


def test_a_gate_bound_in_a_space_base_names_the_gates_value(tmp_path):
    problems = _problems(tmp_path, "base:\n  retention:\n    kind: lq\n    alpha:\n      mode: channel\n"
                                   "      value: 1.5\nparams:\n  memory: {depth: {int: [2, 3]}}\n")
    assert problems == ["base.retention.alpha.value (line 9): alpha.value must lie in (0.0, 1.0], got 1.5"]


@pytest.mark.parametrize(("node", "words"), [
    ("1.5", "1.5 is not allowed for retention.alpha.value: alpha.value must lie in (0.0, 1.0]"),
    ("{choice: [0.9, 1.5]}", "option 1.5 is not allowed for retention.alpha.value"),
])
def test_a_fixed_gate_value_or_option_outside_its_axis_bound_is_refused(tmp_path, node, words):
    problems = _problems(tmp_path, f"params:\n  retention:\n    kind: lq\n    alpha:\n      value: {node}\n")
    (problem,) = problems
    assert problem.startswith(f"params.retention.alpha.value (line 8): {words}")


# --- 3. a badly shaped constraint test is one line ------------------------------------------

def test_a_list_where_a_test_goes_is_one_line_suggesting_in(tmp_path):
    problems = _problems(tmp_path, "params:\n  bias: {kind: {choice: [l2, lp]}}\nconstraints:\n"
                                   "  - forbid:\n      bias.kind: [l2, lp]\n")
    (problem,) = problems
    assert problem.startswith("constraints.0.forbid.bias.kind (line 8): a test is a value (equality), "
                              "or a mapping of operators")
    assert "write {in: [l2, lp]}" in problem


def test_a_misspelt_operator_is_one_line_with_a_did_you_mean(tmp_path):
    problems = _problems(tmp_path, "params:\n  bias: {kind: {choice: {l2: {}, lp: {p: {choice: [2, 3]}}}}}\n"
                                   "constraints:\n  - when:\n      bias.p:\n        mn: 2\n"
                                   "    forbid: {bias.kind: lp}\n")
    (problem,) = problems
    assert problem.startswith("constraints.0.when.bias.p (line 8): 'mn' is not an operator of a test "
                              "(did you mean 'min'?)")
    assert "{min: n} / {max: n}" in problem


# --- 4. a test no value of the space can pass ------------------------------------------------

@pytest.mark.parametrize(("params", "test"), [
    ("block: {n_layers: {int: [1, 4]}}", "block.n_layers: 99"),
    ("block: {n_layers: {int: [1, 4]}}", "block.n_layers: {not_in: [1, 2, 3, 4]}"),
    ("block: {n_layers: {int: [2, 8], step: 2}}", "block.n_layers: 3"),
    ("memory: {depth: {choice: [2, 3]}}", "memory.depth: {min: 5}"),
    ("train: {lr: {float: [0.001, 0.01], log: true}}", "train.lr: {max: 0.0001}"),
    ("train: {lr: {float: [0.001, 0.01], log: true}}", "train.lr: {in: [0.5, 0.02]}"),
    ("train: {lr: {float: [0.1, 0.5], step: 0.1}}", "train.lr: 0.25"),
    ("bias: {kind: {choice: [l2, lp]}}", "bias.kind: huber"),
    ("memory: {depth: 3}", "block.n_layers: 7"),  # base value: moneta's block, unsearched
    ("bias: {kind: {choice: {l2: {}, lp: {p: {choice: [2, 3]}}}}}", "bias.p: 3.5"),  # every lp draw sets p
    ("bias: {kind: {choice: [l2, lp]}}", "bias.p: 2"),  # lp's default p (3) only
])
def test_a_test_no_draw_can_pass_is_refused(tmp_path, params, test):
    problems = _problems(tmp_path, f"params:\n  {params}\nconstraints:\n  - forbid: {{{test}}}\n")
    dotted = test.split(":")[0]
    assert any(p.startswith(f"constraints.0.forbid.{dotted} (line 7): {dotted} takes only ")
               and p.endswith("the test could never match") for p in problems), problems


@pytest.mark.parametrize(("params", "test"), [
    ("block: {n_layers: {int: [1, 4]}}", "block.n_layers: 4"),
    ("block: {n_layers: {int: [1, 4]}}", "block.n_layers: {not_in: [1, 2, 3]}"),
    ("train: {lr: {float: [0.1, 0.5], step: 0.1}}", "train.lr: 0.3"),  # 0.1 + 2 * 0.1 on the grid
    ("train: {lr: {float: [0.001, 0.01]}}", "train.lr: {min: 0.01}"),
    ("train: {lr: {float: [0.001, 0.01]}}", "train.lr: {not_in: [0.005]}"),
    ("bias: {kind: {choice: {l2: {}, lp: {p: {choice: [2, 3]}}}}}", "bias.p: 3"),
    ("bias: {kind: {choice: [l2, lp]}}", "bias.p: 3"),  # lp's default p
    ("bias: {kind: {choice: {l2: {}, lp: {}, huber: {}}}}", "bias.p: {min: 2}"),
    ("retention: {kind: {choice: [l2, lq]}}", "bias.p: 3"),  # moneta's lp bias, unsearched
    ("one_of: {a: {bias: {kind: l2}}, b: {memory: {depth: 3}}}", "bias.p: 3"),  # b keeps moneta's lp bias
    ("one_of: {a: {block: {n_layers: 2}}, b: {memory: {depth: 3}}}", "block.n_layers: 2"),
])
def test_a_test_some_draw_can_pass_is_kept(tmp_path, params, test):
    path = tmp_path / "s.yaml"
    path.write_text(f"{HEAD}params:\n  {params}\nconstraints:\n  - when: {{{test}}}\n"
                    "    require: {block.d_model: {min: 8}}\n")
    SearchSpace.load(path)


def test_a_test_on_a_field_of_some_kinds_names_the_kinds_it_was_judged_under(tmp_path):
    problems = _problems(tmp_path, "params:\n  bias: {kind: {choice: {l2: {}, lp: {p: {choice: [2, 3]}}}}}\n"
                                   "constraints:\n  - forbid: {bias.p: 3.5}\n")
    assert problems == ["constraints.0.forbid.bias.p (line 7): bias.p takes only {choice: [2, 3]} in this "
                        "space (in the draws whose bias kind has p: lp), and no such value passes this test; "
                        "the test could never match"]


@pytest.mark.parametrize(("params", "kinds"), [
    ("bias: {kind: {choice: [l2, dot]}}", "dot or l2"),
    ("bias: {kind: l2}", "l2"),  # moneta's lp bias replaced in every draw
])
def test_a_test_on_a_field_no_drawn_kind_has_is_refused_in_one_line(tmp_path, params, kinds):
    problems = _problems(tmp_path, f"params:\n  {params}\nconstraints:\n  - when: {{bias.p: 3}}\n"
                                   "    forbid: {algorithm.kind: gd}\n")
    assert problems == [f"constraints.0.when.bias.p (line 7): 'p' is not a field of the {kinds} bias "
                        "(its fields: gamma, kind, window)"]


# --- 5. did you mean ------------------------------------------------------------------------

def test_a_misspelt_kind_and_key_get_a_did_you_mean(tmp_path):
    problems = _point_problems("name: x\nblok: {d_model: 32}\nbias: {kind: huberr}\n")
    assert any(p.startswith("bias.kind (line 3): 'huberr' is not a known kind (did you mean 'huber'?)")
               for p in problems), problems
    assert any(p.startswith("blok (line 2): unknown key (did you mean 'block'?); allowed keys here: ")
               and p.endswith("train, type, preset, meta") for p in problems), problems
    space = _problems(tmp_path, "params:\n  bias: {kind: huberr}\n  memory: {dpeth: 2}\n")
    assert any("'huberr' is not allowed for bias.kind (did you mean 'huber'?)" in p for p in space), space
    assert any("'dpeth' is not a field of the mlp memory (did you mean 'depth'?)" in p for p in space), space


# --- 6. odd YAML keys and a null document ---------------------------------------------------

def test_a_null_key_is_named_as_yaml_writes_it_at_its_line():
    problems = _point_problems("name: x\n~: 6\nblock: {true: 1}\n")
    assert any(p.startswith("null (line 2): a key here must be a name, not null; allowed keys here: name")
               for p in problems), problems
    assert any(p.startswith("block.true (line 3): a key here must be a name, not the boolean true")
               for p in problems), problems


@pytest.mark.parametrize(("text", "words"), [
    ("null\n", "the file holds only null; expected a mapping of keys"),
    ("# nothing but ~\n~\n", "the file holds only null"),
    ("# only a comment\n", "the file is empty"),
])
def test_a_null_document_is_not_called_empty(text, words):
    with pytest.raises(ConfigError, match=words):
        parse_yaml(text, "f.yaml")


# --- 7. a study whose space is a study file -------------------------------------------------

STUDY = ("type: study\nname: s\nspace: {space}\ntrial:\n  data: [{{task: text}}]\n  tokens: 65536\n"
         "  batch_size: 8\n  seq_len: 128\ntrials: 2\nobjectives:\n  - {{metric: val_bpb, direction: minimize}}\n")


def test_a_study_naming_itself_as_its_space_says_so_in_one_line(tmp_path):
    path = tmp_path / "self.yaml"
    path.write_text(STUDY.format(space="self.yaml"))
    with pytest.raises(ConfigError) as caught:
        load_study_file(path)
    assert [str(p) for p in caught.value.problems] == [
        "space (line 3): names this study file itself; give a space file (type: space, with its "
        "preset, params and constraints)"]


def test_a_study_naming_another_study_as_its_space_says_so_in_one_line(tmp_path):
    (tmp_path / "other.yaml").write_text(STUDY.format(space="other.yaml"))
    path = tmp_path / "main.yaml"
    path.write_text(STUDY.format(space="other.yaml"))
    with pytest.raises(ConfigError) as caught:
        load_study_file(path)
    (problem,) = caught.value.problems
    assert problem.path == "space" and "other.yaml is a study file, not a space file" in problem.message
    assert "\n" not in problem.message
