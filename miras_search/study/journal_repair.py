"""Damaged lines of an Optuna journal set aside, so that a readable study stays readable.

A journal is one JSON record per line, appended only. Lines get damaged: a writer killed
mid-append leaves a last line without its end; a full disk, a copy gone wrong or a hand edit
leaves garbage or ``{}`` lines, or a record without a field its operation needs (``{"op_code":6,
"worker_id":"x"}``) or with one of another type. Optuna reads past a bad *last* line, but the next
append lands after it, and from then on every read fails; a ``{}`` line, or a record its replay
cannot read (``journal_records``), fails the replay with a bare KeyError or TypeError.

``set_damage_aside`` moves such lines into ``<journal>.damaged-<time>`` (``.torn-<time>`` when
the only damage is a last record cut short) and rewrites the journal atomically (a temporary file
and a rename, under the journal's lock), so that a crash during the repair leaves the old file or
the new one, never a half-written one. Nothing is deleted: every removed byte is in the aside file.

A complete record after damaged bytes on the same line is kept, and only those bytes are set
aside: a writer appending after a torn last record (a killed worker, a full disk) or after a run
of NUL bytes (what a power cut leaves on ext4) puts its whole record on the damaged line.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileSymlinkLock

from miras_search.errors import MirasError
from miras_search.study.journal_records import replayable

log = logging.getLogger(__name__)

_REPAIRS_MADE: list[str] = []
"""The messages of the repairs this process made and no one has taken yet (``take_repair_notes``):
a Ray worker hands them to the driver with its next result, since its own log stays on its node."""


def take_repair_notes() -> list[str]:
    """The messages of the repairs this process made since the last call (then forgotten)."""
    notes = list(_REPAIRS_MADE)
    _REPAIRS_MADE.clear()
    return notes

_CREATE_STUDY, _CREATE_TRIAL, _LAST_OP = 0, 4, 10
"""Optuna's JournalOperation codes used here (CREATE_STUDY, CREATE_TRIAL; 10 is the highest)."""
RECORD_START = b'{"op_code":'
"""How every line of an Optuna journal starts (JournalStorage writes op_code first)."""


@dataclass
class Repair:
    """What ``set_damage_aside`` did: the aside file, the damaged line numbers (1-based), how many
    records the journal keeps, and whether it kept only the records before the first damage."""

    aside: Path
    damaged: list[int]
    kept: int
    moved: int
    prefix_only: bool
    salvaged: list[int] = field(default_factory=list)
    """Damaged lines whose complete record after the damaged bytes was kept (1-based)."""
    cut: int | None = None
    """With ``prefix_only``, the line from which on every line was moved (1-based)."""

    def message(self, path: Path) -> str:
        if self.prefix_only:
            cut = self.cut or self.damaged[0]
            kept = (f"it keeps its first {self.kept} record(s), up to line {cut - 1}; "
                    f"the {self.moved} line(s) from line {cut} on (later records may "
                    "refer to a trial a damaged line created) were moved to")
        elif self.salvaged:
            kept = (f"it keeps its other {self.kept} record(s), among them the complete record "
                    f"that followed the damaged bytes on line {_shown(self.salvaged)}; the damaged "
                    "bytes were moved to")
        else:
            kept = f"it keeps its other {self.kept} record(s); the {self.moved} damaged line(s) were moved to"
        return (f"storage {path} had {len(self.damaged)} damaged line(s) that are not journal "
                f"records (line {_shown(self.damaged)}): {kept} {self.aside}")


def _shown(lines: list[int]) -> str:
    return ", ".join(map(str, lines[:5])) + (" ..." if len(lines) > 5 else "")


def parse_record(line: bytes) -> dict[str, Any] | None:
    """The journal record on ``line`` (which ends in a newline), or None when it is not one: not
    a JSON object with a known ``op_code`` and a ``worker_id``, or one without a field its
    operation's replay reads, or with one of another type (``journal_records.replayable``)."""
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
    if not isinstance(record.get("worker_id"), str):
        return None
    return record if replayable(record) else None


def salvage(line: bytes) -> tuple[bytes, dict[str, Any]] | None:
    """For a damaged ``line``, the damaged bytes before the complete record that ends it, and
    that record; None when no record ends it. The first record start after which the rest of
    the line is a whole record wins (a record start inside a record leaves trailing bytes)."""
    start = line.find(RECORD_START, 1)
    while start != -1:
        record = parse_record(line[start:])
        if record is not None:
            return line[:start], record
        start = line.find(RECORD_START, start + 1)
    return None


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


