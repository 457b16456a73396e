"""Where a study lives: a journal file on one machine by default, any Optuna RDB URL otherwise.

Why a journal file and not SQLite by default: a study's driver and every Ray worker write to the
same storage at once (the driver asks/tells trials, workers report intermediate values for
pruning). SQLite serialises writers with a database-wide lock, and Optuna's RDB layer turns a
busy database into "database is locked" errors under that load. Optuna's JournalFileBackend
appends each change as one JSON line under a file lock (with fsync), so several processes can
write safely, and a process killed between writes leaves every earlier line intact: after a
``kill -9`` the study replays to its last consistent state (a last line cut short, and any
other damaged line, is set aside when the journal is opened: ``journal_repair``). A stale lock
left by a killed writer expires after a grace period. For several machines use PostgreSQL
(``postgresql+psycopg://user@host:port/db``, the ``postgres`` extra); SQLite URLs still work.
"""

from __future__ import annotations

import logging
from pathlib import Path

from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from miras_search.errors import MirasError
from miras_search.redact import redact_url
from miras_search.study.journal_repair import Repair, set_damage_aside, tail_is_damaged

log = logging.getLogger(__name__)

_URL_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")
"""SQLAlchemy dialects Optuna's RDB storage takes (each may carry a driver: postgresql+psycopg)."""
_RECORD_START = b'{"op_code":'
"""How every line of an Optuna journal starts (JournalStorage writes op_code first)."""


def default_storage(run_dir: str | Path, study_name: str) -> str:
    """``<run_dir>/<name>/study.journal`` as an absolute path (Ray workers have their own cwd)."""
    return str((Path(run_dir) / study_name / "study.journal").resolve())


def is_url(storage: str) -> bool:
    """Whether ``storage`` is a database URL (``scheme://...``, ``sqlite:...``) and not a path."""
    return "://" in storage or storage.startswith("sqlite:")


def _check_scheme(url: str) -> None:
    """MirasError unless the URL's scheme is a database Optuna can store a study in."""
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme in _URL_SCHEMES:
        return
    hint = " (PostgreSQL's scheme is 'postgresql')" if scheme == "postgres" else ""
    raise MirasError(
        f"storage '{redact_url(url)}': unknown database URL scheme '{scheme}'{hint}; use "
        "postgresql+psycopg://user@host:port/db, sqlite:///path.db, mysql://..., or a journal "
        "file path"
    )


_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def normalise(storage: str) -> str:
    """The URL unchanged, or for a path an absolute one (workers elsewhere see the same thing):
    a ``.db`` / ``.sqlite`` file as a SQLite URL, any other as a journal file."""
    if is_url(storage):
        _check_scheme(storage)
        return storage
    path = Path(storage).resolve()
    return f"sqlite:///{path}" if path.suffix in _SQLITE_SUFFIXES else str(path)


def local_file_missing(storage: str) -> bool:
    """Whether ``storage`` (normalised) is a local journal or SQLite file that does not exist
    yet: commands that only read a study must not create it."""
    if storage.startswith("sqlite:///"):
        return not Path(storage.removeprefix("sqlite:///")).exists()
    return not is_url(storage) and not Path(storage).exists()


def make_storage(storage: str) -> BaseStorage:
    """The Optuna storage for a URL or a journal file path (its folder is created)."""
    if is_url(storage):
        _check_scheme(storage)
        try:
            return RDBStorage(storage, engine_kwargs=_engine_kwargs(storage))
        except ImportError as error:
            raise MirasError(
                f"storage '{redact_url(storage)}' needs a database driver that is not installed "
                f"({error}); for PostgreSQL install the 'postgres' extra (psycopg)"
            ) from None
        except Exception as error:  # sqlalchemy's OperationalError and friends
            raise MirasError(f"cannot open storage '{redact_url(storage)}': {error}") from None
    return _journal_storage(Path(storage))


def _journal_storage(path: Path) -> JournalStorage:
    """The journal at ``path`` (created when missing); MirasError, writing nothing, when the path
    is a folder or a file that is not a journal."""
    if path.is_dir():
        raise MirasError(f"storage {path} is a folder; give a journal file path (e.g. "
                         f"{path / 'study.journal'}) or a database URL")
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_is_journal(path)
    lock = JournalFileSymlinkLock(str(path))  # the lock Optuna's writers take by default
    if tail_is_damaged(path):  # Optuna would read past it, then append after it
        _repair(path, lock)
    try:
        return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
    except (ValueError, KeyError, TypeError, AssertionError) as error:  # a damaged line inside
        if _repair(path, lock) is None:
            raise _unreadable(path, error) from None
    try:
        return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
    except (ValueError, KeyError, TypeError, AssertionError) as error:
        raise _unreadable(path, error) from None


def _repair(path: Path, lock: JournalFileSymlinkLock) -> Repair | None:
    try:
        return set_damage_aside(path, lock)
    except OSError as error:
        raise MirasError(
            f"storage {path} has damaged lines that could not be set aside ({error.strerror}: "
            f"{error.filename}); the journal is left as it is: make its folder writable, or "
            "restore it from a copy"
        ) from None


def _unreadable(path: Path, error: Exception) -> MirasError:
    return MirasError(
        f"storage {path} has a damaged record that cannot be replayed ({type(error).__name__}: "
        f"{error}) although every line is a journal record; it is left as it is: restore it from "
        "a copy, or point 'storage' elsewhere"
    )


def _check_is_journal(path: Path) -> None:
    """MirasError when ``path`` holds something other than an Optuna journal (an empty or
    missing file is a new journal)."""
    if not path.is_file():
        return
    with open(path, "rb") as file:
        start = file.read(len(_RECORD_START))
    if start and not (start == _RECORD_START or _RECORD_START.startswith(start)):
        raise MirasError(
            f"storage {path} is not an Optuna journal (its first line is not a journal record); "
            "it is left as it is: point 'storage' at a new file, an existing study's journal, "
            "or a database URL"
        )


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite:"):
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}
