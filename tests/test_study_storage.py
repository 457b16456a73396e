"""Opening a study's storage: journals cut short by a killed writer, files that are not journals,
folders and unknown database URLs. Nothing stored is lost, and nothing is written to a file
that is not a journal."""

from __future__ import annotations

import errno
import json

import optuna
import pytest

from miras_search.errors import MirasError
from miras_search.study.storage import make_storage, normalise


def _journal_with_trials(path, n: int) -> None:
    study = optuna.create_study(study_name="s", storage=make_storage(str(path)))
    for value in range(n):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=float(value)))


def _values(path) -> list[float]:
    return [t.value for t in optuna.load_study(study_name="s", storage=make_storage(str(path))).trials]


def test_a_record_cut_short_is_set_aside_and_the_study_goes_on(tmp_path):
    """kill -9 mid-append leaves a last line without its end. Optuna reads past it but appends
    the next record onto it, which broke every later read; it is now moved aside first."""
    path = tmp_path / "study.journal"
    _journal_with_trials(path, 2)
    torn = b'{"op_code":5,"worker_id":"abc","trial_id":1,"sta'
    with open(path, "ab") as file:
        file.write(torn)
    storage = make_storage(str(path))
    study = optuna.load_study(study_name="s", storage=storage)
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=7.0))
    assert _values(path) == [0.0, 1.0, 7.0]
    assert path.read_bytes().endswith(b"\n")
    (aside,) = tmp_path.glob("study.journal.torn-*")
    assert aside.read_bytes() == torn


@pytest.mark.parametrize("content", [b"precious notes, one line\n", b"notes\nmore notes\n", b'{"a": 1}\n'])
def test_a_file_that_is_not_a_journal_is_refused_and_left_alone(tmp_path, content):
    path = tmp_path / "notes.journal"
    path.write_bytes(content)
    with pytest.raises(MirasError, match=r"is not an Optuna journal .* left as it is"):
        make_storage(str(path))
    assert path.read_bytes() == content


