"""The report, the terminal leaderboard and the export rank a study as `miras best` does: trials
that break a limit are marked and never ranked or starred, duplicates take no rank, the Pareto
front is over feasible trials only; plus the report's smaller promises (reasons of trials pruned
by a limit, readable axes, quiet Optuna warnings, export's exit code).

The studies here are written straight into a journal in the study layer's storage contract
(records.py): no training, so every case is exact and fast.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from optuna.distributions import FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial
from rich.console import Console
from test_report import _parse
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.presets import preset
from miras_search.report import build, export_top
from miras_search.report.build import build_report
from miras_search.report.importance import study_importances
from miras_search.report.plots import pareto_figure
from miras_search.report.study_data import AXES, ObjectiveInfo, TrialRow, study_objectives
from miras_search.study.summary import pareto_front, ranked

NAME = "limits"
PARAMS_MAX = 165_000.0
BPB_MAX = 5.36
OBJECTIVES = [{"name": "val_bpb", "direction": "minimize"}, {"name": "tokens_per_s", "direction": "maximize"}]
LIMITS = [{"metric": "params", "max": PARAMS_MAX}, {"metric": "val_bpb", "max": BPB_MAX}]


def _point(lr: float) -> dict[str, Any]:
    """A valid point (Moneta with its own learning rate, so every trial is a distinct model)."""
    point = preset("moneta")
    return point.model_copy(update={"train": point.train.model_copy(update={"lr": lr})}).model_dump(mode="json")


def _complete(bpb: float, tps: float, params: float, lr: float, **attrs: Any) -> optuna.trial.FrozenTrial:
    """A trained trial with its metrics and the violation of each limit (<= 0: inside)."""
    point = _point(lr)
    return create_trial(
        state=TrialState.COMPLETE, values=[bpb, tps], params={"train.lr": lr},
        distributions={"train.lr": FloatDistribution(1e-4, 1e-1)},
        user_attrs={"point": point, "point_key": f"lr={lr}", "axes": {a: point[a]["kind"] for a in AXES},
                    "anchor": None, "metrics": {"val_bpb": bpb, "tokens_per_s": tps, "params": params},
                    "curve": [[2, 6.0], [4, 5.5]],
                    "constraints": [params - PARAMS_MAX, bpb - BPB_MAX], **attrs},
    )


def _stopped(state: TrialState, failure: str, reason: str, **attrs: Any) -> optuna.trial.FrozenTrial:
    """A trial closed without a result: pruned before training by a limit, or failed."""
    point = _point(0.5)
    return create_trial(state=state, user_attrs={
        "point": point, "axes": {a: point[a]["kind"] for a in AXES}, "anchor": attrs.pop("anchor", None),
        "failure": failure, "reason": reason, "curve": [], **attrs})


LIMIT_REASON = "params = 170,000 breaks params <= 165000"


def _trials() -> list[optuna.trial.FrozenTrial]:
    """#0 moneta pruned by the params limit; #1, #2 the feasible front; #3 breaks val_bpb but
    has the best tokens/s (it would be on a front that ignored limits); #4 a duplicate of #1;
    #5 feasible, dominated by #1; #6 failed."""
    return [
        _stopped(TrialState.PRUNED, "limit", LIMIT_REASON, anchor="moneta",
                 metrics={"params": 170_000.0, "state_size": 4096.0}, constraints=[5000.0, 0.0]),
        _complete(5.29, 1800.0, 144_268.0, 0.003),
        _complete(5.35, 4450.0, 144_008.0, 0.002),
        _complete(5.37, 8170.0, 127_624.0, 0.004),
        _complete(5.29, 1800.0, 144_268.0, 0.003, reused_from=1),
        _complete(5.34, 1500.0, 160_392.0, 0.005),
        _stopped(TrialState.FAIL, "nan", "the training loss is nan at step 3"),
    ]


