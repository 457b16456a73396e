"""What train / trial / eval write never replaces what it should not: a device, a pipe or a file of
another kind is refused before any work, by name; an earlier output of the same kind is
overwritten. And a checkpoint that cannot be used (truncated, a newer format, NaN weights) says so."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.errors import MirasError
from miras_search.model import build_model
from miras_search.presets import preset
from miras_search.trial.checkpoint import is_checkpoint, read_checkpoint, save_checkpoint

runner = CliRunner()
POINT = {"preset": "moneta", "block": {"d_model": 16, "n_heads": 2, "n_layers": 1}}
BUDGET = ["--tokens", "64", "--batch-size", "2", "--seq-len", "32"]


def _run(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def _point_file(folder: Path) -> Path:
    path = folder / "small.yaml"
    path.write_text(yaml.safe_dump(POINT))
    return path


def _checkpoint(folder: Path, name: str = "m.pt") -> Path:
    point = preset("moneta", block=POINT["block"])
    path = folder / name
    save_checkpoint(path, point, build_model(point, "cpu"))
    return path


def _refused_before_work(code: int, output: str, *words: str) -> None:
    assert code == 1, output
    for word in words:
        assert word in output, output
    assert "Traceback" not in output and "step " not in output and "\n\n" not in output.strip(), output


# --- train --save / trial --out / eval --out --------------------------------------------------
def test_save_refuses_a_file_of_another_kind_and_keeps_it(tmp_path):
    point = _point_file(tmp_path)
    victim = tmp_path / "victim.yaml"
    victim.write_text("a: 1\n")
    code, output = _run("train", str(point), *BUDGET, "--save", str(victim))
    _refused_before_work(code, output, f"--save {victim}: the file exists and is not a miras checkpoint, "
                         "so it is not overwritten; give another path, or remove the file first")
    assert victim.read_text() == "a: 1\n"
    code, output = _run("train", str(point), *BUDGET, "--save", str(point))  # the point file itself
    _refused_before_work(code, output, "is not a miras checkpoint")
    assert yaml.safe_load(point.read_text()) == POINT


@pytest.mark.parametrize("option", ["--save", "--out"])
def test_a_pipe_is_refused_and_stays_a_pipe(tmp_path, option):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    point = _point_file(tmp_path)
    args = ["train", str(point), *BUDGET] if option == "--save" else ["trial", str(point)]
    code, output = _run(*args, option, str(fifo))
    _refused_before_work(code, output, f"{option} {fifo} exists and is not a regular file (a device, pipe "
                         "or socket), so it is not replaced")
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_eval_out_is_checked_the_same_way(tmp_path):
    checkpoint = _checkpoint(tmp_path)
    victim = tmp_path / "notes.txt"
    victim.write_text("my notes\n")
    code, output = _run("eval", str(checkpoint), "--tasks", "piqa", "--out", str(victim))
    _refused_before_work(code, output, f"--out {victim}: the file exists and is not lm-eval results")
    assert victim.read_text() == "my notes\n"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, output = _run("eval", str(checkpoint), "--tasks", "piqa", "--out", str(fifo))
    _refused_before_work(code, output, "is not a regular file")


def test_trial_out_refuses_a_yaml_and_may_overwrite_its_own_metrics(tmp_path):
    from miras_search.cli.checks import output_file
    from miras_search.cli.training import METRICS_OUTPUT
    from miras_search.trial import TrialResult

    victim = tmp_path / "study.yaml"
    victim.write_text("type: study\n")
    code, output = _run("trial", str(_point_file(tmp_path)), "--out", str(victim))
    _refused_before_work(code, output, f"--out {victim}: the file exists and is not a trial's metrics")
    assert victim.read_text() == "type: study\n"
    earlier = tmp_path / "metrics.json"
    TrialResult("complete", {"val_loss": 1.0}).write_json(earlier)
    assert output_file("--out", earlier, replaces=METRICS_OUTPUT) == earlier
    empty = tmp_path / "empty.json"
    empty.write_text("")  # nothing to lose: `touch` / mktemp
    assert output_file("--out", empty, replaces=METRICS_OUTPUT) == empty
    (tmp_path / "list.json").write_text(json.dumps([1, 2]))
    with pytest.raises(MirasError, match="is not a trial's metrics"):
        output_file("--out", tmp_path / "list.json", replaces=METRICS_OUTPUT)


def test_save_overwrites_an_earlier_checkpoint(tmp_path):
    point = _point_file(tmp_path)
    earlier = _checkpoint(tmp_path)
    before = earlier.stat().st_mtime_ns
    code, output = _run("train", str(point), *BUDGET, "--save", str(earlier))
    assert code == 0, output
    assert f"wrote {earlier}" in output.replace("\n", "") and earlier.stat().st_mtime_ns != before
    assert read_checkpoint(earlier).metrics  # the new one, with its metrics


@pytest.mark.parametrize("args", [
    ["train", "small.yaml", *BUDGET, "--save", "afile/x.pt"],
    ["trial", "small.yaml", "--out", "afile/m.json"],
    ["eval", "m.pt", "--tasks", "piqa", "--out", "afile/x.json"],
])
def test_a_file_where_the_parent_folder_should_be(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    _point_file(tmp_path)
    _checkpoint(tmp_path)
    (tmp_path / "afile").write_text("")
    code, output = _run(*args)
    target = args[-1]
    _refused_before_work(code, output, f"{args[-2]} {target}: afile is a file, so no folder can be made "
                         "under it")
    assert f"{target} is a file" not in output


def test_save_checkpoint_never_replaces_a_device_or_pipe(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    point = preset("moneta", block=POINT["block"])
    with pytest.raises(MirasError, match="is not a regular file"):
        save_checkpoint(fifo, point, build_model(point, "cpu"))
    assert stat.S_ISFIFO(fifo.stat().st_mode) and [p.name for p in tmp_path.iterdir()] == ["fifo"]
    with pytest.raises(MirasError, match="is a folder"):
        save_checkpoint(tmp_path, point, build_model(point, "cpu"))


def test_is_checkpoint(tmp_path):
    assert is_checkpoint(_checkpoint(tmp_path))
    torch.save({"format": 99, "state_dict": {}}, tmp_path / "newer.pt")
    assert is_checkpoint(tmp_path / "newer.pt")  # a miras checkpoint still, of a newer version
    (tmp_path / "x.yaml").write_text("a: 1\n")
    torch.save([1, 2], tmp_path / "list.pt")
    assert not any(is_checkpoint(tmp_path / name) for name in ("x.yaml", "list.pt", "missing.pt", "."))


# --- checkpoints that cannot be used ----------------------------------------------------------
def test_a_truncated_checkpoint_says_so(tmp_path):
    whole = _checkpoint(tmp_path).read_bytes()
    for cut in (30, len(whole) // 2, len(whole) - 10):
        (tmp_path / "cut.pt").write_bytes(whole[:cut])
        with pytest.raises(MirasError) as caught:
            read_checkpoint(tmp_path / "cut.pt")
        assert "cut.pt is truncated or damaged: it begins as a checkpoint" in str(caught.value)
        assert "Invalid argument" not in str(caught.value)


def test_a_newer_format_names_the_versions(tmp_path):
    payload = torch.load(_checkpoint(tmp_path), weights_only=True)
    torch.save({**payload, "format": 99}, tmp_path / "new.pt")
    code, output = _run("train", "--from", str(tmp_path / "new.pt"))
    assert code == 1 and "new.pt was written by a newer version of miras-search (checkpoint format 99); " \
        "this version (0.1.0) reads format 1 only" in output, output
    torch.save({**payload, "format": "one"}, tmp_path / "odd.pt")
    with pytest.raises(MirasError, match=r"is not a miras checkpoint .*its format is 'one'"):
        read_checkpoint(tmp_path / "odd.pt")


def test_non_finite_weights_are_named(tmp_path):
    payload = torch.load(_checkpoint(tmp_path), weights_only=True)
    names = list(payload["state_dict"])
    for index, name in enumerate(names[:5]):
        bad = payload["state_dict"][name].clone()  # clone: the embedding and the output share one
        bad[..., 0] = float("nan") if index % 2 else float("inf")
        payload["state_dict"][name] = bad
    torch.save(payload, tmp_path / "nan.pt")
    code, output = _run("train", "--from", str(tmp_path / "nan.pt"), *BUDGET)
    assert code == 1 and f"nan.pt: 5 of the checkpoint's {len(names)} tensors hold NaN or infinite " \
        f"values ({names[0]}, {names[1]}, {names[2]} (+2 more))" in output.replace("\n", ""), output
    assert "lr" not in output and "step " not in output


# --- export --csv ----------------------------------------------------------------------------
def test_export_csv_refuses_a_file_of_another_kind_and_overwrites_an_earlier_export(tmp_path):
    from _fake_study import fake_study

    study = fake_study(tmp_path)
    victim = tmp_path / "victim.yaml"
    victim.write_text("a: 1\n")
    code, output = _run("export", str(study), "--csv", str(victim))
    _refused_before_work(code, output, f"--csv {victim}: the file exists and is not a trials CSV of "
                         "`miras export`, so it is not overwritten")
    assert victim.read_text() == "a: 1\n"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, output = _run("export", str(study), "--csv", str(fifo))
    _refused_before_work(code, output, "exists and is not a regular file")
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    table = tmp_path / "trials.csv"
    for _ in range(2):  # the second export overwrites the first
        code, output = _run("export", str(study), "--csv", str(table))
        assert code == 0, output
    assert table.read_text().startswith("number,")
