"""`miras compare`'s messages: objectives named with their directions; queued trials apart."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from miras_search.errors import MirasError
from miras_search.presets import preset
from miras_search.report.compare import compare_studies


def _study(name: str, direction: str, values: list[float], queued: int = 0) -> optuna.Study:
    study = optuna.create_study(study_name=name, directions=[direction])
    study.set_user_attr("objectives", [{"name": "val_bpb", "direction": direction}])
    point = preset("moneta").model_dump(mode="json")
    for value in values:
        study.add_trial(create_trial(state=TrialState.COMPLETE, values=[value],
                                     user_attrs={"point": point, "point_key": f"k{value}"}))
    for _ in range(queued):
        study.enqueue_trial({})
    return study


def test_studies_that_rank_one_metric_opposite_ways_say_the_directions():
    with pytest.raises(MirasError) as caught:
        compare_studies(_study("a", "minimize", [1.0]), _study("b", "maximize", [1.0]))
    assert "share no objective (val_bpb (minimize) vs val_bpb (maximize))" in str(caught.value)


def test_queued_trials_are_not_counted_as_run():
    first, second = _study("a", "minimize", [1.0], queued=5), _study("b", "minimize", [1.0, 2.0])
    assert sum(t.state == TrialState.WAITING for t in first.get_trials()) == 5
    comparison = compare_studies(first, second)
    assert [side.count_text for side in comparison.sides] == ["1 (1), 5 queued", "2 (2)"]
