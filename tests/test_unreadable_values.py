"""A stored trial whose objective value, metric or curve was edited by hand into something that is
not a number: every read command still works, shows the trial as unreadable with one warning
naming the trial and the value, shows everything else, and leaves the storage as it was."""

from __future__ import annotations

import csv
import hashlib
import sqlite3
from pathlib import Path

import optuna
import pytest
import yaml
from _fake_study import fake_study
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.study import open_study
from miras_search.study.readable import UNREADABLE

_ABC = 'trial 1 stores the objective value "abc", not a number'
_NULL = "trial 2 stores the objective value null, not a number"


def _edit_journal(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def _edited_study(folder: Path) -> Path:
    """The fake study (values 3.5, 3.1, 3.3, 4.0 and a failed trial) with trial 1's value edited
    into "abc" and trial 2's into null."""
    folder.mkdir()
    path = fake_study(folder)
    journal = folder / "fake.journal"
    _edit_journal(journal, '"trial_id":1,"state":1,"values":[3.1]', '"trial_id":1,"state":1,"values":["abc"]')
    _edit_journal(journal, '"trial_id":2,"state":1,"values":[3.3]', '"trial_id":2,"state":1,"values":[null]')
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result, " ".join(result.output.split())


def _warned_once(text: str, *notes: str) -> None:
    for note in notes:
        assert text.count(note) == 1, text
    assert "the commands show it as a failed trial ('unreadable') and leave it out of the ranking" in text, text


def test_status_shows_the_unreadable_trials_as_failed_and_the_rest(tmp_path):
    path = _edited_study(tmp_path / "s")
    before = _digest(tmp_path / "s" / "fake.journal")
    result, text = _run("status", str(path))
    _warned_once(" ".join(result.stderr.split()), _ABC, _NULL)
    assert "2 complete, 3 failed" in text, text
    table = " ".join(result.stdout.split())
    assert "│ unreadable │ 2 │ trial 2 stores the objective value null" in table, table
    assert "│ 3.5 │ #0 │" in table, table  # the best readable trial
    assert _digest(tmp_path / "s" / "fake.journal") == before


def test_best_ranks_only_the_readable_trials(tmp_path):
    path = _edited_study(tmp_path / "s")
    result, text = _run("best", str(path), "--top", "5")
    _warned_once(text, _ABC, _NULL)
    shown = [yaml.safe_load(doc)["meta"]["trial"] for doc in result.stdout.split("---\n")]
    assert shown == [0, 3]


def test_export_csv_writes_every_trial_the_unreadable_ones_as_failed(tmp_path):
    path = _edited_study(tmp_path / "s")
    out = tmp_path / "trials.csv"
    _, text = _run("export", str(path), "--csv", str(out))
    _warned_once(text, _ABC, _NULL)
    rows = {row["number"]: row for row in csv.DictReader(out.open())}
    assert [rows[n]["state"] for n in "01234"] == ["COMPLETE", "FAIL", "FAIL", "COMPLETE", "FAIL"]
    assert rows["1"]["failure"] == UNREADABLE and '"abc"' in rows["1"]["reason"]
    assert rows["1"]["val_bpb"] == "" and rows["0"]["val_bpb"] == "3.5"
    assert rows["1"]["metric:tokens_per_s"] == "1001.0"  # its readable metrics are still shown


def test_report_and_compare_still_work(tmp_path):
    path = _edited_study(tmp_path / "s")
    (tmp_path / "o").mkdir()
    other = fake_study(tmp_path / "o", name="other")
    _, text = _run("compare", str(path), str(other))
    _warned_once(text, _ABC, _NULL)
    assert "trials (complete) │ 5 (2) │ 5 (4)" in text, text
    _, text = _run("report", str(path), "--out", str(tmp_path / "report"))
    _warned_once(text, _ABC, _NULL)
    assert (tmp_path / "report" / "index.html").is_file()


def test_unreadable_metrics_and_curve_points_are_left_out_with_a_warning(tmp_path):
    (tmp_path / "s").mkdir()
    path = fake_study(tmp_path / "s")
    journal = tmp_path / "s" / "fake.journal"
    text = journal.read_text()
    first = text.index('"metrics":{"val_bpb":3.3,')
    journal.write_text(text[:first] + text[first:].replace('"tokens_per_s":1002.0', '"tokens_per_s":"fast"', 1)
                       .replace('"curve":[[4,5.0],[8,4.5]]', '"curve":[[4,"x"],[8,4.5]]', 1))
    out = tmp_path / "trials.csv"
    _, shown = _run("export", str(path), "--csv", str(out))
    assert shown.count('trial 2 stores the metric tokens_per_s = "fast", not a number') == 1, shown
    assert "the commands leave those values out" in shown, shown
    rows = {row["number"]: row for row in csv.DictReader(out.open())}
    assert rows["2"]["state"] == "COMPLETE" and rows["2"]["rank"] == "2" and rows["2"]["metric:tokens_per_s"] == ""
    trial = open_study(path).trials[2]
    assert trial.user_attrs["curve"] == [[8, 4.5]] and "tokens_per_s" not in trial.user_attrs["metrics"]


def test_a_null_value_in_a_sqlite_study_is_unreadable_not_a_crash(tmp_path):
    (tmp_path / "j").mkdir()
    source = fake_study(tmp_path / "j")
    db = tmp_path / "fake.db"
    optuna.copy_study(from_study_name="fake", to_storage=f"sqlite:///{db}",
                      from_storage=JournalStorage(JournalFileBackend(str(tmp_path / "j" / "fake.journal"))))
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE trial_values SET value = NULL WHERE value = 3.3")
    before = _digest(db)
    result, text = _run("status", str(source), "--storage", f"sqlite:///{db}")
    assert " ".join(result.stderr.split()).count(_NULL) == 1, result.stderr
    assert "3 complete, 2 failed" in text, text
    assert _digest(db) == before


@pytest.mark.parametrize("edited", ['[true]', '[3.1, 2.0]', '["3.1"]'])
def test_other_non_numbers_are_unreadable_too(tmp_path, edited):
    path = _edited_study(tmp_path / "s")
    _edit_journal(tmp_path / "s" / "fake.journal", '"values":["abc"]', f'"values":{edited}')
    complete = [t.number for t in open_study(path).get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
    assert complete == [0, 3]


def test_resume_warns_and_runs_on_with_the_unreadable_trials_kept_as_stored(tmp_path, monkeypatch):
    path = _edited_study(tmp_path / "s")
    monkeypatch.chdir(tmp_path)
    result, text = _run("resume", str(path), "--inline", "--wandb", "off", "--trials", "6")
    _warned_once(" ".join(result.stderr.split()), _ABC, _NULL)
    assert "6/6 finished trials (1 ran" in text, text
    journal = (tmp_path / "s" / "fake.journal").read_text()
    assert '"values":["abc"]' in journal and '"values":[null]' in journal


_NO_POINT = ("trial 1 stores no 'point' user attribute (a study made outside miras-search, or the "
             "journal record that stored it was damaged and set aside), so its model cannot be rebuilt")


def _study_that_lost_a_point(folder: Path) -> Path:
    """The fake study (values 3.5, 3.1, 3.3, 4.0 and a failed trial) whose journal line storing
    trial 1's point is garbage: the journal repair sets it aside, and trial 1, ranked first,
    keeps its value but no point."""
    folder.mkdir()
    path = fake_study(folder)
    journal = folder / "fake.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    (line,) = [i for i, text in enumerate(lines) if text.startswith(b'{"op_code":8,') and
               b'"trial_id":1,"user_attr":{"point":' in text]
    lines[line] = b"GARBAGE LINE\n"
    journal.write_bytes(b"".join(lines))
    return path


def _left_out_once(text: str, command: str) -> None:
    assert text.count(_NO_POINT) == 1, text
    assert f"{command} leaves it out and takes the next ranked trial" in text, text
    assert "Traceback" not in text


def test_best_leaves_out_a_trial_that_lost_its_point_and_shows_the_others(tmp_path):
    """One trial whose 'point' record was damaged and set aside failed `best` for the whole
    study ("trial 1 stores no 'point' user attribute; cannot rebuild it", exit 1)."""
    path = _study_that_lost_a_point(tmp_path / "s")
    result, _ = _run("best", str(path), "--top", "5")
    _left_out_once(" ".join(result.stderr.split()), "`miras best`")
    shown = [yaml.safe_load(doc)["meta"]["trial"] for doc in result.stdout.split("---\n")]
    assert shown == [2, 0, 3]
    assert list((tmp_path / "s").glob("fake.journal.damaged-*"))  # what the repair set aside is kept


def test_export_leaves_out_a_trial_that_lost_its_point_and_writes_the_next(tmp_path):
    path = _study_that_lost_a_point(tmp_path / "s")
    out = tmp_path / "points"
    _, text = _run("export", str(path), "--top", "2", "--out", str(out))
    _left_out_once(text, "`miras export`")
    assert sorted(p.name for p in out.iterdir()) == ["rank02-trial2.yaml", "rank03-trial0.yaml"]
    assert yaml.safe_load((out / "rank02-trial2.yaml").read_text())["meta"]["trial"] == 2
    _, text = _run("report", str(path), "--out", str(tmp_path / "report"))  # needs no point
    assert (tmp_path / "report" / "index.html").is_file()


def test_confirm_and_scale_pass_over_a_trial_that_lost_its_point(tmp_path):
    from miras_search.report.confirm import confirm_points
    from miras_search.scale.points import resolve_points

    study = open_study(_study_that_lost_a_point(tmp_path / "s"))
    rows, _, _, passed = confirm_points(study, 2)
    assert [row.number for row in rows] == [2, 0] and [trial.number for trial in passed] == [1]
    scaled = resolve_points([], 2, study, (tmp_path,))  # took the default point for trial 1
    assert [point.trial for point in scaled] == [2, 0]


def test_a_study_none_of_whose_ranked_trials_has_a_point_says_so_in_one_paragraph(tmp_path):
    journal = str(tmp_path / "plain.journal")
    study = optuna.create_study(study_name="plain", storage=JournalStorage(JournalFileBackend(journal)))
    for value in (1.0, 2.0):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=value))
    for command, outcome in (("best", "`miras best` has no point to show"), ("export", "nothing to export")):
        result = CliRunner().invoke(app, [command, "plain", "--storage", journal, "--out", str(tmp_path / "o")]
                                    if command == "export" else [command, "plain", "--storage", journal])
        text = " ".join(result.output.split())
        assert result.exit_code == 1, text
        assert ("study 'plain' has no ranked trial whose model can be rebuilt: trial 0 stores no 'point' "
                "user attribute") in text, text
        assert f"(and 1 other ranked trial(s)); {outcome}" in text and "Traceback" not in text, text
    assert not list(tmp_path.glob("o/*.yaml"))  # no point file written