def _lines(path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _asides(folder) -> list:
    return sorted(folder.glob("study.journal.damaged-*"))


def test_a_damaged_record_inside_the_journal_is_set_aside_and_named(tmp_path, caplog):
    path = tmp_path / "study.journal"
    _journal_with_trials(path, 2)
    lines = _lines(path)
    path.write_bytes(b"".join([*lines[:2], b'{"op_code": garbage\n', *lines[2:]]))
    make_storage(str(path))
    assert _values(path) == [0.0, 1.0]
    assert _lines(path) == lines
    (aside,) = _asides(tmp_path)
    assert aside.read_bytes() == b'{"op_code": garbage\n'
    assert "line 3" in caplog.text and f"keeps its other {len(lines)} record(s)" in caplog.text


def test_a_garbage_last_line_is_set_aside_before_anything_is_appended(tmp_path):
    """Optuna reads past a bad last line; the next append used to land after it and from then
    on every command failed ('damaged record')."""
    path = tmp_path / "study.journal"
    _journal_with_trials(path, 2)
    with open(path, "ab") as file:
        file.write(b"this is not json\n")
    storage = make_storage(str(path))  # what status, resume and the workers open
    optuna.load_study(study_name="s", storage=storage).add_trial(
        optuna.trial.create_trial(params={}, distributions={}, value=5.0))
    for _ in range(2):  # every later command reads it
        assert _values(path) == [0.0, 1.0, 5.0]
    (aside,) = _asides(tmp_path)
    assert aside.read_bytes() == b"this is not json\n"


@pytest.mark.parametrize("where", ["end", "middle"])
@pytest.mark.parametrize("line", [b"{}\n", b"[]\n", b'{"op_code": 99, "worker_id": "w"}\n', b"\n"])
def test_json_lines_that_are_not_records_give_no_raw_error(tmp_path, where, line):
    _set_aside_when_inserted(tmp_path, line, where)


def _set_aside_when_inserted(tmp_path, line: bytes, where: str) -> tuple[int, int]:
    """Insert ``line`` at the ``where`` ('end' or 'middle') of a 3-trial journal: the study reads
    back its three trials, the journal loses only that line, which is set aside. Returns (the
    journal's record count, where the line went)."""
    path = tmp_path / "study.journal"
    _journal_with_trials(path, 3)
    lines = _lines(path)
    at = len(lines) if where == "end" else 3
    path.write_bytes(b"".join([*lines[:at], line, *lines[at:]]))
    assert _values(path) == [0.0, 1.0, 2.0]
    assert _lines(path) == lines
    (aside,) = _asides(tmp_path)
    assert aside.read_bytes() == line
    return len(lines), at


_UNREPLAYABLE = [  # JSON objects with a known op code and a worker that Optuna's replay cannot read
    b'{"op_code":6,"worker_id":"x"}\n',  # no trial_id (KeyError: 'trial_id' refused every command)
    b'{"op_code":8,"worker_id":"x","trial_id":0}\n',  # no user_attr
    b'{"op_code":8,"worker_id":"x","trial_id":"0","user_attr":{"a":1}}\n',  # a trial id as text
    b'{"op_code":8,"worker_id":"x","trial_id":0,"user_attr":{"a":1,"b":2}}\n',  # Optuna asserts one
    b'{"op_code":6,"worker_id":"x","trial_id":0,"state":7,"values":null}\n',  # no such trial state
    b'{"op_code":6,"worker_id":"x","trial_id":0,"state":1,"values":[1.0]}\n',  # finished, no end time
    b'{"op_code":6,"worker_id":"x","trial_id":0,"state":1,"values":1.0,'
    b'"datetime_complete":"2024-01-01T00:00:00"}\n',  # values not a list
    b'{"op_code":5,"worker_id":"x","trial_id":0,"param_name":"p","param_value_internal":0.5,'
    b'"distribution":"not json"}\n',
    b'{"op_code":5,"worker_id":"x","trial_id":0,"param_name":"p","param_value_internal":5,'
    b'"distribution":"{\\"name\\": \\"CategoricalDistribution\\", \\"attributes\\": '
    b'{\\"choices\\": [\\"a\\"]}}"}\n',  # choice 5 of one choice
    b'{"op_code":7,"worker_id":"x","trial_id":0,"step":1}\n',  # no intermediate_value
    b'{"op_code":2,"worker_id":"x","study_id":0,"user_attr":[1]}\n',
    b'{"op_code":3,"worker_id":"x"}\n',
    b'{"op_code":1,"worker_id":"x","study_id":null}\n',
]


@pytest.mark.parametrize("where", ["end", "middle"])
@pytest.mark.parametrize("line", _UNREPLAYABLE)
def test_records_missing_or_mistyping_a_field_their_operation_needs_are_set_aside(
        tmp_path, caplog, where, line):
    """A whole JSON record that lacks a field its op code's replay reads, or holds one of another
    type, failed Optuna's replay (a bare KeyError, TypeError, AssertionError) and every command
    refused the study; it is set aside like a garbage line, with the same message."""
    count, at = _set_aside_when_inserted(tmp_path, line, where)
    assert f"(line {at + 1}): it keeps its other {count} record(s)" in caplog.text


@pytest.mark.parametrize("line", [
    b'{"op_code":4,"worker_id":"x","study_id":0}\n',  # no datetime_start
    b'{"op_code":4,"worker_id":"x","study_id":0,"datetime_start":null,"state":1,"value":1.0,'
    b'"values":[2.0]}\n',  # one value and a list of them
    b'{"op_code":4,"worker_id":"x","study_id":0,"datetime_start":null,"params":{"p":0.5}}\n',
    b'{"op_code":0,"worker_id":"x","study_name":"t","directions":[7]}\n',  # no such direction
])
def test_an_unreplayable_trial_or_study_creation_after_the_last_record_is_set_aside(tmp_path, line):
    path = tmp_path / "study.journal"
    _journal_with_trials(path, 2)
    lines = _lines(path)
    path.write_bytes(b"".join([*lines, line]))
    assert _values(path) == [0.0, 1.0]
    assert _lines(path) == lines
    (aside,) = _asides(tmp_path)
    assert aside.read_bytes() == line


def test_no_record_optuna_writes_is_set_aside(tmp_path):
    """Every operation Optuna writes, as it writes it (two studies, one deleted; parameters of each
    distribution, reports, attributes, enqueued, pruned, failed and added trials; several
    objectives), opens with nothing set aside, and reads back the same trials."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from miras_search.study.journal_repair import parse_record

    path = tmp_path / "study.journal"
    storage = JournalStorage(JournalFileBackend(str(path)))
    _every_operation(storage)
    ops = {json.loads(line)["op_code"] for line in _lines(path)}
    assert ops == set(range(10))
    assert all(parse_record(line) is not None for line in _lines(path))
    before = path.read_bytes()
    plain = optuna.load_study(study_name="a", storage=storage).trials
    mine = optuna.load_study(study_name="a", storage=make_storage(str(path))).trials
    assert [(t.state, t.values, t.params, t.user_attrs) for t in mine] == [
        (t.state, t.values, t.params, t.user_attrs) for t in plain]
    assert path.read_bytes() == before and not list(tmp_path.glob("study.journal.*"))


def _every_operation(storage) -> None:
    """Write each of Optuna's journal operations (0 to 9) into ``storage``."""
    study = optuna.create_study(study_name="a", storage=storage, directions=["minimize", "maximize"])
    study.set_user_attr("k", {"x": 1})
    storage.set_study_system_attr(study._study_id, "s", [1, 2])
    study.enqueue_trial({"x": 0.5, "c": "b"})

    def objective(trial):
        x, n = trial.suggest_float("x", 0, 1), trial.suggest_int("n", 1, 9, log=True)
        trial.suggest_categorical("c", ["a", "b", None])
        trial.set_user_attr("u", [1])
        trial.storage.set_trial_system_attr(trial._trial_id, "sys", {"a": 1})
        trial.report(float("nan"), 1)
        if n == 3:
            raise RuntimeError("a failed trial")
        return x, n

    study.optimize(objective, n_trials=6, catch=(RuntimeError,))
    study.add_trial(optuna.trial.create_trial(
        params={"x": 0.1, "c": "a"}, values=[1.0, 2.0], user_attrs={"p": 1}, intermediate_values={3: 0.5},
        distributions={"x": optuna.distributions.FloatDistribution(0, 1),
                       "c": optuna.distributions.CategoricalDistribution(["a", "b", None])}))
    other = optuna.create_study(study_name="b", storage=storage,
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))

    def pruned(trial):
        for step in range(3):
            trial.report(trial.suggest_float("y", -1, 1, step=0.5) + step, step)
            if trial.should_prune():
                raise optuna.TrialPruned
        return 1.0

    other.optimize(pruned, n_trials=4)
    other.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING))
    optuna.delete_study(study_name="b", storage=storage)


