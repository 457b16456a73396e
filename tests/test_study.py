"""Studies in one process (no Ray): the study file, the stored contract, resume, de-duplication,
failures, limits, samplers and the status / best commands."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.errors import ConfigError, MirasError
from miras_search.points import point_from_dict
from miras_search.presets import preset
from miras_search.schema import ModelPoint, canonical_data
from miras_search.study import InlinePool, load_study_dict, load_study_file, open_study, run_study
from miras_search.study.samplers import make_sampler

TINY_SPACE = {
    "type": "space", "name": "tiny", "preset": "gated_deltanet",
    "base": {"block": {"d_model": 32, "n_heads": 2, "n_layers": 1, "max_seq_len": 512}},
    "params": {
        "bias": {"kind": {"choice": ["l2", "dot"]}},
        # the preset's alpha is Mamba2's decay, which reads no value: only a head gate draws one
        "retention": {"kind": {"choice": {"l2": {"alpha": {"mode": {"choice": {
            "mamba": {}, "head": {"a_init": None, "dt_init": None, "value": {"float": [0.8, 0.99]}}}}}},
            "none": {}}}},
        "algorithm": {"kind": {"choice": ["gd", "momentum"]}},
    },
}
TINY_TRIAL = {"data": [{"task": "text"}], "tokens": 896, "batch_size": 4, "seq_len": 32,
              "eval_batches": 1, "report_every": 2}


def write_study(folder: Path, space_data: dict | None = None, **fields) -> Path:
    """A study of the tiny space under ``folder`` (its outputs in folder/runs); ``fields`` override."""
    (folder / "space.yaml").write_text(yaml.safe_dump(space_data or TINY_SPACE))
    study = {
        "type": "study", "name": "tiny", "space": "space.yaml", "trial": TINY_TRIAL,
        "objectives": [{"metric": "val_bpb"}], "sampler": {"kind": "tpe", "anchors": []},
        "pruner": {"kind": "none"}, "trials": 3, "run_dir": str(folder / "runs"),
        "tracking": {"wandb": "off"},
    }
    study.update(fields)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def run_inline(path: Path, **kwargs):
    return run_study(load_study_file(path), lambda: InlinePool(threads=1), **kwargs)


def trials_of(path: Path) -> list[optuna.trial.FrozenTrial]:
    return open_study(load_study_file(path)).get_trials()


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"objectives": [{"metric": "val_bpb"}, {"metric": "tokens_per_s", "direction": "maximize"}],
      "pruner": {"kind": "median"}}, "pruner.kind", "single objective"),
    ({"sampler": {"anchors": ["monetta"]}}, "sampler.anchors", "monetta"),
    ({"trials": None}, "trials", "timeout_s"),
    ({"space": "nowhere.yaml"}, "space", "does not exist: looked beside the file"),
    ({"limits": [{"metric": "params"}]}, "limits.0", "'min' or 'max'"),
    ({"name": "bad name/x"}, "name", "letters"),
    ({"sampler": {"anchors": [], "seed": 99999999999}}, "sampler.seed", "at most 4294967295"),
])
def test_bad_study_files_name_the_field(tmp_path, change, field, words):
    path = write_study(tmp_path, **change)
    with pytest.raises(ConfigError) as caught:
        load_study_file(path)
    text = str(caught.value)
    assert field in text and words in text, text


def test_validate_command_accepts_the_shipped_studies(root):
    studies = sorted(str(p) for p in (root / "studies").glob("*.yaml"))
    assert {Path(s).name for s in studies} >= {"quickstart.yaml", "beyond-miras.yaml", "table1.yaml"}
    result = CliRunner().invoke(app, ["validate", *studies])
    assert result.exit_code == 0, result.output
    quick = load_study_file(root / "studies" / "quickstart.yaml")
    assert {"moneta", "yaad", "memora"} <= set(quick.sampler.anchor_names)


def test_run_stores_the_contract_and_measures_anchors_first(tmp_path):
    path = write_study(tmp_path, trials=4, sampler={"kind": "tpe", "anchors": ["gated_deltanet", "transformer"]})
    summary = run_inline(path)
    assert summary.finished == 4 and not summary.interrupted
    study = open_study(load_study_file(path))
    assert study.study_name == "tiny" and study.user_attrs["space"] == "tiny"
    assert study.user_attrs["objectives"] == [{"name": "val_bpb", "direction": "minimize"}]
    assert study.user_attrs["study_file"]["name"] == "tiny"
    trials = study.get_trials()
    assert [t.user_attrs["anchor"] for t in trials] == ["gated_deltanet", "transformer", None, None]
    assert trials[1].user_attrs["axes"] == {"memory": "none", "bias": "dot", "retention": "none", "algorithm": "none"}
    assert trials[1].params == {}  # the transformer is outside the space: run from its preset
    # gated_deltanet is inside it: its params are recorded, so the sampler learns from it
    space = load_study_file(path).load_space()
    assert trials[0].params == space.encode(preset("gated_deltanet"), axes_only=True) != {}
    for trial in trials:
        assert trial.state == TrialState.COMPLETE
        attrs = trial.user_attrs
        point = ModelPoint.model_validate(attrs["point"])
        data = canonical_data(point)  # unused fields (a mamba decay's value) left out
        canonical = json.dumps({k: v for k, v in data.items() if k != "name"}, sort_keys=True, separators=(",", ":"))
        assert attrs["point_key"] == hashlib.sha256(canonical.encode()).hexdigest()
        assert attrs["axes"] == point.axes
        assert point.train.tokens == TINY_TRIAL["tokens"] and point.block.d_model == 32
        assert trial.values == [attrs["metrics"]["val_bpb"]]
        assert [s for s, _ in attrs["curve"]] == [2, 4, 6, 7]  # every 2 steps and the last (7)
        assert "failure" not in attrs and "reused_from" not in attrs
    assert len({t.user_attrs["point_key"] for t in trials}) == 4


def test_resume_keeps_finished_trials_and_reaches_the_target(tmp_path):
    path = write_study(tmp_path, trials=2)
    run_inline(path)
    before = {t.number: t.values for t in trials_of(path)}
    result = CliRunner().invoke(app, ["resume", str(path), "--inline", "--trials", "4"])
    assert result.exit_code == 0, result.output
    after = trials_of(path)
    assert [t.number for t in after] == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in after)
    assert {t.number: t.values for t in after if t.number in before} == before


def test_a_study_measured_by_an_earlier_version_is_not_extended(tmp_path):
    """Trials evaluated the old way (val_bpb per token, a validation set per seed) cannot be
    ranked against new ones: run and resume refuse, naming the way out; reading still works."""
    from miras_search.trial import MEASURE_VERSION

    path = write_study(tmp_path, trials=1)
    run_inline(path)
    study = open_study(load_study_file(path))
    assert study.user_attrs["measure_version"] == MEASURE_VERSION
    study.set_user_attr("measure_version", 1)
    before = [t.values for t in trials_of(path)]
    for command in (["run", str(path), "--inline", "--trials", "2"], ["resume", str(path), "--inline", "--trials", "2"]):
        result = CliRunner().invoke(app, command, env={"COLUMNS": "300"})
        assert result.exit_code == 1, result.output
        assert "measure version 1" in result.output and "new name or storage" in result.output
        assert "Traceback" not in result.output
    assert [t.values for t in trials_of(path)] == before  # nothing added, nothing lost
    assert CliRunner().invoke(app, ["best", str(path)]).exit_code == 0


def test_changed_trial_settings_are_not_mixed_into_a_study(tmp_path):
    """A budget or evaluation changed in the file would rank trials measured two ways: run and
    resume refuse and name the change; a time limit (or threads) may change; reading warns."""
    path = write_study(tmp_path, trials=1)
    run_inline(path)
    data = yaml.safe_load(path.read_text())
    data["trial"]["time_limit_s"] = 999.0  # bounds a trial, measures nothing: allowed
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["resume", str(path), "--inline", "--trials", "2"])
    assert result.exit_code == 0, result.output
    data["trial"]["eval_batches"] = data["trial"].get("eval_batches", 4) + 1
    path.write_text(yaml.safe_dump(data))
    before = [t.values for t in trials_of(path)]
    result = CliRunner().invoke(app, ["resume", str(path), "--inline", "--trials", "3"], env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert "trial.eval_batches" in result.output and "new name or storage" in result.output
    assert [t.values for t in trials_of(path)] == before
    best = CliRunner().invoke(app, ["best", str(path)])
    assert best.exit_code == 0
    assert "warning:" in best.stderr and "trial.eval_batches" in best.stderr
    docs = [d for d in yaml.safe_load_all(best.stdout) if d]  # stdout stays YAML
    assert "warning" not in best.stdout and "memory" in docs[0]


def test_the_space_is_compared_by_content_and_the_seeds_count(tmp_path):
    path = write_study(tmp_path, trials=1)
    run_inline(path)
    data = yaml.safe_load(path.read_text())
    data["space"] = "./space.yaml"  # the same file, written otherwise: no change
    path.write_text(yaml.safe_dump(data))
    assert CliRunner().invoke(app, ["resume", str(path), "--inline", "--trials", "2"]).exit_code == 0
    space = yaml.safe_load((tmp_path / "space.yaml").read_text())
    space["description"] = "a new description"  # and anchors, the name: measure nothing
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    assert CliRunner().invoke(app, ["resume", str(path), "--inline", "--trials", "3"]).exit_code == 0
    space["base"]["block"]["d_model"] = 64
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    result = CliRunner().invoke(app, ["resume", str(path), "--inline", "--trials", "4"], env={"COLUMNS": "300"})
    assert result.exit_code == 1 and "the space ./space.yaml" in result.output
    space["base"]["block"]["d_model"] = 32
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    data["seeds"] = [0, 1]  # a mean over two seeds is not a one-seed score
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["resume", str(path), "--inline", "--trials", "4"], env={"COLUMNS": "300"})
    assert result.exit_code == 1 and "seeds: null -> [0, 1]" in result.output


def test_resume_continues_to_the_target_of_the_run_it_resumes(tmp_path):
    """`run --trials 4` stopped early (here by its time budget; Ctrl-C or kill -9 alike): a plain
    `resume` continues to 4, not to the file's 2, and a later plain `run` has nothing to do."""
    path = write_study(tmp_path, trials=2)
    summary = run_inline(path, trials=4, timeout_s=1e-9)  # the deadline passes before any trial
    assert summary.finished == 0
    result = CliRunner().invoke(app, ["resume", str(path), "--inline"])
    assert result.exit_code == 0, result.output
    assert sum(t.state == TrialState.COMPLETE for t in trials_of(path)) == 4
    again = CliRunner().invoke(app, ["run", str(path), "--inline"])
    assert again.exit_code == 0, again.output
    assert "already has 4/4 finished trials" in again.output and len(trials_of(path)) == 4


