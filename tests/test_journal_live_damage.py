"""Journal damage a running study meets: a record torn while the driver runs (a worker killed
mid-append, a full disk) with the next record appended onto it, NUL bytes a power cut leaves
before a record, and garbage before a journal's first record. The damaged bytes are set aside;
every complete record is kept, and reading goes on without a raw error."""

from __future__ import annotations

import json

import optuna
import pytest

from miras_search.errors import MirasError
from miras_search.study.storage import make_storage

TORN = b'{"op_code":7,"worker_id":"dead-worker","trial_id":0,"step":99,"interm'
"""Half a record, as a worker killed mid-append leaves it (no newline)."""


def _trial(value: float) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(params={}, distributions={}, value=value)


def _journal_with_trials(path, n: int) -> optuna.Study:
    study = optuna.create_study(study_name="s", storage=make_storage(str(path)))
    for value in range(n):
        study.add_trial(_trial(float(value)))
    return study


def _values(path) -> list[float]:
    return [t.value for t in optuna.load_study(study_name="s", storage=make_storage(str(path))).trials]


def _lines(path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _report(trial_id: int, step: int, value: float) -> bytes:
    """A worker's intermediate-value record, as Optuna's JournalStorage writes it."""
    record = {"op_code": 7, "worker_id": "worker", "trial_id": trial_id, "step": step,
              "intermediate_value": value}
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def test_a_record_torn_mid_run_is_set_aside_and_the_record_on_its_line_kept(tmp_path, caplog):
    """The driver's own next record lands on the torn bytes; Optuna skipped that line silently,
    and the next read died with a JSONDecodeError. Now the driver reads on."""
    path = tmp_path / "study.journal"
    study = _journal_with_trials(path, 1)
    with open(path, "ab") as file:  # between two storage operations of the running study
        file.write(TORN)
    study.add_trial(_trial(1.0))  # its first record shares the torn line
    study.add_trial(_trial(2.0))
    assert [t.value for t in study.trials] == [0.0, 1.0, 2.0]
    assert _values(path) == [0.0, 1.0, 2.0]
    (aside,) = tmp_path.glob("study.journal.torn-*")
    assert aside.read_bytes() == TORN + b"\n"
    assert all(TORN not in line for line in _lines(path))
    assert "the complete record that followed the damaged bytes on line" in caplog.text


@pytest.mark.parametrize("damage", [TORN, b"{}\n", b"\x00" * 4096], ids=["torn", "not-a-record", "nul"])
def test_damage_written_by_another_process_mid_run_is_read_past(tmp_path, damage):
    """A worker's reports after the damage (the first on the damaged line, unless that line
    ends) reach the driver, which reads on without an exception."""
    path = tmp_path / "study.journal"
    storage = make_storage(str(path))  # the driver's, opened before the damage
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    with open(path, "ab") as file:
        file.write(damage + _report(trial._trial_id, 1, 0.5) + _report(trial._trial_id, 2, 0.25))
    study.tell(trial, 0.1)
    reports = storage.get_trial(trial._trial_id).intermediate_values
    assert reports == {1: 0.5, 2: 0.25}
    assert _values(path) == [0.1]
    (aside,) = tmp_path.glob("study.journal.*-2*")
    assert aside.read_bytes().rstrip(b"\n") == damage.rstrip(b"\n")


def test_a_record_after_nul_bytes_is_kept(tmp_path):
    """ext4 after a power cut: NUL bytes, then the next record with no newline between."""
    path = tmp_path / "study.journal"
    _journal_with_trials(path, 3)
    lines = _lines(path)
    path.write_bytes(b"".join([*lines[:2], b"\x00" * 4096, *lines[2:]]))
    assert _values(path) == [0.0, 1.0, 2.0]
    assert _lines(path) == lines
    (aside,) = tmp_path.glob("study.journal.torn-*")
    assert aside.read_bytes() == b"\x00" * 4096 + b"\n"


def test_a_garbage_first_line_is_set_aside_and_the_journal_kept(tmp_path):
    path = tmp_path / "study.journal"
    _journal_with_trials(path, 3)
    lines = _lines(path)
    garbage = bytes(range(128, 178)) + b"\n"
    path.write_bytes(garbage + b"".join(lines))
    assert _values(path) == [0.0, 1.0, 2.0]
    assert _lines(path) == lines
    (aside,) = tmp_path.glob("study.journal.damaged-*")
    assert aside.read_bytes() == garbage


def test_a_file_whose_first_lines_hold_no_record_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "study.journal"
    _journal_with_trials(path, 1)
    content = b"a note\n" * 25 + path.read_bytes()
    path.write_bytes(content)
    with pytest.raises(MirasError, match=r"not an Optuna journal \(none of its first 20 lines"):
        make_storage(str(path))
    assert path.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == ["study.journal"]


def test_a_journal_removed_or_replaced_under_an_open_study_stops_it_in_one_paragraph(tmp_path):
    """Deleting the journal while a study ran: the next append recreated it without the record
    that created the study, and the driver died on Optuna's 'Cannot tell a WAITING trial'."""
    path = tmp_path / "study.journal"
    for how in ("removed", "replaced"):
        for old in tmp_path.iterdir():
            old.unlink()
        storage = make_storage(str(path))
        study = optuna.create_study(study_name="s", storage=storage)
        study.tell(study.ask(), 1.0)
        other = path.read_bytes().replace(b'"s"', b'"t"')  # another study's journal, as long
        if how == "removed":
            path.unlink()
        else:
            path.write_bytes(other)
        with pytest.raises(MirasError, match=rf"{path} was {how} while the study was open.*"
                           r"What survives.*new storage path"):
            study.tell(study.ask(), 2.0)
        assert path.exists() == (how == "replaced")  # nothing was written in its place
        if path.exists():
            assert path.read_bytes() == other


def test_a_repair_is_kept_for_the_driver_until_taken(tmp_path):
    """A Ray worker's log stays on its node: the repairs a process made wait in
    ``take_repair_notes`` until its next result carries them to the driver."""
    from miras_search.study.journal_repair import take_repair_notes

    take_repair_notes()  # whatever an earlier test of this process left
    path = tmp_path / "study.journal"
    study = _journal_with_trials(path, 1)
    with open(path, "ab") as file:
        file.write(TORN)
    study.add_trial(_trial(1.0))
    (note,) = take_repair_notes()
    assert str(path) in note and "damaged" in note
    assert take_repair_notes() == []


def test_a_workers_repair_reaches_the_driver_as_a_note(tmp_path, monkeypatch):
    from test_study import write_study

    from miras_search.parallel import ray_pool
    from miras_search.study import InlinePool, load_study_file
    from miras_search.study.driver import StudyDriver

    monkeypatch.setattr(ray_pool, "execute", lambda task, **_: {"status": "failed", "metrics": {}, "curve": []})
    monkeypatch.setattr(ray_pool, "take_repair_notes", lambda: ["storage x.journal had 1 damaged line(s)"])
    worker = ray_pool.TrialWorker.__new__(ray_pool.TrialWorker)  # the actor's body, without Ray
    worker.device, worker.threads, worker.concurrent = "cpu", 1, 1
    raw = worker.run(None)
    assert raw["storage_notes"] == ["storage x.journal had 1 damaged line(s)"]

    class _RepairingPool(InlinePool):
        """Runs trials inline; the first result carries a worker's repair note."""

        def wait(self):
            done = super().wait()
            if done and not getattr(self, "_told", False):
                self._told = True
                task, result = done[0]
                done[0] = (task, {**result, "storage_notes": raw["storage_notes"]})
            return done

    path = write_study(tmp_path, trials=1)
    notes = []
    driver = StudyDriver(load_study_file(path), lambda: _RepairingPool(threads=1))
    driver.on_event = lambda event: notes.append(event.message) if event.kind == "note" else None
    driver.run()
    assert "a worker set journal damage aside: storage x.journal had 1 damaged line(s)" in notes
