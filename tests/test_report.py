"""Reports, export and the proxy check on a small REAL study (tiny points trained by run_trial)."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from scipy import stats
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.errors import MirasError
from miras_search.points import load_point
from miras_search.presets import NAMED_MODELS, preset
from miras_search.report import (
    ConfirmResult,
    build_report,
    confirm_study,
    export_top,
    open_report_study,
)
from miras_search.report.dashboard import dashboard_app
from miras_search.report.leaderboard import shown_metrics
from miras_search.report.study_data import AXES
from miras_search.schema import ModelPoint
from miras_search.space import SearchSpace
from miras_search.study.summary import pareto_front, ranked
from miras_search.trial import MEASURE_VERSION, Objective, TrialConfig, run_trial

SPACE = {
    "type": "space", "name": "report-test", "preset": "moneta", "anchors": list(NAMED_MODELS),
    "base": {
        "block": {"d_model": 32, "n_heads": 2, "n_layers": 1, "conv_size": 4, "max_seq_len": 64},
        "train": {"tokens": 1536, "batch_size": 4, "seq_len": 32, "lr": 0.003, "chunk_size": 8},
    },
    "params": {
        "memory": {"kind": {"choice": {"matrix": {}, "mlp": {"expansion": {"choice": [2, 4]}}}}},
        "bias": {"kind": {"choice": {"l2": {}, "lp": {"p": {"choice": [2.0, 3.0]}},
                                     "huber": {"variant": "switch", "delta": {"mode": "head", "value": 1.0}}}}},
        "retention": {"kind": {"choice": {"l2": {"gradient_at": "previous", "alpha": {"value": 0.95}},
                                          "lq": {"q": 4.0, "alpha": {"value": 0.95}},
                                          "kl": {"alpha": {"value": 0.95}}}}},
        "algorithm": {"kind": {"choice": {"gd": {"eta": {"value": {"choice": [0.1, 0.5]}}},
                                          "momentum": {"eta": {"value": {"choice": [0.1, 0.5]}}}}}},
    },
}
TRIAL = {"data": [{"task": "mqar", "num_pairs": 4}, {"task": "text"}], "eval_batches": 1,
         "report_every": 4, "threads": 1}
OBJECTIVES = [{"metric": "val_bpb", "direction": "minimize"},
              {"metric": "tokens_per_s", "direction": "maximize"}]
NAME = "report-test"


def _key(point: ModelPoint) -> str:
    return hashlib.sha256(json.dumps(point.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def _run_study(folder: Path, random_trials: int = 5) -> tuple[Path, optuna.Study]:
    """A real study following the storage contract: anchors first, random points, one failure.

    The study file is written in the study layer's format; the trials are driven here with
    ask/tell around run_trial, storing the contract's user_attrs.
    """
    (folder / "space.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))
    journal = folder / "study.journal"
    study_file = {"type": "study", "name": NAME, "space": "space.yaml", "trial": TRIAL,
                  "objectives": OBJECTIVES, "pruner": {"kind": "none"}, "trials": 9,
                  "storage": str(journal)}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study_file, sort_keys=False))
    space = SearchSpace.from_dict(SPACE)
    config = TrialConfig.model_validate(TRIAL)
    objectives = [Objective.model_validate(o) for o in OBJECTIVES]
    study = optuna.create_study(
        study_name=NAME, storage=JournalStorage(JournalFileBackend(str(journal))),
        directions=[o.direction for o in objectives], sampler=optuna.samplers.RandomSampler(seed=0),
    )
    study.set_user_attr("study_file", study_file)
    study.set_user_attr("objectives", [{"name": o.name, "direction": o.direction} for o in objectives])
    study.set_user_attr("space", space.name)
    study.set_user_attr("measure_version", MEASURE_VERSION)
    for name in space.spec.anchors:  # as setup.enqueue_anchors: a preset outside the space has no params
        study.enqueue_trial(space.encode(preset(name), axes_only=True) or {}, user_attrs={"anchor": name})
    done: dict[str, int] = {}
    total = len(space.spec.anchors) + random_trials + 1
    for index in range(total):
        trial = study.ask()
        anchor = trial.user_attrs.get("anchor")
        if anchor is not None and not trial.params and space.encode(preset(anchor), axes_only=True) is None:
            # as the driver builds it: the preset's own axes on the space's block and training
            axes = preset(anchor).model_dump(mode="json", include=set(AXES))
            point = ModelPoint.model_validate({**space.base, **axes, "name": anchor})
        else:
            point = space.point_from_trial(trial)
        key = _key(point)
        trial.set_user_attr("point", point.model_dump(mode="json"))
        trial.set_user_attr("point_key", key)
        trial.set_user_attr("axes", {a: getattr(point, a).kind for a in AXES})
        trial.set_user_attr("anchor", trial.user_attrs.get("anchor"))
        if key in done:  # the contract: a duplicate reuses the earlier result
            earlier = study.get_trials(deepcopy=False)[done[key]]
            for attr in ("metrics", "curve"):
                trial.set_user_attr(attr, earlier.user_attrs[attr])
            trial.set_user_attr("reused_from", earlier.number)
            study.tell(trial, earlier.values)
            continue
        last = index == total - 1  # the last trial diverges on purpose (a real failed trial)
        result = run_trial(point, config.model_copy(update={"max_loss": 0.5}) if last else config)
        trial.set_user_attr("metrics", {k: v for k, v in result.metrics.items() if math.isfinite(v)})
        trial.set_user_attr("curve", [list(p) for p in result.curve])
        if result.ok:
            done[key] = trial.number
            study.tell(trial, [o.value(result.metrics) for o in objectives])
        else:
            trial.set_user_attr("failure", result.failure)
            trial.set_user_attr("reason", result.reason)
            study.tell(trial, state=TrialState.FAIL)
    return path, study


@pytest.fixture(scope="module")
def real_study(tmp_path_factory) -> tuple[Path, optuna.Study]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return _run_study(tmp_path_factory.mktemp("study"))


class _Page(HTMLParser):
    """Collects the leaderboard rows (cells + class), images and section titles of a report."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[str, list[str]]]] = {}
        self.images: list[dict[str, str]] = []
        self.titles: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cls = ""
        self._cell: list[str] | None = None
        self._h2 = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id") or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row, self._cls = [], attrs.get("class") or ""
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(attrs)
        elif tag == "h2":
            self._h2 = True

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row:
            self.tables[self._table].append((self._cls, self._row))
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "h2":
            self._h2 = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._h2:
            self.titles.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    page.close()
    return page