def _create_trial_lines(lines: list[bytes]) -> list[int]:
    return [i for i, line in enumerate(lines) if json.loads(line)["op_code"] == 4]


def test_a_lost_record_that_created_a_trial_keeps_the_records_before_it(tmp_path, caplog):
    """Optuna numbers trials by creation order: dropping a damaged trial creation would attach
    the next trials' records to the wrong trial. The journal keeps what came before it."""
    path = tmp_path / "study.journal"
    study = optuna.create_study(study_name="s", storage=make_storage(str(path)))
    for value in range(3):  # ask and tell: later records refer to the trial by its number
        study.tell(study.ask(), float(value))
    lines = _lines(path)
    second = _create_trial_lines(lines)[1]
    damaged = [*lines[:second], b'{"op_code":4,"worker_id":"w","study_id":0,"datetime_st\xff\n',
               *lines[second + 1:]]
    path.write_bytes(b"".join(damaged))
    assert _values(path) == [0.0]
    assert _lines(path) == lines[:second]
    (aside,) = _asides(tmp_path)
    assert aside.read_bytes() == b"".join(damaged[second:])
    assert f"keeps its first {second} record(s), up to line {second}" in caplog.text


def test_no_damaged_line_makes_a_readable_study_unreadable(tmp_path):
    """Each line in turn replaced by garbage: the study opens, and every byte is either in the
    journal or in the aside file (a lost first line, which created the study, is refused,
    changing nothing)."""
    path = tmp_path / "study.journal"
    _journal_with_trials(path, 3)
    lines = _lines(path)
    for index in range(len(lines)):
        for old in tmp_path.glob("study.journal.*"):
            old.unlink()
        damaged = [*lines[:index], b"#garbage#\n", *lines[index + 1:]]
        path.write_bytes(b"".join(damaged))
        if index == 0:  # setting it aside would keep nothing: every record refers to it
            with pytest.raises(MirasError, match=r"damaged at its first line.*left as it is"):
                make_storage(str(path))
            assert path.read_bytes() == b"".join(damaged)
            continue
        optuna.load_study(study_name="s", storage=make_storage(str(path)))
        (aside,) = _asides(tmp_path)
        kept = _lines(path)
        assert sorted(kept + aside.read_bytes().splitlines(keepends=True)) == sorted(damaged)
        assert b"#garbage#\n" not in kept


