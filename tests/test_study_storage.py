"""Opening a study's storage: journals cut short by a killed writer, files that are not journals,
folders and unknown database URLs. Nothing stored is lost, and nothing is written to a file
that is not a journal."""

from __future__ import annotations

import optuna
import pytest

from miras_search.errors import MirasError
from miras_search.study.storage import make_storage, normalise


def _journal_with_trials(path, n: int) -> None:
    study = optuna.create_study(study_name="s", storage=make_storage(str(path)))
    for value in range(n):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=float(value)))


def _values(path) -> list[float]:
    return [t.value for t in optuna.load_study(study_name="s", storage=make_storage(str(path))).trials]


def test_a_record_cut_short_is_set_aside_and_the_study_goes_on(tmp_path):
    """kill -9 mid-append leaves a last line without its end. Optuna reads past it but appends
    the next record onto it, which broke every later read; it is now moved aside first."""
    path = tmp_path / "study.journal"
    _journal_with_trials(path, 2)
    torn = b'{"op_code":5,"worker_id":"abc","trial_id":1,"sta'
    with open(path, "ab") as file:
        file.write(torn)
    storage = make_storage(str(path))
    study = optuna.load_study(study_name="s", storage=storage)
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=7.0))
    assert _values(path) == [0.0, 1.0, 7.0]
    assert path.read_bytes().endswith(b"\n")
    (aside,) = tmp_path.glob("study.journal.torn-*")
    assert aside.read_bytes() == torn


@pytest.mark.parametrize("content", [b"precious notes, one line\n", b"notes\nmore notes\n", b'{"a": 1}\n'])
def test_a_file_that_is_not_a_journal_is_refused_and_left_alone(tmp_path, content):
    path = tmp_path / "notes.journal"
    path.write_bytes(content)
    with pytest.raises(MirasError, match=r"is not an Optuna journal .* left as it is"):
        make_storage(str(path))
    assert path.read_bytes() == content


def test_a_damaged_record_inside_the_journal_is_named(tmp_path):
    path = tmp_path / "study.journal"
    _journal_with_trials(path, 2)
    lines = path.read_bytes().splitlines(keepends=True)
    damaged = b"".join([*lines[:2], b'{"op_code": garbage\n', *lines[2:]])
    path.write_bytes(damaged)
    with pytest.raises(MirasError, match="has a damaged record"):
        make_storage(str(path))
    assert path.read_bytes() == damaged


def test_a_folder_is_not_a_journal(tmp_path):
    with pytest.raises(MirasError, match=r"is a folder; give a journal file path \(e\.g\. .*study\.journal\)"):
        make_storage(str(tmp_path))


@pytest.mark.parametrize(("url", "words"), [
    ("postgres://user:secret@db:5432/optuna", "PostgreSQL's scheme is 'postgresql'"),
    ("redis://localhost", "unknown database URL scheme 'redis'"),
])
def test_unknown_url_schemes_are_not_taken_for_paths(tmp_path, monkeypatch, url, words):
    monkeypatch.chdir(tmp_path)
    for open_it in (normalise, make_storage):
        with pytest.raises(MirasError, match=words) as error:
            open_it(url)
        assert "secret" not in str(error.value)
    assert not any(tmp_path.iterdir())  # no folder named after the scheme


def test_sqlite_urls_still_open(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert normalise(url) == url
    optuna.create_study(study_name="s", storage=make_storage(url))
    assert (tmp_path / "study.db").is_file()


def test_reading_commands_create_no_storage(tmp_path):
    """status / best / report / export on a storage file that does not exist say so and create
    nothing (a .db path is SQLite in every command)."""
    from miras_search.report.study_data import storage_from_spec
    from miras_search.study.setup import open_study

    for name in ("missing.journal", "missing.db"):
        with pytest.raises(MirasError, match="does not exist"):
            open_study("tiny", str(tmp_path / name))
        with pytest.raises(MirasError, match="does not exist"):
            storage_from_spec(tmp_path / name)
    assert not any(tmp_path.iterdir())
    assert normalise(str(tmp_path / "x.db")) == f"sqlite:///{tmp_path / 'x.db'}"