def _make_study(folder: Path, trials: list[optuna.trial.FrozenTrial], name: str = NAME) -> Path:
    """A journal holding one study with the contract's study attrs; returns the journal's path."""
    journal = folder / "study.journal"
    study = optuna.create_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(journal))),
                                directions=["minimize", "maximize"])
    study.set_user_attr("objectives", OBJECTIVES)
    study.set_user_attr("study_file", {"type": "study", "name": name, "objectives": OBJECTIVES, "limits": LIMITS})
    for trial in trials:
        study.add_trial(trial)
    return journal


@pytest.fixture(scope="module")
def journal(tmp_path_factory) -> Path:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return _make_study(tmp_path_factory.mktemp("limits"), _trials())


@pytest.fixture(scope="module")
def study(journal: Path) -> optuna.Study:
    return optuna.load_study(study_name=NAME, storage=JournalStorage(JournalFileBackend(str(journal))))


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})


def test_the_leaderboard_ranks_as_best_and_marks_trials_that_break_a_limit(study, tmp_path):
    report = build_report(study, tmp_path / "report")
    rows = [cells for _, cells in _parse(report.html).tables["leaderboard"]]
    assert [int(c[1]) for c in rows] == [1, 2, 5, 3]  # best's order, then the infeasible trial
    assert [int(c[1]) for c in rows[:3]] == [t.number for t in ranked(study)]
    assert [c[0] for c in rows] == ["1", "2", "3", "-"]  # no rank for #3, none taken by duplicate #4
    assert {int(c[1]) for c in rows if c[-2] == "yes"} == {t.number for t in pareto_front(study)} == {1, 2}
    assert rows[3][-1] == "val_bpb = 5.37 breaks val_bpb <= 5.36"
    assert all(c[-1] == "" for c in rows[:3])
    classes = [cls for cls, _ in _parse(report.html).tables["leaderboard"]]
    assert classes == ["searched", "searched", "searched", "infeasible"]


def test_the_terminal_leaderboard_agrees(journal):
    result = _cli("report", NAME, "--storage", str(journal), "--out", str(journal.parent / "out"))
    assert result.exit_code == 0, result.output
    lines = {int(found.group(1)): line for line in result.output.splitlines()
             if (found := re.search(r"│ #(\d+) ", line))}
    assert sorted(lines) == [1, 2, 3, 5]  # the duplicate #4 is not listed
    assert [lines[n].split("│")[1].strip() for n in (1, 2, 5, 3)] == ["1", "2", "3", "-"]
    assert {n for n, line in lines.items() if "★" in line} == {1, 2}
    header = next(line for line in result.output.splitlines() if "rank" in line)
    assert header.split("┃")[-2].strip() == "breaks"
    assert lines[3].split("│")[-2].strip() == "val_bpb <= 5.36"  # the rule; its value has a column


def test_a_narrow_terminal_drops_metric_columns_before_it_cuts_the_axes(journal, monkeypatch):
    # a pipe (80 columns, as a CI log) and a terminal (faked here, colourless) both drop columns
    # to fit, rather than letting rich wrap every cell
    def columns(output: str) -> int:
        return next(line for line in output.splitlines() if "rank" in line).count("┃") - 1

    args = ["report", NAME, "--storage", str(journal), "--out"]
    piped = CliRunner().invoke(app, [*args, str(journal.parent / "piped")])
    assert all(len(line) <= 80 for line in piped.output.splitlines() if "│ #" in line)
    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    terminal = CliRunner().invoke(app, [*args, str(journal.parent / "terminal")], env={"COLUMNS": "125"})
    assert columns(piped.output) < columns(terminal.output)
    wide = _cli("report", NAME, "--storage", str(journal), "--out", str(journal.parent / "wide"))
    narrow = CliRunner().invoke(app, ["report", NAME, "--storage", str(journal), "--out",
                                      str(journal.parent / "narrow")], env={"COLUMNS": "125"})
    assert narrow.exit_code == 0, narrow.output
    rows = [line for line in narrow.output.splitlines() if "│ #" in line]
    assert rows and all(len(line) <= 125 for line in rows)
    assert "…" not in narrow.output  # nothing is cut to an ellipsis
    assert "params" in wide.output and "params" not in narrow.output.split("leaderboard")[1]
    assert "val_bpb <= 5.36" in narrow.output


