"""Bad input to the tool commands (dashboard, eval, train --from, trial --config, report and its
siblings) ends in one clear paragraph, before any work starts: no traceback, no library's pages."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from _fake_study import fake_study
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.cli.training import load_trial_config
from miras_search.errors import MirasError
from miras_search.model import build_model
from miras_search.presets import preset
from miras_search.trial.checkpoint import read_checkpoint, save_checkpoint

runner = CliRunner()
BLOCK = {"d_model": 32, "n_heads": 2, "n_layers": 1, "max_seq_len": 512}


def _run(*args: str):
    """The CLI's exit code and output (stdout and stderr)."""
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def listen(*args):
    """report.dashboard.listen, imported per test (so each test, not the module, shows a gap)."""
    from miras_search.report.dashboard import listen as bind

    return bind(*args)


def lm_eval_problem(*args):
    """hf.evaluation.lm_eval_problem, imported per test (miras_search.hf needs transformers)."""
    pytest.importorskip("transformers")
    from miras_search.hf.evaluation import lm_eval_problem as problem

    return problem(*args)


def _one_paragraph(output: str) -> None:
    assert "Traceback" not in output and "\n\n" not in output.strip(), output


def _checkpoint(folder: Path) -> Path:
    point = preset("moneta", block=BLOCK)
    path = folder / "m.pt"
    save_checkpoint(path, point, build_model(point, "cpu"))
    return path


# --- miras dashboard ------------------------------------------------------------------------

@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_dashboard_port_is_bounded(tmp_path, port):
    code, output = _run("dashboard", str(tmp_path / "s.yaml"), "--port", port)
    assert code == 2 and "--port" in output and "Traceback" not in output


def test_dashboard_port_in_use_is_one_line():
    study = optuna.create_study()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MirasError, match=f"port {port} is in use on 127.0.0.1; give --port another one"):
            listen(study, "127.0.0.1", port)


def test_dashboard_unknown_host_is_one_line():
    with pytest.raises(MirasError, match=r"--host 999\.1\.1\.1: unknown host"):
        listen(optuna.create_study(), "999.1.1.1", 0)


def test_dashboard_listens_on_a_free_port():
    server = listen(optuna.create_study(), "127.0.0.1", 0)
    try:
        assert server.server_port > 0
    finally:
        server.server_close()


def test_dashboard_command_with_the_port_in_use(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = fake_study(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = _run("dashboard", str(study), "--port", str(port))
    assert code == 1 and f"port {port} is in use" in output
    _one_paragraph(output)


# --- a directory or another kind of file as the study --------------------------------------

@pytest.mark.parametrize("command", [["report"], ["export"], ["confirm"], ["dashboard"],
                                     ["compare", "other.yaml"]])
def test_a_directory_as_the_study_file(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir.yaml").mkdir()
    code, output = _run(command[0], "adir.yaml", *command[1:])
    assert code == 1 and "adir.yaml is a directory, not a YAML file" in output, output
    assert "does not exist" not in output


@pytest.mark.parametrize(("kind", "data"), [
    ("point", {"preset": "moneta", "block": {"d_model": 32}}),
    ("space", {"type": "space", "name": "s", "preset": "moneta", "params": {}}),
])
def test_a_point_or_space_file_as_the_study(tmp_path, monkeypatch, kind, data):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(data))
    code, output = _run("report", "f.yaml")
    assert code == 1 and f"f.yaml is a {kind} file, not a study file" in output, output
    assert "unknown key" not in output


# --- miras trial --config -------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "data"), [
    ("point", {"memory": {"kind": "mlp"}, "bias": {"kind": "lp"}}),
    ("space", {"name": "s", "preset": "moneta", "params": {"bias": {"kind": {"choice": ["l2", "lp"]}}}}),
    ("space", {"type": "space", "name": "s"}),
])
def test_trial_config_of_another_kind(tmp_path, kind, data):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    code, output = _run("trial", "moneta", "--config", str(tmp_path / "c.yaml"))
    assert code == 1 and f"c.yaml is a {kind} file; --config takes a trial config" in output, output
    assert "unknown key" not in output


