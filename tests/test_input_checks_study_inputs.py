"""A study's inputs checked where every command would refuse them, before any trial: a budget
below one batch, a vocabulary smaller than the data's, a storage URL no command opens, scale
points that are no point; data paths read beside the study file; and the small CLI refusals
(--inline --workers, sample -n, the data cache, example file names, train's memory advice)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from test_study import TINY_SPACE, TINY_TRIAL, write_study
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.errors import ConfigError, MirasError
from miras_search.schema.train import batch_cover_problem
from miras_search.study import load_study_file
from miras_search.study.setup import data_fingerprint
from miras_search.trial import TrialConfig


def _invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "400", **(env or {})})
    assert "Traceback" not in result.output
    return result.exit_code, " ".join(result.output.split())


def _run(path: Path, *extra: str) -> tuple[int, str]:
    return _invoke("run", str(path), "--inline", "--wandb", "off", *extra)


def _line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def _trials(folder: Path) -> int:
    import optuna

    from miras_search.study.storage import make_storage

    journal = folder / "runs" / "tiny" / "study.journal"
    if not journal.exists():
        return 0
    return sum(s.n_trials for s in optuna.get_all_study_summaries(make_storage(str(journal))))


# ---- trial.tokens below one batch -----------------------------------------------------------
def test_the_budget_wording_is_shared():
    assert batch_cover_problem(10, 4, 64) == (
        "tokens (10) do not cover one batch (batch_size 4 x seq_len 64 = 256); give at least 256 "
        "tokens, or a smaller batch_size or seq_len")
    assert batch_cover_problem(256, 4, 64) is None
    assert batch_cover_problem(10, 4, 64, of=" of moneta", seq_len_of=" of trial.data.1 (niah)") == (
        "tokens (10) do not cover one batch of moneta (batch_size 4 x seq_len 64 of trial.data.1 (niah) "
        "= 256); give at least 256 tokens, or a smaller batch_size or seq_len")


def test_every_budget_check_words_it_alike():
    """A point's train section, a trial's data sources and `miras scale`'s rungs say it the same way."""
    from miras_search.data import DataMix
    from miras_search.data.text_sources import TextCorpus
    from miras_search.presets import preset
    from miras_search.scale.points import ScalePoint, batch_problem
    from miras_search.schema.train import Train
    from miras_search.study.scale_spec import Rung

    with pytest.raises(ValidationError) as caught:
        Train(tokens=10, batch_size=4, seq_len=64)
    assert batch_cover_problem(10, 4, 64) in str(caught.value)
    with pytest.raises(MirasError) as refused:
        DataMix([TextCorpus()]).train_steps(10, 4, 64)
    assert str(refused.value) == batch_cover_problem(10, 4, 64, seq_len_of=" of data source '0:text'")
    rung = Rung(d_model=32, n_layers=1, seq_len=64, tokens=10)
    assert batch_problem(ScalePoint("moneta", preset("moneta")), rung, 4) == (
        f"rung 32,1,64,10: {batch_cover_problem(10, 4, 64, of=' of moneta')}")


def test_a_trial_config_refuses_tokens_below_one_batch_of_its_longest_source():
    with pytest.raises(ValidationError, match=r"tokens \(10\) do not cover one batch \(batch_size 4 x seq_len 64 = 256\)"):
        TrialConfig(tokens=10, batch_size=4, seq_len=64)
    niah = {"task": "niah", "seq_len": 512}
    with pytest.raises(ValidationError, match=r"seq_len 512 of trial.data.1 \(niah\) = 1024"):
        TrialConfig(data=[{"task": "text"}, niah], tokens=1000, batch_size=2, seq_len=64)
    assert TrialConfig(tokens=10).tokens == 10  # the batch is the point's: judged per point


def test_validate_run_and_trial_refuse_tokens_below_one_batch_at_their_line(tmp_path):
    path = write_study(tmp_path, trial={**TINY_TRIAL, "tokens": 10})
    line = _line_of(path, "tokens: 10")
    for args in (("validate", str(path)), ("trial", "moneta", "--config", str(path))):
        code, output = _invoke(*args)
        assert code == 1 and f"trial.tokens (line {line}): tokens (10) do not cover one batch " \
            "(batch_size 4 x seq_len 32 = 128)" in output, output
    code, output = _run(path)
    assert code == 1 and "do not cover one batch" in output and _trials(tmp_path) == 0
    assert "pydantic" not in output and "space's rules" not in output


