"""Read commands on a study whose file changed since the study was created: a warning that
names the change, objectives included (their stored direction is the one that ranks)."""

from __future__ import annotations

import yaml
from test_study import run_inline, write_study
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.study import load_study_file, open_study
from miras_search.study.setup import file_changes


def _flip_direction(path):
    data = yaml.safe_load(path.read_text())
    data["objectives"] = [{"metric": "val_bpb", "direction": "maximize"}]
    path.write_text(yaml.safe_dump(data))


def test_a_changed_direction_is_a_file_change_that_says_the_stored_one_is_used(tmp_path):
    path = write_study(tmp_path, trials=2)
    run_inline(path)
    study = open_study(load_study_file(path))
    assert file_changes(study, load_study_file(path)) == []
    _flip_direction(path)
    changes = file_changes(study, load_study_file(path))
    assert changes == ["objective val_bpb: direction minimize -> maximize (the stored minimize is used)"]
    for command in ("status", "best"):
        result = CliRunner().invoke(app, [command, str(path)])
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())
        assert "warning:" in text and "differs from the file study 'tiny' was created with" in text, text
        assert "direction minimize -> maximize (the stored minimize is used)" in text, text
    # best still ranks by the stored direction, as the warning says: the lowest val_bpb first
    shown = CliRunner().invoke(app, ["best", str(path), "--top", "1"]).stdout
    lowest = min(study.get_trials(), key=lambda t: t.values[0])
    assert f"trial: {lowest.number}" in shown, shown


def test_renamed_objectives_are_a_file_change(tmp_path):
    path = write_study(tmp_path, trials=1)
    run_inline(path)
    data = yaml.safe_load(path.read_text())
    data["objectives"] = [{"metric": "val_loss"}]
    path.write_text(yaml.safe_dump(data))
    changes = file_changes(open_study(load_study_file(path)), load_study_file(path))
    assert changes == ["objectives: val_bpb (minimize) -> val_loss (minimize) (the stored objectives are used)"]


def test_run_refuses_a_file_changed_in_several_ways_naming_every_change_at_once(tmp_path):
    """Objectives and budget edited together: one refusal that names both (the objectives were
    refused alone before, so a second run met the budget's refusal) and the way to a new study."""
    path = write_study(tmp_path, trials=1)
    run_inline(path)
    data = yaml.safe_load(path.read_text())
    data["objectives"] = [{"metric": "val_loss"}, {"metric": "params"}]
    data["trial"]["tokens"] = 1024
    path.write_text(yaml.safe_dump(data))
    before = [t.values for t in open_study(load_study_file(path)).get_trials()]
    for command in ("run", "resume"):
        result = CliRunner().invoke(app, [command, str(path), "--inline", "--trials", "2"], env={"COLUMNS": "300"})
        text = " ".join(result.output.split())
        assert result.exit_code == 1 and "Traceback" not in text, text
        assert "trial.tokens: 896 -> 1024" in text, text
        assert "objectives: val_bpb (minimize) -> val_loss (minimize), params (minimize)" in text, text
        assert "is used" not in text and "new name or storage" in text, text
    assert [t.values for t in open_study(load_study_file(path)).get_trials()] == before
