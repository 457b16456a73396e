"""Where a study lives: a journal file on one machine by default, any Optuna RDB URL otherwise.

Why a journal file and not SQLite by default: a study's driver and every Ray worker write to the
same storage at once (the driver asks/tells trials, workers report intermediate values for
pruning). SQLite serialises writers with a database-wide lock, and Optuna's RDB layer turns a
busy database into "database is locked" errors under that load. Optuna's JournalFileBackend
appends each change as one JSON line under a file lock (with fsync), so several processes can
write safely, and a process killed between writes leaves every earlier line intact: after a
``kill -9`` the study replays to its last consistent state. A stale lock left by a killed
writer expires after a grace period. For several machines use PostgreSQL
(``postgresql+psycopg://user@host:port/db``, the ``postgres`` extra); SQLite URLs still work.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from miras_search.errors import MirasError

_URL_SCHEMES = ("sqlite:", "postgresql", "mysql", "oracle", "mssql")


def default_storage(run_dir: str | Path, study_name: str) -> str:
    """``<run_dir>/<name>/study.journal`` as an absolute path (Ray workers have their own cwd)."""
    return str((Path(run_dir) / study_name / "study.journal").resolve())


def is_url(storage: str) -> bool:
    return storage.startswith(_URL_SCHEMES)


def normalise(storage: str) -> str:
    """An absolute journal path, or the URL unchanged (so workers elsewhere see the same thing)."""
    return storage if is_url(storage) else str(Path(storage).resolve())


def make_storage(storage: str) -> BaseStorage:
    """The Optuna storage for a URL or a journal file path (its folder is created)."""
    if is_url(storage):
        try:
            return RDBStorage(storage, engine_kwargs=_engine_kwargs(storage))
        except ImportError as error:
            raise MirasError(
                f"storage '{_redact(storage)}' needs a database driver that is not installed "
                f"({error}); for PostgreSQL install the 'postgres' extra (psycopg)"
            ) from None
        except Exception as error:  # sqlalchemy's OperationalError and friends
            raise MirasError(f"cannot open storage '{_redact(storage)}': {error}") from None
    path = Path(storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite:"):
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}


def _redact(url: str) -> str:
    """The URL without its password."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    auth, host = rest.rsplit("@", 1)
    return f"{scheme}://{auth.split(':', 1)[0]}@{host}"


def study_names(storage: str) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(make_storage(storage))]