def _expected_order(study: optuna.Study) -> list[int]:
    """The order `miras best` shows: feasible complete trials without duplicates, by the
    objective, or the Pareto front first for several."""
    return [t.number for t in ranked(study)]


def test_report_builds_from_a_real_study(real_study, tmp_path):
    _, study = real_study
    report = build_report(study, tmp_path / "report", top=3)
    page = _parse(report.html)
    assert {"Leaderboard", "Pareto front", "Parameter importances", "Learning curves",
            "Synthetic recall tasks"} <= set(page.titles)

    rows = page.tables["leaderboard"]
    assert [int(cells[1]) for _, cells in rows] == _expected_order(study)
    by_number = {t.number: t for t in study.get_trials()}
    for rank, (cls, cells) in enumerate(rows, start=1):
        trial = by_number[int(cells[1])]
        assert int(cells[0]) == rank
        # rounded for reading: 4 significant digits (throughput as a whole number)
        assert float(cells[7]) == pytest.approx(trial.values[0], rel=1e-3) and len(cells[7]) <= 8
        assert float(cells[8].replace(",", "")) == pytest.approx(trial.values[1], abs=0.5)
        assert cells[3:7] == [trial.user_attrs["axes"][a] for a in AXES]
        anchor = trial.user_attrs["anchor"]
        assert cls == ("named" if anchor in NAMED_MODELS else "searched")
    assert {int(c[1]) for _, c in rows if c[-1] == "yes"} == {t.number for t in pareto_front(study)}
    assert {int(c[1]) for _, c in rows if c[-1] == "yes"} == {  # Optuna's front, less duplicates
        t.number for t in study.best_trials if "reused_from" not in t.user_attrs}
    assert {c[2] for cls, c in rows if cls == "named"} == set(NAMED_MODELS)

    failures = page.tables["failures"]
    assert len(failures) == 1 and failures[0][1][2] == "failed: diverged" and "max_loss" in failures[0][1][3]

    assert {Path(i["data-file"]).stem for i in page.images} == {
        "leaderboard", "pareto", "importances", "curves", "tasks"}
    for img in page.images:
        file = report.html.parent / img["data-file"]
        assert file in report.images
        data = base64.b64decode(img["src"].removeprefix("data:image/png;base64,"))
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data == file.read_bytes()

    axes_tables = [t for name, t in page.tables.items() if name.startswith("table")]
    assert len(axes_tables) == 2  # one per objective
    for table in axes_tables:
        assert {cells[0] for _, cells in table} <= set(AXES)
        assert sum(float(cells[1]) for _, cells in table) == pytest.approx(1.0, abs=5e-3)

    tasks = page.tables["tasks"]
    assert tasks and all(0.0 <= float(c[1]) <= 1.0 for _, c in tasks)


