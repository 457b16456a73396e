"""`miras scale`: the power-law fit, the counted compute, a tiny ladder end to end, resume after an
interruption (only the missing rungs train), and bad ladders (one-paragraph errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.errors import ConfigError, MirasError
from miras_search.model import param_count
from miras_search.presets import preset
from miras_search.scale.compute import flops_per_token, matmul_params, memory_weights_per_head
from miras_search.scale.fit import FitError, fit_power_law
from miras_search.scale.plot import scale_figure
from miras_search.scale.results import scale_table
from miras_search.scale.runner import ScaleRunner, finished_rungs, is_rung_trial, plan
from miras_search.scale.session import prepare
from miras_search.study import InlinePool
from miras_search.study.records import counts_toward_budget
from miras_search.study.summary import ranked

TINY = [{"d_model": 16, "n_layers": 1, "seq_len": 16, "tokens": 512},
        {"d_model": 24, "n_layers": 1, "seq_len": 16, "tokens": 1024},
        {"d_model": 32, "n_layers": 1, "seq_len": 16, "tokens": 2048}]
FAST = {"rungs": TINY, "batch_size": 4}


# ---- the fit ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("a", "b", "e"), [(3.0, 0.3, 1.2), (0.8, 0.08, 2.5), (10.0, 0.6, 0.0)])
def test_power_law_recovers_known_parameters(a: float, b: float, e: float) -> None:
    compute = np.geomspace(1e8, 1e13, 7)
    loss = e + a * (compute / 1e8) ** (-b)
    fit = fit_power_law(compute, loss)
    assert fit.form == "floor"
    assert fit.c0 == pytest.approx(1e8)
    assert fit.a == pytest.approx(a, rel=1e-3)
    assert fit.b == pytest.approx(b, rel=1e-3)
    assert fit.e == pytest.approx(e, abs=1e-3 * a)
    assert fit(1e15) == pytest.approx(e + a * (1e7) ** (-b), rel=1e-3, abs=1e-4)


def test_power_law_with_noise_stays_close() -> None:
    rng = np.random.default_rng(0)
    compute = np.geomspace(1e9, 1e14, 12)
    loss = 1.5 + 2.0 * (compute / 1e9) ** (-0.25)
    fit = fit_power_law(compute, loss * (1 + 0.002 * rng.standard_normal(loss.size)))
    assert fit.b == pytest.approx(0.25, rel=0.15)
    assert fit.e == pytest.approx(1.5, rel=0.1)
    assert fit.rmse < 0.02


def test_two_rungs_fit_a_pure_power_law_and_one_is_an_error() -> None:
    fit = fit_power_law([1e9, 1e10], [4.0, 4.0 * 10 ** -0.2])
    assert fit.form == "pure" and fit.e == 0.0
    assert fit.b == pytest.approx(0.2, rel=1e-9)
    assert fit.a == pytest.approx(4.0, rel=1e-9)
    with pytest.raises(FitError, match="at least 2"):
        fit_power_law([1e9, 1e10], [4.0, float("nan")], "moneta")
    with pytest.raises(FitError, match="moneta has 1 finished rung"):
        fit_power_law([1e9], [4.0], "moneta")


# ---- compute ----------------------------------------------------------------------------------
def test_flops_per_token_counts_matmuls_and_the_memory() -> None:
    block = {"d_model": 64, "n_heads": 2, "n_layers": 3}
    gdn = preset("gated_deltanet", block=block)
    # untied or tied: the input table is a lookup, the head a product
    assert matmul_params(gdn) == param_count(gdn)
    assert memory_weights_per_head(gdn) == 32 * 32
    assert flops_per_token(gdn, 128) == pytest.approx(6 * param_count(gdn) + 3 * 3 * 8 * 32 * 32 * 2)
    attention = preset("transformer", block=block)
    span = (128 + 1) / 2
    assert flops_per_token(attention, 128) == pytest.approx(6 * param_count(attention) + 3 * 3 * 4 * 64 * span)
    # attention's work grows with the context, a memory's does not
    assert flops_per_token(attention, 1024) > flops_per_token(attention, 128)
    assert flops_per_token(gdn, 1024) == flops_per_token(gdn, 128)
    moneta = preset("moneta", block=block)
    assert memory_weights_per_head(moneta) == 32 * 128 + 128 * 32  # depth 2, expansion 4
    untied = preset("gated_deltanet", block={**block, "tie_embeddings": False})
    assert matmul_params(untied) == param_count(untied) - 260 * 64


# ---- end to end -------------------------------------------------------------------------------
def _job(tmp_path: Path, names: list[str], **overrides: Any):
    return prepare(None, names, {**FAST, **overrides}, name="tiny", run_dir=str(tmp_path / "runs"))


class CountingPool(InlinePool):
    """The inline pool, recording what it trained; ``stop_after`` raises Ctrl-C after that many."""

    def __init__(self, stop_after: int | None = None):
        super().__init__(device="cpu", threads=1)
        self.trained: list[tuple[int, int]] = []
        self.stop_after = stop_after

    def wait(self):
        if self.stop_after is not None and len(self.trained) >= self.stop_after:
            raise KeyboardInterrupt
        done = super().wait()
        for task, _ in done:
            self.trained.append((task.point["block"]["d_model"], task.config["seed"]))
        return done


def test_tiny_ladder_end_to_end(tmp_path: Path) -> None:
    job = _job(tmp_path, ["transformer", "gated_deltanet"])
    pool = CountingPool()
    summary = ScaleRunner(job.study, job.spec, job.points, job.config, job.objectives, lambda: pool).run()
    assert summary.ran == 6 and not summary.failed and not summary.interrupted
    trials = [t for t in job.study.get_trials() if is_rung_trial(t)]
    assert len(trials) == 6
    assert all(not counts_toward_budget(t) for t in trials)
    table = scale_table(job.study, "val_loss", target_flops=1e12)
    assert [len(p.rungs) for p in table.points] == [3, 3]
    assert all(p.fit is not None and p.fit.b > 0 for p in table.points)
    assert table.points[0].at_target <= table.points[1].at_target
    for point in table.points:  # compute grows along the ladder, the loss is the stored metric
        computes = [r.compute for r in point.rungs]
        assert computes == sorted(computes) and computes[0] > 0
        stored = {t.user_attrs["scale"]["rung"]: t.user_attrs["metrics"]["val_loss"] for t in trials
                  if t.user_attrs["label"] == point.label}
        assert {r.rung: r.loss for r in point.rungs} == pytest.approx(stored)
    assert "rank" in table.markdown()
    scale_figure(table).savefig(tmp_path / "scale.png")
    assert (tmp_path / "scale.png").stat().st_size > 1000
    # every point's rung k has one level (presets keep sizes of their own): 1, 2.25 x 2, 4 x 4
    levels = sorted({(t.user_attrs["scale"]["index"], t.user_attrs["fidelity"]["level"]) for t in trials})
    assert levels == [(0, 1.0), (1, pytest.approx(4.5)), (2, pytest.approx(16.0))]
    # `best` reads each point at its highest rung, ranked by its loss there
    best = ranked(job.study)
    assert len(best) == 2 and all(t.user_attrs["scale"]["d_model"] == 32 for t in best)
    assert best[0].values[0] <= best[1].values[0]


def test_resume_after_an_interruption_trains_only_the_missing_rungs(tmp_path: Path) -> None:
    job = _job(tmp_path, ["gated_deltanet"], seeds=[0, 1])
    first = CountingPool(stop_after=2)
    summary = ScaleRunner(job.study, job.spec, job.points, job.config, job.objectives, lambda: first).run()
    assert summary.interrupted and summary.ran == 2
    stored = finished_rungs(job.study)
    assert len(stored) == 2
    again = _job(tmp_path, ["gated_deltanet"], seeds=[0, 1])  # a new process: the study from storage
    second = CountingPool()
    summary = ScaleRunner(again.study, again.spec, again.points, again.config, again.objectives,
                          lambda: second).run()
    assert summary.already == 2 and summary.ran == 4
    assert sorted(first.trained + second.trained) == sorted((d, s) for d in (16, 24, 32) for s in (0, 1))
    assert not set(first.trained) & set(second.trained)
    third = CountingPool()
    summary = ScaleRunner(again.study, again.spec, again.points, again.config, again.objectives,
                          lambda: third).run()
    assert summary.ran == 0 and summary.already == 6 and third.trained == []


def test_cli_tiny_ladder_and_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["scale", "linear_attention", "--inline", "--batch-size", "4", "--name", "cli",
            "--rung", "16,1,16,512", "--rung", "24,1,16,1024"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 trained now" in result.output
    for name in ("scale.json", "scale.md", "scale.png"):
        assert (tmp_path / "runs" / "cli" / "scale" / name).is_file()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "2 already stored, 0 trained now" in result.output
    # a shorter ladder: the stored rung outside it is still fitted, and the command says so
    result = CliRunner().invoke(app, [*args[:-4], "--rung", "24,1,16,1024", "--rung", "32,1,16,2048"])
    assert result.exit_code == 0 and "1 already stored, 1 trained now" in result.output
    assert "1 stored rung(s) outside this ladder: d16-L1-H1-T16-N512" in " ".join(result.output.split())


def test_a_rungs_batch_size_is_part_of_its_identity(tmp_path: Path) -> None:
    ladder = {"rungs": TINY[:2]}
    job = _job(tmp_path, ["gated_deltanet"], **ladder)
    assert ScaleRunner(job.study, job.spec, job.points, job.config, job.objectives, CountingPool).run().ran == 2
    trial = next(t for t in job.study.get_trials() if is_rung_trial(t))
    assert trial.user_attrs["scale"]["batch_size"] == 4
    assert trial.user_attrs["scale"]["trained_point"]["train"]["batch_size"] == 4  # what was trained
    assert {key[3] for key in finished_rungs(job.study)} == {4}
    # another batch size on the same study: refused, naming both sizes and how to keep them apart
    with pytest.raises(MirasError) as caught:
        _job(tmp_path, ["gated_deltanet"], batch_size=8, rungs=TINY[:2])
    message = str(caught.value)
    assert "batch size 4 (d16-L1-H1-T16-N512, d24-L1-H1-T16-N1024)" in message and "trains at batch size 8" in message
    assert "--batch-size 4" in message and "--name tiny-b8" in message and "\n" not in message
    # the same batch size reuses the rung; a point not scaled before is not concerned
    again = _job(tmp_path, ["gated_deltanet", "transformer"], **ladder)
    todo, already = plan(again.study, again.points, again.spec, again.config)
    assert already == 2 and [run.target.label for run in todo] == ["transformer"] * 2
    # a rung stored before the batch size was recorded: its trained point's
    legacy = {**trial.user_attrs["scale"], "batch_size": None}
    legacy["trained_point"] = {**legacy["trained_point"], "train": {"batch_size": 16}}
    again.study.add_trial(optuna.trial.create_trial(
        state=TrialState.COMPLETE, values=[5.0], user_attrs={**trial.user_attrs, "scale": legacy}))
    with pytest.raises(MirasError, match=r"batch size 16 \(d16"):
        _job(tmp_path, ["gated_deltanet"], **ladder)


# ---- bad input --------------------------------------------------------------------------------
def _one_paragraph(text: str) -> None:
    assert "Traceback" not in text
    assert "\n\n" not in text.strip()


@pytest.mark.parametrize(("rungs", "words"), [
    ([TINY[0]], "at least 2 rungs"),
    ([TINY[0], TINY[0]], "listed twice"),
    ([{"d_model": 30, "n_layers": 1, "n_heads": 4, "tokens": 100}, TINY[1]], "not divisible by n_heads"),
    ([{"d_model": 32, "layers": 1, "tokens": 100}, TINY[1]], "layers"),
    ([{"d_model": 32, "n_layers": 0, "tokens": 100}, TINY[1]], "n_layers"),
])
def test_bad_ladder_in_a_study_file_names_the_field(tmp_path: Path, rungs: list, words: str) -> None:
    from _fake_study import fake_study

    path = fake_study(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["scale"] = {"points": ["transformer"], "rungs": rungs}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as caught:
        prepare(path, [], {})
    assert "scale.rungs" in str(caught.value) and words in str(caught.value)
    result = CliRunner().invoke(app, ["scale", str(path), "--inline"])
    assert result.exit_code == 1
    assert words in result.output
    _one_paragraph(result.output.split("error:", 1)[1].split("  - ", 1)[0])


def test_bad_cli_input_is_one_paragraph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for args, words in ((["transformer", "--rung", "16,1,16"], "D_MODEL,N_LAYERS,SEQ_LEN,TOKENS"),
                        (["transformer", "--rung", "16,1,16,512"], "at least 2 rungs"),
                        (["no_such_model", "--rung", "16,1,16,512", "--rung", "24,1,16,1024"], "neither a preset"),
                        (["--top", "2", "transformer"], "--top picks a study")):
        result = CliRunner().invoke(app, ["scale", *args, "--inline"])
        assert result.exit_code == 1, result.output
        assert words in result.output
        assert "Traceback" not in result.output
    with pytest.raises(MirasError, match="cannot be built on rung"):
        from miras_search.scale.points import on_rung
        from miras_search.study.scale_spec import Rung

        on_rung(preset("moneta"), Rung(d_model=48, n_layers=1, n_heads=1, head_dim=48, tokens=10).model_copy(
            update={"n_heads": 5}))


def test_report_shows_the_scaling_section(tmp_path: Path) -> None:
    from miras_search.report.build import build_report

    job = _job(tmp_path, ["gated_deltanet"], rungs=TINY[:2])
    ScaleRunner(job.study, job.spec, job.points, job.config, job.objectives, lambda: CountingPool()).run()
    written = build_report(job.study, tmp_path / "report")
    page = written.html.read_text()
    assert "Scaling" in page and "gated_deltanet" in page and "(C /" in page
    assert any(p.name == "scale.png" for p in written.images)


def test_a_study_files_best_points_are_scaled_inside_that_study(tmp_path: Path) -> None:
    from _fake_study import fake_study

    path = fake_study(tmp_path, values=[3.5, 3.1, 3.3])
    data = yaml.safe_load(path.read_text())
    data["scale"] = {"top": 2, "metric": "val_bpb", "rungs": TINY[:2], "batch_size": 4}
    path.write_text(yaml.safe_dump(data))
    job = prepare(path, [], {})
    assert [p.trial for p in job.points] == [1, 2]  # `miras best`'s top 2
    assert job.points[0].base_tokens is None and job.config.eval_batches == 1
    ScaleRunner(job.study, job.spec, job.points, job.config, job.objectives, lambda: CountingPool()).run()
    rungs = [t for t in job.study.get_trials() if is_rung_trial(t)]
    assert len(rungs) == 4
    for trial in rungs:  # the same point to the study: its key and its sampled parameters
        base = job.study.trials[1 if trial.user_attrs["point_key"] == "key1" else 2]
        assert trial.params == base.params and trial.user_attrs["point"] == base.user_attrs["point"]
        assert trial.user_attrs["scale"]["trained_point"]["block"]["d_model"] in (16, 24)
    assert [t.number for t in ranked(job.study, fidelity="base")] == [1, 2, 0]
    table = scale_table(job.study, "val_bpb")
    assert {p.label for p in table.points} == {"trial 1", "trial 2"}
    assert all(p.fit is not None and p.fit.form == "pure" for p in table.points)  # 2 rungs


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGKILL"])
def test_ctrl_c_or_a_crash_loses_no_finished_rung(tmp_path: Path, signal_name: str) -> None:
    """A real `miras scale` process stopped after its first rung: the rerun trains the rest only."""
    import os
    import signal
    import subprocess
    import sys

    rungs = [f"{d},1,16,512" for d in (16, 20, 24, 28)]
    args = [sys.executable, "-m", "miras_search", "scale", "gated_deltanet", "--inline", "--batch-size", "4",
            "--name", "stop", *(x for r in rungs for x in ("--rung", r))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    child = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert child.stdout is not None
    for line in child.stdout:  # the first rung is stored before its line is printed
        if "val_loss" in line:
            break
    child.send_signal(getattr(signal, signal_name))
    output = child.communicate(timeout=300)[0]
    if signal_name == "SIGINT":
        assert child.returncode == 130, output
        assert "trains the rest" in output
    else:
        assert child.returncode == -signal.SIGKILL
    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    stored = int(again.stdout.split(" already stored")[0].rsplit(" ", 1)[1])
    trained = int(again.stdout.split(" trained now")[0].rsplit(" ", 1)[1])
    assert stored >= 1 and stored + trained == 4


def test_a_rungs_budget_context_and_time_limit(tmp_path: Path) -> None:
    from miras_search.scale.runner import RungRun

    job = _job(tmp_path, ["gated_deltanet"])
    config = job.config.model_copy(update={"time_limit_s": 10.0})
    runner = ScaleRunner(job.study, job.spec, job.points, config, job.objectives, lambda: CountingPool())
    first, last = (runner.rung_config(RungRun(job.points[0], job.spec.rungs[i], i, 3)) for i in (0, 2))
    assert (first.tokens, first.seq_len, first.seed, first.batch_size) == (512, 16, 3, 4)
    assert first.time_limit_s == pytest.approx(10.0)
    assert last.tokens == 2048 and last.time_limit_s == pytest.approx(10.0 * 16)  # 4x tokens at 2x width


def test_scale_json_writes_null_for_values_that_are_not_finite(tmp_path: Path) -> None:
    import json

    from miras_search.scale.results import PointScaling, ScaleTable

    table = ScaleTable("val_loss", 1e12, [PointScaling("moneta", "k", [], fit_error="no rung finished")])
    table.write_json(tmp_path / "scale.json")
    text = (tmp_path / "scale.json").read_text()
    assert "NaN" not in text
    assert json.loads(text)["points"][0]["at_target"] is None