def test_trial_config_of_a_study_without_a_trial_section(tmp_path):
    study = {"type": "study", "name": "s", "space": "space.yaml",
             "objectives": [{"metric": "val_loss", "direction": "minimize"}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    assert load_trial_config(tmp_path / "s.yaml").objective.metric == "val_loss"


# --- checkpoints: train --from and eval -----------------------------------------------------

@pytest.mark.parametrize("content", [b"\x00\x01garbage" * 10, b"memory: {kind: mlp}\n"])
def test_a_file_that_is_no_checkpoint(tmp_path, content):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    for args in (["train", "--from", str(path)], ["eval", str(path), "--tasks", "piqa"]):
        code, output = _run(*args)
        if args[0] == "eval" and "needs lm-evaluation-harness" in output:
            continue
        assert code == 1 and "x.pt is not a miras checkpoint (not a file saved by `miras train --save` " \
            "or a study)" in output, output
        assert "weights_only" not in output and len(output.strip().splitlines()) == 1


def test_a_directory_or_empty_file_as_checkpoint(tmp_path):
    with pytest.raises(MirasError, match="is a directory, not a checkpoint file"):
        read_checkpoint(tmp_path)
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(MirasError, match=r"is not a miras checkpoint .*: the file is empty"):
        read_checkpoint(tmp_path / "e.pt")


def test_a_checkpoint_whose_point_does_not_validate(tmp_path):
    point = preset("moneta", block=BLOCK).model_dump(mode="json")
    point["block"]["d_model"] = -1
    torch.save({"format": 1, "point": point, "state_dict": {}}, tmp_path / "p.pt")
    with pytest.raises(MirasError) as caught:
        read_checkpoint(tmp_path / "p.pt")
    text = str(caught.value)
    assert "the checkpoint's point does not validate: block.d_model: Input should be" in text
    assert "\n" not in text and "pydantic.dev" not in text and "validation error for" not in text


def test_weights_that_do_not_fit_name_keys_and_shapes(tmp_path):
    checkpoint = read_checkpoint(_checkpoint(tmp_path))
    name = next(iter(checkpoint.state_dict))
    checkpoint.state_dict[name] = torch.zeros(1)
    checkpoint.state_dict["extra.weight"] = torch.zeros(2)
    del checkpoint.state_dict[list(checkpoint.state_dict)[1]]
    from miras_search.trial.checkpoint import check_weights

    with pytest.raises(MirasError) as caught:
        check_weights(checkpoint, "c.pt")
    text = str(caught.value)
    assert text.startswith("c.pt: the weights do not fit the point's model (1 missing: ")
    assert "1 unexpected: extra.weight" in text and f"{name} [1] (the model's: [" in text
    assert "\n" not in text


def test_train_from_mismatched_weights_stops_before_the_bar(tmp_path):
    path = _checkpoint(tmp_path)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"] = {}
    torch.save(payload, path)
    code, output = _run("train", "--from", str(path), "--tokens", "128", "--batch-size", "2", "--seq-len", "64")
    assert code == 1 and "the weights do not fit the point's model (" in output, output
    assert "step " not in output


# --- miras train: the budget before the bar -------------------------------------------------

def test_train_budget_too_small_is_refused_before_the_bar():
    code, output = _run("train", "moneta", "--tokens", "10")
    assert code == 1 and "tokens (10) do not cover one batch" in output, output
    assert "--tokens" in output and "step " not in output and "━" not in output
    _one_paragraph(output)


# --- miras eval -----------------------------------------------------------------------------

def test_eval_device_is_checked(tmp_path):
    code, output = _run("eval", str(tmp_path / "m.pt"), "--tasks", "piqa", "--device", "banana")
    assert code == 1 and "--device banana: allowed: auto, cpu, cuda" in output, output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_eval_cuda_without_a_gpu(tmp_path):
    code, output = _run("eval", str(tmp_path / "m.pt"), "--tasks", "piqa", "--device", "cuda")
    assert code == 1 and "--device cuda: no CUDA GPU is visible here; use cpu" in output, output


@pytest.mark.parametrize("tasks", ["", " , ", ","])
def test_eval_refuses_an_empty_task_list(tmp_path, tasks):
    code, output = _run("eval", str(tmp_path / "m.pt"), "--tasks", tasks)
    assert code == 1 and "names no task" in output, output


def test_eval_include_path_must_be_a_folder(tmp_path):
    code, output = _run("eval", str(tmp_path / "m.pt"), "--tasks", "t", "--include-path", str(tmp_path / "none"))
    assert code == 1 and "none: no such folder" in output, output
    (tmp_path / "f.yaml").write_text("task: t\n")
    code, output = _run("eval", str(tmp_path / "m.pt"), "--tasks", "t", "--include-path", str(tmp_path / "f.yaml"))
    assert code == 1 and "f.yaml is a file; give the folder" in output, output


def test_eval_without_transformers_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "miras_search.hf.evaluation", None)  # its import fails
    code, output = _run("eval", str(tmp_path / "m.pt"), "--tasks", "piqa")
    assert code == 1 and "needs lm-evaluation-harness and transformers: pip install 'miras-search[hf]'" in output
    _one_paragraph(output)


def test_a_failed_download_is_one_paragraph():
    try:
        try:
            raise OSError("[Errno -2] Name or service not known\nmore lines")
        except OSError as inner:
            raise ConnectionError("Couldn't reach 'baber/piqa' on the Hub (LocalEntryNotFoundError)") from inner
    except ConnectionError as error:
        text = lm_eval_problem(error, ["piqa", "mine"], {"mine"})
    assert text.startswith("cannot download the data of task(s) piqa from the Hugging Face Hub (offline?)")
    assert text.endswith("tasks of your own run offline with --include-path") and "\n" not in text


def test_other_lm_eval_errors_are_one_line():
    text = lm_eval_problem(ValueError("first line\n\nsecond paragraph"), ["t"], set())
    assert text == "lm-eval failed on task(s) t: ValueError: first line"


def test_task_data_paths_are_read_beside_the_yaml(tmp_path):
    (tmp_path / "d.jsonl").write_text("{}\n")
    config = {"task": "t", "dataset_path": "json",
              "dataset_kwargs": {"data_files": {"test": "d.jsonl", "train": ["*.jsonl", "absent.jsonl"]}}}
    pytest.importorskip("transformers")
    from miras_search.hf.evaluation import resolve_data_paths

    resolved = resolve_data_paths(config, tmp_path)
    files = resolved["dataset_kwargs"]["data_files"]
    assert files["test"] == str(tmp_path / "d.jsonl")
    assert files["train"] == [str(tmp_path / "*.jsonl"), "absent.jsonl"]
    assert resolved["dataset_path"] == "json" and config["dataset_kwargs"]["data_files"]["test"] == "d.jsonl"


@pytest.mark.parametrize(("text", "kind"), [("bias: {kind: l2}\n", "point"),
                                            ("type: space\nname: s\nparams: {}\n", "space")])
def test_a_point_or_space_file_given_as_a_study_says_what_it_is(tmp_path, text, kind):
    from miras_search.errors import ConfigError
    from miras_search.study import load_study_file

    path = tmp_path / "f.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"this is a {kind} file, not a study file"):
        load_study_file(path)
    for command in (["best", str(path)], ["run", str(path), "--inline"], ["status", str(path)]):
        result = CliRunner().invoke(app, command, env={"COLUMNS": "300"})
        assert result.exit_code == 1 and f"is a {kind} file, not a study file" in result.output, command
