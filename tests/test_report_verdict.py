"""The verdict of a study with known outcomes: who beat which anchor and by how much, the ranking,
the counts, the CSV, compare and the terminal tables, checked against the values written in.

Studies are written straight into a journal (no training): anchors and searched points from the
presets (so that each has its own point), with hand-chosen values, some pruned or failed, ties,
a value that is not finite, a searched point at an anchor's own point, and minimised, maximised
and two-objective studies.
"""

from __future__ import annotations

import csv
import io
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial
from rich.console import Console
from scipy.stats import mannwhitneyu
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.presets import NAMED_MODELS, preset
from miras_search.report.anchors import anchor_verdicts
from miras_search.report.build import build_report
from miras_search.report.compare import compare_studies
from miras_search.report.leaderboard import leaderboard_table
from miras_search.report.study_data import study_objectives, study_rows
from miras_search.report.table import trial_records, trials_csv, trials_dataframe
from miras_search.schema import AXES
from miras_search.study.records import point_key
from miras_search.study.summary import ranked, status

optuna.logging.set_verbosity(optuna.logging.WARNING)

BPB = [("val_bpb", "minimize")]
MAD = [("mad_score", "maximize")]
BOTH = [("val_bpb", "minimize"), ("mad_score", "maximize")]


def _trial(name: str, values: list[float] | None = None, anchor: bool = False, state: str = "COMPLETE",
           **attrs: Any) -> dict[str, Any]:
    return {"preset": name, "values": values, "anchor": name if anchor else None, "state": state, "attrs": attrs}


def make_study(folder: Path, name: str, objectives: list[tuple[str, str]], trials: list[dict[str, Any]],
               space: str = "fake-space", anchors: list[str] | None = None) -> optuna.Study:
    """A study in the storage contract's format holding ``trials`` (see ``_trial``)."""
    storage = JournalStorage(JournalFileBackend(str(folder / f"{name}.journal")))
    study = optuna.create_study(study_name=name, storage=storage, directions=[d for _, d in objectives])
    study_file = {"type": "study", "name": name, "objectives": [{"metric": m, "direction": d} for m, d in objectives]}
    if anchors is not None:
        study_file["sampler"] = {"anchors": anchors}
    study.set_user_attr("study_file", study_file)
    study.set_user_attr("objectives", [{"name": m, "direction": d} for m, d in objectives])
    study.set_user_attr("space", space)
    for spec in trials:
        point = preset(spec["preset"])
        attrs = {"point": point.model_dump(mode="json"), "point_key": point_key(point),
                 "axes": {a: getattr(point, a).kind for a in AXES}, "anchor": spec["anchor"],
                 "metrics": {m: v for (m, _), v in zip(objectives, spec["values"] or [], strict=False)},
                 **spec["attrs"]}
        state = TrialState[spec["state"]]
        values = spec["values"] if state == TrialState.COMPLETE else None
        study.add_trial(create_trial(state=state, values=values, user_attrs=attrs))
    return study


SINGLE = [
    _trial("moneta", [3.30], anchor=True),
    _trial("yaad", [3.20], anchor=True),
    _trial("memora", anchor=True, state="FAIL", failure="nan", reason="training loss is nan at step 3"),
    _trial("gated_deltanet", [3.10], anchor=True),
    _trial("transformer", [3.50], anchor=True),
    _trial("titans", [3.00]),
    _trial("atlas", [3.25]),
    _trial("longhorn", [3.20]),  # level with yaad
    _trial("deltanet", [3.60]),
    _trial("moneta", [3.27]),  # moneta's own point again, a little better: not a win over moneta
    _trial("mamba2", state="PRUNED", failure="pruned", reason="the pruner stopped it"),
    _trial("retnet", state="FAIL", failure="time_limit", reason="over the time limit"),
    _trial("gla", [math.inf]),  # not finite: never ranked, never a win
]