def test_data_that_changed_under_a_study_is_not_mixed_into_it(tmp_path, monkeypatch):
    """A data folder that gained a file has other validation documents: resume refuses."""
    monkeypatch.setenv("MIRAS_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(30):
        (folder / f"{i}.txt").write_text(f"document {i}: " + "some words to learn from. " * 40)
    trial = {**TINY_TRIAL, "data": [{"task": "files", "paths": [str(folder)]}]}
    path = write_study(tmp_path, trials=1, trial=trial)
    run_inline(path)
    assert CliRunner().invoke(app, ["resume", str(path), "--inline", "--trials", "2"]).exit_code == 0
    (folder / "new.txt").write_text("a new document. " * 50)
    result = CliRunner().invoke(app, ["resume", str(path), "--inline", "--trials", "3"], env={"COLUMNS": "300"})
    assert result.exit_code == 1 and "the data's content" in result.output
    assert len(trials_of(path)) == 2


def test_an_objective_no_trial_measures_stops_the_study_after_one_trial(tmp_path):
    """A metric the trials do not measure is refused when the study file loads (validate, run:
    test_input_checks_study); one that slips past (a study built in code) fails the first trial
    after its training, which stops the study instead of training all of them."""
    from miras_search.trial import Objective

    path = write_study(tmp_path, trials=4, objectives=[{"metric": "nosuch_metric"}],
                       sampler={"kind": "random", "anchors": []})
    result = CliRunner().invoke(app, ["run", str(path), "--inline", "--wandb", "off"])
    assert result.exit_code == 1
    assert "objectives.0.metric" in result.output and "'nosuch_metric' is not a metric" in " ".join(result.output.split())
    path = write_study(tmp_path, trials=4, sampler={"kind": "random", "anchors": []})
    spec = load_study_file(path)
    spec = spec.model_copy(update={"objectives": [Objective(metric="nosuch_metric")]})
    summary = run_study(spec, lambda: InlinePool(threads=1))
    assert summary.stopped_because is not None and "metric 'nosuch_metric' was not measured" in summary.stopped_because
    assert len(trials_of(path)) == 1


def test_a_run_where_every_trial_failed_exits_with_the_reasons(tmp_path):
    """Every trial failing (here: past a time limit no trial can keep) was '2/2 finished', exit 0.
    (Data that cannot be opened stops the study before its first trial: test_lost_work.)"""
    trial = {**TINY_TRIAL, "time_limit_s": 1e-9}
    path = write_study(tmp_path, trials=2, trial=trial, sampler={"kind": "random", "anchors": []})
    result = CliRunner().invoke(app, ["run", str(path), "--inline", "--wandb", "off"])
    output = " ".join(result.output.split())
    assert result.exit_code == 1, output
    assert "no trial of study 'tiny' trained (2 failed, 0 pruned by a limit before training): 2 x" in output
    assert "time limit" in output


@pytest.mark.parametrize("anchors", [[], ["gated_deltanet"]])
def test_a_timeout_that_ends_before_any_trial_starts_says_so(tmp_path, anchors):
    """With or without anchors queued (the sampler's trials are never created)."""
    path = write_study(tmp_path, trials=2, sampler={"kind": "random", "anchors": anchors})
    result = CliRunner().invoke(app, ["run", str(path), "--inline", "--wandb", "off", "--timeout", "1e-9"])
    output = " ".join(result.output.split())
    assert result.exit_code == 1, output
    assert "no trial of study 'tiny' trained: the wall-clock budget of 1e-09 s" in output
    assert f"ended before any trial started, with {len(anchors)} queued" in output
    assert "miras resume" in output


def test_trials_still_waiting_are_not_counted_as_failed(tmp_path):
    """Three anchors and a target of two: the third stays queued, and is no failure."""
    trial = {**TINY_TRIAL, "time_limit_s": 1e-9}
    path = write_study(tmp_path, trials=2, trial=trial,
                       sampler={"kind": "tpe", "anchors": ["gated_deltanet", "deltanet", "retnet"]})
    result = CliRunner().invoke(app, ["run", str(path), "--inline", "--wandb", "off"])
    assert result.exit_code == 1
    assert [t.state for t in trials_of(path)].count(TrialState.WAITING) == 1
    assert "(2 failed, 0 pruned by a limit before training)" in " ".join(result.output.split())


def test_queued_anchors_the_study_file_no_longer_names_are_set_aside(tmp_path):
    """A target of one leaves deltanet queued; the file's anchors then change to retnet: the next
    run sets deltanet aside (failed as 'dropped', not counted) and measures retnet, where it used
    to run deltanet first and leave retnet queued."""
    path = write_study(tmp_path, trials=1, sampler={"kind": "random", "anchors": ["gated_deltanet", "deltanet"]})
    run_inline(path)
    assert [t.state for t in trials_of(path)] == [TrialState.COMPLETE, TrialState.WAITING]
    path = write_study(tmp_path, trials=2, sampler={"kind": "random", "anchors": ["gated_deltanet", "retnet"]})
    result = CliRunner().invoke(app, ["run", str(path), "--inline", "--wandb", "off"])
    output = " ".join(result.output.split())
    assert result.exit_code == 0, output
    assert "queued anchor(s) deltanet set aside: the study file's sampler.anchors no longer names them" in output
    trials = trials_of(path)
    dropped = [t for t in trials if t.user_attrs.get("failure") == "dropped"]
    assert [t.user_attrs["anchor"] for t in dropped] == ["deltanet"] and dropped[0].state == TrialState.FAIL
    complete = [t.user_attrs.get("anchor") for t in trials if t.state == TrialState.COMPLETE]
    assert complete == ["gated_deltanet", "retnet"]  # the target of two, the dropped trial not counted
    status = " ".join(CliRunner().invoke(app, ["status", str(path)]).output.split())
    assert "dropped" in status and "no longer names it" in status, status


def test_the_run_summary_says_how_many_finished_trials_were_pruned_or_failed_and_why():
    from miras_search.cli.app import console
    from miras_search.cli.study import _report
    from miras_search.study.driver import RunSummary
    from miras_search.study.summary import FailureGroup

    summary = RunSummary("q", "runs/q/study.journal", 16, 16, ran=16, complete=4, pruned=11,
                         failures=[FailureGroup("time_limit", 1, "ran past its time limit")])
    with console.capture() as captured:
        _report(summary, None)
    output = " ".join(captured.get().split())
    assert "16/16 finished trials" in output
    assert "of the finished trials: 4 complete, 11 pruned, 1 failed (time_limit 1); `miras status` says why" in output
    with console.capture() as captured:
        _report(RunSummary("q", "runs/q/study.journal", 3, 3, ran=3, complete=3), None)
    assert "of the finished trials" not in captured.get()  # all complete: the first line says it all


def test_a_run_where_a_limit_pruned_every_point_before_training_exits_with_the_reason(tmp_path):
    path = write_study(tmp_path, trials=2, limits=[{"metric": "params", "max": 1000}])
    result = CliRunner().invoke(app, ["run", str(path), "--inline", "--wandb", "off"])
    output = " ".join(result.output.split())
    assert result.exit_code == 1, output
    assert "(0 failed, 2 pruned by a limit before training)" in output
    assert "breaks params <= 1000" in output


@pytest.mark.parametrize(("point", "words"), [
    (None, "trial 0 stores no 'point' user attribute"),
    ({"memory": {"kind": "bogus"}}, "trial 0 stores a point this version cannot read (memory"),
])
def test_best_on_trials_without_a_readable_point(tmp_path, point, words):
    """A plain Optuna study, or a point from another schema version, in the same storage."""
    from miras_search.study.storage import make_storage

    journal = str(tmp_path / "plain.journal")
    study = optuna.create_study(study_name="plain", storage=make_storage(journal))
    attrs = {} if point is None else {"point": point}
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0, user_attrs=attrs))
    result = CliRunner().invoke(app, ["best", "plain", "--storage", journal])
    assert result.exit_code == 1 and words in " ".join(result.output.split())