def test_single_objective_report_has_no_pareto_front(real_study, tmp_path):
    _, study = real_study
    single = optuna.create_study(study_name="single", storage=study._storage, direction="minimize")
    single.set_user_attr("objectives", [{"name": "val_bpb", "direction": "minimize"}])
    for trial in study.get_trials():
        single.add_trial(optuna.trial.create_trial(
            state=trial.state, values=[trial.values[0]] if trial.values else None,
            params=trial.params, distributions=trial.distributions, user_attrs=trial.user_attrs,
        ))
    report = build_report(single, tmp_path / "single")
    page = _parse(report.html)
    assert "Pareto front" not in page.titles and "Trade-offs" in page.titles
    assert [int(c[1]) for _, c in page.tables["leaderboard"]] == _expected_order(single)
    metric_columns = shown_metrics(report.ranked, report.objectives)
    assert "tokens_per_s" in metric_columns  # no longer an objective, so shown as a metric
    assert len(page.tables["leaderboard"][0][1]) == 7 + 1 + len(metric_columns)  # no Pareto column


def test_cli_report_prints_the_leaderboard(real_study, tmp_path):
    path, study = real_study
    out = tmp_path / "cli-report"
    result = CliRunner().invoke(app, ["report", str(path), "--out", str(out)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert (out / "index.html").exists() and (out / "pareto.png").exists()
    assert "leaderboard" in result.output
    best = study.trials[_expected_order(study)[0]]
    assert f"#{best.number}" in result.output and "moneta" in result.output


def test_open_errors_are_readable(real_study, tmp_path):
    path, _ = real_study
    journal = str(path.parent / "study.journal")
    assert open_report_study("report-test", storage=journal).study_name == NAME
    with pytest.raises(MirasError, match=r"no study named 'nope'.*report-test"):
        open_report_study("nope", storage=journal)
    with pytest.raises(MirasError, match="no storage found for study 'nope'"):
        open_report_study("nope", runs=tmp_path)
    with pytest.raises(MirasError, match="does not exist"):
        open_report_study(tmp_path / "missing.yaml")
    bare = tmp_path / "bare.yaml"
    bare.write_text(f"type: study\nname: lost\nspace: space.yaml\ntrials: 1\nrun_dir: {tmp_path}\n")
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    with pytest.raises(MirasError, match="'lost'") as error:  # the study was never run
        open_report_study(bare, runs=tmp_path)
    assert "run" in str(error.value)


def test_export_load_train_round_trip(real_study, tmp_path):
    _, study = real_study
    paths = export_top(study, 2, tmp_path / "points")
    assert [p.name for p in paths] == [f"rank{r:02d}-trial{n}.yaml" for r, n in enumerate(_expected_order(study)[:2], 1)]
    config = TrialConfig.model_validate(TRIAL)
    for path in paths:
        trial = study.trials[int(path.stem.split("trial")[1])]
        meta = yaml.safe_load(path.read_text())["meta"]
        assert meta["study"] == NAME and meta["trial"] == trial.number
        assert meta["objectives"]["val_bpb"]["value"] == trial.values[0]
        assert meta["metrics"]["val_bpb"] == trial.user_attrs["metrics"]["val_bpb"]
        point = load_point(path)
        assert point == ModelPoint.model_validate(trial.user_attrs["point"])
        retrained = run_trial(point, config)  # same point, same config and seed: same result
        stored = trial.user_attrs["metrics"]["val_bpb"]
        assert abs(retrained.metrics["val_bpb"] - stored) <= 1e-4 * stored
    result = CliRunner().invoke(app, ["train", str(paths[0]), "--tokens", "256", "--seq-len", "32",
                                      "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert "validation loss" in result.output


def test_proxy_check_correlations(real_study, tmp_path):
    _, study = real_study
    result = confirm_study(study, top=2, scale=2, seeds=(0, 1), resamples=500)
    labels = [e.label for e in result.entries]
    assert sum(e.anchor in NAMED_MODELS for e in result.entries) == 3, labels
    for entry in result.entries:
        trial = study.trials[entry.trial]
        assert entry.short == trial.values[0]
        assert entry.tokens == 2 * trial.user_attrs["point"]["train"]["tokens"]
        assert len(entry.long) + len(entry.failures) == 2
    usable = [e for e in result.entries if e.long]
    short = np.array([e.short for e in usable])
    long = np.array([e.long_mean for e in usable])
    rho, tau = result.correlations
    assert rho.value == pytest.approx(stats.spearmanr(short, long).statistic, abs=1e-12)
    assert tau.value == pytest.approx(stats.kendalltau(short, long).statistic, abs=1e-12)
    assert not rho.has_interval or rho.low <= rho.value <= rho.high  # none when degenerate
    assert "bootstrap" in result.method
    assert ("NOT" in result.verdict) == (result.predicts is False)

    result.write_json(tmp_path / "confirm.json")
    again = ConfirmResult.read_json(tmp_path / "confirm.json")
    assert json.dumps(again.to_dict()) == json.dumps(result.to_dict())  # as text: nan == nan
    assert again.entries == result.entries
    report = build_report(study, tmp_path / "with-confirm", confirm=again)
    page = _parse(report.html)
    assert "Proxy check (short vs long training)" in page.titles
    assert [r[1][0] for r in page.tables["confirm"]] == labels
    assert (report.html.parent / "proxy_check.png") in report.images
    assert result.verdict in html.unescape(report.html.read_text())


def test_dashboard_serves_the_study(real_study):
    _, study = real_study
    application = dashboard_app(study)
    answer: dict[str, str] = {}

    def start_response(status, headers, exc_info=None):
        answer["status"] = status

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/api/studies", "QUERY_STRING": "",
               "SERVER_NAME": "localhost", "SERVER_PORT": "8080", "wsgi.url_scheme": "http",
               "wsgi.input": io.BytesIO(b""), "CONTENT_LENGTH": "0"}
    body = b"".join(application(environ, start_response))
    assert answer["status"].startswith("200")
    names = [s["study_name"] for s in json.loads(body)["study_summaries"]]
    assert NAME in names


def test_report_on_the_study_runner(tmp_path):
    """The same checks on a study run by the study package's own driver (in-process pool)."""
    from miras_search import study as study_api
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({
        "type": "study", "name": "runner-test", "space": "space.yaml", "trial": TRIAL,
        "objectives": OBJECTIVES[:1], "sampler": {"kind": "random", "seed": 1, "anchors": list(NAMED_MODELS)},
        "pruner": {"kind": "none"}, "trials": 5, "run_dir": str(tmp_path / "runs"),
    }, sort_keys=False))
    study_api.run_study(study_api.load_study_file(path), lambda: study_api.InlinePool())
    study = open_report_study(path)
    report = build_report(study, tmp_path / "report")
    rows = _parse(report.html).tables["leaderboard"]
    assert [int(c[1]) for _, c in rows] == _expected_order(study)
    assert {c[2] for cls, c in rows if cls == "named"} == set(NAMED_MODELS)
    exported = export_top(study, 1, tmp_path / "points")
    assert load_point(exported[0]) == ModelPoint.model_validate(study.trials[int(rows[0][1][1])].user_attrs["point"])


@pytest.mark.parametrize("command", ["report", "export", "confirm"])
def test_out_options_must_be_folders(real_study, tmp_path, command):
    path, _ = real_study
    afile = tmp_path / "afile"
    afile.write_text("kept\n")
    for out, words in [(afile, f"--out {afile} is a file; give a folder"),
                       (Path("/proc/miras-x"), "--out /proc/miras-x: cannot create the folder")]:
        result = CliRunner().invoke(app, [command, str(path), "-o", str(out)], env={"COLUMNS": "250"})
        assert result.exit_code == 1, result.output
        assert words in result.output and "Traceback" not in result.output
    assert afile.read_text() == "kept\n"


@pytest.mark.parametrize("scale", ["nan", "inf", "-1", "0"])
def test_confirm_rejects_a_scale_that_is_not_positive_and_finite(real_study, scale):
    path, study = real_study
    result = CliRunner().invoke(app, ["confirm", str(path), "--scale", scale], env={"COLUMNS": "250"})
    assert result.exit_code == 2, result.output
    assert "'--scale'" in result.output and "positive, finite number" in result.output
    with pytest.raises(MirasError, match="--scale must be a positive, finite number"):
        confirm_study(study, scale=float(scale))


def test_confirm_keeps_the_earlier_result_when_every_long_run_fails(real_study, tmp_path, monkeypatch):
    path, _ = real_study
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "runs" / NAME / "confirm"
    folder.mkdir(parents=True)
    (folder / "confirm.json").write_text('{"earlier": "good result"}\n')
    # a scale too small for one batch: refused before any run, nothing written
    args = ["confirm", str(path), "--top", "1", "--seeds", "1"]
    result = CliRunner().invoke(app, [*args, "--scale", "0.0001"], env={"COLUMNS": "250"})
    assert result.exit_code == 1, result.output
    words = " ".join(result.output.split())
    assert "--scale 0.0001 leaves a long run less than one training batch" in words
    assert "do not cover one batch" in words and "The smallest --scale that covers one batch" in words
    assert not (folder / "confirm-failed.json").exists()
    from miras_search.report import confirm as confirm_module
    from miras_search.trial import TrialResult

    monkeypatch.setattr(confirm_module, "run_trial", lambda point, config, device=None: TrialResult(
        "failed", failure="build", reason="tokens (1) do not cover one batch"))
    result = CliRunner().invoke(app, [*args, "--scale", "2"], env={"COLUMNS": "250"})
    assert result.exit_code == 1, result.output
    assert "seed 0: build: " in result.output and "do not cover one batch" in result.output
    assert "every long run failed" in result.output and "earlier confirm.json is kept" in result.output
    assert (folder / "confirm.json").read_text() == '{"earlier": "good result"}\n'
    failed = json.loads((folder / "confirm-failed.json").read_text())
    assert all(not e["long"] and e["failures"] for e in failed["entries"])


@pytest.mark.parametrize("content", ["garbage", '{"study": "tiny"}', "[1, 2]"])
def test_report_warns_about_a_broken_confirm_result(real_study, tmp_path, monkeypatch, content):
    path, _ = real_study
    monkeypatch.chdir(tmp_path)
    broken = tmp_path / "runs" / NAME / "confirm" / "confirm.json"
    broken.parent.mkdir(parents=True)
    broken.write_text(content)
    with pytest.raises(MirasError, match=r"confirm\.json (is not|cannot)"):
        ConfirmResult.read_json(broken)
    result = CliRunner().invoke(app, ["report", str(path), "--out", str(tmp_path / "out")], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "leaves out the proxy check" in result.output
    assert not any("Proxy check" in title for title in _parse(tmp_path / "out" / "index.html").titles)


def test_default_folders_follow_the_study_files_run_dir(real_study, tmp_path, monkeypatch):
    """report / export / confirm write under the study file's run_dir, as `miras run` does, not
    under ./runs of whatever folder they are started from."""
    path, _ = real_study
    study_file = yaml.safe_load(path.read_text())
    study_file.update(run_dir=str(tmp_path / "elsewhere"), space=str(path.parent / "space.yaml"))
    moved = tmp_path / "study.yaml"
    moved.write_text(yaml.safe_dump(study_file, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["export", str(moved), "--top", "1"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "elsewhere" / NAME / "points").glob("*.yaml"))
    assert not (tmp_path / "runs").exists()


def test_proxy_plot_numbers_its_points_and_names_them_in_a_key():
    """Close points' names overlapped on the plot: the dots carry numbers, lowest longer-run
    score first, and a key beside the plot gives each number's point and both scores."""
    from miras_search.report.plots import rank_figure

    fig = rank_figure([4.47, 4.30, 6.31], [3.59, 3.41, 5.87], ["#0 moneta", "#14", "#1 yaad"],
                      "short val_bpb", "long val_bpb")
    plot, key = fig.axes
    numbered = {text.get_text(): text.xy for text in plot.texts}
    assert numbered == {"1": (4.30, 3.41), "2": (4.47, 3.59), "3": (6.31, 5.87)}
    assert [line.split() for line in key.texts[0].get_text().splitlines()] == [
        ["1", "#14", "4.3", "/", "3.41"], ["2", "#0", "moneta", "4.47", "/", "3.59"],
        ["3", "#1", "yaad", "6.31", "/", "5.87"]]
