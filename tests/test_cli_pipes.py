"""The command line as scripts and pipes use it: YAML that reads back, tables that fit 80
columns, --watch into a pipe, --version, a light `--help`, one spelling of "how many"."""

from __future__ import annotations

import csv
import io
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import yaml
from _fake_study import fake_study
from typer.testing import CliRunner

from miras_search import __version__
from miras_search.cli import app
from miras_search.points import load_point
from miras_search.report.study_data import open_report_study
from miras_search.report.table import trial_records

runner = CliRunner()  # output is not a terminal here: rich's width is 80, as in a pipe
LONG_NAME = "a-point-whose-name-alone-is-longer-than-eighty-columns-" + "x" * 60


def _widest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def test_show_of_a_point_with_long_lines_writes_yaml_that_reads_back(tmp_path):
    source = tmp_path / "long.yaml"
    source.write_text(f"preset: moneta\nname: {LONG_NAME}\nbias: {{kind: lp, p: 2.5}}\n")
    shown = runner.invoke(app, ["show", str(source)])
    assert shown.exit_code == 0, shown.output
    assert LONG_NAME in shown.output.splitlines()[0]  # one line, not wrapped at 80 columns
    copy = tmp_path / "copy.yaml"
    copy.write_text(shown.output)
    assert runner.invoke(app, ["validate", str(copy)]).exit_code == 0
    assert load_point(copy) == load_point(source)


def test_best_and_sample_print_documents_that_validate_accepts(tmp_path):
    study = fake_study(tmp_path, point_name=LONG_NAME)
    best = runner.invoke(app, ["best", str(study), "--top", "3"])
    assert best.exit_code == 0, best.output
    documents = list(yaml.safe_load_all(best.output))
    assert len(documents) == 3 and documents[2]["name"] == LONG_NAME  # trial 0 (3.5) ranks third
    assert [d["meta"]["objectives"]["val_bpb"] for d in documents] == [3.1, 3.3, 3.5]
    out = tmp_path / "best.yaml"
    out.write_text(best.output)
    checked = runner.invoke(app, ["validate", str(out)])
    assert checked.exit_code == 0 and "3 points" in checked.output, checked.output

    sampled = runner.invoke(app, ["sample", str(tmp_path / "space.yaml"), "-n", "4"])
    (tmp_path / "sampled.yaml").write_text(sampled.output)
    assert "4 points" in runner.invoke(app, ["validate", str(tmp_path / "sampled.yaml")]).output


