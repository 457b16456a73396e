"""--gpus-per-trial: the GPU share each trial asks Ray for (fractions let small trials share a GPU),
checked before any actor exists; the Ray request it becomes; the memory share of a shared GPU."""

from __future__ import annotations

import pytest
from test_study import write_study
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.errors import ConfigError, MirasError
from miras_search.parallel.resources import plan_actors
from miras_search.study import load_study_file
from miras_search.study.spec import gpus_per_trial_problem

runner = CliRunner()


@pytest.mark.parametrize("value", [0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 8.0])
def test_fractions_below_one_and_whole_numbers_are_gpu_requests(value):
    assert gpus_per_trial_problem(value) is None


@pytest.mark.parametrize(("value", "words"), [
    (1.5, "whole number"), (-1.0, ">= 0"), (float("nan"), "finite"), (float("inf"), "finite"),
])
def test_other_values_are_refused_with_the_reason(value, words):
    assert words in gpus_per_trial_problem(value)


def test_a_shared_gpu_makes_several_actors_each_with_its_fraction():
    plan = plan_actors(8, 0.25, [{"CPU": 16.0, "GPU": 1.0}])
    assert (plan.workers, plan.num_gpus, plan.device, plan.per_gpu) == (4, 0.25, "cuda", 4)
    assert plan.num_cpus == 1 and plan.threads == 4  # the node's 16 CPUs split between 4 trials


def test_gpu_slots_are_counted_per_node():
    # two nodes with one GPU each hold one 1-GPU trial each, none with 2 GPUs
    plan = plan_actors(5, 1.0, [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}])
    assert plan.workers == 2
    with pytest.raises(MirasError, match="node with the most GPUs has 1"):
        plan_actors(1, 2.0, [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}])


def test_the_default_is_one_gpu_with_gpus_and_cpus_without():
    assert plan_actors(2, None, [{"CPU": 8.0, "GPU": 2.0}]).num_gpus == 1.0
    cpu = plan_actors(2, None, [{"CPU": 8.0}])
    assert (cpu.num_gpus, cpu.device, cpu.num_cpus, cpu.threads, cpu.per_gpu) == (0.0, "cpu", 4, 4, 1)


def test_asking_for_gpus_where_there_are_none_is_refused_not_left_pending():
    with pytest.raises(MirasError) as caught:
        plan_actors(2, 0.5, [{"CPU": 8.0}])
    text = str(caught.value)
    assert "no GPU" in text and "0 to run the trials on CPUs" in text and "\n" not in text


def test_a_study_file_with_a_fraction_above_one_is_refused(tmp_path):
    path = write_study(tmp_path, parallel={"gpus_per_trial": 1.5})
    with pytest.raises(ConfigError, match=r"parallel.gpus_per_trial.*whole number"):
        load_study_file(path)
    assert load_study_file(write_study(tmp_path, parallel={"gpus_per_trial": 0.25})).parallel.gpus_per_trial == 0.25


@pytest.mark.parametrize(("value", "words"), [("1.5", "whole number"), ("-0.5", ">= 0"), ("nan", "finite")])
def test_the_cli_refuses_bad_values_before_anything_runs(tmp_path, value, words):
    path = write_study(tmp_path)
    result = runner.invoke(app, ["run", str(path), "--gpus-per-trial", value], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert "--gpus-per-trial" in result.output and words in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_inline_trials_asking_for_a_gpu_none_here_has_are_refused(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = write_study(tmp_path)
    result = runner.invoke(app, ["run", str(path), "--inline", "--gpus-per-trial", "0.5"],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert "--gpus-per-trial asks for 0.5 GPU per trial, but no CUDA GPU is visible here" in result.output
    assert not list(tmp_path.rglob("*.journal"))  # refused before the study was opened