def _panels(fig: Figure) -> dict[str, Axes]:
    return {ax.get_xlabel(): ax for ax in fig.axes}


def _points(ax: Axes, label: str | None) -> set[tuple[float, float]]:
    """The (x, y) points of the scatters labelled ``label`` (None: the unlabelled dots)."""
    found: set[tuple[float, float]] = set()
    for collection in ax.collections:
        name = collection.get_label()
        if (label is None and name.startswith("_")) or name == label:
            found |= {(float(x), float(y)) for x, y in collection.get_offsets()}
    return found


@pytest.fixture
def drawn(study, tmp_path, monkeypatch) -> Figure:
    """The figure build_report saved as pareto.png."""
    figures: list[Figure] = []

    def keep(*args: Any, **kwargs: Any) -> Figure | None:
        figures.append(pareto_figure(*args, **kwargs))
        return figures[-1]

    monkeypatch.setattr(build, "pareto_figure", keep)
    build_report(study, tmp_path / "report")
    assert len(figures) == 1 and figures[0] is not None
    return figures[0]


def test_pareto_png_stars_only_the_feasible_front_and_draws_each_point_once(drawn):
    speed = _panels(drawn)["tokens / s (train)"]
    assert _points(speed, "study Pareto front") == {(1800.0, 5.29), (4450.0, 5.35)}
    assert _points(speed, "breaks a limit") == {(8170.0, 5.37)}
    dots = [tuple(p) for c in speed.collections if c.get_label().startswith("_") for p in c.get_offsets()]
    assert sorted(dots) == [(1500.0, 5.34), (1800.0, 5.29), (4450.0, 5.35)]  # duplicate #4 not drawn


