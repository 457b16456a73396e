"""Bad input in a study file caught by `miras validate` and before any trial: sampler options
checked against the Optuna sampler's signature, and metric names against those a trial of the
study's data measures."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from test_study import TINY_TRIAL, write_study
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.errors import ConfigError
from miras_search.study import load_study_file
from miras_search.study import samplers as samplers_module
from miras_search.study.samplers import make_sampler
from miras_search.trial import TrialConfig, run_trial


def _one_paragraph(output: str) -> str:
    assert "Traceback" not in output
    return " ".join(output.split())


def _refused(path: Path, command: str = "validate") -> str:
    args = [command, str(path)] + (["--inline", "--wandb", "off"] if command == "run" else [])
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    return _one_paragraph(result.output)


def _no_trial(folder: Path) -> bool:
    """Whether the study's journal (if any) holds no trial."""
    from miras_search.study.storage import make_storage

    journal = folder / "runs" / "tiny" / "study.journal"
    if not journal.exists():
        return True
    summaries = optuna.get_all_study_summaries(make_storage(str(journal)))
    return all(summary.n_trials == 0 for summary in summaries)


# ---- sampler.options -------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "options", "words"), [
    ("tpe", {"n_startup_trials": "x"}, "sampler.options.n_startup_trials: TPESampler takes an integer here, not 'x'"),
    ("tpe", {"n_startup_trials": -4}, "sampler.options.n_startup_trials: must be >= 0, not -4"),
    ("tpe", {"n_startup_trials": True}, "takes an integer here, not True (a boolean)"),
    ("tpe", {"n_ei_candidates": 0}, "sampler.options.n_ei_candidates: must be >= 1"),
    ("tpe", {"n_startup_trialz": 4}, "did you mean 'n_startup_trials'?"),
    ("tpe", {"gamma": "lambda n: n"}, "sampler.options.gamma: TPESampler takes a Python function"),
    ("tpe", {"seed": 3}, "sampler.options.seed: set by the study, not an option (give sampler.seed instead)"),
    ("cmaes", {"sigma0": -1}, "sampler.options.sigma0: must be > 0, not -1"),
    ("cmaes", {"source_trials": [1]}, "sampler.options.source_trials: CmaEsSampler takes a Python object"),
    ("nsgaii", {"population_size": 1}, "sampler.options.population_size: must be >= 2"),
    ("nsgaii", {"mutation_prob": 1.5}, "sampler.options.mutation_prob: a probability, between 0 and 1"),
    ("random", {"bogus": 1}, "sampler.options.bogus: not an option of Optuna's RandomSampler"),
])
def test_validate_checks_sampler_options_against_the_optuna_sampler(tmp_path, kind, options, words):
    path = write_study(tmp_path, sampler={"kind": kind, "anchors": [], "options": options})
    assert words in _refused(path)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # Optuna deprecates some of them
def test_options_of_the_right_type_and_range_are_accepted(tmp_path):
    good = {"tpe": {"n_startup_trials": 2, "n_ei_candidates": 8, "consider_endpoints": True, "constant_liar": False},
            "cmaes": {"sigma0": 0.5, "popsize": None, "x0": {"bias.kind": "l2"}, "restart_strategy": "ipop"},
            "nsgaii": {"population_size": 4, "mutation_prob": None, "crossover_prob": 0.5}}
    for kind, options in good.items():
        path = write_study(tmp_path, sampler={"kind": kind, "anchors": [], "options": options})
        study = load_study_file(path)
        make_sampler(study, study.load_space())


def test_a_bad_option_stops_run_before_any_trial(tmp_path):
    """The QA repro: `n_startup_trials: "x"` passed validate and left a trial RUNNING in `run`."""
    path = write_study(tmp_path, sampler={"kind": "tpe", "anchors": [], "options": {"n_startup_trials": "x"}})
    assert "sampler.options.n_startup_trials" in _refused(path, "run")
    assert _no_trial(tmp_path)


def test_an_option_optuna_refuses_only_when_it_samples_is_caught_before_any_trial(tmp_path, monkeypatch):
    """The safety net behind the signature check: a copy of the sampler draws one point first, so
    an error Optuna raises at its first ask is one paragraph on sampler.options, not a traceback."""
    monkeypatch.setattr(samplers_module, "sampler_option_problems", lambda kind, options: [])
    path = write_study(tmp_path, sampler={"kind": "tpe", "anchors": [], "options": {"n_startup_trials": "x"}})
    study = load_study_file(path)
    with pytest.raises(ConfigError, match=r"sampler.options: Optuna's TPESampler \(sampler.kind tpe\) does not take"):
        make_sampler(study, study.load_space())
    output = _refused(path, "run")
    assert "sampler.options" in output
    assert _no_trial(tmp_path)