def test_tokens_below_the_batch_every_point_of_the_space_has_are_refused_before_any_trial(tmp_path):
    path = write_study(tmp_path, trial={"data": [{"task": "text"}], "tokens": 10, "eval_batches": 1})
    code, output = _invoke("validate", str(path))
    assert code == 1, output
    assert f"trial.tokens (line {_line_of(path, 'tokens: 10')}): tokens (10) do not cover one batch " \
        "(batch_size 8 x seq_len 256 = 2048)" in output
    assert f"batch_size 8 from {tmp_path / 'space.yaml'}" in output and "of preset gated_deltanet" in output
    assert "which the space's params do not search" in output
    code, output = _run(path)
    assert code == 1 and "do not cover one batch" in output and _trials(tmp_path) == 0


def test_tpe_learns_to_avoid_a_searched_batch_size_that_does_not_fit(tmp_path):
    space = copy.deepcopy(TINY_SPACE)
    space["params"]["train"] = {"batch_size": {"choice": [4, 8]}}  # searched: judged per point
    path = write_study(tmp_path, space, trial={"data": [{"task": "text"}], "tokens": 130, "seq_len": 32})
    assert _invoke("validate", str(path))[0] == 0  # batch_size 4 fits: 8 is refused per draw
    # the refused draws are shown to TPE as failures of the point; before, it kept proposing 8 and
    # the study stopped after 10 trials on 200 refusals in a row
    code, output = _run(path, "--trials", "30")
    assert code == 0, output
    assert "30/30 finished trials" in output, output


def test_points_the_trial_settings_do_not_fit_are_blamed_on_the_settings_without_pydantic(tmp_path):
    space = copy.deepcopy(TINY_SPACE)
    # only batch_size 1 to 4 of 4,096 fits: a random sampler (which does not learn) draws 200
    # misfits in a row long before it finishes (seeded)
    space["params"]["train"] = {"batch_size": {"int": [1, 4096]}}
    space["base"]["train"] = {"tokens": 10_000_000}  # the point's own budget fits every batch_size
    path = write_study(tmp_path, space, trial={"data": [{"task": "text"}], "tokens": 130, "seq_len": 32},
                       sampler={"kind": "random", "seed": 0, "anchors": []})
    assert _invoke("validate", str(path))[0] == 0  # batch_size 1 to 4 fits
    code, output = _run(path, "--trials", "200")
    assert code == 1, output
    assert "sampled points in a row did not fit the study's trial settings" in output
    assert "not the space's rules" in output and "tokens (130) do not cover one batch" in output
    assert "pydantic" not in output and "validation error" not in output


def test_a_searched_batch_size_with_no_value_that_fits_is_refused_at_the_trial_tokens_line(tmp_path):
    space = copy.deepcopy(TINY_SPACE)
    space["params"]["train"] = {"batch_size": {"choice": [4, 8]}}
    path = write_study(tmp_path, space, trial={"data": [{"task": "text"}], "tokens": 100, "seq_len": 32})
    for args in (("validate", str(path)), ("run", str(path), "--inline", "--wandb", "off")):
        code, output = _invoke(*args)
        assert code == 1, output
        assert f"trial.tokens (line {_line_of(path, 'tokens: 100')}): tokens (100) do not cover one batch " \
            "(batch_size 4 x seq_len 32 = 128)" in output, output
        assert f"batch_size takes only {{choice: [4, 8]}} in {tmp_path / 'space.yaml'} line " \
            f"{_line_of(tmp_path / 'space.yaml', 'batch_size:')} (params.train.batch_size)" in output, output
        assert "no point of the space fits); a batch_size of at most 3 would fit" in output, output
    assert _trials(tmp_path) == 0


def test_a_searched_seq_len_range_is_judged_by_its_smallest_value(tmp_path):
    space = copy.deepcopy(TINY_SPACE)
    space["params"]["train"] = {"seq_len": {"int": [64, 256]}, "batch_size": {"choice": [2, 4]}}
    path = write_study(tmp_path, space, trial={"data": [{"task": "text"}], "tokens": 100})
    code, output = _invoke("validate", str(path))
    assert code == 1 and "tokens (100) do not cover one batch (batch_size 2 x seq_len 64 = 128)" in output, output
    assert "seq_len takes only {int: [64, 256]}" in output and "batch_size takes only {choice: [2, 4]}" in output
    assert "a batch_size of at most 1 or a seq_len of at most 50 would fit" in output, output
    space["params"]["train"]["seq_len"] = {"int": [32, 256]}  # seq_len 32 x batch_size 2 fits
    path = write_study(tmp_path, space, trial={"data": [{"task": "text"}], "tokens": 100})
    assert _invoke("validate", str(path))[0] == 0


