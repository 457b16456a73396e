"""`miras trial` and `miras train` refuse, before any bar or work, what every run would fail on:
data that cannot give a batch (the check `validate` and `run` make), a budget that does not cover
one batch (named as the options that give it) and an absurd one."""

from __future__ import annotations

import yaml
from test_study import write_study
from typer.testing import CliRunner

from miras_search.cli import app

runner = CliRunner()
POINT = {"preset": "moneta", "block": {"d_model": 16, "n_heads": 2, "n_layers": 1}}


def _run(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def _point_file(folder):
    path = folder / "small.yaml"
    path.write_text(yaml.safe_dump(POINT))
    return path


def _refused_before_work(code: int, output: str, *words: str) -> None:
    assert code == 1, output
    flat = output.replace("\n", " ")
    for word in words:
        assert word in flat, output
    assert "Traceback" not in output and "step " not in output and "status" not in output, output


def test_trial_checks_a_studys_data_as_validate_does(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bin.txt").write_bytes(bytes(range(256)) * 12)
    study = write_study(tmp_path, trial={"data": [{"task": "files", "paths": ["data/bin.txt"]}], "tokens": 2048,
                                         "batch_size": 2, "seq_len": 32, "eval_batches": 1})
    said = "bin.txt' is not UTF-8 text"
    code, output = _run("validate", str(study))
    assert code == 1 and said in output, output
    code, output = _run("trial", str(_point_file(tmp_path)), "--config", str(study))
    _refused_before_work(code, output, f"--config {study}: its data cannot feed a trial: trial.data.0 (files): ",
                         said, "Fix the file's trial.data")


def test_trial_checks_a_trial_configs_data(tmp_path):
    (tmp_path / "one.txt").write_text("only one document\n")
    config = tmp_path / "trial.yaml"
    config.write_text(yaml.safe_dump({"data": [{"task": "files", "paths": ["one.txt"]}], "tokens": 2048,
                                      "batch_size": 2, "seq_len": 32}))
    code, output = _run("trial", str(_point_file(tmp_path)), "--config", str(config))
    _refused_before_work(code, output, "its data cannot feed a trial: data.0 (files): need at least 2 distinct",
                         "Fix the file's data")
    assert "trial.data" not in output


def test_train_names_the_options_of_a_batch_the_tokens_do_not_cover(tmp_path):
    point = _point_file(tmp_path)
    code, output = _run("train", str(point), "--tokens", "1", "--batch-size", "2", "--seq-len", "32")
    _refused_before_work(code, output, "--tokens: tokens (1) do not cover one batch (--batch-size 2 x --seq-len "
                         "32 = 64); give --tokens 64 or more, or a smaller --batch-size or --seq-len")
    assert "Value error" not in output and "--:" not in output
    code, output = _run("train", str(point), "--tokens", "1")
    _refused_before_work(code, output, "--tokens: tokens (1) do not cover one batch (batch_size 8 (the point's) x "
                         "seq_len 256 (the point's) = 2048)")


def test_trial_refuses_a_budget_that_does_not_fit_the_point(tmp_path):
    config = tmp_path / "trial.yaml"
    config.write_text("tokens: 100\n")
    code, output = _run("trial", str(_point_file(tmp_path)), "--config", str(config))
    _refused_before_work(code, output, "the trial's budget does not fit the point: train: tokens (100) do not "
                         "cover one batch", f"change the budget of --config {config}")


def test_absurd_budgets_are_refused_and_large_ones_kept(tmp_path):
    code, output = _run("train", str(_point_file(tmp_path)), "--tokens", "99999999999999999999")
    assert code == 2 and "--tokens" in output and "10000000000000" in output, output
    huge = tmp_path / "huge.yaml"
    huge.write_text(yaml.safe_dump({**POINT, "train": {"tokens": 10**20}}))
    line = next(n for n, text in enumerate(huge.read_text().splitlines(), 1) if "tokens:" in text)
    for args in (["train", str(huge)], ["trial", str(huge)], ["validate", str(huge)]):
        code, output = _run(*args)
        _refused_before_work(code, output, f"train.tokens (line {line}): Input should be less than or equal "
                             "to 10000000000000 (got 100000000000000000000)")
    config = tmp_path / "trial.yaml"
    config.write_text(f"tokens: {10**14}\n")
    code, output = _run("trial", str(_point_file(tmp_path)), "--config", str(config))
    _refused_before_work(code, output, "tokens (line 1): Input should be less than or equal to 10000000000000")
    from miras_search.cli.training import _check_train_budget
    from miras_search.points import point_from_dict
    from miras_search.schema.train import MAX_TOKENS

    _check_train_budget(point_from_dict(POINT), MAX_TOKENS, 8, 256)  # the largest is taken
    assert point_from_dict({**POINT, "train": {"tokens": MAX_TOKENS}}).train.tokens == MAX_TOKENS


def test_a_file_of_several_points_is_refused_alike_where_one_is_read(tmp_path):
    several = tmp_path / "three.yaml"
    several.write_text("---\n".join(yaml.safe_dump({**POINT, "name": f"p{i}"}) for i in range(3)))
    said = (f"{several}: the file holds 3 documents (separated by '---'), where one is read; give a file of "
            "one document (`miras validate` and `miras kernels` also take a file of several points)")
    for args in (["show", str(several)], ["train", str(several)], ["trial", str(several)],
                 ["scale", str(several)], ["trial", str(_point_file(tmp_path)), "--config", str(several)]):
        code, output = _run(*args)
        assert code == 1 and said in output.replace("\n", " "), (args, output)
        assert len(output.strip().splitlines()) <= 3 and "Traceback" not in output, output
    for args in (["validate", str(several)], ["kernels", str(several)]):
        code, output = _run(*args)
        assert code == 0, (args, output)
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(POINT) + "---\na: [\n")
    code, output = _run("show", str(broken))
    assert code == 1 and "the file holds several documents (separated by '---')" in output, output
