"""Paths as users write them: '~' read as the home folder in every path field of a study and in
the command line's path options ($VARS left as written); a study file reached through a symbolic
link reads its inputs beside the link, then beside its target, then in the working directory,
and an error names each place; SQLite storage in a folder that does not exist yet; a broken or
looping link given as the study is read as a file and says what is wrong with it."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
import yaml
from test_study import TINY_SPACE, TINY_TRIAL
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.errors import ConfigError, MirasError
from miras_search.paths import expand_home, input_folders, names_a_file
from miras_search.study import load_study_file, open_study
from miras_search.study.setup import storage_of
from miras_search.study.storage import default_storage, local_file_missing, make_storage, normalise


def _invoke(*args: str, home: Path | None = None) -> tuple[int, str]:
    env = {"COLUMNS": "400", **({"HOME": str(home)} if home is not None else {})}
    result = CliRunner().invoke(app, list(args), env=env)
    assert "Traceback" not in result.output
    return result.exit_code, " ".join(result.output.split())


def _study(folder: Path, **fields) -> Path:
    study = {"type": "study", "name": "tiny", "space": "space.yaml", "trial": TINY_TRIAL,
             "objectives": [{"metric": "val_bpb"}], "sampler": {"kind": "tpe", "anchors": []},
             "pruner": {"kind": "none"}, "trials": 2, "tracking": {"wandb": "off"}, **fields}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A home folder of its own, and a working directory apart from it."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return folder


# ---- '~' ------------------------------------------------------------------------------------
def test_a_leading_tilde_is_the_home_folder_and_variables_stay_as_written(home):
    assert expand_home("~/x/y.journal") == f"{home}/x/y.journal"
    assert expand_home("$HOME/x") == "$HOME/x"  # documented: no variables
    assert expand_home("runs/~/x") == "runs/~/x"  # only a leading '~'
    assert normalise("~/st/t.journal") == f"{home}/st/t.journal"
    assert normalise("~/st/t.db") == f"sqlite:///{home}/st/t.db"
    assert normalise("sqlite:///~/st/t.db") == f"sqlite:///{home}/st/t.db"
    assert normalise("sqlite+pysqlite:///~/t.db") == f"sqlite+pysqlite:///{home}/t.db"
    # what studies were stored under before stays as it was: they resume where they are
    assert normalise("sqlite:////abs/t.db") == "sqlite:////abs/t.db"
    assert normalise("postgresql+psycopg://u@h:5432/db") == "postgresql+psycopg://u@h:5432/db"
    assert normalise("/abs/x.journal") == "/abs/x.journal"
    assert default_storage("~/rr", "t") == f"{home}/rr/t/study.journal"


def test_every_path_field_of_a_study_reads_tilde_as_home(home):
    (home / "sp").mkdir()
    (home / "sp" / "space.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    path = _study(Path("conf"), space="~/sp/space.yaml", run_dir="~/rr", storage="~/st/t.journal")
    study = load_study_file(path)
    assert study.space_path() == home / "sp" / "space.yaml"
    assert study.out_dir() == home / "rr" / "tiny"  # W&B runs, checkpoints, scale outputs
    assert study.checkpoint_dir() == home / "rr" / "tiny" / "checkpoints"
    assert storage_of(study) == f"{home}/st/t.journal"
    assert storage_of(study, "~/other.db") == f"sqlite:///{home}/other.db"
    assert study.storage == "~/st/t.journal" and study.space == "~/sp/space.yaml"  # stored as written
    no_storage = load_study_file(_study(Path("conf2"), space="~/sp/space.yaml", run_dir="~/rr"))
    assert storage_of(no_storage) == f"{home}/rr/tiny/study.journal"
    assert not Path("~").exists()  # nothing named '~' in the working directory


def test_a_study_left_in_a_literal_tilde_folder_is_refused_not_started_over(home):
    (home / "sp").mkdir()
    (home / "sp" / "space.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    old = Path("~/st/t.journal")  # where an earlier version put it: ./~/st/t.journal
    old.parent.mkdir(parents=True)
    old.write_text("")
    study = load_study_file(_study(Path("conf"), space="~/sp/space.yaml", storage="~/st/t.journal"))
    with pytest.raises(MirasError) as caught:
        storage_of(study)
    text = str(caught.value)
    assert f"move {old.absolute()} to {home}/st/t.journal" in text and "Nothing was changed" in text
    assert not (home / "st").exists()
    with pytest.raises(MirasError, match=r"--storage '~/st/t\.journal' starts with '~'"):
        open_study("tiny", "~/st/t.journal")
    (home / "st").mkdir()
    (home / "st" / "t.journal").write_text("")  # once moved (or present), it is used
    assert storage_of(study) == f"{home}/st/t.journal"


def test_command_line_paths_read_tilde_the_shell_left(home):
    code, output = _invoke("schema", "--out=~/schemas", home=home)
    assert code == 0, output
    assert (home / "schemas" / "study.schema.json").is_file()
    assert not Path("~").exists()


# ---- SQLite in a folder that does not exist --------------------------------------------------
def test_sqlite_storage_makes_its_folder_when_written_and_read_commands_create_nothing(tmp_path):
    database = tmp_path / "sq" / "db" / "s.db"
    url = normalise(str(database))
    with pytest.raises(MirasError, match="does not exist"):
        open_study("tiny", str(database))
    assert not (tmp_path / "sq").exists()
    assert local_file_missing(url)
    optuna.create_study(study_name="tiny", storage=make_storage(url))
    assert database.is_file()
    assert open_study("tiny", str(database)).study_name == "tiny"


# ---- a study file reached through a symbolic link ---------------------------------------------
def _linked(tmp_path: Path, **fields) -> tuple[Path, Path]:
    """A study in real/ (its space beside it) and a link to it in elsewhere/."""
    real = _study(tmp_path / "real", run_dir=str(tmp_path / "runs"), **fields)
    (real.parent / "space.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    link = tmp_path / "elsewhere" / "link.yaml"
    link.parent.mkdir()
    link.symlink_to(real)
    return real, link


def test_inputs_of_a_linked_study_are_read_beside_its_target(tmp_path, monkeypatch):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "data.txt").write_text(("The quick brown fox jumps over the lazy dog. " * 20 + "\n") * 160)
    real, link = _linked(tmp_path, trial={**TINY_TRIAL, "data": [{"task": "files", "paths": ["data.txt"]}]})
    monkeypatch.chdir(link.parent)
    assert input_folders("link.yaml") == (link.parent, real.parent)
    study = load_study_file("link.yaml")
    assert study.space_path() == real.parent / "space.yaml"
    assert study.trial.located().data[0].paths == [str(real.parent / "data.txt")]
    assert _invoke("validate", "link.yaml")[0] == 0


def test_a_study_in_a_linked_folder_has_one_folder_to_look_in(tmp_path):
    real, _link = _linked(tmp_path)
    (tmp_path / "linked").symlink_to(real.parent, target_is_directory=True)
    assert input_folders(tmp_path / "linked" / "study.yaml") == (tmp_path / "linked",)
    assert load_study_file(tmp_path / "linked" / "study.yaml").space_path() == tmp_path / "linked" / "space.yaml"


def test_a_file_beside_the_link_comes_first(tmp_path, monkeypatch):
    real, link = _linked(tmp_path)
    beside = dict(TINY_SPACE, name="beside the link")
    (link.parent / "space.yaml").write_text(yaml.safe_dump(beside))
    assert load_study_file(link).load_space().name == "beside the link"
    assert load_study_file(real).load_space().name == "tiny"


def test_a_missing_space_names_every_place_looked_in(tmp_path, monkeypatch):
    real, link = _linked(tmp_path, space="spaces/nowhere.yaml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_study_file(Path("elsewhere/link.yaml"))
    text = str(caught.value)
    assert "space: space file 'spaces/nowhere.yaml' does not exist: looked beside the file that " \
        f"names it ({link.parent / 'spaces/nowhere.yaml'}), beside the file its symbolic link points " \
        f"to ({real.parent / 'spaces/nowhere.yaml'}) and in the working directory " \
        f"({tmp_path / 'spaces/nowhere.yaml'})" in text, text
    code, output = _invoke("validate", str(real))  # no link: the file's folder and the working directory
    assert code == 1 and f"looked beside the file that names it ({real.parent / 'spaces/nowhere.yaml'}) " \
        f"and in the working directory ({tmp_path / 'spaces/nowhere.yaml'})" in output, output


def test_a_missing_point_file_anchor_names_the_places_too(tmp_path):
    _real, link = _linked(tmp_path, sampler={"kind": "tpe", "anchors": ["mine.yaml"]})
    with pytest.raises(ConfigError, match=r"sampler.anchors.0: point file 'mine.yaml' does not exist: "
                                          r"looked beside the file that names it"):
        load_study_file(link)


# ---- broken and looping links given as the study ---------------------------------------------
@pytest.mark.parametrize("command", ["status", "best", "report", "export", "validate", "show", "scale"])
def test_a_looping_link_is_a_file_with_a_loop_not_a_study_name(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    os.symlink("loopB", "loopA")
    os.symlink("loopA", "loopB")
    assert names_a_file("loopA")
    code, output = _invoke(command, "loopA")
    assert code == 1, output
    assert "loopA is a symbolic link whose links loop" in output and "no study" not in output, output


def test_a_broken_link_says_where_it_points(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.symlink("nothing.yaml", "broken")
    code, output = _invoke("status", "broken")
    assert code == 1 and "broken is a symbolic link to 'nothing.yaml', which does not exist" in output, output
    os.mkdir("folder")
    os.symlink("folder", "to-folder")
    assert not names_a_file("to-folder")  # a link to a folder is not a study file
