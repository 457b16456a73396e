"""Multi-fidelity inside one study: longer or larger runs of a point (confirm, scale) are stored as
higher-fidelity results of that same point; `best` ranks points by the highest fidelity each
reached, the trial budget and de-duplication ignore them, the sampler models base trials only."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.presets import preset
from miras_search.report import confirm as confirm_module
from miras_search.report.confirm import confirm_study, store_fidelity
from miras_search.study import fidelity
from miras_search.study.records import counts_toward_budget
from miras_search.study.samplers import BaseFidelitySampler, _BaseFidelityView
from miras_search.study.summary import ranked, status
from miras_search.trial import MEASURE_VERSION, TrialResult

X = FloatDistribution(0.0, 1.0)


def _study() -> optuna.Study:
    study = optuna.create_study(directions=["minimize"])
    study.set_user_attr("objectives", [{"name": "val_bpb", "direction": "minimize"}])
    study.set_user_attr("study_file", {"trial": {"tokens": 1000}, "objectives": [{"metric": "val_bpb"}]})
    study.set_user_attr("measure_version", MEASURE_VERSION)
    return study


def _add(study: optuna.Study, key: str, value: float, x: float, level: float | None = None, seeds: int = 1,
         source: str = "confirm") -> int:
    attrs: dict[str, Any] = {"point": preset("gated_deltanet").model_dump(mode="json"), "point_key": key,
                             "anchor": None, "metrics": {"val_bpb": value}}
    if level is not None:
        attrs["fidelity"] = {"source": source, "tokens": 4000, "d_model": 32, "n_layers": 2, "seq_len": 64,
                             "seeds": seeds, "level": level}
    study.add_trial(create_trial(state=TrialState.COMPLETE, values=[value], params={"x": x},
                                 distributions={"x": X}, user_attrs=attrs))
    return len(study.trials) - 1


def test_best_ranks_points_by_their_highest_fidelity() -> None:
    study = _study()
    a, b, c = _add(study, "A", 3.0, 0.1), _add(study, "B", 3.1, 0.2), _add(study, "C", 2.9, 0.3)
    assert [t.number for t in ranked(study)] == [c, a, b]  # no fidelity results: the base order
    long_a = _add(study, "A", 2.5, 0.1, level=4.0)
    long_b = _add(study, "B", 2.4, 0.1, level=4.0)
    # A and B reached 4x: ranked first, by their 4x values; C only has its short trial
    assert [t.number for t in ranked(study)] == [long_b, long_a, c]
    assert [t.number for t in ranked(study, fidelity="base")] == [c, a, b]
    # more seeds at the same level is the higher fidelity; the same level's trials are averaged
    more_seeds = _add(study, "A", 2.2, 0.1, level=4.0, seeds=3)
    assert [t.number for t in ranked(study)][:2] == [more_seeds, long_b]
    _add(study, "C", 2.6, 0.3, level=16.0)
    _add(study, "C", 2.8, 0.3, level=16.0)
    top = ranked(study)[0]
    assert top.user_attrs["point_key"] == "C" and fidelity.level(top) == 16.0
    assert fidelity.describe(top) == "confirm x16" and fidelity.describe(study.trials[a]) == "base"


def test_fidelity_results_do_not_count_towards_the_budget_nor_the_status_best() -> None:
    study = _study()
    _add(study, "A", 3.0, 0.1)
    _add(study, "A", 1.0, 0.1, level=4.0)
    counted = [counts_toward_budget(t) for t in study.trials]
    assert counted == [True, False]
    assert status(study).finished == 1
    assert status(study).best[0].values == [3.0]  # the study's own budget, not the 4x run
    assert (status(study).complete, status(study).fidelity) == (1, 1)


def test_the_sampler_sees_base_trials_only() -> None:
    study = _study()
    for i in range(4):
        _add(study, f"P{i}", 3.0 + i, 0.1 * i)
    _add(study, "P3", 0.5, 0.3, level=4.0)
    view = _BaseFidelityView(study)
    assert len(view.get_trials()) == 4 and len(view._get_trials(deepcopy=False)) == 4
    assert len(view.trials) == 4 and view.study_name == study.study_name

    class Recording(optuna.samplers.RandomSampler):
        seen: ClassVar[list[int]] = []

        def sample_independent(self, study, trial, name, distribution):
            Recording.seen.append(len(study.get_trials(states=(TrialState.COMPLETE,))))
            return super().sample_independent(study, trial, name, distribution)

    study.sampler = BaseFidelitySampler(Recording(seed=0))
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    assert Recording.seen == [4]
    # TPE runs on a study holding fidelity results
    study.sampler = BaseFidelitySampler(optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    trial = study.ask()
    assert 0.0 <= trial.suggest_float("x", 0.0, 1.0) <= 1.0


def test_driver_never_reuses_a_fidelity_result_for_a_duplicate(tmp_path: Path) -> None:
    from test_study import run_inline, trials_of, write_study

    path = write_study(tmp_path, trials=1, sampler={"kind": "anchors", "anchors": ["gated_deltanet"]})
    run_inline(path)
    (base,) = trials_of(path)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / "runs" / "tiny" / "study.journal")))
    study = optuna.load_study(study_name="tiny", storage=storage)
    attrs = {**base.user_attrs, "fidelity": {"source": "confirm", "level": 4.0, "seeds": 1}}
    study.add_trial(create_trial(state=TrialState.COMPLETE, values=[0.01], user_attrs=attrs))
    from miras_search.study import InlinePool, StudyDriver
    from miras_search.study.spec import load_study_file

    spec = load_study_file(path)
    driver = StudyDriver(spec, lambda: InlinePool(threads=1), trials=1)
    driver.run()
    for trial in driver.study.get_trials(deepcopy=False):
        driver._remember(trial)
    assert driver._done[base.user_attrs["point_key"]].number == base.number


def test_confirm_stores_its_long_runs_as_fidelity_results(monkeypatch: pytest.MonkeyPatch) -> None:
    study = _study()
    for i, value in enumerate([3.0, 3.1, 3.2]):
        _add(study, f"P{i}", value, 0.1 * i)



    values = iter([2.9, 2.7, 2.8, 2.6, 2.5, 2.4])
    monkeypatch.setattr(confirm_module, "run_trial",
                        lambda point, config, **_: TrialResult("complete", {"val_bpb": next(values)}))
    result = confirm_study(study, top=3, scale=4.0, seeds=[0, 1])
    added = store_fidelity(study, result)
    assert len(added) == 3
    stored = [study.trials[n] for n in added]
    assert [t.user_attrs["confirm_of"] for t in stored] == [0, 1, 2]
    assert [t.values[0] for t in stored] == pytest.approx([2.8, 2.7, 2.45])
    assert all(t.user_attrs["fidelity"]["level"] == 4.0 and t.user_attrs["fidelity"]["seeds"] == 2 for t in stored)
    assert all(t.user_attrs["point_key"] == study.trials[t.user_attrs["confirm_of"]].user_attrs["point_key"]
               for t in stored)
    assert [t.user_attrs["point_key"] for t in ranked(study)] == ["P2", "P1", "P0"]
    assert [t.user_attrs["point_key"] for t in ranked(study, fidelity="base")] == ["P0", "P1", "P2"]


def test_best_cli_says_the_fidelity(tmp_path: Path) -> None:
    from _fake_study import fake_study

    path = fake_study(tmp_path, values=[3.5, 3.1])
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "fake.journal")))
    study = optuna.load_study(study_name="fake", storage=storage)
    base = study.trials[0]
    attrs = {**base.user_attrs, "fidelity": {"source": "confirm", "level": 4.0, "seeds": 3}}
    study.add_trial(create_trial(state=TrialState.COMPLETE, values=[2.0], user_attrs=attrs))
    result = CliRunner().invoke(app, ["best", str(path), "--top", "2"])
    assert result.exit_code == 0, result.output
    assert "fidelity: confirm x4 (3 seeds)" in result.output
    number = len(study.trials) - 1
    assert result.output.index(f"trial: {number}") < result.output.index("trial: 1")


# ---- successive halving -----------------------------------------------------------------------
def _halving_study(tmp_path: Path) -> Path:
    from test_study import write_study

    return write_study(tmp_path, trials=4, sampler={"kind": "random", "anchors": [], "seed": 2},
                       budget={"schedule": "successive_halving", "eta": 2, "rungs": 3})


def test_successive_halving_promotes_the_best_half_to_longer_budgets(tmp_path: Path) -> None:
    from test_study import TINY_TRIAL, run_inline, trials_of

    path = _halving_study(tmp_path)
    summary = run_inline(path)
    trials = trials_of(path)
    base = [t for t in trials if "fidelity" not in t.user_attrs and t.state == TrialState.COMPLETE
            and "reused_from" not in t.user_attrs]  # distinct points (a duplicate draw reuses a result)
    first, second = len(base) // 2, len(base) // 4
    assert first >= 2, "the sampler drew too few distinct points for this test"
    assert summary.finished == 4 and summary.promoted == first + second
    promoted = sorted((t for t in trials if "fidelity" in t.user_attrs), key=lambda t: t.number)
    assert [t.user_attrs["fidelity"]["level"] for t in promoted] == [2.0] * first + [4.0] * second
    assert [t.user_attrs["fidelity"]["tokens"] for t in promoted] == [2 * TINY_TRIAL["tokens"]] * first + [
        4 * TINY_TRIAL["tokens"]] * second
    assert all(t.user_attrs["metrics"]["tokens"] == t.user_attrs["fidelity"]["tokens"] for t in promoted)
    by_value = sorted(base, key=lambda t: t.values[0])
    assert {t.user_attrs["halving_of"] for t in promoted[:first]} == {t.number for t in by_value[:first]}
    at_two = sorted(promoted[:first], key=lambda t: t.values[0])
    assert [t.user_attrs["halving_of"] for t in promoted[first:]] == [
        t.user_attrs["halving_of"] for t in at_two[:second]]
    # best: the points that reached 4x first, then the other 2x ones, then the rest by their short value
    best = ranked(open_study_of(path))
    assert [t.number for t in best[:second]] == [t.number for t in promoted[first:]]
    assert [t.number for t in best[second:first]] == [t.number for t in at_two[second:]]
    assert [t.number for t in best[first:]] == [t.number for t in by_value[first:]]


def open_study_of(path: Path) -> optuna.Study:
    from miras_search.study import open_study
    from miras_search.study.spec import load_study_file

    return open_study(load_study_file(path))


def test_successive_halving_resumes_with_the_missing_promotions_only(tmp_path: Path) -> None:
    from test_study import trials_of

    from miras_search.study import InlinePool, run_study
    from miras_search.study.spec import load_study_file

    path = _halving_study(tmp_path)
    trained: list[int] = []

    class StopAtFirstPromotion(InlinePool):
        def wait(self):
            task = self._queue[0]
            if task.config["tokens"] > 896:
                raise KeyboardInterrupt
            return super().wait()

    summary = run_study(load_study_file(path), lambda: StopAtFirstPromotion(threads=1))
    assert summary.interrupted and summary.finished == 4
    assert not any("fidelity" in t.user_attrs for t in trials_of(path))

    class Counting(InlinePool):
        def wait(self):
            trained.append(self._queue[0].config["tokens"])
            return super().wait()

    summary = run_study(load_study_file(path), lambda: Counting(threads=1))
    assert trained and set(trained) <= {1792, 3584} and summary.promoted == len(trained) and summary.ran == 0
    trained.clear()
    summary = run_study(load_study_file(path), lambda: Counting(threads=1))
    assert trained == [] and summary.already_done


def test_report_shows_fidelities_and_keeps_importances(tmp_path: Path) -> None:
    from test_study import run_inline

    from miras_search.report.build import build_report

    path = _halving_study(tmp_path)
    run_inline(path)
    study = open_study_of(path)
    written = build_report(study, tmp_path / "report")
    page = written.html.read_text()
    assert "<th>fidelity</th>" in page and "halving x4" in page and "highest fidelity" in page
    assert written.board[0].fidelity == "halving x4"
    assert "Parameter importances" in page and "Not available" not in page