def test_damage_that_cannot_be_set_aside_is_reported_and_left_alone(tmp_path, monkeypatch):
    """A read-only folder (simulated: the suite may run as root, which writes anyway)."""
    from miras_search.study import journal_repair

    def read_only(path, data):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(journal_repair, "_write_atomically", read_only)
    path = tmp_path / "study.journal"
    _journal_with_trials(path, 1)
    damaged = path.read_bytes() + b"{}\n"
    path.write_bytes(damaged)
    with pytest.raises(MirasError, match=r"could not be set aside .*Read-only file system.*left as it is"):
        make_storage(str(path))
    assert path.read_bytes() == damaged


def test_a_folder_is_not_a_journal(tmp_path):
    with pytest.raises(MirasError, match=r"is a folder; give a journal file path \(e\.g\. .*study\.journal\)"):
        make_storage(str(tmp_path))


@pytest.mark.parametrize(("url", "words"), [
    ("postgres://user:secret@db:5432/optuna", "PostgreSQL's scheme is 'postgresql'"),
    ("redis://localhost", "unknown database URL scheme 'redis'"),
])
def test_unknown_url_schemes_are_not_taken_for_paths(tmp_path, monkeypatch, url, words):
    monkeypatch.chdir(tmp_path)
    for open_it in (normalise, make_storage):
        with pytest.raises(MirasError, match=words) as error:
            open_it(url)
        assert "secret" not in str(error.value)
    assert not any(tmp_path.iterdir())  # no folder named after the scheme


