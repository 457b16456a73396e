"""Reproducibility of studies (one process, no Ray): a study run twice from scratch with one
``sampler.seed`` proposes the same points in the same order and measures them alike; a run that
continues a study draws new points (not the first run's again, which would be duplicates that only
take the earlier results) and does so reproducibly from the same storage."""

from __future__ import annotations

import shutil

import pytest
from optuna.trial import FrozenTrial
from test_study import run_inline, trials_of, write_study

from miras_search.schema.train import SEED_MAX
from miras_search.study.samplers import run_seed


def _points(trials: list[FrozenTrial]) -> list[str]:
    return [t.user_attrs["point_key"] for t in trials]


def _values(trials: list[FrozenTrial]) -> list[list[float] | None]:
    return [t.values for t in trials]


@pytest.mark.parametrize("kind", ["random", "tpe"])
def test_a_study_run_twice_from_scratch_proposes_and_measures_the_same(tmp_path, kind):
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        path = write_study(tmp_path / name, trials=3, sampler={"kind": kind, "anchors": [], "seed": 5})
        run_inline(path)
        runs.append(trials_of(path))
    first, second = runs
    assert _points(first) == _points(second) and [t.params for t in first] == [t.params for t in second]
    assert _values(first) == _values(second)  # bitwise: one thread, one seed, on a CPU
    assert all(t.values is not None for t in first)


def test_another_sampler_seed_proposes_other_points(tmp_path):
    keys = []
    for seed in (0, 1):
        (tmp_path / str(seed)).mkdir()
        path = write_study(tmp_path / str(seed), trials=2, sampler={"kind": "random", "anchors": [], "seed": seed})
        run_inline(path)
        keys.append(_points(trials_of(path)))
    assert keys[0] != keys[1]


@pytest.mark.parametrize("kind", ["random", "tpe"])
def test_a_continued_study_draws_new_points_not_the_first_runs_again(tmp_path, kind):
    """Restarted with sampler.seed itself the sampler replayed the first run's draws: every trial
    of the second run was a duplicate that took an earlier result, untrained."""
    path = write_study(tmp_path, trials=3, sampler={"kind": kind, "anchors": [], "seed": 0})
    run_inline(path)
    summary = run_inline(path, trials=6)
    trials = trials_of(path)
    assert len(trials) == 6 and summary.finished == 6
    # the tiny space holds 8 discrete points beside its head gates' values: a new draw may meet an
    # earlier point by chance, but the second run is not the first one's draws again
    assert [t.params for t in trials[3:]] != [t.params for t in trials[:3]]
    assert summary.reused < 3 and summary.ran == 3 - summary.reused


def test_a_continued_study_draws_the_same_points_from_the_same_storage(tmp_path):
    (tmp_path / "a").mkdir()
    path = write_study(tmp_path / "a", trials=2, sampler={"kind": "random", "anchors": [], "seed": 0})
    run_inline(path)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    copy = tmp_path / "b" / "study.yaml"
    copy.write_text(copy.read_text().replace(str(tmp_path / "a"), str(tmp_path / "b")))
    for study in (path, copy):
        run_inline(study, trials=4)
    first, second = trials_of(path), trials_of(copy)
    assert len(first) == 4 and _points(first) == _points(second)
    assert _values(first) == _values(second)


def test_the_run_seed_is_the_file_seed_in_a_first_run_and_another_in_range_later():
    assert run_seed(7, 0) == 7
    later = {run_seed(7, n) for n in (1, 2, 3, 40)}
    assert len(later) == 4 and 7 not in later and all(0 <= s <= SEED_MAX for s in later)
    assert run_seed(7, 3) == run_seed(7, 3) != run_seed(8, 3)


def test_a_run_stopped_before_any_trial_started_is_rerun_as_from_scratch(tmp_path):
    """Only its anchors were queued (Ctrl-C while the workers started): the rerun draws with the
    file's seed, as a first run does."""
    from miras_search.study import load_study_file, run_study

    sampler = {"kind": "random", "anchors": ["gated_deltanet"], "seed": 2}
    runs = []
    for name, stop_first in (("a", True), ("b", False)):
        (tmp_path / name).mkdir()
        path = write_study(tmp_path / name, trials=3, sampler=sampler)
        if stop_first:
            def stopped_pool():
                raise KeyboardInterrupt
            assert run_study(load_study_file(path), stopped_pool).interrupted
        run_inline(path)
        runs.append(_points(trials_of(path)))
    assert runs[0] == runs[1] and len(runs[0]) == 3  # the anchor and 2 draws, in the same order


@pytest.mark.parametrize("seeds", [None, [3], [1, 2]])
def test_miras_trial_and_run_trial_give_a_study_trials_exact_metrics(tmp_path, seeds):
    """The same point, budget and seeds: a study's trial, `miras trial POINT --config STUDY` and
    ``run_trial`` agree bit for bit on a CPU (`miras trial` used the point's own seed and ignored
    the study's ``seeds``, so its numbers differed from the study's)."""
    import json

    import yaml
    from typer.testing import CliRunner

    from miras_search import run_trial
    from miras_search.cli import app
    from miras_search.study import load_study_file

    path = write_study(tmp_path, trials=1, sampler={"kind": "anchors", "anchors": ["gated_deltanet"]},
                       **({"seeds": seeds} if seeds else {}))
    run_inline(path)
    (trial,) = trials_of(path)
    stored = trial.user_attrs["metrics"]
    (tmp_path / "point.yaml").write_text(yaml.safe_dump(trial.user_attrs["point"]))
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(app, ["trial", str(tmp_path / "point.yaml"), "--config", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    shown = json.loads(out.read_text())["metrics"]
    assert shown["val_bpb"] == stored["val_bpb"] and shown["val_loss"] == stored["val_loss"]
    assert {k for k in shown if "/seed" in k} == {k for k in stored if "/seed" in k}
    config = load_study_file(path).trial.located()
    first = run_trial(trial.user_attrs["point"], config.model_copy(update={"seed": (seeds or [None])[0]}))
    assert first.metrics["val_bpb"] == stored.get(f"val_bpb/seed{seeds[0]}" if seeds and len(seeds) > 1
                                                    else "val_bpb")
