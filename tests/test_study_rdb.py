"""Opening a study in a database: a SQLite file locked by another process, and a missing
database driver, each told in one paragraph that names the fix (and never a password)."""

from __future__ import annotations

import sqlite3

import optuna
import pytest

from miras_search.errors import MirasError
from miras_search.study import rdb
from miras_search.study.storage import make_storage


def test_a_sqlite_file_locked_by_another_process_is_named_with_its_fix(tmp_path, monkeypatch, caplog):
    path = tmp_path / "study.db"
    url = f"sqlite:///{path}"
    optuna.create_study(study_name="s", storage=make_storage(url))
    monkeypatch.setattr(rdb, "SQLITE_LOCK_WAIT_S", 0.2)
    other = sqlite3.connect(path, isolation_level=None)  # SQLite locks per connection
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(MirasError) as error:
            make_storage(url)
    finally:
        other.execute("ROLLBACK")
        other.close()
    message = str(error.value)
    assert f"another process holds a write lock on the SQLite file {path}" in message
    assert "fuser" in message and "nothing was changed" in message
    assert "[SQL:" not in message and "sqlalche.me" not in message and "\n" not in message
    assert "waiting up to 0.2 s" in caplog.text and str(path) in caplog.text
    assert optuna.load_study(study_name="s", storage=make_storage(url)).study_name == "s"


def test_an_unlocked_sqlite_file_says_nothing_about_waiting(tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="s", storage=make_storage(url))
    make_storage(url)
    assert "waiting" not in caplog.text


@pytest.mark.parametrize(("url", "driver", "wrong"), [
    ("mysql://user:s3cret@127.0.0.1:1/db", "pymysql", "postgres"),
    ("mysql+pymysql://user:s3cret@127.0.0.1:1/db", "mysqlclient", "postgres"),
    ("postgresql+psycopg://user:s3cret@127.0.0.1:1/db", "'postgres' extra", "mysql"),
])
def test_a_missing_driver_is_named_for_its_database(url, driver, wrong):
    pytest.importorskip("sqlalchemy")
    module = {"mysql": "MySQLdb", "mysql+pymysql": "pymysql", "postgresql+psycopg": "psycopg"}[url.split(":")[0]]
    try:
        __import__(module)
        pytest.skip(f"{module} is installed")
    except ImportError:
        pass
    with pytest.raises(MirasError, match="needs a database driver that is not installed") as error:
        make_storage(url)
    message = str(error.value)
    assert driver in message and wrong not in message.split(";", 1)[1]
    assert "s3cret" not in message


def test_a_sqlite_url_with_a_query_string_finds_its_file(tmp_path, monkeypatch):
    """``sqlite:///runs/x.db?timeout=30``: the reading commands look for runs/x.db, not for a
    file whose name ends in the query string, so a finished study stays reachable."""
    from miras_search.study.setup import open_study
    from miras_search.study.storage import local_file_missing

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    url = "sqlite:///runs/sqto.db?timeout=30"
    assert local_file_missing(url)
    optuna.create_study(study_name="sqto", storage=make_storage(url))
    assert (tmp_path / "runs" / "sqto.db").is_file()
    assert not local_file_missing(url)
    assert open_study("sqto", url).study_name == "sqto"
    with pytest.raises(MirasError, match="does not exist"):
        open_study("sqto", "sqlite:///runs/other.db?timeout=30")
    assert not (tmp_path / "runs" / "other.db").exists()


def test_a_damaged_page_of_a_sqlite_study_is_one_paragraph_and_left_alone(tmp_path):
    """Page 2 overwritten with NUL bytes: the study was read through three chained tracebacks
    (sqlite3 -> SQLAlchemy -> Optuna's StorageInternalError); now opening it says what is wrong."""
    from miras_search.study.setup import open_study

    path = tmp_path / "study.db"
    url = f"sqlite:///{path}"
    study = optuna.create_study(study_name="s", storage=make_storage(url))
    for value in range(5):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=float(value)))
    assert path.stat().st_size > 8192
    with open(path, "r+b") as file:
        file.seek(4096)
        file.write(b"\0" * 4096)
    damaged = path.read_bytes()
    for open_it in (lambda: make_storage(url), lambda: open_study("s", url)):
        with pytest.raises(MirasError, match=r"cannot open storage .*database disk image is malformed"
                           r".*left as it is: restore it from a copy"):
            open_it()
    assert path.read_bytes() == damaged