def _overlaps(ax: Axes) -> tuple[list[str], bool]:
    """The x tick labels drawn (the figure rendered as savefig renders it), and whether any
    two of them overlap."""
    canvas = FigureCanvasAgg(ax.figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    low, high = ax.get_xlim()
    ticks = [t for t in (*ax.xaxis.get_major_ticks(), *ax.xaxis.get_minor_ticks())
             if t.label1.get_visible() and t.label1.get_text() and low <= t.get_loc() <= high]
    boxes = [t.label1.get_window_extent(renderer) for t in ticks]
    clash = any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    return [t.label1.get_text() for t in ticks], clash


def test_the_parameters_axis_has_readable_labels_inside_one_decade(drawn):
    labels, clash = _overlaps(_panels(drawn)["parameters"])
    assert len(labels) >= 3 and not clash, labels  # 127k .. 160k: log minor labels ran together


def test_the_parameters_axis_is_logarithmic_over_decades():
    rows = [TrialRow(number=i, state="COMPLETE", values=(5.0 + i / 10, 1000.0 * (i + 1)), axes={a: "x" for a in AXES},
                     anchor=None, point=None, metrics={"params": params, "tokens_per_s": 1000.0 * (i + 1)})
            for i, params in enumerate([2e4, 3e5, 4e6])]
    fig = pareto_figure(rows, ObjectiveInfo("val_bpb", "minimize"), set(), set())
    ax = _panels(fig)["parameters"]
    labels, clash = _overlaps(ax)
    assert ax.get_xscale() == "log" and not clash
    assert {"100k", "1M"} <= set(labels), labels


def test_export_writes_what_best_shows_with_ranks_that_do_not_skip(journal, tmp_path):
    result = _cli("export", NAME, "--storage", str(journal), "--top", "10", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.glob("*.yaml"))
    assert names == ["rank01-trial1.yaml", "rank02-trial2.yaml", "rank03-trial5.yaml"]
    shown = _cli("best", NAME, "--storage", str(journal), "-n", "10")
    assert shown.exit_code == 0, shown.output
    best_order = [int(n) for n in re.findall(r"^  trial: (\d+)$", shown.output, re.M)]
    exported = [yaml.safe_load((tmp_path / n).read_text())["meta"] for n in names]
    assert [m["trial"] for m in exported] == best_order == [1, 2, 5]
    assert [m["rank"] for m in exported] == [1, 2, 3]


def test_export_top_n_is_best_n(study, tmp_path):
    paths = export_top(study, 2, tmp_path)
    assert [p.name for p in paths] == ["rank01-trial1.yaml", "rank02-trial2.yaml"]


def test_the_report_gives_the_reasons_of_trials_pruned_by_a_limit(study, tmp_path):
    report = build_report(study, tmp_path / "report")
    reasons = {int(c[0]): c[1:] for _, c in _parse(report.html).tables["failures"]}
    assert reasons == {0: ["moneta", "pruned: limit", LIMIT_REASON],
                       6: ["", "failed: nan", "the training loss is nan at step 3"]}


def test_export_with_nothing_to_export_fails_as_best_does(tmp_path):
    journal = _make_study(tmp_path, _trials()[:1], name="nothing")
    for command in ("export", "best"):
        result = _cli(command, "nothing", "--storage", str(journal), *(["--out", str(tmp_path / "p")] if command == "export" else []))
        assert result.exit_code == 1, (command, result.output)
        assert "no complete (feasible) trial yet" in result.output, result.output
    assert not list((tmp_path / "p").glob("*.yaml"))


def test_importances_keep_optunas_few_trials_warnings_quiet(tmp_path):
    """PED-ANOVA warns when a parameter's distribution differs between trials (one trial in a
    regime); the report's own note covers it, so nothing reaches the terminal."""
    study = optuna.create_study(storage=None)
    for i in range(8):
        study.add_trial(create_trial(params={"memory.x": i / 10}, value=(i * 7 % 5) / 10,
                                     distributions={"memory.x": FloatDistribution(0, 2 if i == 0 else 1)}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importances, why = study_importances(study, study_objectives(study))
    assert why is None and importances[0].axes == {"memory": pytest.approx(1.0)}
    assert [str(w.message) for w in caught] == []


def test_importances_count_only_the_trials_with_searched_parameters():
    """Anchors stored without parameters (presets outside the space) add nothing to the
    importances, and the count the report gives says so."""
    study = optuna.create_study(storage=None)
    for i in range(3):
        study.add_trial(create_trial(params={}, distributions={}, value=1.0 + i))
    for i in range(4):
        study.add_trial(create_trial(params={"memory.x": i / 10, "bias.y": (i * 3 % 4) / 10},
                                     distributions={"memory.x": FloatDistribution(0, 1),
                                                    "bias.y": FloatDistribution(0, 1)},
                                     value=i / 10))
    importances, why = study_importances(study, study_objectives(study))
    assert why is None and importances[0].trials == 4


def test_a_study_without_its_stored_limits_still_says_which_limit_is_broken(tmp_path):
    journal = _make_study(tmp_path, _trials())
    study = optuna.load_study(study_name=NAME, storage=JournalStorage(JournalFileBackend(str(journal))))
    study.set_user_attr("study_file", {"type": "study", "name": NAME})  # a study file without its limits
    rows = {int(c[1]): c for _, c in _parse(build_report(study, tmp_path / "r").html).tables["leaderboard"]}
    assert rows[3][0] == "-" and rows[3][-1] == "breaks limit 2 (by 0.01)"
    terminal = _cli("report", NAME, "--storage", str(journal), "--out", str(tmp_path / "t"))
    assert "limit 2" in next(line for line in terminal.output.splitlines() if "│ #3 " in line)


def test_the_terminal_says_so_when_no_trial_can_be_ranked(tmp_path):
    journal = _make_study(tmp_path, _trials()[:1], name="nothing")
    result = _cli("report", "nothing", "--storage", str(journal), "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    assert "no complete trial to rank yet" in result.output
    assert "┃ rank" not in result.output  # no empty table
