"""Damaged lines of an Optuna journal set aside, so that a readable study stays readable.

A journal is one JSON record per line, appended only. Lines get damaged: a writer killed
mid-append leaves a last line without its end; a full disk, a copy gone wrong or a hand edit
leaves garbage or ``{}`` lines. Optuna reads past a bad *last* line, but the next append lands
after it, and from then on every read fails; a ``{}`` line fails the replay with a bare KeyError.

``set_damage_aside`` moves such lines into ``<journal>.damaged-<time>`` (``.torn-<time>`` when
the only damage is a last record cut short) and rewrites the journal atomically (a temporary file
and a rename, under the journal's lock), so that a crash during the repair leaves the old file or
the new one, never a half-written one. Nothing is deleted: every removed byte is in the aside file.

Which lines are kept: a damaged line may have been a record that created a trial or a study, and
Optuna numbers trials and studies by the order of creation; dropping such a record would shift
the numbers and attach later records to the wrong trial. So the damaged lines alone are dropped
only when every later record still refers to a trial and a study created before it; otherwise the
journal keeps the records before the first damaged line and everything from it on is set aside.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileSymlinkLock

log = logging.getLogger(__name__)

_CREATE_STUDY, _CREATE_TRIAL, _LAST_OP = 0, 4, 10
"""Optuna's JournalOperation codes used here (CREATE_STUDY, CREATE_TRIAL; 10 is the highest)."""


@dataclass
class Repair:
    """What ``set_damage_aside`` did: the aside file, the damaged line numbers (1-based), how many
    records the journal keeps, and whether it kept only the records before the first damage."""

    aside: Path
    damaged: list[int]
    kept: int
    moved: int
    prefix_only: bool

    def message(self, path: Path) -> str:
        shown = ", ".join(map(str, self.damaged[:5])) + (" ..." if len(self.damaged) > 5 else "")
        if self.prefix_only:
            kept = (f"it keeps its first {self.kept} record(s), up to line {self.damaged[0] - 1}; "
                    f"the {self.moved} line(s) from line {self.damaged[0]} on (later records may "
                    "refer to a trial a damaged line created) were moved to")
        else:
            kept = f"it keeps its other {self.kept} record(s); the {self.moved} damaged line(s) were moved to"
        return (f"storage {path} had {len(self.damaged)} damaged line(s) that are not journal "
                f"records (line {shown}): {kept} {self.aside}")


def _record(line: bytes) -> dict[str, Any] | None:
    """The journal record on ``line`` (which ends in a newline), or None when it is not one."""
    if not line.endswith(b"\n"):
        return None
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    op = record.get("op_code")
    if not isinstance(op, int) or isinstance(op, bool) or not 0 <= op <= _LAST_OP:
        return None
    return record if isinstance(record.get("worker_id"), str) else None


def _numbering_holds(records: list[dict[str, Any]]) -> bool:
    """Whether each record refers only to studies and trials created by earlier records."""
    studies = trials = 0
    for record in records:
        op = record["op_code"]
        study_id, trial_id = record.get("study_id"), record.get("trial_id")
        if op == _CREATE_STUDY:
            studies += 1
            continue
        if isinstance(study_id, int) and study_id >= studies:
            return False
        if op == _CREATE_TRIAL:
            trials += 1
        elif isinstance(trial_id, int) and trial_id >= trials:
            return False
    return True


def tail_is_damaged(path: Path) -> bool:
    """A cheap check of the last line only (Optuna reads past a bad last line without a word)."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as file:
        file.seek(max(0, path.stat().st_size - 65536))
        tail = file.read()
    if not tail.endswith(b"\n"):
        return True
    whole = b"\n" in tail[:-1] or len(tail) == path.stat().st_size
    if not whole:  # a last line longer than what was read: let the full scan judge it
        return True
    return _record(tail[:-1].rsplit(b"\n", 1)[-1] + b"\n") is None


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.repair-{os.getpid()}")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def set_damage_aside(path: Path, lock: JournalFileSymlinkLock) -> Repair | None:
    """Set the damaged lines of the journal at ``path`` aside (see the module docstring); None
    when there are none. Runs under ``lock``, so no record another process writes is cut."""
    lock.acquire()
    try:
        data = path.read_bytes()
        lines = data.splitlines(keepends=True)
        records = [_record(line) for line in lines]
        damaged = [i for i, record in enumerate(records) if record is None]
        if not damaged:
            return None
        good = [r for r in records if r is not None]
        prefix_only = not _numbering_holds(good)
        if prefix_only:
            keep, aside = lines[: damaged[0]], lines[damaged[0]:]
        else:
            keep, aside = [line for line, r in zip(lines, records, strict=True) if r is not None], \
                [lines[i] for i in damaged]
        torn_only = damaged == [len(lines) - 1] and not lines[-1].endswith(b"\n")
        kind = "torn" if torn_only else "damaged"
        target = path.with_name(f"{path.name}.{kind}-{time.strftime('%Y%m%d-%H%M%S')}")
        serial = 1
        while target.exists():
            target = path.with_name(f"{path.name}.{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{serial}")
            serial += 1
        _write_atomically(target, b"".join(aside))  # the aside copy is safe before the journal changes
        _write_atomically(path, b"".join(keep))
    finally:
        lock.release()
    repair = Repair(target, [i + 1 for i in damaged], len(keep), len(aside), prefix_only)
    log.warning("%s", repair.message(path))
    return repair
