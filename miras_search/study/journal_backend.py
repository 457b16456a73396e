"""Optuna's journal file backend, with damage that appears while a study runs set aside.

``JournalFileBackend.read_logs`` raises a bare ``JSONDecodeError`` once a damaged line has a
line after it (a worker killed mid-append, a full disk), and silently skips a complete damaged
last line, which a writer's own record may share when it was appended onto torn bytes. Every
process of a study (the driver, each Ray worker, ``miras status``) reads the journal through
``RepairingJournalFileBackend`` instead: a complete line that is not a journal record is set
aside under the journal's lock (``journal_repair.set_damage_aside``, which also keeps a complete
record that follows the damaged bytes on that line), and the read goes on where it stopped.

Why reading on is safe: a repair changes nothing before the first damaged line, and no process
reads past a damaged line, so the lines each process has read keep their numbers and offsets.
A last line without its newline is left alone: it may be a record another process is writing.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any, BinaryIO

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from miras_search.errors import MirasError
from miras_search.study.journal_repair import Repair, parse_record, set_damage_aside

log = logging.getLogger(__name__)


class _DamagedLine(Exception):
    """A complete line of the journal that is not a journal record."""


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def set_aside_or_refuse(path: Path, lock: JournalFileSymlinkLock, *,
                        torn_tail_may_stay: bool = False) -> Repair | None:
    """``set_damage_aside``, with a MirasError when the journal's folder cannot be written (the
    advice fits the cause: a full disk or a read-only folder). With ``torn_tail_may_stay``, a
    last record cut short (no newline: what a full disk leaves) that cannot be set aside stays,
    with a warning: every reader skips it, so the study can still be shown, and a record a writer
    appends onto it is salvaged by the next read that can set the torn bytes aside."""
    try:
        return set_damage_aside(path, lock)
    except OSError as error:
        if torn_tail_may_stay and _ends_unterminated(path):
            log.warning("storage %s ends in a record cut short that could not be set aside (%s); "
                        "it is skipped as the journal is read", path, error.strerror)
            return None
        fix = ("free some space on its device" if error.errno in _NO_SPACE
               else "make its folder writable")
        raise MirasError(
            f"storage {path} has damaged lines that could not be set aside ({error.strerror}: "
            f"{error.filename}); the journal is left as it is: {fix}, or restore it from a copy"
        ) from None


def _ends_unterminated(path: Path) -> bool:
    """Whether the file at ``path`` is not empty and its last byte is not a newline."""
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            file.seek(max(0, size - 1))
            return size > 0 and file.read(1) != b"\n"
    except OSError:
        return False


class RepairingJournalFileBackend(JournalFileBackend):
    """A ``JournalFileBackend`` whose reads set damaged lines aside instead of raising."""

    def __init__(self, file_path: str, lock_obj: JournalFileSymlinkLock) -> None:
        super().__init__(file_path, lock_obj=lock_obj)  # appends stay Optuna's own
        self._path, self._repair_lock = Path(file_path), lock_obj
        self._offsets: dict[int, int] = {0: 0}
        """Where each line read so far starts (by line number), so a read resumes there."""
        self._first_line: bytes | None = None
        """The journal's first line once read: a file that no longer starts with it was replaced."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Optuna's append; an OSError that names no file (a full disk while writing) names the
        journal, so that its message says which file could not be written."""
        if not self._path.exists():  # Optuna's append would create a journal without its study
            raise self._gone("removed")
        try:
            super().append_logs(logs)
        except OSError as error:
            if error.filename is not None:
                raise
            raise OSError(error.errno, error.strerror, str(self._path)) from error

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        stalled = False
        while True:
            try:
                for record in self._records(log_number_from):
                    yield record
                    log_number_from += 1
                    stalled = False
                return
            except _DamagedLine as damage:
                repaired = set_aside_or_refuse(self._path, self._repair_lock)
                if repaired is None and stalled:  # judged damaged twice, yet nothing to set aside
                    raise MirasError(
                        f"storage {self._path} has a damaged line that cannot be set aside "
                        f"({damage}); it is left as it is: restore it from a copy, or point "
                        "'storage' elsewhere"
                    ) from None
                stalled = repaired is None  # another process may have repaired it meanwhile

    def _gone(self, how: str) -> MirasError:
        """The error for a journal removed or replaced under the process that reads it."""
        read = max(self._offsets)
        return MirasError(
            f"storage {self._path} was {how} while the study was open here (this process had "
            f"read {read} record(s) from it): the study's records are no longer in that file, so "
            "the run stops here rather than write trials that belong to no study. What survives: "
            "the files under run_dir (checkpoints, logs) and any copy of the journal; restore the "
            "journal from a copy and `miras resume`, or start over with a new storage path"
        )

    def _check_in_place(self, file: BinaryIO, size: int) -> None:
        """MirasError when the open ``file`` is no longer the journal this process read: shorter
        than what was read (a repair only removes lines no process has read) or starting with
        another first line. Leaves the file at its start."""
        if self._first_line is None:
            return
        if size < max(self._offsets.values()):
            raise self._gone("removed or replaced")
        if file.readline() != self._first_line:
            raise self._gone("replaced")
        file.seek(0)

    def _records(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        """Optuna's ``read_logs``, raising ``_DamagedLine`` at a complete line that is no record."""
        try:
            with open(self._path, "rb") as file:
                yield from self._records_of(file, log_number_from)
        except FileNotFoundError:
            raise self._gone("removed") from None

    def _records_of(self, file: BinaryIO, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        """``_records`` of the journal open as ``file``."""
        size = os.fstat(file.fileno()).st_size  # lines appended while this reads wait
        self._check_in_place(file, size)
        number, offset = 0, 0
        if log_number_from in self._offsets:
            number, offset = log_number_from, self._offsets[log_number_from]
            file.seek(offset)
        for line in file:
            if offset + len(line) > size or not line.endswith(b"\n"):
                return
            record = parse_record(line) if number >= log_number_from else None
            if number >= log_number_from and record is None:
                raise _DamagedLine(f"line {number + 1}")
            if number == 0 and self._first_line is None:
                self._first_line = line
            number, offset = number + 1, offset + len(line)
            self._offsets[number] = offset
            if record is not None:
                yield record