def test_validate_builds_the_study_sampler_and_samples_its_space(tmp_path):
    """`miras validate` catches what `run` would stop at first: sampler options, and a space whose
    constraints forbid every point."""
    path = write_study(tmp_path, sampler={"kind": "random", "anchors": [], "options": {"bogus": 1}})
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1 and "sampler.options.bogus: not an option of Optuna's RandomSampler" in result.output
    forbid_all = {**TINY_SPACE, "constraints": [{"forbid": {"memory.kind": "matrix"}}]}
    path = write_study(tmp_path, space_data=forbid_all)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1 and "constraints" in result.output


def test_unquoted_wandb_off_means_off(tmp_path):
    """YAML reads an unquoted `off` as false; that can only mean 'off'."""
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    path = tmp_path / "study.yaml"
    path.write_text("type: study\nname: t\nspace: space.yaml\ntrials: 1\ntracking: {wandb: off}\nseeds: [0, 1]\n")
    assert load_study_file(path).tracking.wandb == "off"
    path.write_text("type: study\nname: t\nspace: space.yaml\ntrials: 1\ntracking: {wandb: on}\nseeds: [-1]\n")
    with pytest.raises(ConfigError) as error:
        load_study_file(path)
    message = str(error.value)
    assert "tracking.wandb (line 5): YAML reads an unquoted on / yes / true as a boolean" in message
    assert "seeds.0 (line 6)" in message


