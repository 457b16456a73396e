"""What Optuna's tools see of a study: named objectives, and intermediate values in the
objective's unit (a pruned trial's value lands on the val_bpb axis as val_bpb)."""

from __future__ import annotations

import math

import optuna
from optuna.trial import TrialState
from test_study import run_inline, trials_of, write_study

from miras_search.study import load_study_file
from miras_search.study.setup import create_study, storage_of


def test_the_storage_names_the_objectives(tmp_path):
    path = write_study(tmp_path, objectives=[{"metric": "val_bpb"},
                                             {"metric": "tokens_per_s", "direction": "maximize"}])
    spec = load_study_file(path)
    study = create_study(spec, storage_of(spec), spec.load_space())
    assert study.metric_names == ["val_bpb", "tokens_per_s"]


def test_pruned_trials_report_the_objective_not_the_training_loss(tmp_path):
    path = write_study(tmp_path, trials=4, sampler={"kind": "random", "anchors": []},
                       pruner={"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 0})
    spec = load_study_file(path)
    study = create_study(spec, storage_of(spec), spec.load_space())
    for _ in range(3):  # earlier trials no tiny model can match: every new one is pruned at step 2
        study.add_trial(optuna.trial.create_trial(
            values=[0.0], intermediate_values={step: 0.0 for step in range(1, 20)},
            user_attrs={"anchor": None, "point_key": "fake"}))
    run_inline(path)
    new = [t for t in trials_of(path) if t.number >= 3]
    assert new and all(t.state == TrialState.PRUNED for t in new)
    for trial in new:
        loss_nats = trial.user_attrs["curve"][0][1]
        bpb = trial.intermediate_values[2]
        # an untrained byte model: about log2(vocab) bits per byte, i.e. the loss / ln 2
        assert abs(bpb - loss_nats / math.log(2)) < 0.15 * bpb and bpb > 1.2 * loss_nats
        assert trial.value == bpb  # what optuna-dashboard plots on the val_bpb axis