def first_line_creates_no_study(path: Path, head_bytes: int = 1 << 20) -> bool:
    """Whether the first line of the file at ``path`` is a journal record other than the creation
    of a study: the file lost the line that created the study every later record refers to.
    Optuna would replay it as an empty storage, and a writer would create the study anew,
    orphaning every stored trial. A damaged first line is ``set_damage_aside``'s to judge."""
    if not path.is_file():
        return False
    with open(path, "rb") as file:
        head = file.read(head_bytes)
    lines = _lines(head)
    record = parse_record(lines[0]) if lines else None
    return record is not None and record["op_code"] != _CREATE_STUDY


def count_lines(path: Path) -> int:
    """How many lines the file at ``path`` holds (a last line without its newline counted)."""
    count, last = 0, b"\n"
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            count, last = count + chunk.count(b"\n"), chunk[-1:]
    return count + (last != b"\n")


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
    return parse_record(tail[:-1].rsplit(b"\n", 1)[-1] + b"\n") is None


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.repair-{os.getpid()}")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _lines(data: bytes) -> list[bytes]:
    """``data`` cut after each newline, as Optuna reads a journal (a ``\\r`` does not end a line)."""
    lines = [line + b"\n" for line in data.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def _split(line: bytes) -> tuple[bytes, bytes, dict[str, Any] | None]:
    """One journal line as (the bytes it keeps, the bytes set aside, the record it keeps)."""
    record = parse_record(line)
    if record is not None:
        return line, b"", record
    found = salvage(line)
    if found is None:
        return b"", line, None
    fragment, record = found
    return line[len(fragment):], fragment + b"\n", record


def _aside_path(path: Path, kind: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, serial = path.with_name(f"{path.name}.{kind}-{stamp}"), 1
    while target.exists():
        target = path.with_name(f"{path.name}.{kind}-{stamp}-{serial}")
        serial += 1
    return target


def _nothing_would_be_kept(path: Path) -> MirasError:
    return MirasError(
        f"storage {path} is damaged at its first line, which created the study that every later "
        "record refers to, so setting the damage aside would keep nothing; it is left as it is: "
        "restore it from a copy (or mend its first line by hand), or point 'storage' elsewhere"
    )


def set_damage_aside(path: Path, lock: JournalFileSymlinkLock) -> Repair | None:
    """Set the damaged lines of the journal at ``path`` aside (see the module docstring); None
    when there are none. Runs under ``lock``, so no record another process writes is cut."""
    lock.acquire()
    try:
        lines = _lines(path.read_bytes())
        parts = [_split(line) for line in lines]
        damaged = [i for i, (_, aside, _) in enumerate(parts) if aside]
        if not damaged:
            return None
        lost = [i for i, (_, _, record) in enumerate(parts) if record is None]
        salvaged = [i for i in damaged if parts[i][2] is not None]
        prefix_only = not _numbering_holds([record for *_, record in parts if record is not None])
        if prefix_only:
            cut = lost[0] if lost else damaged[0]
            if cut == 0 and len(lost) < len(lines):
                raise _nothing_would_be_kept(path)
            keep = [kept for kept, _, _ in parts[:cut]]
            aside = [moved for _, moved, _ in parts[:cut] if moved] + lines[cut:]
            salvaged = [i for i in salvaged if i < cut]
        else:
            cut = None
            keep = [kept for kept, _, _ in parts if kept]
            aside = [moved for _, moved, _ in parts if moved]
        torn = set(salvaged) | ({len(lines) - 1} if not lines[-1].endswith(b"\n") else set())
        target = _aside_path(path, "torn" if set(damaged) <= torn else "damaged")
        _write_atomically(target, b"".join(aside))  # the aside copy is safe before the journal changes
        _write_atomically(path, b"".join(keep))
    finally:
        lock.release()
    repair = Repair(target, [i + 1 for i in damaged], len(keep), len(aside), prefix_only,
                    [i + 1 for i in salvaged], None if cut is None else cut + 1)
    message = repair.message(path)
    log.warning("%s", message)
    _REPAIRS_MADE.append(message)
    return repair