def test_a_searched_token_budget_is_judged_by_its_largest_value(tmp_path):
    space = copy.deepcopy(TINY_SPACE)
    space["base"]["train"] = {"batch_size": 2, "seq_len": 32}  # the points' own batch fits every budget
    space["params"]["train"] = {"tokens": {"choice": [64, 100]}}
    path = write_study(tmp_path, space, trial={"data": [{"task": "text"}], "batch_size": 4, "seq_len": 32})
    code, output = _invoke("validate", str(path))
    assert code == 1 and f"trial.batch_size (line {_line_of(path, 'batch_size: 4')}): tokens (100) do not " \
        "cover one batch (batch_size 4 x seq_len 32 = 128)" in output, output
    assert "tokens takes only {choice: [64, 100]}" in output, output
    space["params"]["train"]["tokens"] = {"choice": [64, 128]}
    path = write_study(tmp_path, space, trial={"data": [{"task": "text"}], "batch_size": 4, "seq_len": 32})
    assert _invoke("validate", str(path))[0] == 0


# ---- block.vocab_size below the data's ------------------------------------------------------
def _vocab_space(vocab_param: dict | None = None) -> dict:
    space = copy.deepcopy(TINY_SPACE)
    space["base"]["block"]["vocab_size"] = 16
    if vocab_param is not None:
        space["params"]["block"] = {"vocab_size": vocab_param}
    return space


def test_a_base_vocab_size_below_the_datas_is_refused_at_the_spaces_line(tmp_path):
    path = write_study(tmp_path, _vocab_space())
    line = _line_of(tmp_path / "space.yaml", "vocab_size: 16")
    code, output = _invoke("validate", str(path))
    assert code == 1, output
    assert f"space.yaml line {line} (base.block.vocab_size): block.vocab_size (16) is smaller than " \
        "the data's vocabulary (260 ids)" in output
    code, output = _run(path)
    assert code == 1 and "smaller than the data's vocabulary" in output and _trials(tmp_path) == 0


def test_a_searched_vocab_size_is_judged_per_point(tmp_path):
    path = write_study(tmp_path, _vocab_space({"choice": [16, 260]}))
    code, output = _invoke("validate", str(path))
    assert code == 0, output


# ---- storage and scale.points ---------------------------------------------------------------
def test_validate_refuses_a_storage_url_every_command_refuses(tmp_path):
    path = write_study(tmp_path, storage="bogus://x")
    code, output = _invoke("validate", str(path))
    assert code == 1 and f"storage (line {_line_of(path, 'bogus://')}): storage 'bogus://x': unknown " \
        "database URL scheme 'bogus'" in output, output
    status = _invoke("status", str(path))[1]
    assert "unknown database URL scheme 'bogus'" in status


def test_validate_refuses_scale_points_miras_scale_cannot_read(tmp_path):
    rungs = [{"d_model": 32, "n_layers": 1, "seq_len": 32, "tokens": 4096},
             {"d_model": 48, "n_layers": 1, "seq_len": 32, "tokens": 8192}]
    (tmp_path / "broken.yaml").write_text("memory: {kind: nosuch}\n")
    path = write_study(tmp_path, scale={"points": ["moneta", "nosuch", "broken.yaml"], "rungs": rungs})
    code, output = _invoke("validate", str(path))
    assert code == 1, output
    assert f"scale.points.1 (line {_line_of(path, '- nosuch')}): 'nosuch' is neither a preset" in output
    assert "scale.points.2" in output and "the point file does not load" in output
    assert "scale.points.0" not in output


# ---- data paths, relative to the study file -------------------------------------------------
def _relative_study(tmp_path: Path) -> Path:
    folder = tmp_path / "rel" / "sub"
    folder.mkdir(parents=True)
    (folder / "data.txt").write_text(("The quick brown fox jumps over the lazy dog. " * 20 + "\n") * 160)
    return write_study(folder, trial={**TINY_TRIAL, "data": [{"task": "files", "paths": ["data.txt"]}]},
                       run_dir="runs")


