"""The sampler learns from higher-fidelity results: a re-measured point's base value is replaced by
the base value its rank among the points re-measured alike gives it (study.fidelity_values)."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from test_fidelity import _add, _study

from miras_search.study.fidelity_values import sampler_values
from miras_search.study.samplers import BaseFidelitySampler, _BaseFidelityView, base_fidelity_view

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # TPE's group


def _values(study: optuna.Study) -> dict[str, float]:
    """point_key -> the value the sampler sees."""
    return {t.user_attrs["point_key"]: t.values[0]
            for t in _BaseFidelityView(study).get_trials(states=(TrialState.COMPLETE,))}


def test_re_measured_points_trade_their_base_values_by_their_higher_fidelity_order() -> None:
    study = _study()
    for key, value in zip("ABCDE", [1.0, 1.2, 1.4, 1.6, 1.8], strict=True):
        _add(study, key, value, 0.1)
    # A, B and C were re-measured at 4x: C is best there, then A, then B
    for key, value in zip("ABC", [0.8, 0.9, 0.7], strict=True):
        _add(study, key, value, 0.1, level=4.0)
    seen = _values(study)
    assert seen == {"A": 1.2, "B": 1.4, "C": 1.0, "D": 1.6, "E": 1.8}
    assert sorted(seen.values()) == [1.0, 1.2, 1.4, 1.6, 1.8]  # the base scale, the same values
    assert len(_BaseFidelityView(study).get_trials()) == 5  # one trial per point
    # parameter importances keep the base budget's own values
    raw = {t.user_attrs["point_key"]: t.values[0] for t in base_fidelity_view(study).get_trials()}
    assert raw == {"A": 1.0, "B": 1.2, "C": 1.4, "D": 1.6, "E": 1.8}


def test_the_highest_fidelity_decides_and_a_lone_or_smaller_run_changes_nothing() -> None:
    study = _study()
    for key, value in zip("ABCD", [1.0, 2.0, 3.0, 4.0], strict=True):
        _add(study, key, value, 0.1)
    _add(study, "A", 0.5, 0.1, level=2.0, source="halving")
    _add(study, "B", 0.6, 0.1, level=2.0, source="halving")
    assert _values(study) == {"A": 1.0, "B": 2.0, "C": 3.0, "D": 4.0}  # 2x agrees with the base
    _add(study, "A", 0.4, 0.1, level=8.0)
    _add(study, "B", 0.3, 0.1, level=8.0)
    assert _values(study)["B"] == 1.0 and _values(study)["A"] == 2.0  # 8x disagrees and wins
    _add(study, "D", 0.1, 0.1, level=16.0)  # alone at its level: nothing to rank it against
    _add(study, "C", 0.1, 0.1, level=0.25, source="scale")  # below the base budget
    _add(study, "D", 0.1, 0.1, level=0.25, source="scale")
    assert _values(study) == {"A": 2.0, "B": 1.0, "C": 3.0, "D": 4.0}


def test_each_objective_is_carried_on_its_own_and_duplicates_follow_their_point() -> None:
    study = optuna.create_study(directions=["minimize", "maximize"])
    study.set_user_attr("objectives", [{"name": "val_bpb", "direction": "minimize"},
                                       {"name": "tokens_per_s", "direction": "maximize"}])
    x = FloatDistribution(0.0, 1.0)

    def add(key, values, level=None, **extra):
        attrs = {"point_key": key, **extra}
        if level is not None:
            attrs["fidelity"] = {"source": "confirm", "level": level, "seeds": 1}
        study.add_trial(create_trial(state=TrialState.COMPLETE, values=values, params={"x": 0.5},
                                     distributions={"x": x}, user_attrs=attrs))

    add("A", [1.0, 100.0])
    add("B", [2.0, 200.0])
    add("B", [2.0, 200.0], reused_from=1)  # a duplicate draw that reused B's result
    add("A", [0.9, 80.0], level=4.0)  # at 4x: A is worse in bpb, B faster still
    add("B", [0.8, 90.0], level=4.0)
    carried = sampler_values(study.get_trials())
    assert carried == {0: [2.0, 100.0], 1: [1.0, 200.0], 2: [1.0, 200.0]}
    elite = base_fidelity_view(study, carry=True).best_trials
    assert [t.number for t in elite] == [1, 2]  # B dominates A once carried (NSGA-II's elite)


def test_infeasible_results_are_not_carried() -> None:
    study = _study()
    _add(study, "A", 1.0, 0.1)
    _add(study, "B", 2.0, 0.2)
    _add(study, "A", 0.9, 0.1, level=4.0)
    number = _add(study, "B", 0.1, 0.2, level=4.0)
    assert _values(study) == {"A": 2.0, "B": 1.0}
    study2 = _study()
    for trial in study.trials:
        attrs = dict(trial.user_attrs)
        if trial.number == number:
            attrs["constraints"] = [1.0]  # B's 4x run broke a limit
        study2.add_trial(create_trial(state=trial.state, values=trial.values, params=trial.params,
                                      distributions=trial.distributions, user_attrs=attrs))
    assert _values(study2) == {"A": 1.0, "B": 2.0}


def _tpe_proposals(with_high_fidelity: bool, seed: int) -> list[float]:
    """TPE's next 10 proposals of x on a study where points at small x are better at the base
    budget, and (with_high_fidelity) the points at large x are better when trained longer."""
    study, n = _study(), 12
    left = [0.02 + 0.2 * i / n for i in range(n)]
    right = [0.78 + 0.2 * i / n for i in range(n)]
    for i, x in enumerate(left):
        _add(study, f"L{i}", 1.0 + 0.01 * i, x)
    for i, x in enumerate(right):
        _add(study, f"R{i}", 2.0 + 0.01 * i, x)
    if with_high_fidelity:
        for i, x in enumerate(left):
            _add(study, f"L{i}", 0.9 + 0.01 * i, x, level=3.0, source="halving")
        for i, x in enumerate(right):
            _add(study, f"R{i}", 0.5 + 0.01 * i, x, level=3.0, source="halving")
    study.sampler = BaseFidelitySampler(optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True))
    return [study.ask().suggest_float("x", 0.0, 1.0) for _ in range(10)]


@pytest.mark.parametrize("seed", [0, 1])
def test_tpe_proposes_where_the_higher_fidelity_is_better(seed: int) -> None:
    base_only = _tpe_proposals(False, seed)
    carried = _tpe_proposals(True, seed)
    assert sum(x > 0.5 for x in base_only) <= 3, base_only  # the base budget's good region
    assert sum(x > 0.5 for x in carried) >= 7, carried  # the longer runs' good region
