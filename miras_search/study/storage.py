"""Where a study lives: a journal file on one machine by default, any Optuna RDB URL otherwise.

Why a journal file and not SQLite by default: a study's driver and every Ray worker write to the
same storage at once (the driver asks/tells trials, workers report intermediate values for
pruning). SQLite serialises writers with a database-wide lock, and Optuna's RDB layer turns a
busy database into "database is locked" errors under that load. Optuna's JournalFileBackend
appends each change as one JSON line under a file lock (with fsync), so several processes can
write safely, and a process killed between writes leaves every earlier line intact: after a
``kill -9`` the study replays to its last consistent state (a last line cut short, and any
other damaged line, is set aside when the journal is opened or, for damage that appears while
a study runs, when it is read: ``journal_repair``, ``journal_backend``). A stale lock
left by a killed writer expires after a grace period. For several machines use PostgreSQL
(``postgresql+psycopg://user@host:port/db``, the ``postgres`` extra); SQLite URLs still work.
"""

from __future__ import annotations

import re
from pathlib import Path

from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileSymlinkLock

from miras_search.errors import MirasError
from miras_search.paths import expand_home, user_path
from miras_search.redact import redact_url
from miras_search.study.journal_backend import RepairingJournalFileBackend, set_aside_or_refuse
from miras_search.study.journal_repair import (
    RECORD_START,
    count_lines,
    first_line_creates_no_study,
    parse_record,
    salvage,
    tail_is_damaged,
)
from miras_search.study.rdb import open_rdb, sqlite_file

_URL_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")
"""SQLAlchemy dialects Optuna's RDB storage takes (each may carry a driver: postgresql+psycopg)."""
_JOURNAL_HEAD_LINES, _JOURNAL_HEAD_BYTES = 20, 1 << 20
"""A file is a journal when one of its first lines (within its first MiB) is a journal record."""


def default_storage(run_dir: str | Path, study_name: str) -> str:
    """``<run_dir>/<name>/study.journal`` as an absolute path (Ray workers have their own cwd),
    ``~`` in run_dir read as the home folder."""
    return str((user_path(run_dir) / study_name / "study.journal").resolve())


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

_URL_WITHOUT_SCHEME = re.compile(
    r"[^\s/:@]*:\S*@"  # user:password@...
    r"|[^\s/:@]+@[^\s/:@]+:\d+(?:/|$)"  # user@host:port
    r"|[A-Za-z0-9.\-]+:\d+(?:/|$)"  # host:port, host:port/db
)
"""A relative path whose first part reads as a database URL's authority: ``user:pw@host...``
(the colon before the first ``/``), ``user@host:5432``, or ``host:5432/db``. A path that starts
with ``/``, ``./`` or ``~/`` is a path whatever it holds."""


def looks_like_url_without_scheme(storage: str) -> bool:
    """Whether ``storage`` (not a URL) looks like a database URL whose scheme was left out."""
    return not is_url(storage) and _URL_WITHOUT_SCHEME.match(storage) is not None


def _refuse_url_without_scheme(storage: str) -> None:
    """MirasError when ``storage`` looks like a database URL without its scheme: taken as a path,
    it would become a journal file named after the URL (its password included)."""
    if not looks_like_url_without_scheme(storage):
        return
    shown = redact_url(storage)
    example = f"postgresql+psycopg://{shown}{'' if '/' in shown.rsplit('@', 1)[-1] else '/DB'}"
    raise MirasError(
        f"storage '{shown}' looks like a database URL without its scheme, and would be taken as the "
        f"name of a journal file; write the scheme, e.g. {example} (or mysql://..., "
        "sqlite:///path.db), or give a plain file path for a journal file (e.g. "
        "runs/study.journal)"
    )


def normalise(storage: str) -> str:
    """The URL unchanged, or for a path an absolute one (workers elsewhere see the same thing):
    a ``.db`` / ``.sqlite`` file as a SQLite URL, any other as a journal file. MirasError for a
    database URL without its scheme (``user:pw@host:5432/db``) and an unknown scheme."""
    if is_url(storage):
        _check_scheme(storage)
        return _sqlite_home(storage)
    _refuse_url_without_scheme(storage)
    path = user_path(storage).resolve()
    return f"sqlite:///{path}" if path.suffix in _SQLITE_SUFFIXES else str(path)


_SQLITE_PREFIX = re.compile(r"sqlite(?:\+\w+)?:///")


def _sqlite_home(url: str) -> str:
    """A SQLite URL whose file starts with ``~`` (``sqlite:///~/x.db``) with the home folder
    written out (``sqlite:////home/me/x.db``): SQLite itself would make ``./~/x.db``. Any
    other URL unchanged, so that the URL a study was run with still finds it."""
    prefix = _SQLITE_PREFIX.match(url)
    if prefix is None or not url[prefix.end():].startswith("~"):
        return url
    return url[:prefix.end()] + expand_home(url[prefix.end():])


