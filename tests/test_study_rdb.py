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


class _ReadOnlyDisk:
    """A SQLite file the machine refuses to write, as on a read-only mount: every new connection
    is query-only (SQLite's own "attempt to write a readonly database"), and the file system of
    the study's folder says it is mounted read-only (``rdb`` asks it why the write was refused).
    A read-only bind mount needs root and a mount namespace; a chmod does not stop root."""

    def __init__(self, monkeypatch, folder):
        import os
        from types import SimpleNamespace

        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        real = os.statvfs
        flag = os.ST_RDONLY

        def statvfs(path):
            found = real(path)
            return SimpleNamespace(f_flag=found.f_flag | flag) if str(path).startswith(str(folder)) else found

        monkeypatch.setattr(rdb.os, "statvfs", statvfs)
        self._event, self._engine = event, Engine
        event.listen(Engine, "connect", self._query_only)

    @staticmethod
    def _query_only(connection, record):
        connection.execute("PRAGMA query_only = ON")

    def close(self):
        self._event.remove(self._engine, "connect", self._query_only)


@pytest.fixture
def read_only_disk(monkeypatch, tmp_path):
    def make():
        disk = _ReadOnlyDisk(monkeypatch, tmp_path)
        made.append(disk)
        return disk

    made: list[_ReadOnlyDisk] = []
    yield make
    for disk in made:
        disk.close()


def _refusal_said(error: OSError, path) -> None:
    import errno

    assert error.errno == errno.EROFS and error.filename == str(path)


def test_a_read_only_sqlite_study_refuses_each_write_as_an_os_error(tmp_path, read_only_disk):
    path = tmp_path / "study.db"
    url = f"sqlite:///{path}"
    study = optuna.create_study(study_name="s", storage=make_storage(url))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    read_only_disk()
    reopened = optuna.load_study(study_name="s", storage=make_storage(url))  # reading still works
    assert len(reopened.trials) == 1
    with pytest.raises(OSError) as caught:  # `miras run` on it again
        optuna.create_study(study_name="s", storage=make_storage(url), load_if_exists=True)
    _refusal_said(caught.value, path)
    with pytest.raises(OSError) as caught:  # `miras confirm` storing its long runs
        reopened.add_trial(optuna.trial.create_trial(params={"x": 0.5}, values=[0.5],
                                                     distributions={"x": optuna.distributions.FloatDistribution(0, 1)}))
    _refusal_said(caught.value, path)
    with pytest.raises(OSError) as caught:
        reopened.set_user_attr("k", 1)
    _refusal_said(caught.value, path)


def test_a_new_sqlite_study_in_a_read_only_folder_is_an_os_error(tmp_path, read_only_disk):
    read_only_disk()
    with pytest.raises(OSError) as caught:
        make_storage(f"sqlite:///{tmp_path / 'new.db'}")
    _refusal_said(caught.value, tmp_path / "new.db")


def test_why_sqlite_refused_a_write_is_asked_of_the_file_system(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "study.db"
    path.write_bytes(b"")
    refused = sqlite3.OperationalError("attempt to write a readonly database")
    assert rdb.write_refusal(path, refused) is None  # writable here: not the machine's doing
    monkeypatch.setattr(rdb.os, "access", lambda where, mode: str(where) != str(path))
    assert rdb.write_refusal(path, refused).args[:1] == (errno.EACCES,)
    assert rdb.write_refusal(path, refused).filename == str(path)
    monkeypatch.setattr(rdb.os, "access", lambda where, mode: str(where) != str(tmp_path))
    folder = rdb.write_refusal(path, sqlite3.OperationalError("unable to open database file"))
    assert folder.errno == errno.EACCES and folder.filename == f"{path}-journal"
    assert rdb.write_refusal(path, RuntimeError("commit failed")) is None
    try:
        raise RuntimeError("commit failed") from sqlite3.OperationalError("database or disk is full")
    except RuntimeError as error:
        assert rdb.write_refusal(path, error).errno == errno.ENOSPC
    assert rdb.write_refusal(path, sqlite3.OperationalError("no such table: studies")) is None


def test_miras_run_on_a_read_only_sqlite_study_is_the_journal_s_one_paragraph(tmp_path, read_only_disk):
    from test_study import write_study
    from typer.testing import CliRunner

    from miras_search.cli import app

    path = tmp_path / "study.db"
    optuna.create_study(study_name="other", storage=make_storage(f"sqlite:///{path}"))  # the tables
    study = write_study(tmp_path, trials=1)
    read_only_disk()
    result = CliRunner().invoke(app, ["run", str(study), "--inline", "--storage", str(path)],
                                env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    assert f"cannot write to {path}: the file system is read-only" in result.output
    assert "Nothing already stored was lost: a SQLite database keeps" in result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, OSError)