def test_validate_names_the_bad_document_of_several(tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text("preset: moneta\n---\npreset: moneta\nbias: {kind: lp, p: 9}\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "(document 2)" in result.output and "bias.p (line 4)" in result.output


@pytest.mark.parametrize(("text", "points"), [
    ("%YAML 1.1\n---\npreset: moneta\n", 1),                      # a directive before the document
    ("--- {preset: moneta}\n--- {preset: yaad}\n", 2),             # documents on their marker's line
    ("--- # first\npreset: moneta\n...\n---\npreset: yaad\n", 2),  # a comment, an end marker
    ("preset: moneta\n---\n\n---\npreset: yaad\n---\n", 2),        # empty documents are skipped
])
def test_validate_splits_documents_as_yaml_does(tmp_path, text, points):
    path = tmp_path / "points.yaml"
    path.write_text(text)
    assert len([d for d in yaml.safe_load_all(text) if d is not None]) == points
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert ("2 points" if points == 2 else "(point)") in result.output


def test_a_document_marker_inside_a_quoted_value_is_a_syntax_error_at_its_line(tmp_path):
    path = tmp_path / "quoted.yaml"
    path.write_text('preset: moneta\nname: "a\n---\nb"\n')
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "(line 3): YAML syntax error" in result.output and "starts on line 2" in result.output


def test_version_and_a_help_that_imports_neither_torch_nor_optuna():
    assert runner.invoke(app, ["--version"]).output.strip() == f"miras-search {__version__}"
    probe = ("import sys, miras_search.cli; "
             "print(sorted(m for m in ('torch', 'optuna', 'matplotlib', 'ray', 'wandb') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_show_suggests_the_preset_for_a_misspelt_name():
    result = runner.invoke(app, ["show", "mooneta"])
    assert result.exit_code == 1
    assert "did you mean 'moneta'?" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command", ["best", "export", "confirm", "report", "compare"])
def test_how_many_is_top_or_n_everywhere(command):
    shown = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert "--top" in shown.output and "-n" in shown.output and " -k " not in shown.output


def test_status_and_the_leaderboard_fit_80_columns(tmp_path):
    study = fake_study(tmp_path)
    status = runner.invoke(app, ["status", str(study)])
    assert status.exit_code == 0 and _widest(status.output) <= 80, status.output
    assert "4 complete" in status.output and "1 failed" in status.output

    from rich.console import Console

    from miras_search.report.leaderboard import leaderboard_table
    from miras_search.report.study_data import study_objectives, study_rows

    opened = open_report_study(str(study), None)
    rows = [r for r in study_rows(opened) if r.rank is not None]
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(leaderboard_table(rows, study_objectives(opened), width=80))
    text = console.export_text()
    assert _widest(text) <= 80 and "mlp" in text and "…" not in text


def test_status_watch_into_a_pipe_prints_the_table(tmp_path):
    study = fake_study(tmp_path)
    env = {**os.environ, "COLUMNS": "80"}
    # a child inherits an ignored SIGINT (an earlier test in this process may leave it ignored),
    # and Python then never raises KeyboardInterrupt: start it with the default disposition
    proc = subprocess.Popen([sys.executable, "-m", "miras_search", "status", str(study), "--watch"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120  # a busy CI machine imports slowly
    seen = b""
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline and b"best so far" not in seen:
        time.sleep(0.5)
        seen += proc.stdout.read() or b""
    proc.send_signal(signal.SIGINT)
    # communicate drains both pipes: a child blocked on a full stderr pipe would never exit
    os.set_blocking(proc.stdout.fileno(), True)
    rest, _ = proc.communicate(timeout=120)
    seen += rest or b""
    assert b"best so far" in seen and b"4 complete" in seen


def test_csv_export_has_every_trial_with_exact_values(tmp_path):
    study = fake_study(tmp_path, values=[3.123456789, 2.5])
    result = runner.invoke(app, ["export", str(study), "--csv", "-"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert float(rows[0]["val_bpb"]) == 3.123456789 and rows[1]["rank"] == "1"
    assert rows[2]["failure"] == "nan" and rows[0]["metric:peak_mem_mb"] == "100.0"
    written = runner.invoke(app, ["export", str(study), "--csv", str(tmp_path / "t.csv")])
    assert written.exit_code == 0 and (tmp_path / "t.csv").read_text() == result.output
    records = trial_records(open_report_study(str(study), None))
    assert records[0]["param:memory.kind"] in ("matrix", "mlp")


def test_dataframe_export(tmp_path):
    pandas = pytest.importorskip("pandas")
    from miras_search.report.table import trials_dataframe

    frame = trials_dataframe(open_report_study(str(fake_study(tmp_path, values=[3.0, 2.0])), None))
    assert isinstance(frame, pandas.DataFrame) and list(frame.index) == [0, 1, 2]
    assert frame.loc[1, "val_bpb"] == 2.0


def test_compare_two_studies(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = fake_study(tmp_path / "a", name="a", values=[3.0, 3.1, 3.2, 3.3, 3.4])
    b = fake_study(tmp_path / "b", name="b", values=[4.0, 4.1, 4.2, 4.3, 4.4])
    result = runner.invoke(app, ["compare", str(a), str(b)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "median 3.2 (a) vs 4.2 (b); a scores better" in " ".join(result.output.split())
    from scipy.stats import mannwhitneyu

    p = mannwhitneyu([3.0, 3.1, 3.2, 3.3, 3.4], [4.0, 4.1, 4.2, 4.3, 4.4], alternative="two-sided").pvalue
    assert f"p = {p:.3g}" in result.output
    assert _widest(result.output.split("val_bpb: median")[0]) <= 80


def _cli(args, tmp_path, **env):
    return subprocess.run([sys.executable, "-m", "miras_search", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=tmp_path, timeout=300)


def test_a_zero_or_tiny_columns_is_taken_as_80_not_as_no_room(tmp_path):
    # rich reads COLUMNS when the CLI's consoles are made (at import): a child process sees it so
    study = fake_study(tmp_path)
    shown = _cli(["status", str(study)], tmp_path, COLUMNS="0")
    assert shown.returncode == 0 and "4 complete" in shown.stdout, shown
    assert 40 <= _widest(shown.stdout) <= 80
    missing = _cli(["status", str(tmp_path / "nonexist.yaml")], tmp_path, COLUMNS="0", LINES="0")
    assert missing.returncode == 1 and "error:" in missing.stderr and "nonexist.yaml" in missing.stderr
    helped = _cli(["--help"], tmp_path, COLUMNS="0")  # Typer's own console
    assert helped.returncode == 0 and "Usage" in helped.stdout and "status" in helped.stdout, helped
    usage = _cli(["run"], tmp_path, COLUMNS="0")
    assert usage.returncode == 2 and "Missing argument" in usage.stderr, usage

    from miras_search.cli.app import FALLBACK_WIDTH, MIN_WIDTH, _Console

    for columns, width in (("0", FALLBACK_WIDTH), ("3", FALLBACK_WIDTH), (str(MIN_WIDTH), MIN_WIDTH), ("120", 120)):
        made = _Console(file=io.StringIO(), _environ={"COLUMNS": columns})
        assert made.width == width and made.options.max_width == width


def test_a_reader_that_stops_early_ends_yaml_and_csv_output_quietly(tmp_path):
    study = fake_study(tmp_path)
    for args in (["best", str(study), "--top", "3"], ["export", str(study), "--csv", "-"],
                 ["sample", str(tmp_path / "space.yaml"), "-n", "20000"]):
        shell = " ".join([shlex.quote(sys.executable), "-m", "miras_search", *map(shlex.quote, args)])
        done = subprocess.run(["bash", "-c", f"set -o pipefail; {shell} | head -1"], capture_output=True,
                              text=True, cwd=tmp_path, timeout=300)
        assert done.returncode == 0 and done.stderr == "" and len(done.stdout.splitlines()) == 1, (args, done)


def _miras_shell(*args) -> str:
    return " ".join([shlex.quote(sys.executable), "-m", "miras_search", *map(shlex.quote, map(str, args))])


def test_status_watch_ends_when_its_reader_has_gone(tmp_path):
    # the study is finished: its table never changes, so only the closed pipe can end the watch
    study = fake_study(tmp_path)
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {_miras_shell('status', study, '--watch')} | head -1"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=240)
    assert done.returncode == 0 and done.stdout.startswith("-- ") and done.stderr == "", done


def test_status_watch_on_a_dumb_terminal_prints_the_table(tmp_path):
    # TERM=dumb (Emacs' shell): a terminal where rich's Live draws nothing until it stops
    import pty

    study = fake_study(tmp_path)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "miras_search", "status", str(study), "--watch"],
                            stdout=follower, stderr=subprocess.DEVNULL, cwd=tmp_path,
                            env={**os.environ, "TERM": "dumb", "COLUMNS": "80"})
    os.close(follower)
    seen, deadline = b"", time.monotonic() + 120
    try:
        while time.monotonic() < deadline and b"best so far" not in seen:
            try:
                seen += os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
    finally:
        proc.kill()
        proc.wait()
        os.close(leader)
    assert b"best so far" in seen and b"4 complete" in seen


def test_run_into_a_pipe_prints_a_line_per_trial_as_it_finishes(tmp_path):
    from test_study import write_study

    path = write_study(tmp_path, trials=3)
    proc = subprocess.Popen([sys.executable, "-m", "miras_search", "run", str(path), "--inline"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    lines, running_at_first_trial = [], None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if running_at_first_trial is None and " trial 0 " in line:
            running_at_first_trial = proc.poll() is None
    assert proc.wait(timeout=300) == 0, lines
    text = "\n".join(lines)
    assert lines[0] == "study tiny: 0/3 finished trials; a line per trial as it finishes", text
    trial_lines = [line for line in lines if line.startswith("[0:")]
    assert [line.split()[2] for line in trial_lines] == ["0", "1", "2"], text
    assert all(" complete: val_bpb " in line for line in trial_lines), text
    assert trial_lines[-1].split("; ")[1].startswith("3/3 finished, best val_bpb ")
    assert running_at_first_trial, text  # shown while the study still ran, not at its end
    assert "━" not in text  # no progress bar drawn into the pipe


def test_run_whose_reader_stops_early_still_finishes_the_study(tmp_path):
    from test_study import trials_of, write_study

    path = write_study(tmp_path, trials=2)
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {_miras_shell('run', path, '--inline')} | head -1"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done
    assert done.stdout.startswith("study tiny: 0/2 finished trials")
    assert [t.state.name for t in trials_of(path)] == ["COMPLETE", "COMPLETE"]


@pytest.mark.parametrize("width", [30, 40, 50, 60, 70, 80])
def test_narrow_leaderboards_and_status_leave_out_columns_rather_than_cut_numbers(tmp_path, width):
    from rich.console import Console

    from miras_search.report.leaderboard import board_rows, leaderboard_table
    from miras_search.report.study_data import study_objectives, study_rows

    study = fake_study(tmp_path, values=[3.123456, 3.654321, 4.5, 2.875])
    opened = open_report_study(str(study), None)
    objectives = study_objectives(opened)
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(leaderboard_table(board_rows(study_rows(opened), objectives), objectives, width=width))
    text = console.export_text()
    assert _widest(text) <= width and "…" not in text, text
    assert all(value in text for value in ("2.875", "3.123", "3.654", "4.5")) and "val_bpb ↓" in text
    assert ("memory" in text) == (width >= 50), text  # the axes go last but for the rank and values

    shown = runner.invoke(app, ["status", str(study)], env={"COLUMNS": str(width)})
    assert shown.exit_code == 0 and _widest(shown.output) <= width and "…" not in shown.output, shown.output
    assert "2.875" in shown.output and "val_bpb ↓" in shown.output


@pytest.mark.parametrize(("target", "words"), [
    (5, "1 queued, not run: the study's target is 5 finished trials (`--trials N` runs them)"),
    (8, "1 waiting"),
])
def test_status_says_queued_trials_past_the_target_are_not_run(tmp_path, target, words):
    # a study file whose `trials` is below its anchors leaves anchors queued after its last run
    import optuna

    study = fake_study(tmp_path)  # 4 complete + 1 failed: 5 finished
    stored = optuna.load_study(study_name="fake", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "fake.journal"))))
    stored.set_user_attr("run", {"target": target})
    stored.enqueue_trial({}, user_attrs={"anchor": "memora"})
    shown = runner.invoke(app, ["status", str(study)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and f"5/{target} finished: 4 complete, 1 failed, {words};" in shown.output, shown.output


def test_train_into_a_pipe_prints_a_line_per_tenth_of_the_steps():
    from miras_search.cli.app import console
    from miras_search.cli.training import _step_lines
    from miras_search.model.quick_train import StepInfo

    show = _step_lines("moneta")
    with console.capture() as captured:
        for step in range(1, 96):
            show(StepInfo(step=step, steps=95, loss=3.25, lr=0.001, tokens=step * 64, seconds=step * 2.0))
    lines = captured.get().splitlines()
    assert lines[0] == "[0:00:02] moneta step 1/95 loss 3.250" and lines[-1].endswith("step 95/95 loss 3.250")
    assert 10 <= len(lines) <= 12, lines  # the first, one per tenth, the last