def test_data_paths_are_read_beside_the_study_file_from_any_working_directory(tmp_path, monkeypatch):
    path = _relative_study(tmp_path)
    fingerprints = set()
    for cwd in (path.parent, tmp_path / "rel", tmp_path):
        monkeypatch.chdir(cwd)
        shown = Path(*path.relative_to(tmp_path).parts[len(cwd.relative_to(tmp_path).parts):])
        code, output = _invoke("validate", str(shown))
        assert code == 0, (cwd, output)
        study = load_study_file(shown)
        assert study.trial.data[0].paths == ["data.txt"]  # stored and compared as written
        assert study.trial.located().data[0].paths == [str(path.parent / "data.txt")]  # sent to workers
        fingerprints.add(data_fingerprint(study))
    assert len(fingerprints) == 1 and None not in fingerprints  # one study, wherever it is run from


def test_trial_config_reads_data_paths_beside_its_file(tmp_path, monkeypatch):
    path = _relative_study(tmp_path)
    monkeypatch.chdir(tmp_path)
    from miras_search.cli.training import load_trial_config

    config = load_trial_config(Path("rel/sub/study.yaml"))
    assert config.located().data[0].paths == [str(path.parent / "data.txt")]


def test_a_missing_data_file_names_both_places_and_the_working_directory_still_counts(tmp_path, monkeypatch):
    path = _relative_study(tmp_path)
    (path.parent / "data.txt").rename(tmp_path / "rel" / "data.txt")
    monkeypatch.chdir(tmp_path)
    code, output = _invoke("validate", str(path))
    assert code == 1, output
    assert f"data file or folder 'data.txt' does not exist: looked beside the file that names it " \
        f"({path.parent / 'data.txt'}) and in the working directory ({tmp_path / 'data.txt'})" in output
    monkeypatch.chdir(tmp_path / "rel")  # where such paths were read before: still found there
    assert _invoke("validate", str(path))[0] == 0


# ---- small CLI refusals ---------------------------------------------------------------------
def test_run_inline_refuses_workers(tmp_path):
    path = write_study(tmp_path)
    code, output = _run(path, "--workers", "2")
    assert code == 1 and "--workers 2 has no effect with --inline" in output and _trials(tmp_path) == 0


def test_output_files_suggest_a_name_of_their_kind(tmp_path):
    code, output = _invoke("train", "moneta", "--save", str(tmp_path), "--tokens", "4096")
    assert code == 1 and f"e.g. {tmp_path / 'model.pt'}" in output, output
    path = write_study(tmp_path)
    code, output = _invoke("export", str(path), "--csv", str(tmp_path))
    assert "metrics.json" not in output


def test_train_says_what_train_can_change_for_a_point_over_memory():
    code, output = _invoke("train", "moneta", "--seq-len", "8192", "--batch-size", "4096", "--tokens", "100000000")
    assert code == 1 and "give a smaller --seq-len or --batch-size" in output, output
    assert "memory_limit_gb" not in output and "step " not in output


def test_trial_and_train_give_the_data_caches_paragraph(tmp_path):
    blocker = tmp_path / "cache-file"
    blocker.write_text("")
    env = {"MIRAS_CACHE_DIR": str(blocker)}
    for args in (("trial", "moneta", "--config", str(write_study(tmp_path))),
                 ("train", "moneta", "--tokens", "4096", "--batch-size", "4", "--seq-len", "64")):
        code, output = _invoke(*args, env=env)
        assert code == 1 and f"the data cache {blocker} ($MIRAS_CACHE_DIR) cannot be used" in output, output
        assert "FileExistsError" not in output and "step " not in output


def test_sample_streams_its_points_and_bounds_n(tmp_path):
    from miras_search.space import SearchSpace

    space = SearchSpace.from_dict(TINY_SPACE)
    drawn = space.iter_sample(10**12, seed=3)  # lazy: the first points at once
    first = [next(drawn) for _ in range(3)]
    assert first == space.sample(3, seed=3)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    code, output = _invoke("sample", str(tmp_path / "space.yaml"), "-n", "99999999999999999999")
    assert code != 0 and "-n" in output and "100000" in output


def test_a_trial_config_mapping_with_a_small_budget_is_a_config_error():
    from miras_search.trial import run_trial

    with pytest.raises(ConfigError, match=r"tokens \(10\) do not cover one batch"):
        run_trial("moneta", {"tokens": 10, "batch_size": 4, "seq_len": 64})
    assert issubclass(ConfigError, MirasError)