def local_file_missing(storage: str) -> bool:
    """Whether ``storage`` (normalised) is a local journal or SQLite file that does not exist
    yet: commands that only read a study must not create it."""
    if storage.startswith("sqlite:"):  # the database path, without a ?timeout=... query
        path = sqlite_file(storage)
        return path is not None and not path.exists()
    return not is_url(storage) and not Path(storage).exists()


def make_storage(storage: str) -> BaseStorage:
    """The Optuna storage for a URL or a journal file path (its folder is created)."""
    if is_url(storage):
        _check_scheme(storage)
        database = sqlite_file(storage)
        if database is not None:  # as for a journal: SQLite makes the file, not its folder
            _make_folder(database)
        return open_rdb(storage)
    return _journal_storage(Path(storage))


def _journal_storage(path: Path) -> JournalStorage:
    """The journal at ``path`` (created when missing); MirasError, writing nothing, when the path
    is a folder or a file that is not a journal. Damaged lines are set aside as they are read."""
    if path.is_dir():
        raise MirasError(f"storage {path} is a folder; give a journal file path (e.g. "
                         f"{path / 'study.journal'}) or a database URL")
    _make_folder(path)
    if path.exists() and not path.is_file():  # /dev/null, a pipe: Optuna's fsync would fail
        raise MirasError(f"storage {path} is not a regular file (a device, a pipe or a socket); "
                         "give a journal file path (e.g. runs/study.journal) or a database URL")
    _check_is_journal(path)
    lock = JournalFileSymlinkLock(str(path))  # the lock Optuna's writers take by default
    if tail_is_damaged(path):  # Optuna would read past it, then append after it
        set_aside_or_refuse(path, lock, torn_tail_may_stay=True)
    _check_creates_its_study(path)
    try:
        return JournalStorage(RepairingJournalFileBackend(str(path), lock_obj=lock))
    except (ValueError, KeyError, TypeError, AssertionError) as error:  # a damaged record inside
        raise _unreadable(path, error) from None


def _make_folder(path: Path) -> None:
    """Create the folder of the journal (or SQLite file) at ``path``; MirasError, naming the part in the way, when
    a part of it is a file or it cannot be made (``/proc/...``). A read-only folder or one the
    user may not write stays an OSError, which the command line words as such."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((part for part in (path.parent, *path.parent.parents)
                        if part.exists() and not part.is_dir()), path.parent)
        raise MirasError(
            f"storage {path} cannot be made: {blocker} is a file, not a folder, so no folder can "
            "be made inside it; it is left as it is: give run_dir (or --storage) a path below a "
            "folder, not below a file"
        ) from None
    except FileNotFoundError as error:
        raise MirasError(
            f"storage {path} cannot be made: its folder {error.filename or path.parent} cannot be "
            f"created there ({error.strerror}; /proc, /sys and similar take no new folders); give "
            "run_dir (or --storage) a path on an ordinary disk"
        ) from None


def _unreadable(path: Path, error: Exception) -> MirasError:
    return MirasError(
        f"storage {path} has a damaged record that cannot be replayed ({type(error).__name__}: "
        f"{error}) although every line is a journal record; it is left as it is: restore it from "
        "a copy, or point 'storage' elsewhere"
    )


def _check_is_journal(path: Path) -> None:
    """MirasError when ``path`` holds something other than an Optuna journal: neither does it
    start as a record, nor is one of its first lines one (then the lines before it are damage,
    set aside when read). An empty or missing file is a new journal."""
    if not path.is_file():
        return
    with open(path, "rb") as file:
        head = file.read(_JOURNAL_HEAD_BYTES)
    start = head[: len(RECORD_START)]
    if not head or start == RECORD_START or RECORD_START.startswith(start):
        return
    lines = head.split(b"\n")[:-1][:_JOURNAL_HEAD_LINES]  # complete lines only
    if any(parse_record(line + b"\n") or salvage(line + b"\n") for line in lines):
        return
    raise MirasError(
        f"storage {path} is not an Optuna journal (none of its first {_JOURNAL_HEAD_LINES} lines "
        "is a journal record); it is left as it is: point 'storage' at a new file, an existing "
        "study's journal, or a database URL"
    )


def _check_creates_its_study(path: Path) -> None:
    """MirasError when the journal at ``path`` lost the record that created its study (its first
    line, cut off by hand or by a copy): Optuna would read it as holding no study, and a run
    would create the study anew after the stored records, which would then belong to no study."""
    if not first_line_creates_no_study(path):
        return
    raise MirasError(
        f"storage {path} holds {count_lines(path)} line(s) of journal records but not the one "
        "that created a study (its first line is missing), so its trials cannot be read and a run "
        "would start the study over beside them; it is left as it is: restore its first line from "
        "a copy, or give a new storage path (run_dir, 'storage' or --storage)"
    )