@pytest.mark.parametrize(("storage", "example"), [
    ("user:s3cret@db.example:5432", "postgresql+psycopg://user:***@db.example:5432/DB"),
    ("u:s3cret@127.0.0.1:1/optuna", "postgresql+psycopg://u:***@127.0.0.1:1/optuna"),
    ("u:a/b@s3cret@db:5432/optuna", "postgresql+psycopg://u:***@db:5432/optuna"),
    ("miras@db.example:5432/optuna", "postgresql+psycopg://miras@db.example:5432/optuna"),
    ("localhost:5432/optuna", "postgresql+psycopg://localhost:5432/optuna"),
])
def test_a_database_url_without_its_scheme_is_refused_not_made_a_journal(tmp_path, monkeypatch,
                                                                          storage, example):
    """``user:pw@host:5432`` was taken as a relative path: a journal file named after the URL,
    password included, was created and printed. It is refused, the password masked."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MirasError) as error:
        normalise(storage)
    message = str(error.value)
    assert message.startswith("storage '") and "without its scheme" in message
    assert f"write the scheme, e.g. {example}" in message and "plain file path" in message
    assert "s3cret" not in message and "\n" not in message
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("path", [
    "study.journal", "runs/a:b@c.journal", "./user:x@host", "me@home.journal", "a:b.journal",
])
def test_paths_that_hold_colons_or_at_signs_are_still_paths(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    assert normalise(path) == str((tmp_path / path).resolve())


def test_sqlite_urls_still_open(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert normalise(url) == url
    optuna.create_study(study_name="s", storage=make_storage(url))
    assert (tmp_path / "study.db").is_file()


def test_reading_commands_create_no_storage(tmp_path):
    """status / best / report / export on a storage file that does not exist say so and create
    nothing (a .db path is SQLite in every command)."""
    from miras_search.report.study_data import storage_from_spec
    from miras_search.study.setup import open_study

    for name in ("missing.journal", "missing.db"):
        with pytest.raises(MirasError, match="does not exist"):
            open_study("tiny", str(tmp_path / name))
        with pytest.raises(MirasError, match="does not exist"):
            storage_from_spec(tmp_path / name)
    assert not any(tmp_path.iterdir())
    assert normalise(str(tmp_path / "x.db")) == f"sqlite:///{tmp_path / 'x.db'}"


def test_status_resume_status_on_a_journal_with_a_garbage_last_line(tmp_path):
    """The reported sequence: every command keeps working, and the trials are all kept."""
    from test_study import write_study
    from typer.testing import CliRunner

    from miras_search.cli import app

    path = write_study(tmp_path, trials=1)
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(path), "--inline"]).exit_code == 0
    journal = tmp_path / "runs" / "tiny" / "study.journal"
    with open(journal, "ab") as file:
        file.write(b"\x00garbage}\n")
    for args in (["status", str(path)], ["resume", str(path), "--inline", "--trials", "2"],
                 ["status", str(path)], ["best", str(path)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    assert "2/2 finished" in runner.invoke(app, ["status", str(path)]).output
    (aside,) = (tmp_path / "runs" / "tiny").glob("study.journal.damaged-*")
    assert aside.read_bytes() == b"\x00garbage}\n"


def test_a_journal_that_lost_the_line_creating_its_study_is_refused_unchanged(tmp_path):
    """``tail -n +2 study.journal``: Optuna replays the rest as a storage holding no study, so
    status said 'holds none yet' and run created the study anew beside the orphaned trials.
    Every command now refuses in one paragraph, and the file is left as it is."""
    from test_study import write_study
    from typer.testing import CliRunner

    from miras_search.cli import app

    path = write_study(tmp_path, trials=1)
    journal = tmp_path / "runs" / "tiny" / "study.journal"
    journal.parent.mkdir(parents=True)
    study = optuna.create_study(study_name="tiny", storage=make_storage(str(journal)))
    for value in range(3):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=float(value)))
    lines = _lines(journal)
    cut = b"".join(lines[1:])
    journal.write_bytes(cut)
    with pytest.raises(MirasError, match=rf"holds {len(lines) - 1} line\(s\) of journal records "
                       r"but not the one that created a study.*restore its first line from a copy"):
        make_storage(str(journal))
    runner = CliRunner()
    for args in (["status", str(path)], ["run", str(path), "--inline"],
                 ["resume", str(path), "--inline"], ["best", str(path)]):
        result = runner.invoke(app, args)
        assert result.exit_code != 0, (args, result.output)
        assert "not the one that created a study" in result.output, (args, result.output)
        assert "holds none yet" not in result.output
        assert "Traceback" not in result.output
    assert journal.read_bytes() == cut
    assert [p.name for p in journal.parent.iterdir()] == ["study.journal"]


def test_storage_paths_that_cannot_be_journal_files_are_refused_in_one_paragraph(tmp_path):
    """A file where a folder must be (``--storage afile/x.journal``, ``run_dir: afile``), a
    folder that cannot be made (/proc), and a device (/dev/null) were raw OSErrors."""
    blocker = tmp_path / "afile"
    blocker.write_text("kept")
    for storage in (blocker / "study.journal", blocker / "deeper" / "study.journal"):
        with pytest.raises(MirasError, match=rf"{blocker} is a file, not a folder.*below a folder"):
            make_storage(str(storage))
    assert blocker.read_text() == "kept"
    with pytest.raises(MirasError, match=r"its folder /proc/\S+ cannot be created.*ordinary disk"):
        make_storage(f"/proc/miras-test-{tmp_path.name}/study.journal")
    with pytest.raises(MirasError, match=r"/dev/null is not a regular file.*journal file path"):
        make_storage("/dev/null")


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_appending_names_the_journal(tmp_path, monkeypatch):
    """A write or fsync that fails names no file; the message said 'cannot write to: ...'."""
    from optuna.storages.journal import _file

    from miras_search.cli.oserrors import os_error_message

    path = tmp_path / "study.journal"
    _journal_with_trials(path, 1)
    before = path.read_bytes()
    study = optuna.load_study(study_name="s", storage=make_storage(str(path)))
    monkeypatch.setattr(_file.os, "fsync", _no_space)
    with pytest.raises(OSError) as caught:
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=9.0))
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    message = os_error_message(caught.value)
    assert message is not None and message.startswith(f"cannot write to {path}: no space is left")
    assert path.read_bytes().startswith(before)


def test_after_a_full_disk_a_torn_last_record_still_lets_the_study_be_read(tmp_path, monkeypatch,
                                                                           caplog):
    """The torn record a full disk leaves cannot be set aside while the disk is full: the study
    is still read (every reader skips an unterminated last line), and other damage that cannot be
    set aside is refused with 'free some space', not 'make its folder writable'."""
    from miras_search.study import journal_repair

    path = tmp_path / "study.journal"
    _journal_with_trials(path, 2)
    monkeypatch.setattr(journal_repair, "_write_atomically", _no_space)
    torn = path.read_bytes() + b'{"op_code":4,"worker_id":"w","stu'
    path.write_bytes(torn)
    assert _values(path) == [0.0, 1.0]
    assert "cut short that could not be set aside (No space left on device)" in caplog.text
    assert path.read_bytes() == torn and not _asides(tmp_path)
    damaged = torn + b"\n"  # a complete line that is no record: a writer must not append after it
    path.write_bytes(damaged)
    with pytest.raises(MirasError, match=r"could not be set aside \(No space left.*free some space"):
        make_storage(str(path))
    assert path.read_bytes() == damaged
