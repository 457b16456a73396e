"""Successive halving over model sizes: promotions that grow d_model / n_layers as well as tokens,
the ``budget.promotions`` schema and its errors, resume, and the fidelity level of a grown run."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from test_study import TINY_TRIAL, run_inline, trials_of, write_study

from miras_search.errors import ConfigError, MirasError
from miras_search.presets import preset
from miras_search.study import InlinePool, load_study_file, open_study, run_study
from miras_search.study import halving as halving_module
from miras_search.study.budget_spec import BudgetSpec, Promotion
from miras_search.study.fidelity import describe
from miras_search.study.halving import grown_point, promotions
from miras_search.study.samplers import _BaseFidelityView
from miras_search.study.summary import ranked

SIZES = [{"tokens_x": 2}, {"tokens_x": 2, "d_model_x": 2, "n_layers_x": 2}]


def _sizes_study(tmp_path: Path, promotions_: list | None = None) -> Path:
    return write_study(tmp_path, trials=4, sampler={"kind": "random", "anchors": [], "seed": 2},
                       budget={"schedule": "successive_halving", "eta": 2, "promotions": promotions_ or SIZES})


@pytest.mark.parametrize(("budget", "words"), [
    ({"schedule": "successive_halving", "promotions": [{"tokens_x": 4}, {"tokens_x": 2, "d_model_x": 1}]},
     "promotion 1 (2x the tokens) is 2x the base run's size and budget"),
    ({"schedule": "successive_halving", "promotions": [{"n_layers_x": 1}]}, "not more than the base run"),
    ({"schedule": "successive_halving", "rungs": 3, "promotions": [{"tokens_x": 3}]}, "not both"),
    ({"schedule": "fixed", "promotions": [{"tokens_x": 3}]}, "only with 'schedule: successive_halving'"),
    ({"schedule": "successive_halving", "promotions": [{"d_model_x": 1.5}]}, "budget.promotions.0.d_model_x"),
    ({"schedule": "successive_halving", "promotions": [{"width": 2}]}, "budget.promotions.0.width"),
    ({"schedule": "successive_halving", "promotions": [{"tokens_x": 0.5}]}, "budget.promotions.0.tokens_x"),
    ({"schedule": "successive_halving", "promotions": []}, "budget.promotions"),
])
def test_bad_promotions_name_the_field(tmp_path: Path, budget: dict, words: str) -> None:
    path = write_study(tmp_path, budget=budget)
    with pytest.raises(ConfigError) as caught:
        load_study_file(path)
    text = str(caught.value)
    assert "budget" in text and words in text, text
    assert "Traceback" not in text and len(text.splitlines()) <= 4


def test_the_schedule_of_rungs_and_of_promotions() -> None:
    assert [p.tokens_x for p in BudgetSpec(schedule="successive_halving", eta=3).schedule_of()] == [3.0, 9.0]
    assert [p.level for p in BudgetSpec(schedule="successive_halving", eta=2, rungs=4).schedule_of()] == [2, 4, 8]
    spec = BudgetSpec(schedule="successive_halving", promotions=[Promotion(**p) for p in SIZES])
    assert [p.level for p in spec.schedule_of()] == [2.0, 16.0]  # tokens x layers x width^2
    assert BudgetSpec.model_validate(spec.model_dump(mode="json")) == spec  # stored and read back


def test_grown_point_keeps_each_head_s_width_and_names_a_promotion_that_breaks_the_block() -> None:
    point = preset("gated_deltanet").model_dump(mode="json")
    block = point["block"]
    grown = grown_point(point, Promotion(tokens_x=2, d_model_x=2, n_layers_x=3), 65536)
    assert grown["block"]["d_model"] == 2 * block["d_model"] and grown["block"]["n_heads"] == 2 * block["n_heads"]
    assert grown["block"]["n_layers"] == 3 * block["n_layers"] and grown["train"]["tokens"] == 65536
    assert point["block"] == block  # the stored point is not changed
    wide = {**point, "block": {**block, "d_model": 512, "n_heads": 256}}
    with pytest.raises(MirasError, match=r"2x the width.*n_heads.*budget.promotions"):
        grown_point(wide, Promotion(d_model_x=2), 65536)


def test_successive_halving_grows_the_model_of_the_promoted_points(tmp_path: Path) -> None:
    path = _sizes_study(tmp_path)
    summary = run_inline(path)
    trials = trials_of(path)
    base = [t for t in trials if "fidelity" not in t.user_attrs and t.state == TrialState.COMPLETE
            and "reused_from" not in t.user_attrs]
    first, second = len(base) // 2, len(base) // 4
    assert first >= 2, "the sampler drew too few distinct points for this test"
    assert summary.promoted == first + second
    promoted = sorted((t for t in trials if "fidelity" in t.user_attrs), key=lambda t: t.number)
    records = [t.user_attrs["fidelity"] for t in promoted]
    assert [r["level"] for r in records] == [2.0] * first + [16.0] * second
    assert [(r["d_model"], r["n_layers"], r["tokens"]) for r in records] == (
        [(32, 1, 2 * TINY_TRIAL["tokens"])] * first + [(64, 2, 2 * TINY_TRIAL["tokens"])] * second)
    for trial in promoted[first:]:
        origin = next(t for t in base if t.number == trial.user_attrs["halving_of"])
        assert trial.user_attrs["trained_point"]["block"]["n_heads"] == 4  # 2 heads of width 16, x2
        assert trial.user_attrs["metrics"]["params"] > 3 * origin.user_attrs["metrics"]["params"]
        assert trial.user_attrs["point_key"] == origin.user_attrs["point_key"]  # the same point
    at_two = sorted(promoted[:first], key=lambda t: t.values[0])
    assert [t.user_attrs["halving_of"] for t in promoted[first:]] == [
        t.user_attrs["halving_of"] for t in at_two[:second]]
    best = ranked(open_study(load_study_file(path)))
    assert [t.number for t in best[:second]] == [t.number for t in promoted[first:]]
    assert describe(best[0]) == "halving x16 d64 L2" and describe(promoted[0]) == "halving x2"
    # the sampler sees the promoted points in the order their longer runs gave, on the base scale
    seen = {t.user_attrs["point_key"]: t.values[0] for t in _BaseFidelityView(open_study(load_study_file(path)))
            .get_trials(states=(TrialState.COMPLETE,)) if "reused_from" not in t.user_attrs}
    at_two_order = [t.user_attrs["point_key"] for t in at_two]
    assert sorted(at_two_order, key=seen.__getitem__) == at_two_order
    assert sorted(seen.values()) == sorted(t.values[0] for t in base)


def test_halving_over_sizes_resumes_with_the_missing_promotions_only(tmp_path: Path) -> None:
    path = _sizes_study(tmp_path)
    seen: list[tuple[int, int]] = []

    class StopAtTheLargerModel(InlinePool):
        def wait(self):
            if self._queue[0].point["block"]["d_model"] > 32:
                raise KeyboardInterrupt
            return super().wait()

    summary = run_study(load_study_file(path), lambda: StopAtTheLargerModel(threads=1))
    assert summary.interrupted
    levels = [t.user_attrs["fidelity"]["level"] for t in trials_of(path) if "fidelity" in t.user_attrs]
    assert levels and set(levels) == {2.0}

    class Recording(InlinePool):
        def wait(self):
            task = self._queue[0]
            seen.append((task.point["block"]["d_model"], task.config["tokens"]))
            return super().wait()

    summary = run_study(load_study_file(path), lambda: Recording(threads=1))
    assert seen and set(seen) == {(64, 2 * TINY_TRIAL["tokens"])} and summary.ran == 0
    seen.clear()
    summary = run_study(load_study_file(path), lambda: Recording(threads=1))
    assert seen == [] and summary.already_done


def test_a_promotion_that_breaks_the_block_is_stored_as_failed_and_not_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _sizes_study(tmp_path)
    real = halving_module.grown_point

    def refuse_the_wide_one(point, step, tokens):
        if step.d_model_x > 1:
            raise MirasError("the point grown to 2x the width is no valid model: block.n_heads: too many")
        return real(point, step, tokens)

    monkeypatch.setattr(halving_module, "grown_point", refuse_the_wide_one)
    run_inline(path)
    failed = [t for t in trials_of(path) if t.state == TrialState.FAIL and "fidelity" in t.user_attrs]
    assert failed and all(t.user_attrs["failure"] == "build" and "no valid model" in t.user_attrs["reason"]
                          for t in failed)
    assert run_inline(path).already_done  # a build failure repeats: not tried again


def test_halving_records_of_earlier_versions_count_as_their_token_promotion(tmp_path: Path) -> None:
    path = write_study(tmp_path, trials=4, budget={"schedule": "successive_halving", "eta": 2, "rungs": 2})
    spec = load_study_file(path)
    study = optuna.create_study(directions=["minimize"])
    study.set_user_attr("objectives", [{"name": "val_bpb", "direction": "minimize"}])
    for number, value in enumerate([3.0, 2.0, 4.0, 5.0]):
        study.add_trial(create_trial(state=TrialState.COMPLETE, values=[value], user_attrs={
            "point_key": f"P{number}", "point": {}}))
    assert [t.user_attrs["point_key"] for t in promotions(study, spec, 1)] == ["P1", "P0"]
    legacy = {"source": "halving", "tokens": 1792, "seeds": 1, "level": 2.0}  # no "grow": tokens only
    study.add_trial(create_trial(state=TrialState.COMPLETE, values=[1.0], user_attrs={
        "point_key": "P1", "point": {}, "fidelity": legacy}))
    assert [t.user_attrs["point_key"] for t in promotions(study, spec, 1)] == ["P0"]
