"""What a careless user or a failing machine feeds the toolkit gets a one-paragraph error naming
the field or the file, never a raw traceback: non-finite numbers, study names that are not
folder names, a read-only run directory, a full disk."""

from __future__ import annotations

import errno
import pathlib

import pytest
import yaml
from optuna.storages.journal import JournalFileBackend
from test_study import TINY_TRIAL, write_study
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.errors import ConfigError
from miras_search.points import point_from_dict
from miras_search.study import load_study_file

runner = CliRunner()


@pytest.mark.parametrize(("fields", "where"), [
    ({"limits": [{"metric": "val_bpb", "max": float("nan")}]}, "limits.0.max"),
    ({"limits": [{"metric": "params", "min": float("-inf")}]}, "limits.0.min"),
    ({"timeout_s": float("inf")}, "timeout_s"),
    ({"trial": {**TINY_TRIAL, "data": [{"task": "text", "weight": float("inf")}]}}, "trial.data.0"),
    ({"trial": {**TINY_TRIAL, "time_limit_s": float("nan")}}, "trial.time_limit_s"),
    ({"parallel": {"gpus_per_trial": float("inf")}}, "parallel.gpus_per_trial"),
])
def test_non_finite_numbers_in_a_study_are_refused_at_validation(tmp_path, fields, where):
    path = write_study(tmp_path, **fields)
    with pytest.raises(ConfigError) as caught:
        load_study_file(path)
    text = str(caught.value)
    assert where in text and "finite number" in text, text
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("text", [
    "bias: {kind: lp, sharpness: 1e400}",
    "bias: {kind: huber, variant: switch, sharpness: .inf}",
    "bias: {kind: huber, delta: {mode: constant, value: .nan}}",
    "train: {lr: .inf}",
    "retention: {kind: l2, alpha: {mode: constant, value: -.inf}}",
])
def test_non_finite_numbers_in_a_point_are_refused(text):
    with pytest.raises(ConfigError, match="finite number"):
        point_from_dict({"preset": "moneta", **yaml.safe_load(text)})


@pytest.mark.parametrize(("text", "words"), [
    ("bias: {kind: huber, delta: {mode: constant, value: 1.0e+308}}", "delta.value must lie in (0.0, 10000.0]"),
    ("bias: {kind: lp, sharpness: 1.0e+300}", "less than or equal to 10000"),
])
def test_absurd_finite_thresholds_are_refused(text, words):
    with pytest.raises(ConfigError) as caught:
        point_from_dict({"preset": "yaad", **yaml.safe_load(text)})
    assert words in str(caught.value)


@pytest.mark.parametrize("name", ["tiny\n", "tiny\r", "ti\tny", "ti\x07ny", "\ntiny", "tiny\x00", "..", "a/b"])
def test_study_names_that_are_not_plain_folder_names_are_refused(tmp_path, name):
    path = write_study(tmp_path, name=name)
    with pytest.raises(ConfigError, match="name"):
        load_study_file(path)
    result = runner.invoke(app, ["run", str(path), "--inline"])
    assert result.exit_code == 1 and "name" in result.output
    assert not (tmp_path / "runs").exists()  # no folder made


def test_a_read_only_run_directory_gives_one_paragraph(tmp_path, monkeypatch):
    """Simulated (the suite may run as root, for whom a chmod'ed folder is still writable)."""
    read_only = tmp_path / "ro"
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.is_relative_to(read_only):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    path = write_study(tmp_path, run_dir=str(read_only))
    result = runner.invoke(app, ["run", str(path), "--inline"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "read-only" in result.output
    assert str(read_only / "tiny") in result.output and "writable folder" in result.output


def test_a_full_disk_mid_study_gives_one_paragraph_and_keeps_what_was_stored(tmp_path, monkeypatch):
    path = write_study(tmp_path, trials=1)
    assert runner.invoke(app, ["run", str(path), "--inline"]).exit_code == 0
    real_append = JournalFileBackend.append_logs
    calls = []

    def append_logs(self, logs):
        calls.append(1)
        if len(calls) > 3:  # the disk fills up a few records into the next run
            with open(self._file_path, "ab") as file:
                file.write(b'{"op_code": 8, "worker_id": "w", "tri')  # half a record got out
            raise OSError(errno.ENOSPC, "No space left on device", self._file_path)
        return real_append(self, logs)

    monkeypatch.setattr(JournalFileBackend, "append_logs", append_logs)
    result = runner.invoke(app, ["resume", str(path), "--inline", "--trials", "3"])
    assert result.exit_code == 1, result.output
    assert "no space is left on the device" in result.output and "Traceback" not in result.output
    assert "Nothing already stored was lost" in result.output
    monkeypatch.setattr(JournalFileBackend, "append_logs", real_append)  # space freed
    resumed = runner.invoke(app, ["resume", str(path), "--inline", "--trials", "3"])
    assert resumed.exit_code == 0, resumed.output
    assert "3/3 finished" in runner.invoke(app, ["status", str(path)]).output


def test_a_python_tag_is_refused_as_a_tag_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "p.yaml"
    path.write_text(f'bias: !!python/object/apply:os.system ["touch {marker}"]\n')
    result = runner.invoke(app, ["validate", str(path)], env={"COLUMNS": "300"})
    assert result.exit_code == 1 and not marker.exists()
    assert "the tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed" in result.output
    assert "syntax error" not in result.output


def test_a_data_problem_reads_without_an_exception_class(tmp_path):
    from test_lost_work import _files_study

    study = _files_study(tmp_path, "missing.txt", b"x")
    (tmp_path / "missing.txt").unlink()
    result = runner.invoke(app, ["validate", str(study)], env={"COLUMNS": "300"})
    assert result.exit_code == 1 and "trial.data.0 (files)" in result.output
    assert "MirasError" not in result.output
