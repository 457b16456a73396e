"""Bad input to `miras scale` refused before any storage is created or any rung trains: the
study name, the metric, the points, --out and rungs too small for one batch; and exit 1 when no
rung of any point finished."""

from __future__ import annotations

import pytest
import yaml
from test_study import write_study
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.errors import MirasError
from miras_search.presets import preset

LADDER = ["--rung", "16,1,16,512", "--rung", "24,1,16,1024"]


def _refused(args: list[str]) -> str:
    """The one-paragraph error of a refused `miras scale ARGS --inline`."""
    result = CliRunner().invoke(app, ["scale", *args, "--inline"], env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize(("args", "words"), [
    (["moneta", "--name", "../evil"], "--name '../evil': start with a letter or a digit, then use letters, digits, '_', '-' and '.' only (it names a folder)"),
    (["moneta", "--name", "a/b"], "--name 'a/b': start with a letter or a digit, then use letters"),
    (["moneta", "--metric", "banana", *LADDER], "--metric banana: 'banana' is not a metric a trial of this data measures"),
    (["moneta", "--metric", "val_bpbb", *LADDER], "did you mean 'val_bpb'?"),
    (["monetaa", *LADDER], "'monetaa' is neither a preset"),
    (["moneta", "--rung", "32,2,64,128", "--rung", "48,2,64,256"],
     "--rung 32,2,64,128 (number 1): rung 32,2,64,128: tokens (128) do not cover one batch of moneta (batch_size 8 "
     "x seq_len 64 = 512); give at least 512 tokens, or a smaller batch_size or seq_len"),
    (["moneta", "--batch-size", "64", *LADDER], "--rung 16,1,16,512 (number 1): rung 16,1,16,512: tokens (512) do "
     "not cover one batch of moneta (--batch-size 64 x seq_len 16 = 1024)"),
    (["moneta", "--batch-size", "100000", *LADDER], "- --batch-size: Input should be less than or equal to 4096"),
    (["moneta", "--rung", "7,1,16,512", "--rung", "24,1,16,1024"],
     "- --rung 7,1,16,512 (number 1): d_model: Input should be greater than or equal to 8"),
    (["moneta", "--rung", "16,1,16,512"], "- --rung: a ladder needs at least 2 rungs"),
    (["missing.yaml", *LADDER], "no such point file: 'missing.yaml' (looked in the working directory ("),
    (["sub/missing", *LADDER], "no such point file: 'sub/missing'"),
    (["inside", *LADDER], "'inside' is neither a preset"),
])
def test_bad_input_is_refused_before_any_storage(tmp_path, monkeypatch, args, words):
    (tmp_path / "inside").mkdir()
    monkeypatch.chdir(tmp_path / "inside")
    assert words in _refused(args)
    assert not (tmp_path / "inside" / "runs").exists() and not (tmp_path / "evil").exists()


def test_a_bad_out_creates_no_storage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("a file")
    assert "--out taken is a file" in _refused(["moneta", "--name", "t", "--out", "taken", *LADDER])
    assert not (tmp_path / "runs").exists()


def test_a_refused_run_does_not_block_the_corrected_one(tmp_path, monkeypatch):
    """QA: a refused run created runs/t3/study.journal measuring val_loss, so the corrected
    command with --metric val_bpb was told to 'give --metric as before'."""
    from miras_search.scale.session import plan_scale, prepare

    monkeypatch.chdir(tmp_path)
    _refused(["monetaa", "--name", "t3", *LADDER])
    with pytest.raises(MirasError, match="miras scale monetaa: 'monetaa' is neither a preset"):
        prepare(None, ["monetaa"], {}, name="t3")
    assert not (tmp_path / "runs").exists()
    plan_scale(None, ["moneta"], {"metric": "val_bpb"}, name="t3")  # checks only: nothing is created
    assert not (tmp_path / "runs").exists()
    job = prepare(None, ["moneta"], {"metric": "val_bpb"}, name="t3")
    assert job.spec.metric == "val_bpb" and (tmp_path / "runs" / "t3" / "study.journal").is_file()


def test_no_finished_rung_exits_1_in_one_paragraph(tmp_path, monkeypatch):
    """Every rung fails (here: a vocabulary smaller than the data's, refused before training):
    exit 1 with the first reason, not 0 with 'extrapolated to nan FLOPs'."""
    monkeypatch.chdir(tmp_path)
    point = preset("linear_attention", block={"vocab_size": 16}).model_dump(mode="json")
    (tmp_path / "small.yaml").write_text(yaml.safe_dump({"type": "point", **point}))
    output = _refused(["small.yaml", "--name", "nv", "--batch-size", "4", *LADDER])
    assert "error: no rung of any point finished (2 failed; the first: small on d16-L1-H1-T16-N512: build:" in output
    assert "nan FLOPs" not in output and not (tmp_path / "runs" / "nv" / "scale" / "scale.json").exists()


def test_validate_checks_a_study_files_rungs_against_its_batch(tmp_path):
    scale = {"points": ["transformer"], "rungs": [{"d_model": 32, "n_layers": 1, "seq_len": 32, "tokens": 64},
                                                  {"d_model": 48, "n_layers": 1, "seq_len": 32, "tokens": 4096}]}
    path = write_study(tmp_path, scale=scale)  # trial.batch_size 4: a batch is 128 tokens
    result = CliRunner().invoke(app, ["validate", str(path)], env={"COLUMNS": "400"})
    output = " ".join(result.output.split())
    assert result.exit_code == 1, output
    assert "scale.rungs.0.tokens (line" in output and "tokens (64) do not cover one batch (batch_size 4 x seq_len 32 = 128)" in output
    assert "scale.rungs.1" not in output


def test_a_study_files_scale_refuses_an_unknown_point_before_opening_its_storage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_study(tmp_path, scale={"points": ["transformerr"]})
    assert "'transformerr' is neither a preset" in _refused([str(path), *LADDER])
    assert not (tmp_path / "runs").exists()


def test_the_stand_alone_study_is_named_as_a_study_file_is(tmp_path):
    from miras_search.study.spec import name_problem

    assert name_problem("scale-1.v2") is None
    for bad in ("../evil", ".hidden", "a b", "x" * 121, "a\n"):
        assert name_problem(bad) is not None


@pytest.mark.parametrize(("given", "expected"), [
    ([], (3, "10.0.0.9:6379", True)),                                        # the study file's
    (["--workers", "2", "--address", "10.0.0.1:6379"], (2, "10.0.0.1:6379", True)),  # the options win
])
def test_scale_takes_the_study_file_s_ray_settings_as_run_does(tmp_path, monkeypatch, given, expected):
    """`miras scale STUDY` joins the cluster, and runs as many workers, as the study file's
    `parallel` section says (as `miras run` does), unless --workers / --address say otherwise."""
    import miras_search.parallel as parallel

    seen = {}

    def fake_pool(workers, address=None, gpus_per_trial=None, storage=None, shared_storage=False, **_):
        seen.update(workers=workers, address=address, shared=shared_storage, gpus=gpus_per_trial)
        raise MirasError("no cluster in this test")

    monkeypatch.setattr(parallel, "RayPool", fake_pool)
    path = write_study(tmp_path, parallel={"workers": 3, "address": "10.0.0.9:6379", "shared_storage": True})
    result = CliRunner().invoke(app, ["scale", str(path), "moneta", *LADDER, *given])
    assert result.exit_code == 1 and "no cluster in this test" in result.output, result.output
    assert (seen["workers"], seen["address"], seen["shared"]) == expected
    assert seen["gpus"] is None  # a rung outgrows the study's trials: one whole GPU, as before


def test_scale_without_a_study_file_runs_one_worker_on_a_local_ray(tmp_path, monkeypatch):
    import miras_search.parallel as parallel

    seen = {}

    def fake_pool(workers, address=None, gpus_per_trial=None, storage=None, shared_storage=False, **_):
        seen.update(workers=workers, address=address)
        raise MirasError("no cluster in this test")

    monkeypatch.setattr(parallel, "RayPool", fake_pool)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["scale", "moneta", *LADDER])
    assert result.exit_code == 1, result.output
    assert seen == {"workers": 1, "address": None}