def test_trials_left_running_by_a_dead_driver_are_failed_and_run_again(tmp_path):
    path = write_study(tmp_path, trials=1)
    run_inline(path)
    study = open_study(load_study_file(path))
    params = study.trials[0].params | {"bias.kind": "dot"}
    study.enqueue_trial(params)
    orphan = study.ask()  # what a driver killed mid-trial leaves: a RUNNING trial
    load_study_file(path).load_space().point_from_trial(orphan)
    assert study.trials[orphan.number].state == TrialState.RUNNING
    run_inline(path, trials=2)
    trials = trials_of(path)
    dead = trials[orphan.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["failure"] == "interrupted"
    again = [t for t in trials if t.user_attrs.get("requeued_from") == orphan.number]
    assert len(again) == 1 and again[0].params == dead.params and again[0].state == TrialState.COMPLETE
    assert len({t.number for t in trials}) == len(trials) == 3


def test_duplicate_points_reuse_the_earlier_result(tmp_path):
    one_point = {**TINY_SPACE, "params": {"algorithm": {"kind": {"choice": ["gd"]}}}}
    path = write_study(tmp_path, one_point, trials=3, sampler={"kind": "random", "anchors": ["gated_deltanet"]})
    summary = run_inline(path)
    assert summary.ran == 1 and summary.reused == 2
    first, *copies = trials_of(path)
    assert first.user_attrs["anchor"] == "gated_deltanet"
    for copy in copies:
        assert copy.state == TrialState.COMPLETE and copy.user_attrs["reused_from"] == 0
        assert copy.values == first.values and copy.user_attrs["point_key"] == first.user_attrs["point_key"]


def test_raising_and_nan_trials_fail_with_their_reason_and_the_study_finishes(tmp_path):
    missing = str(tmp_path / "no-such-corpus.txt")
    path = write_study(tmp_path, trials=2, trial={**TINY_TRIAL, "data": [{"task": "files", "paths": [missing]}]})
    with pytest.raises(MirasError, match=r"no-such-corpus\.txt' does not exist"):  # before any trial
        run_inline(path)
    assert trials_of(path) == []

    overflowing = {  # unnormalised keys, a huge inner step and an unsmoothed l4 loss: NaN
        "type": "space", "name": "nan",
        "base": {"memory": {"kind": "vector"}, "bias": {"kind": "lp", "p": 4, "smooth": False},
                 "algorithm": {"kind": "gd", "eta": {"mode": "constant", "value": 1000}},
                 "block": {"d_model": 32, "n_heads": 2, "n_layers": 1, "qk_l2_norm": False}},
        "params": {"train": {"lr": {"choice": [0.01]}}},
    }
    folder = tmp_path / "nan"
    folder.mkdir()
    path = write_study(folder, overflowing, name="nan", trials=2,
                       trial={**TINY_TRIAL, "tokens": 2048, "batch_size": 2, "seq_len": 64})
    run_inline(path)
    first, second = trials_of(path)
    assert first.state == TrialState.FAIL and first.user_attrs["failure"] == "nan"
    assert "NaN or inf" in first.user_attrs["reason"]
    assert second.user_attrs["reused_from"] == 0 and second.state == TrialState.FAIL


def test_a_parameter_limit_prunes_points_before_training(tmp_path):
    path = write_study(tmp_path, trials=2, limits=[{"metric": "params", "max": 1000}])
    summary = run_inline(path)
    assert summary.finished == 2 and summary.overhead_s == []  # nothing was trained
    for trial in trials_of(path):
        assert trial.state == TrialState.PRUNED and trial.user_attrs["failure"] == "limit"
        assert trial.user_attrs["metrics"]["params"] > 1000 and trial.user_attrs["constraints"][0] > 0


def test_multi_objective_study_and_best_points(tmp_path):
    path = write_study(
        tmp_path, trials=3, sampler={"kind": "nsgaii", "anchors": []},
        objectives=[{"metric": "val_bpb"}, {"metric": "tokens_per_s", "direction": "maximize"}],
    )
    run_inline(path)
    trials = trials_of(path)
    assert all(len(t.values) == 2 and t.values[1] == t.user_attrs["metrics"]["tokens_per_s"] for t in trials)
    result = CliRunner().invoke(app, ["best", str(path), "-n", "2"])
    assert result.exit_code == 0, result.output
    docs = [d for d in yaml.safe_load_all(result.output) if d]
    assert 1 <= len(docs) <= 2
    for doc in docs:
        assert set(doc["meta"]["objectives"]) == {"val_bpb", "tokens_per_s"}
        number = doc["meta"]["trial"]
        assert point_from_dict(doc) == ModelPoint.model_validate(trials[number].user_attrs["point"])


def test_grid_sampler_covers_a_discrete_space(tmp_path):
    grid = {**TINY_SPACE, "params": {"bias": {"kind": {"choice": ["l2", "dot"]}},
                                     "algorithm": {"kind": {"choice": ["gd", "momentum"]}}}}
    path = write_study(tmp_path, grid, trials=None, sampler={"kind": "grid", "anchors": []})
    summary = run_inline(path)
    assert summary.finished == 4
    combos = {(t.user_attrs["axes"]["bias"], t.user_attrs["axes"]["algorithm"]) for t in trials_of(path)}
    assert combos == {("l2", "gd"), ("l2", "momentum"), ("dot", "gd"), ("dot", "momentum")}


def test_status_shows_counts_and_best(tmp_path):
    path = write_study(tmp_path, trials=2)
    run_inline(path)
    result = CliRunner().invoke(app, ["status", str(path)])
    assert result.exit_code == 0, result.output
    assert "2/2 finished" in result.output and "val_bpb" in result.output
    best = min(t.values[0] for t in trials_of(path))
    assert f"{best:.4g}" in result.output
    missing = CliRunner().invoke(app, ["status", "no-such-study", "--storage", str(tmp_path / "x.journal")])
    assert missing.exit_code == 1 and "no study" in missing.output


def test_load_study_dict_without_a_file_checks_only_the_schema():
    study = load_study_dict({"name": "x", "space": "anywhere.yaml", "trials": 2})
    assert study.objectives[0].metric == "val_loss" and study.sampler.kind == "tpe"


@pytest.mark.parametrize("kind", ["tpe", "cmaes", "random"])
def test_each_single_objective_sampler_runs(tmp_path, kind):
    path = write_study(tmp_path, trials=2, sampler={"kind": kind, "anchors": [], "seed": 3},
                       pruner={"kind": "hyperband", "min_resource": 2})
    assert run_inline(path).finished == 2
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials_of(path))


