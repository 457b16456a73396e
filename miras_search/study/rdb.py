"""A study in a database (Optuna's RDBStorage): the driver a URL lacks, and a SQLite file that
another process holds locked, each told in one paragraph without SQLAlchemy's internals.

SQLite waits for a lock up to its busy timeout (``SQLITE_LOCK_WAIT_S``) and then fails with
"database is locked" and the SQL it was running. A cheap read-only probe (no wait, never
creating the file) says beforehand that the wait is another process's doing.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from optuna.storages import RDBStorage
from optuna.storages._rdb.models import TrialValueModel
from optuna.trial import FrozenTrial

from miras_search.errors import MirasError
from miras_search.redact import redact_text, redact_url
from miras_search.study.readable import StoredNull

log = logging.getLogger(__name__)

SQLITE_LOCK_WAIT_S: float = 60
"""How long opening a SQLite storage waits for another process's lock."""

_DRIVERS = {
    "postgresql": "for PostgreSQL install the 'postgres' extra (pip install 'miras-search[postgres]', "
                  "which brings psycopg) and use postgresql+psycopg://...",
    "mysql": "for MySQL install a MySQL driver: PyMySQL (pip install pymysql, then use "
             "mysql+pymysql://...) or mysqlclient (pip install mysqlclient, for mysql://...)",
    "oracle": "for Oracle install python-oracledb (pip install oracledb) and use oracle+oracledb://...",
    "mssql": "for SQL Server install pyodbc (pip install pyodbc) and use mssql+pyodbc://...",
    "sqlite": "SQLite needs Python's own sqlite3 module: use a Python built with it",
}
_INTERNALS = re.compile(r"\s*(\[SQL: .*?\]|\[parameters: .*?\]|\(Background on this error at: [^)]*\))",
                        re.DOTALL)


class _ValueRow:
    """A stored objective value row as Optuna's trial builder reads it, a NULL finite value
    replaced by 0.0 (then by ``StoredNull`` in the built trial); the database row is not changed."""

    def __init__(self, row: Any) -> None:
        self.objective = row.objective
        self.value = 0.0 if _null(row) else row.value
        self.value_type = row.value_type


class _TrialRows:
    """A trial's database rows for Optuna's trial builder, its value rows read through ``_ValueRow``."""

    def __init__(self, row: Any) -> None:
        self._row = row
        self.values = [_ValueRow(value) for value in row.values]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._row, name)


def _null(row: Any) -> bool:
    return row.value is None and row.value_type == TrialValueModel.TrialValueType.FINITE


class TolerantRDBStorage(RDBStorage):
    """Optuna's RDBStorage, except that a trial whose objective value was set to NULL by hand reads
    as holding a ``StoredNull`` (``study.readable`` shows the trial as unreadable) instead of
    failing an assertion that makes every trial of the study unreadable."""

    def _build_frozen_trial_from_trial_model(self, trial: Any) -> FrozenTrial:
        nulls = [row.objective for row in trial.values if _null(row)]
        if not nulls:
            return super()._build_frozen_trial_from_trial_model(trial)
        built = super()._build_frozen_trial_from_trial_model(_TrialRows(trial))
        values = list(built.values or [])
        for objective in nulls:
            values[objective] = StoredNull()
        built._values = values  # a trial built here, for reading: no setter for values
        return built


_WRITES = ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
           "create_new_trial", "set_trial_param", "set_trial_state_values",
           "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
           "record_heartbeat", "_create_new_trial", "_set_trial_param")
"""The storage's writes (the last two: what Optuna's cache in front of it calls): a SQLite file
the machine refuses to write fails each of them."""