def _expected(trials: list[dict[str, Any]], objectives: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """Per anchor that completed: the searched trials that beat it (by the rules, from the inputs)."""
    signs = [1.0 if d == "minimize" else -1.0 for _, d in objectives]
    finite = [(i, t) for i, t in enumerate(trials) if t["state"] == "COMPLETE"
              and all(math.isfinite(v) for v in t["values"])]
    out = {}
    for number, anchor in finite:
        if not anchor["anchor"]:
            continue
        key = point_key(preset(anchor["preset"]))
        wins, level, same = {}, [], []
        for other_number, other in finite:
            if other["anchor"]:
                continue
            if point_key(preset(other["preset"])) == key:
                same.append(other_number)
                continue
            margins = [s * (a - v) for s, a, v in zip(signs, anchor["values"], other["values"], strict=True)]
            if all(m >= 0 for m in margins) and any(m > 0 for m in margins):
                wins[other_number] = margins[0]
            elif all(m == 0 for m in margins):
                level.append(other_number)
        out[anchor["anchor"]] = {"number": number, "wins": wins, "level": level, "same": same,
                                 "compared": sum(1 for _, t in finite if not t["anchor"]) - len(same)}
    return out


def _check_verdicts(study: optuna.Study, trials: list[dict[str, Any]], objectives: list[tuple[str, str]]) -> None:
    verdicts = {v.name: v for v in anchor_verdicts(study_rows(study), study_objectives(study))}
    expected = _expected(trials, objectives)
    for name, want in expected.items():
        got = verdicts[name]
        assert got.outcome == "measured" and got.number == want["number"]
        assert {w.number: w.margins[0] for w in got.beaten_by} == pytest.approx(want["wins"])
        assert [w.number for w in got.beaten_by] == sorted(want["wins"], key=lambda n: (-want["wins"][n], n))
        assert got.level == want["level"] and got.same_point == want["same"] and got.compared == want["compared"]
    assert set(NAMED_MODELS) <= set(verdicts)


def test_who_beats_each_anchor_of_a_minimised_study(tmp_path):
    study = make_study(tmp_path, "single", BPB, SINGLE)
    _check_verdicts(study, SINGLE, BPB)
    verdicts = {v.name: v for v in anchor_verdicts(study_rows(study), study_objectives(study))}
    assert verdicts["memora"].outcome == "failed" and verdicts["memora"].values is None
    assert verdicts["memora"].reason == "training loss is nan at step 3" and not verdicts["memora"].beaten_by
    # moneta's own point measured again (#9, 3.27) is not a point that beats moneta
    assert 9 in verdicts["moneta"].same_point and 9 not in [w.number for w in verdicts["moneta"].beaten_by]
    assert [w.anchor for w in verdicts["moneta"].anchors_ahead] == ["gated_deltanet", "yaad"]
    best = verdicts["transformer"].best
    assert best is not None and best.number == 5 and best.margins[0] == pytest.approx(3.50 - 3.00)


def test_a_maximised_objective_ranks_and_judges_the_other_way(tmp_path):
    trials = [_trial(t["preset"], [5.0 - t["values"][0]] if t["values"] else None, anchor=bool(t["anchor"]),
                     state=t["state"], **t["attrs"]) for t in SINGLE]
    minimised = make_study(tmp_path, "bpb", BPB, SINGLE)
    maximised = make_study(tmp_path, "mad", MAD, trials)
    _check_verdicts(maximised, trials, MAD)
    # the same order both ways (5 - x reverses the values, and the direction reverses them back)
    assert [t.number for t in ranked(maximised)] == [t.number for t in ranked(minimised)]
    assert status(maximised).best[0].number == status(minimised).best[0].number == 5
    # +inf would be the best value of a maximised objective: it is never ranked
    trials[12] = _trial("gla", [math.inf])
    maximised = make_study(tmp_path, "mad-inf", MAD, trials)
    assert 12 not in [t.number for t in ranked(maximised)] and status(maximised).best[0].number == 5


def test_two_objectives_count_only_dominating_points(tmp_path):
    trials = [
        _trial("moneta", [3.30, 0.50], anchor=True),
        _trial("yaad", [3.20, 0.40], anchor=True),
        _trial("memora", [3.40, 0.70], anchor=True),
        _trial("gated_deltanet", [3.10, 0.30], anchor=True),
        _trial("titans", [3.00, 0.60]),  # dominates moneta, yaad, gated_deltanet
        _trial("atlas", [3.50, 0.90]),  # better mad_score only: dominates none
        _trial("longhorn", [3.35, 0.45]),  # dominates none (worse than moneta on both)
        _trial("deltanet", [3.20, 0.40]),  # equal to yaad on both: level
    ]
    study = make_study(tmp_path, "multi", BOTH, trials)
    _check_verdicts(study, trials, BOTH)
    verdicts = {v.name: v for v in anchor_verdicts(study_rows(study), study_objectives(study))}
    assert verdicts["yaad"].level == [7] and [w.number for w in verdicts["memora"].beaten_by] == []
    sentence = verdicts["moneta"].sentence(study_objectives(study))
    assert "dominated by 1 of the 4 searched points" in sentence and "#4" in sentence
    assert f"by val_bpb {3.30 - 3.00:.4g}, mad_score {0.60 - 0.50:.4g}" in sentence


def test_the_report_states_the_verdict_it_computed(tmp_path):
    study = make_study(tmp_path, "single", BPB, SINGLE, anchors=["moneta", "yaad", "memora", "gated_deltanet",
                                                                 "transformer", "titans"])
    report = build_report(study, tmp_path / "report")
    tables = _tables(report.html)
    want = _expected(SINGLE, BPB)
    rows = {r[0]: r for r in tables["anchors"]}
    for name, expected in want.items():
        row = rows[name]
        assert row[1] == str(expected["number"])
        assert row[4] == f"{len(expected['wins'])} of {expected['compared']}"
        if expected["wins"]:
            best = min(expected["wins"], key=lambda n: (-expected["wins"][n], n))
            assert row[5] == f"#{best} ({SINGLE[best]['values'][0]:.4g})"
            assert row[6] == f"{expected['wins'][best]:.4g}"
    assert rows["memora"][3].startswith("failed") and rows["memora"][4] == "-"
    assert rows["titans"][3] == "not run"  # named by the study file as an anchor, never run
    text = report.html.read_text()
    assert not re.search(r"\d\.\d{7,}", text)  # no 16-digit floats
    # the summary's counts are the states written in
    assert "13 trials: 10 complete (1 with a value that is not finite, not ranked), 1 pruned, 2 failed." in text
    complete = sum(t["state"] == "COMPLETE" for t in SINGLE)  # none has searched parameters
    assert f"needs at least 2 complete trials with searched parameters (has 0 of {complete} complete)" in text
    ranks = [int(r[1]) for r in tables["leaderboard"]]
    assert ranks == [t.number for t in ranked(study)] and 12 not in ranks
    counts = {s: sum(t["state"] == s for t in SINGLE) for s in ("COMPLETE", "PRUNED", "FAIL")}
    shown = CliRunner().invoke(app, ["status", "single", "--storage", str(tmp_path / "single.journal")])
    assert (f"{len(SINGLE)}/- finished: {counts['COMPLETE']} complete (1 not finite, not ranked), "
            f"{counts['PRUNED']} pruned, {counts['FAIL']} failed") in shown.output


def test_the_terminal_verdict_and_a_model_name_fit_80_columns(tmp_path):
    trials = [_trial("gated_deltanet", [3.10, 0.30], anchor=True), _trial("titans", [3.0, 0.6]),
              _trial("memora", [3.4, 0.7], anchor=True), _trial("atlas", [3.5, 0.9])]
    make_study(tmp_path, "multi", BOTH, trials)
    result = CliRunner().invoke(app, ["report", "multi", "--storage", str(tmp_path / "multi.journal"),
                                      "--out", str(tmp_path / "r")], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output and "│ gated_deltanet │" in result.output.replace(" #0    ", "")
    assert all(len(line) <= 80 for line in result.output.splitlines() if "│" in line)
    assert "gated_deltanet (#0, val_bpb 3.1, mad_score 0.3): dominated by 1 of the 2 searched points" in result.output
    assert "not run in this study: moneta, yaad" in result.output
    study = optuna.load_study(study_name="multi", storage=JournalStorage(JournalFileBackend(str(tmp_path / "multi.journal"))))
    console = Console(width=80, file=io.StringIO(), color_system=None)
    console.print(leaderboard_table(study_rows(study), study_objectives(study), width=80))
    assert "…" not in console.file.getvalue()


def test_edge_studies_report_without_a_traceback(tmp_path):
    cases = {
        "empty": [],
        "failures": [_trial("moneta", anchor=True, state="FAIL", failure="nan", reason="nan loss")],
        "one": [_trial("titans", [3.0])],
        "anchors": SINGLE[:5],
        "infinite": [_trial("titans", [math.inf]), _trial("moneta", [3.3], anchor=True)],
    }
    for name, trials in cases.items():
        study = make_study(tmp_path, name, BPB, trials)
        report = build_report(study, tmp_path / name)
        text = report.html.read_text()
        if not trials:
            assert "No trials yet." in text and ": ." not in text
        verdicts = {v.name: v for v in report.anchors}
        if name == "anchors":  # only anchors: nothing searched to compare with
            assert all(v.compared == 0 and not v.beaten_by for v in verdicts.values() if v.values)
        if name == "infinite":
            assert verdicts["moneta"].compared == 0 and [r.number for r in report.ranked] == [1]
    one = trial_records(make_study(tmp_path, "one-more", BPB, cases["one"]))
    assert one == [{"number": 0, "state": "COMPLETE", "rank": 1, "anchor": None, **preset("titans").axes,
                    "val_bpb": 3.0, "failure": None, "reason": None, "reused_from": None, "metric:val_bpb": 3.0}]


def test_the_csv_holds_every_trial_once_with_its_exact_values(tmp_path):
    study = make_study(tmp_path, "single", BPB, SINGLE)
    frame = pd.read_csv(io.StringIO(trials_csv(study)))
    assert list(frame["number"]) == list(range(len(SINGLE)))
    assert list(frame["state"]) == [t["state"] for t in SINGLE]
    for number, trial in enumerate(SINGLE):
        value = frame.loc[number, "val_bpb"]
        if trial["state"] == "COMPLETE":
            assert value == trial["values"][0]  # exact, inf included
        else:
            assert math.isnan(value)  # written empty
    order = [t.number for t in ranked(study)]
    assert {n: int(r) for n, r in zip(frame["number"], frame["rank"], strict=True) if r == r} == \
        {n: place for place, n in enumerate(order, start=1)}
    assert trials_dataframe(study).shape[0] == len(SINGLE)
    empty = make_study(tmp_path, "empty", BPB, [])
    header = next(csv.reader(io.StringIO(trials_csv(empty))))
    assert header[:4] == ["number", "state", "rank", "anchor"] and "val_bpb" in header
    assert trials_dataframe(empty).empty and "val_bpb" in trials_dataframe(empty).columns


def test_compare_shows_the_shared_objective_of_each_side(tmp_path):
    both = [_trial("titans", [3.0, 0.6]), _trial("memora", [3.4, 0.7], anchor=True), _trial("atlas", [3.5, 0.9]),
            _trial("longhorn", [3.35, 0.45])]
    only = [_trial("moneta", [0.5], anchor=True), _trial("yaad", [0.4], anchor=True), _trial("deltanet", [0.1])]
    first = make_study(tmp_path, "multi", BOTH, both)
    second = make_study(tmp_path, "mad", MAD, only, space="another-space")
    comparison = compare_studies(first, second)
    assert [o.name for o in comparison.objectives] == ["mad_score"]
    a, b = [t["values"][1] for t in both], [t["values"][0] for t in only]
    assert comparison.p_values["mad_score"] == pytest.approx(mannwhitneyu(a, b, alternative="two-sided").pvalue)
    console = Console(width=80, file=io.StringIO(), color_system=None)
    console.print(comparison.table(80))
    lines = {line.split("│")[1].strip(): line for line in console.file.getvalue().splitlines() if "│" in line}
    assert "#2 mlp/l2/l2/muon 0.9" in lines["rank 1"]  # the best mad_score, not the best val_bpb
    assert "#1 memora 0.7" in lines["rank 2"] and "#0 mlp/l2/l2/momentum 0.6" in lines["rank 3"]
    assert f"{max(a):.4g}" in lines["best mad_score ↑"] and f"{max(b):.4g}" in lines["best mad_score ↑"]
    assert any("different spaces" in note for note in comparison.notes)
    same = compare_studies(first, make_study(tmp_path, "mad2", MAD, only))
    assert not any("different spaces" in note for note in same.notes)


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._in_body = False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._table = dict(attrs).get("id") or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body and self._table:
            self.tables[self._table].append([])
        elif tag == "td" and self._in_body:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "tbody":
            self._in_body = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _tables(path: Path) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(path.read_text())
    return parser.tables


def test_a_point_measured_several_times_shows_the_mean_it_was_ranked_by(tmp_path):
    # titans holds two runs at its highest fidelity (seeds of a `miras scale` rung, or a confirm
    # run twice): it ranks by their mean, and every table shows that mean, not its last run
    study = make_study(tmp_path, "fid", BPB, [_trial("titans", [3.0]), _trial("atlas", [3.1]),
                                              _trial("moneta", [3.05], anchor=True)])
    runs = {"titans": [2.5, 2.9], "atlas": [2.8], "moneta": [2.75]}
    for name, values in runs.items():
        point = preset(name)
        for value in values:
            study.add_trial(create_trial(state=TrialState.COMPLETE, values=[value], user_attrs={
                "point": point.model_dump(mode="json"), "point_key": point_key(point),
                "axes": {a: getattr(point, a).kind for a in AXES}, "anchor": name if name == "moneta" else None,
                "metrics": {"val_bpb": value}, "fidelity": {"source": "scale", "seeds": 1, "level": 4.0}}))
    means = {name: sum(v) / len(v) for name, v in runs.items()}
    order = sorted(means, key=means.get)
    rows = [r for r in study_rows(study) if r.rank is not None]
    rows.sort(key=lambda r: r.rank)
    assert [r.point["name"] for r in rows] == order
    assert [r.score[0] for r in rows] == pytest.approx([means[n] for n in order])
    assert [r.runs for r in rows] == [len(runs[n]) for n in order]
    report = build_report(study, tmp_path / "r")
    table = _tables(report.html)["leaderboard"]
    assert [row[7] for row in table] == [f"{means[n]:.4g}" for n in order]
    extra = sum(len(v) for v in runs.values())  # counted apart, as `miras status` counts them
    assert f"3 trials: 3 complete. Besides, {extra} longer or larger runs of its points." in report.html.read_text()
    assert "mean of 2 runs" in table[0][8]
    result = CliRunner().invoke(app, ["best", "fid", "--storage", str(tmp_path / "fid.journal"), "-n", "1"])
    assert result.exit_code == 0, result.output
    assert f"val_bpb: {means[order[0]]}" in result.output
    # the verdict against the anchors stays at the study's own budget (the base trials)
    moneta = next(v for v in anchor_verdicts(study_rows(study), study_objectives(study)) if v.name == "moneta")
    assert moneta.values == (3.05,) and [w.number for w in moneta.beaten_by] == [0]


def test_a_value_that_is_not_a_number_reads_as_a_dash_not_nan(tmp_path):
    from miras_search.report.confirm import ConfirmEntry

    trials = [_trial("titans", [3.0], metrics={"val_bpb": 3.0, "tokens_per_s": "nan", "params": 1000.0}),
              _trial("atlas", [3.1], metrics={"val_bpb": 3.1, "tokens_per_s": 900.0, "params": 1000.0})]
    study = make_study(tmp_path, "speeds", BPB, trials)
    report = build_report(study, tmp_path / "r")
    table = _tables(report.html)["leaderboard"]
    speed = {row[1]: row[-2] for row in table}  # tokens_per_s, then params
    assert speed == {"0": "-", "1": "900"}
    assert not re.search(r"\bnan\b", report.html.read_text(), re.IGNORECASE)
    failed = ConfirmEntry(trial=0, label="#0", anchor=None, short=3.0, tokens=1024, failures=["seed 0: nan: x"])
    assert failed.long_mean_text == "-" and ConfirmEntry(0, "#0", None, 3.0, 1024, [2.5, 2.7]).long_mean_text == "2.6"


def test_compare_reads_both_studies_at_their_own_budget(tmp_path):
    # a longer run of one point (confirm) is not one more trial of the study, and its lower value
    # does not make the study that re-trained its best point look better
    base = [_trial("titans", [3.0]), _trial("atlas", [3.2]), _trial("moneta", [3.4], anchor=True)]
    first = make_study(tmp_path, "first", BPB, base)
    point = preset("titans")
    first.add_trial(create_trial(state=TrialState.COMPLETE, values=[2.0], user_attrs={
        "point": point.model_dump(mode="json"), "point_key": point_key(point), "anchor": None,
        "axes": {a: getattr(point, a).kind for a in AXES}, "metrics": {"val_bpb": 2.0},
        "fidelity": {"source": "confirm", "seeds": 3, "level": 4.0}}))
    second = make_study(tmp_path, "second", BPB, [_trial("titans", [3.0]), _trial("atlas", [3.2]),
                                                  _trial("moneta", [3.4], anchor=True)])
    comparison = compare_studies(first, second)
    assert comparison.sides[0].values == comparison.sides[1].values == {"val_bpb": [3.0, 3.2, 3.4]}
    assert comparison.sides[0].count_text == comparison.sides[1].count_text == "3 (3)"
    assert comparison.p_values["val_bpb"] == pytest.approx(
        mannwhitneyu([3.0, 3.2, 3.4], [3.0, 3.2, 3.4], alternative="two-sided").pvalue)
    assert "neither scores better" in comparison.notes[0]


def test_compare_at_80_columns_cuts_no_study_name(tmp_path):
    names = ["a-very-long-study-name-for-the-matrix-memories", "another-long-study-name-with-deep-memories"]
    studies = [make_study(tmp_path, name, BPB, [_trial("gated_deltanet", [3.123456], anchor=True),
                                               _trial("longhorn", [3.2])]) for name in names]
    console = Console(width=80, file=io.StringIO(), color_system=None)
    console.print(compare_studies(*studies).table(80))
    text = console.file.getvalue()
    assert "…" not in text and all(len(line) <= 80 for line in text.splitlines())
    joined = "".join(line.split("┃")[2].strip() for line in text.splitlines() if line.count("┃") == 4)
    assert joined == names[0]


def test_the_pareto_figure_leaves_out_metrics_that_are_not_finite(tmp_path):
    from miras_search.report.plots import pareto_figure

    def metrics(values: list[float], speed: Any, params: Any) -> dict[str, Any]:
        return {"val_bpb": values[0], "mad_score": values[1], "tokens_per_s": speed, "params": params}

    trials = [_trial("moneta", [3.3, 0.5], anchor=True, metrics=metrics([3.3, 0.5], "nan", 1e5)),
              _trial("titans", [3.0, 0.6], metrics=metrics([3.0, 0.6], 1000.0, "inf")),
              _trial("atlas", [3.5, 0.9], metrics=metrics([3.5, 0.9], 1200.0, 2e5)),
              _trial("yaad", [3.2, 0.4], anchor=True, metrics=metrics([3.2, 0.4], 900.0, 1.5e5))]
    study = make_study(tmp_path, "plots", BOTH, trials)
    rows = [r for r in study_rows(study) if r.rank is not None]
    fig = pareto_figure(rows, study_objectives(study)[0], {r.number for r in rows if r.on_front}, set())
    panels = {ax.get_xlabel(): ax for ax in fig.axes}
    for label, metric in (("tokens / s (train)", "tokens_per_s"), ("parameters", "params")):
        ax = panels[label]
        drawn = {(float(x), float(y)) for c in ax.collections for x, y in c.get_offsets()}
        want = {(float(t["attrs"]["metrics"][metric]), t["values"][0]) for t in trials
                if isinstance(t["attrs"]["metrics"][metric], float) and math.isfinite(t["attrs"]["metrics"][metric])}
        assert drawn == want
        for line in ax.lines:  # the staircase only through finite points
            assert all(math.isfinite(v) for v in line.get_xdata()) and all(math.isfinite(v) for v in line.get_ydata())
    assert panels["parameters"].get_xscale() == "linear"  # 100k..200k, not a log axis stretched to inf


def test_anchors_that_break_a_limit_wait_or_ran_twice(tmp_path):
    trials = [
        _trial("moneta", anchor=True, state="FAIL", failure="interrupted", reason="Ctrl-C"),
        _trial("moneta", [3.3], anchor=True),  # queued again after the interruption, then measured
        _trial("yaad", [3.2], anchor=True, constraints=[0.25]),  # measured, outside a limit
        _trial("memora", anchor=True, state="WAITING"),
        _trial("titans", [3.25]),
        _trial("atlas", [3.1], constraints=[0.5]),  # outside a limit: never a win
    ]
    study = make_study(tmp_path, "limits", BPB, trials)
    verdicts = {v.name: v for v in anchor_verdicts(study_rows(study), study_objectives(study))}
    assert verdicts["moneta"].number == 1 and verdicts["moneta"].outcome == "measured"
    assert [w.number for w in verdicts["moneta"].beaten_by] == [4] and verdicts["moneta"].compared == 1
    assert verdicts["yaad"].outcome == "breaks a limit" and verdicts["yaad"].beaten_by == []
    assert "breaks limit 1 (by 0.25)" in verdicts["yaad"].sentence(study_objectives(study))
    from miras_search.report.build import status_sentence

    # counted as `miras status` counts them: the interrupted attempt apart, not as a failure
    assert status_sentence(study_rows(study)) == "6 trials: 4 complete, 1 interrupted, 1 queued."
    assert "4 complete, 1 interrupted, 1 waiting" in CliRunner().invoke(
        app, ["status", "limits", "--storage", str(tmp_path / "limits.journal")]).output
    assert verdicts["memora"].outcome == "queued" and verdicts["memora"].values is None
    assert [w.anchor for w in verdicts["moneta"].anchors_ahead] == []  # yaad is better but outside a limit


@pytest.mark.parametrize("objectives", [BPB, MAD])
def test_the_leaderboard_figure_keeps_its_bars_and_title_whole(objectives):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from miras_search.report.plots import leaderboard_figure
    from miras_search.report.study_data import ObjectiveInfo, TrialRow

    values = [-0.5, -0.2, 0.3] if objectives == MAD else [3.0, 3.1, 3.3]
    rows = [TrialRow(number=i, state="COMPLETE", values=(v,), axes=dict.fromkeys(AXES, "x"), anchor=None,
                     point=None) for i, v in enumerate(values)]
    objective = ObjectiveInfo(*objectives[0])
    fig = leaderboard_figure(rows, objective, set())
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    assert low < high and low <= min(values) and high >= max(values)  # every bar inside, axis not inverted
    FigureCanvasAgg(fig).draw()
    title = fig.get_suptitle()
    assert "named models" in title
    box = fig._suptitle.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width  # the title is not cut at the figure's edge


def test_a_point_equal_to_an_anchor_is_found_without_stored_keys(tmp_path):
    # a study written by other tools stores no point_key: the points themselves are compared
    renamed = preset("moneta").model_copy(update={"name": "my-search-7"}).model_dump(mode="json")
    trials = [_trial("moneta", [3.3], anchor=True, point_key=None),
              _trial("moneta", [3.1], point_key=None, point=renamed),  # moneta again, under another name
              _trial("titans", [3.2], point_key=None)]
    study = make_study(tmp_path, "keys", BPB, trials)
    moneta = next(v for v in anchor_verdicts(study_rows(study), study_objectives(study)) if v.name == "moneta")
    assert moneta.same_point == [1] and [w.number for w in moneta.beaten_by] == [2] and moneta.compared == 1


def test_csv_file_counts_trials_whose_reason_spans_lines(tmp_path):
    trials = [_trial("titans", [3.0]),
              _trial("atlas", state="FAIL", failure="build", reason="could not build:\nline two\nline three")]
    study = make_study(tmp_path, "lines", BPB, trials)
    target = tmp_path / "trials.csv"
    result = CliRunner().invoke(app, ["export", "lines", "--storage", str(tmp_path / "lines.journal"),
                                      "--csv", str(target)])
    assert result.exit_code == 0, result.output
    assert f"({len(trials)} trials)" in result.output
    frame = pd.read_csv(target)
    assert list(frame["number"]) == [0, 1] and frame.loc[1, "reason"] == trials[1]["attrs"]["reason"]
    assert len(trial_records(study)) == len(trials)
