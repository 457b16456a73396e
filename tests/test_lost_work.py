"""Lost work: a trial whose worker died (the machine, not the point) runs once more, and a second
death is reported; bad data (binary text, a corrupt parquet file, empty or too short files) is
found by `miras validate` and before a study's first trial, so no trial budget is spent on it."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState
from test_study import TINY_TRIAL, trials_of, write_study
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.errors import MirasError
from miras_search.study import InlinePool, load_study_file, run_study
from miras_search.study.records import counts_toward_budget

runner = CliRunner()


class _DyingPool(InlinePool):
    """Runs trials inline; the worker 'dies' on the trials whose numbers are listed."""

    def __init__(self, dies_on: set[int]):
        super().__init__(threads=1)
        self.dies_on = dies_on

    def wait(self):
        task = self._queue[0]
        if task.number in self.dies_on:
            self._queue.pop(0)
            return [(task, {"status": "failed", "metrics": {}, "curve": [], "failure": "worker_died",
                            "reason": "the worker process died while running the trial (killed)",
                            "trial_s": 0.0})]
        return super().wait()


def test_an_anchor_whose_worker_died_runs_once_more(tmp_path):
    path = write_study(tmp_path, trials=2, sampler={"kind": "tpe", "anchors": ["gated_deltanet"]})
    summary = run_study(load_study_file(path), lambda: _DyingPool({0}))
    assert summary.finished == 2
    trials = trials_of(path)
    died = trials[0]
    assert died.user_attrs["failure"] == "worker_died" and died.user_attrs["retried"] is True
    assert not counts_toward_budget(died)
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert retry.user_attrs["anchor"] == "gated_deltanet" and retry.state == TrialState.COMPLETE
    # not first: the point may be what took its worker down (out of memory)
    assert retry.number == 2 and trials[1].state == TrialState.COMPLETE and "retry_of" not in trials[1].user_attrs
    assert sum(counts_toward_budget(t) for t in trials) == 2


def test_a_second_death_is_reported_not_retried_again(tmp_path):
    path = write_study(tmp_path, trials=2, sampler={"kind": "tpe", "anchors": ["gated_deltanet"]})
    run_study(load_study_file(path), lambda: _DyingPool({0, 2}))
    trials = trials_of(path)
    assert trials[2].user_attrs["retry_of"] == 0 and trials[2].user_attrs["failure"] == "worker_died"
    assert "retried" not in trials[2].user_attrs and counts_toward_budget(trials[2])
    assert not any(t.user_attrs.get("retry_of") == 2 for t in trials)
    assert len(trials) == 3


def _files_study(tmp_path, name: str, content: bytes, **trial):
    data = tmp_path / name
    data.write_bytes(content)
    return write_study(tmp_path, trial={**TINY_TRIAL, "data": [{"task": "files", "paths": [str(data)]}], **trial})


GOOD_TEXT = "".join(f"Document {i}: the quick brown fox jumps over the lazy dog. " * 40 + "\n\n" for i in range(40))


def _bad_data():
    return [
        ("binary.txt", bytes(range(128, 256)) * 200, "not UTF-8 text"),
        ("empty.txt", b"", "need at least 2 distinct non-empty documents"),
        ("corrupt.parquet", b"PAR1 this is not a parquet file", "ArrowInvalid"),
        ("short.txt", b"one line\n", "need at least 2 distinct non-empty documents"),
    ]


def test_bad_data_is_found_by_validate(tmp_path):
    for name, content, words in _bad_data():
        path = _files_study(tmp_path, name, content)
        result = runner.invoke(app, ["validate", str(path)])
        text = " ".join(result.output.split())
        assert result.exit_code == 1, (name, text)
        assert "trial.data.0 (files)" in text and words in text, (name, text)


def test_bad_data_stops_a_study_before_its_first_trial(tmp_path):
    path = _files_study(tmp_path, "binary.txt", bytes(range(128, 256)) * 200)
    result = runner.invoke(app, ["run", str(path), "--inline"])
    assert result.exit_code == 1 and "not UTF-8 text" in " ".join(result.output.split())
    assert trials_of(path) == []  # no trial budget spent


def test_data_too_short_for_a_batch_is_named(tmp_path):
    path = _files_study(tmp_path, "small.txt", GOOD_TEXT.encode()[:3000], seq_len=512, tokens=4096,
                        batch_size=4)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1 and "trial.data.0 (files)" in result.output


def test_good_data_passes(tmp_path):
    path = _files_study(tmp_path, "good.txt", GOOD_TEXT.encode())
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output


def test_preflight_raises_a_miras_error_for_library_use(tmp_path):
    from miras_search.study.preflight import preflight

    spec = load_study_file(_files_study(tmp_path, "empty.txt", b""))
    with pytest.raises(MirasError, match=r"trial\.data\.0 \(files\)"):
        preflight(spec, spec.load_space())


def test_an_unwritable_home_names_the_data_cache_and_how_to_move_it(tmp_path, monkeypatch):
    """HOME that may not be written (so no ~/.cache): the cache is named, not the study file."""
    import errno
    import pathlib

    home = tmp_path / "rohome"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("MIRAS_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):  # the tests run as root, where mode 555 would not stop it
        if self.is_relative_to(home):
            raise PermissionError(errno.EACCES, "Permission denied", str(home / ".cache"))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    path = write_study(tmp_path, trials=1)
    result = runner.invoke(app, ["run", str(path), "--inline"])
    text = " ".join(result.output.split())
    assert result.exit_code == 1, text
    assert f"the data cache {home / '.cache' / 'miras-search'}" in text and "MIRAS_CACHE_DIR" in text
    assert "fix the study file" not in text and "Traceback" not in text
    assert trials_of(path) == []  # no trial budget spent
