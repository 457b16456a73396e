"""A study in a database (Optuna's RDBStorage): the driver a URL lacks, and a SQLite file that
another process holds locked, each told in one paragraph without SQLAlchemy's internals.

SQLite waits for a lock up to its busy timeout (``SQLITE_LOCK_WAIT_S``) and then fails with
"database is locked" and the SQL it was running. A cheap read-only probe (no wait, never
creating the file) says beforehand that the wait is another process's doing.
"""

from __future__ import annotations

import logging
import re
import sqlite3
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