def test_several_seeds_average_the_metrics(tmp_path):
    path = write_study(tmp_path, trials=1, seeds=[0, 1])
    run_inline(path)
    (trial,) = trials_of(path)
    metrics = trial.user_attrs["metrics"]
    assert metrics["val_bpb"] == pytest.approx((metrics["val_bpb/seed0"] + metrics["val_bpb/seed1"]) / 2, rel=1e-12)
    assert metrics["val_bpb/seed0"] != metrics["val_bpb/seed1"]
    assert trial.values == [metrics["val_bpb"]]


def test_a_time_budget_stops_asking_for_new_trials(tmp_path):
    budget = 2.0
    path = write_study(tmp_path, trials=None, timeout_s=budget)
    summary = run_inline(path)
    trials = sorted(trials_of(path), key=lambda t: t.number)
    assert summary.finished == len(trials) >= 1 and summary.target is None
    assert not any(t.state == TrialState.RUNNING for t in trials)
    starts = [t.datetime_start.timestamp() for t in trials]
    assert max(starts) - min(starts) < budget  # nothing is asked for after the budget is spent
    first = (trials[0].datetime_complete - trials[0].datetime_start).total_seconds()
    if first < budget / 2:  # a loaded machine may fit only one trial; otherwise it keeps asking
        assert len(trials) >= 2
    longest = max((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    # the budget, the last trial, and the driver's own steps (opening the study and its data),
    # with room for a busy machine
    assert summary.wall_s < budget + longest + 10.0


def test_resume_needs_an_existing_study(tmp_path):
    path = write_study(tmp_path)
    result = CliRunner().invoke(app, ["resume", str(path), "--inline"])
    assert result.exit_code == 1 and "no study 'tiny' yet" in result.output


def test_make_sampler_refuses_an_out_of_range_seed(tmp_path):
    study = load_study_file(write_study(tmp_path))
    # a spec changed after validation (model_copy does not validate) still fails cleanly
    copied = study.model_copy(update={"sampler": study.sampler.model_copy(update={"seed": 2**32})})
    copied._source = study.source
    with pytest.raises(ConfigError, match=r"sampler.seed: must be between 0 and 4294967295"):
        make_sampler(copied, study.load_space())


@pytest.mark.parametrize("timeout", ["-5", "0", "nan", "inf"])
def test_run_timeout_must_be_positive(tmp_path, timeout):
    path = write_study(tmp_path)
    result = CliRunner().invoke(app, ["run", str(path), "--inline", "--timeout", timeout], env={"COLUMNS": "250"})
    assert result.exit_code == 2, result.output
    assert "'--timeout'" in result.output and "positive, finite number" in result.output
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing was stored


def test_the_progress_bar_best_counts_only_feasible_complete_trials():
    from miras_search.cli.study import _BestSoFar

    best = _BestSoFar([{"name": "val_bpb", "direction": "minimize"},
                       {"name": "tokens_per_s", "direction": "maximize"}])
    assert best.text() == ""
    make = optuna.trial.create_trial
    best.add(make(state=TrialState.COMPLETE, values=[5.3, 100.0], user_attrs={"constraints": [-0.1]}))
    # a pruned trial's stored value is its last training loss, not a val_bpb
    best.add(make(state=TrialState.PRUNED, value=4.0))
    best.add(make(state=TrialState.COMPLETE, values=[5.0, 500.0], user_attrs={"constraints": [0.2]}))
    best.add(make(state=TrialState.COMPLETE, values=[5.4, 200.0]))
    assert best.values == [5.3, 200.0]
    assert best.text() == "best val_bpb 5.3  tokens_per_s 200"


def _orphan(path: Path, driver: dict) -> int:
    """A RUNNING trial that ``driver`` asked for (what a driver mid-trial leaves in storage)."""
    study = open_study(load_study_file(path))
    trial = study.ask()
    load_study_file(path).load_space().point_from_trial(trial)
    trial.set_user_attr("driver", driver)
    return trial.number


def test_a_second_driver_refuses_a_study_whose_driver_is_alive(tmp_path):
    from miras_search.study.owner import _start_time

    path = write_study(tmp_path, trials=1)
    run_inline(path)
    other = subprocess.Popen(["sleep", "60"])  # stands in for a live `miras run` on this host
    try:
        alive = {"host": socket.gethostname(), "pid": other.pid, "started": _start_time(other.pid)}
        number = _orphan(path, alive)
        with pytest.raises(MirasError, match=rf"another driver \(pid {other.pid} on this host, "
                                             rf"running trial\(s\) {number}\)"):
            run_inline(path, trials=2)
        assert trials_of(path)[number].state == TrialState.RUNNING  # nothing was changed
    finally:
        other.kill()
        other.wait()
    run_inline(path, trials=2)  # the driver is gone now: its trial is recovered
    assert trials_of(path)[number].user_attrs["failure"] == "interrupted"


def test_a_reused_pid_is_not_taken_for_the_old_driver(tmp_path):
    path = write_study(tmp_path, trials=1)
    run_inline(path)
    other = subprocess.Popen(["sleep", "60"])
    try:
        # same pid, another start time: the old driver died and the pid went to a new process
        number = _orphan(path, {"host": socket.gethostname(), "pid": other.pid, "started": "1"})
        run_inline(path, trials=2)
    finally:
        other.kill()
        other.wait()
    assert trials_of(path)[number].user_attrs["failure"] == "interrupted"


def test_a_driver_whose_trial_another_driver_closed_stops_with_a_clear_error(tmp_path):
    """Another host's `miras resume` failed this driver's running trial: it stops, no traceback."""
    path = write_study(tmp_path, trials=2, sampler={"kind": "random", "anchors": []})

    class Overtaken(InlinePool):
        def wait(self):
            task = self._queue[0]
            study = open_study(load_study_file(path))
            study.tell(task.number, state=TrialState.FAIL)  # what the other driver does
            return super().wait()

    with pytest.raises(MirasError, match="trial 0 was closed by another driver"):
        run_study(load_study_file(path), lambda: Overtaken(threads=1))


def test_the_target_is_stored_before_the_pool_starts(tmp_path):
    """`miras status` during a slow pool start (Ray) showed '0/-'."""
    path = write_study(tmp_path, trials=2)
    seen = []

    def pool():
        seen.append(open_study(load_study_file(path)).user_attrs.get("run"))
        return InlinePool(threads=1)

    run_study(load_study_file(path), pool)
    assert seen == [{"target": 2, "workers": 1}]


def test_a_wrong_study_name_lists_the_studies_the_storage_holds(tmp_path):
    path = write_study(tmp_path, trials=1)
    run_inline(path)
    journal = str(tmp_path / "runs" / "tiny" / "study.journal")
    with pytest.raises(MirasError, match=r"holds no study named 'tiyn'; it holds: tiny$"):
        open_study("tiyn", storage=journal)
    empty = tmp_path / "empty.journal"
    empty.touch()  # what a run that is starting has written so far
    with pytest.raises(MirasError, match=r"it holds none yet \(a run that is starting creates it\)"):
        open_study("tiny", storage=str(empty))


def test_status_says_why_trials_did_not_complete(tmp_path):
    path = write_study(tmp_path, trials=2, limits=[{"metric": "params", "max": 1000}])
    run_inline(path)
    study = open_study(load_study_file(path))
    study.enqueue_trial({"bias.kind": "dot"})
    orphan = study.ask()  # left RUNNING, then failed as interrupted: shown apart, not as a reason
    orphan.set_user_attr("failure", "interrupted")
    study.tell(orphan, state=TrialState.FAIL)
    result = CliRunner().invoke(app, ["status", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "why trials did not complete" in result.output
    row = next(line for line in result.output.splitlines() if "breaks params <= 1000" in line)
    assert "limit" in row and " 2 " in row
    assert "interrupted" not in result.output.split("why trials did not complete")[1]


def test_an_error_raised_while_a_ctrl_c_was_handled_counts_as_the_ctrl_c():
    """Optuna's journal lock, interrupted by Ctrl-C after it let go of the lock, fails to unlink
    it again (FileNotFoundError): the driver must still see the Ctrl-C; other errors are errors."""
    from miras_search.study.driver import _from_ctrl_c

    def cleanup_fails_on_interrupt():
        try:
            raise KeyboardInterrupt
        except BaseException:
            raise FileNotFoundError("lock.rename") from None

    with pytest.raises(FileNotFoundError) as caught:
        cleanup_fails_on_interrupt()
    assert _from_ctrl_c(caught.value)
    assert not _from_ctrl_c(FileNotFoundError("lock.rename"))
    try:
        try:
            raise ValueError("first")
        except ValueError:
            raise RuntimeError("second") from None
    except RuntimeError as error:
        assert not _from_ctrl_c(error)