def _words_refusals(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method``, raising the OSError a refused write of a SQLite file amounts to (a read-only
    file system, a file or folder the user may not write, a full disk) instead of Optuna's
    StorageInternalError around SQLAlchemy's around sqlite3's: the command line words it as it
    does a journal's, in one paragraph."""

    @functools.wraps(method)
    def write(self: RDBStorage, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except OSError:  # worded already (a write calling another)
            raise
        except Exception as error:
            path = sqlite_file(getattr(self, "url", ""))
            refusal = None if path is None else write_refusal(path, error)
            if refusal is None:
                raise
            raise refusal from error

    return write


for _name in _WRITES:
    setattr(TolerantRDBStorage, _name, _words_refusals(getattr(RDBStorage, _name)))


_REFUSED = ("readonly database", "unable to open database file", "access permission denied")
_FULL = "database or disk is full"


def write_refusal(path: Path, error: BaseException) -> OSError | None:
    """The OSError that SQLite's refusal to write the database at ``path`` amounts to: ENOSPC for
    a full disk, EROFS on a read-only file system, EACCES for a file this user may not write, or
    a folder (then naming FILE-journal, the rollback journal SQLite could not make beside it).
    None for any other error, or when the refusal cannot be traced to one of these."""
    said = _sqlite_words(error)
    if said is None:
        return None
    if _FULL in said:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    if not any(words in said for words in _REFUSED) or not path.parent.is_dir():
        return None
    try:
        if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
            return OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
    except OSError:
        return None
    if path.exists() and not os.access(path, os.W_OK):
        return OSError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    if not os.access(path.parent, os.W_OK | os.X_OK):  # SQLite's journal beside it cannot be made
        return OSError(errno.EACCES, os.strerror(errno.EACCES), f"{path}-journal")
    return None


def _sqlite_words(error: BaseException) -> str | None:
    """The lower-cased message of the sqlite3 error behind ``error`` (Optuna's and SQLAlchemy's
    errors wrap it), or None when there is none."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlite3.Error):
            return str(current).lower()
        orig = getattr(current, "orig", None)
        if isinstance(orig, sqlite3.Error):
            return str(orig).lower()
        current = current.__cause__ or current.__context__
    return None


def open_rdb(url: str) -> RDBStorage:
    """Optuna's RDBStorage for ``url``; MirasError (one paragraph, no password) when it cannot."""
    path = sqlite_file(url)
    if path is not None and _locked(path):
        log.warning("storage %s: another process holds a lock on %s; waiting up to %g s for it",
                    redact_url(url), path, SQLITE_LOCK_WAIT_S)
    damage = _sqlite_damage(path) if path is not None else None
    if damage is not None:
        raise MirasError(
            f"cannot open storage '{redact_url(url)}': {damage}; the file {path} is left as it "
            "is: restore it from a copy (or try `sqlite3 FILE .recover`), or point 'storage' "
            "elsewhere"
        )
    try:
        return TolerantRDBStorage(url, engine_kwargs=_engine_kwargs(url))
    except ImportError as error:
        scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
        raise MirasError(
            f"storage '{redact_url(url)}' needs a database driver that is not installed "
            f"({redact_text(str(error))}); {_DRIVERS.get(scheme, 'install the driver its URL names')}"
        ) from None
    except Exception as error:  # sqlalchemy's OperationalError and friends
        if path is not None and "database is locked" in str(error):
            raise _still_locked(url, path) from None
        refusal = None if path is None else write_refusal(path, error)
        if refusal is not None:  # worded by the command line, as a journal's
            raise refusal from error
        raise MirasError(f"cannot open storage '{redact_url(url)}': {_plain(error)}") from None


def _still_locked(url: str, path: Path) -> MirasError:
    return MirasError(
        f"cannot open storage '{redact_url(url)}': another process holds a write lock on the "
        f"SQLite file {path} and kept it for {SQLITE_LOCK_WAIT_S:g} s; nothing was changed. Find "
        f"it with `fuser -v {path}` or `lsof {path}` (often another miras run or resume, or a "
        "database browser with a transaction open), let it finish or stop it, then run the "
        "command again"
    )


def _plain(error: Exception) -> str:
    """The error's own words: the database's message without SQLAlchemy's SQL and links."""
    text = str(getattr(error, "orig", None) or error)
    return redact_text(" ".join(_INTERNALS.sub("", text).split()))


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for any other database, or SQLite in memory)."""
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    try:
        database = make_url(url).database
    except Exception:  # RDBStorage says what is wrong with the URL
        return None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).resolve()


def _read_only(path: Path) -> sqlite3.Connection | None:
    """A read-only connection to the SQLite file at ``path`` that never waits for a lock nor
    creates the file; None when it is missing or cannot be opened."""
    if not path.is_file():
        return None
    try:
        return sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=0)
    except sqlite3.Error:
        return None


def _locked(path: Path) -> bool:
    """Whether another process holds a lock that keeps readers out of the SQLite file (a
    read-only look that neither waits nor creates the file)."""
    connection = _read_only(path)
    if connection is None:
        return False
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as error:
        return "locked" in str(error)
    except sqlite3.Error:  # not a database, say: RDBStorage says so
        return False
    finally:
        connection.close()
    return False


def _sqlite_damage(path: Path) -> str | None:
    """What SQLite's ``PRAGMA quick_check`` finds wrong with the file at ``path`` (a damaged page
    fails only the query that reads it, deep inside Optuna, as three chained tracebacks), or None
    when it finds nothing, the file is missing or not a database (RDBStorage says so), or another
    process holds it locked (no wait here)."""
    connection = _read_only(path)
    if connection is None:
        return None
    try:
        rows = connection.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.OperationalError:  # locked, say: the open that follows waits for it
        return None
    except sqlite3.DatabaseError as error:  # "database disk image is malformed"
        return None if "not a database" in str(error) else str(error)
    finally:
        connection.close()
    found = " ".join(str(rows[0][0]).split()) if rows else "ok"
    return None if found == "ok" else f"database disk image is malformed ({found})"


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_LOCK_WAIT_S}}
    return {"pool_pre_ping": True}