def test_the_first_sample_leaves_the_sampler_as_it_was(tmp_path):
    """The check draws with a copy: the study's sampler proposes the same points as without it."""
    path = write_study(tmp_path, sampler={"kind": "tpe", "anchors": [], "seed": 5, "options": {"n_startup_trials": 2}})
    study = load_study_file(path)
    space = study.load_space()
    checked = make_sampler(study, space).inner
    plain = optuna.samplers.TPESampler(seed=5, n_startup_trials=2, multivariate=True, group=True)
    draws = []
    for sampler in (checked, plain):
        trial = optuna.create_study(sampler=sampler).ask()
        draws.append(space.point_from_trial(trial).model_dump())
    assert draws[0] == draws[1]


# ---- metric names ----------------------------------------------------------------------------
@pytest.mark.parametrize(("fields", "where", "words"), [
    ({"objectives": [{"metric": "val_bpbb"}]}, "objectives.0.metric", "did you mean 'val_bpb'?"),
    ({"objectives": [{"metric": "val_bpb"}, {"metric": "acc/mqar", "direction": "maximize"}]},
     "objectives.1.metric", "'acc/mqar' is not a metric"),
    ({"objectives": [{"weights": {"val_bpb": 1.0, "tokens_per_sec": -0.1}}]},
     "objectives.0.weights.tokens_per_sec", "did you mean 'tokens_per_s'?"),
    ({"limits": [{"metric": "param", "max": 1000}]}, "limits.0.metric", "did you mean 'params'?"),
    ({"scale": {"points": ["transformer"], "metric": "banana"}}, "scale.metric", "'banana' is not a metric"),
])
def test_validate_checks_metric_names_with_a_did_you_mean(tmp_path, fields, where, words):
    path = write_study(tmp_path, **fields)
    output = _refused(path)
    assert f"{where} (line" in output and words in output


def test_an_unmeasured_objective_refuses_run_before_any_trial(tmp_path):
    path = write_study(tmp_path, trials=4, objectives=[{"metric": "nosuch_metric"}],
                       sampler={"kind": "random", "anchors": []})
    assert "objectives.0.metric" in _refused(path, "run")
    assert not (tmp_path / "runs" / "tiny" / "study.journal").exists()


def test_metrics_follow_the_data_and_the_seeds(tmp_path):
    from miras_search.trial.config import data_metric_names, metric_problem

    mqar = {**TINY_TRIAL, "data": [{"task": "mqar"}]}
    path = write_study(tmp_path, trial=mqar, objectives=[{"metric": "acc/mqar", "direction": "maximize"}])
    load_study_file(path)
    path = write_study(tmp_path, trial=mqar, objectives=[{"metric": "val_bpb"}])
    assert "'val_bpb' is not a metric" in _refused(path)  # no text source, no bits per byte
    path = write_study(tmp_path, seeds=[0, 1], objectives=[{"metric": "val_bpb/seed1"}])
    load_study_file(path)
    path = write_study(tmp_path, objectives=[{"metric": "val_bpb/seed1"}])
    assert "is not a metric" in _refused(path)  # one seed: no per-seed metrics
    assert metric_problem("mad_score", data_metric_names(["mad_recall", "mad_recall", "text"])) is None
    assert {"acc/0:mad_recall", "acc/1:mad_recall", "mad/mad_recall", "bpb/text", "val_bpb"} <= set(
        data_metric_names(["mad_recall", "mad_recall", "text"]))


def test_the_metric_names_are_those_a_trial_measures():
    """TrialConfig.metric_names against a real (tiny) trial of text, a repeated MAD task and
    MQAR: every metric it measured is named, and every data metric named was measured."""
    from miras_search.presets import preset
    from miras_search.trial.config import data_metric_names

    data = [{"task": "text"}, {"task": "mad_recall"}, {"task": "mad_recall"}, {"task": "mqar"}]
    config = TrialConfig(data=data, tokens=256, batch_size=2, seq_len=64, eval_batches=1, device="cpu", threads=1)
    point = preset("gated_deltanet", block={"d_model": 16, "n_heads": 1, "n_layers": 1, "max_seq_len": 512})
    result = run_trial(point, config)
    assert result.status == "complete", result.reason
    named = set(config.metric_names())
    assert set(result.metrics) <= named
    data_names = set(data_metric_names([spec["task"] for spec in data]))
    assert data_names <= set(result.metrics)


# ---- which problem is named first; files that are not there ----------------------------------
def test_a_repeated_objective_is_named_before_the_pruner_advice(tmp_path):
    """Following 'use pruner: none' would only lead to the repeat: it is reported first."""
    path = write_study(tmp_path, objectives=[{"metric": "val_bpb"}, {"metric": "val_bpb"}],
                       pruner={"kind": "median"})
    message = _refused(path)
    assert "objectives (line 2): an objective is listed twice" in message and "pruner" not in message


def test_a_missing_or_unreadable_file_is_not_called_invalid(tmp_path):
    (tmp_path / "folder.yaml").mkdir()
    for name, words in [("absent.yaml", "absent.yaml: no such file"),
                        ("folder.yaml", "folder.yaml is a directory, not a YAML file")]:
        message = _refused(tmp_path / name)
        assert words in message and "not valid" not in message and "problem(s)" not in message
