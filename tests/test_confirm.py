"""The proxy check (`miras confirm`): which points it re-trains, their time limit, the named models
it leaves out and why, and its verdict. Training is replaced by a fake ``run_trial`` that records
the configs it gets, so these tests run in a second; tests/test_report.py trains for real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.errors import MirasError
from miras_search.presets import preset
from miras_search.report import confirm as confirm_module
from miras_search.report.confirm import (
    MIN_VERDICT_POINTS,
    ConfirmResult,
    confirm_points,
    confirm_study,
    long_time_limit,
)
from miras_search.study.summary import ranked
from miras_search.trial import MEASURE_VERSION, TrialConfig, TrialResult

OBJECTIVES = [{"metric": "val_bpb", "direction": "minimize"},
              {"metric": "tokens_per_s", "direction": "maximize"}]
TRIAL = {"tokens": 1000, "time_limit_s": 4.0, "batch_size": 2, "seq_len": 32}  # one batch: 64 tokens


def _point(lr: float, anchor: str = "moneta") -> dict[str, Any]:
    """A valid stored point; ``lr`` tells the fake trainer which trial it is re-training."""
    point = preset(anchor).model_dump(mode="json")
    point["train"]["lr"] = lr
    return point


def _add(study: optuna.Study, state: TrialState, values: list[float] | None, lr: float,
         **attrs: Any) -> int:
    anchor = attrs.get("anchor")
    user_attrs = {"point": _point(lr, anchor or "moneta"), "point_key": f"key-{lr}", "anchor": anchor, **attrs}
    study.add_trial(create_trial(state=state, values=values, user_attrs=user_attrs))
    return len(study.trials) - 1


def _make_study(storage: optuna.storages.BaseStorage | None = None, name: str = "confirm-test") -> optuna.Study:
    """Two objectives, a limit, an infeasible front point, a reused duplicate, and named models:
    moneta complete, yaad failed (time limit), memora never run."""
    study = optuna.create_study(study_name=name, storage=storage, directions=["minimize", "maximize"])
    study.set_user_attr("objectives", [{"name": "val_bpb", "direction": "minimize"},
                                       {"name": "tokens_per_s", "direction": "maximize"}])
    study.set_user_attr("study_file", {"trial": TRIAL, "objectives": OBJECTIVES,
                                       "limits": [{"metric": "val_bpb", "max": 5.4}]})
    study.set_user_attr("measure_version", MEASURE_VERSION)
    C = TrialState.COMPLETE
    _add(study, C, [5.30, 100.0], 0.001, anchor="moneta", constraints=[-0.1])  # 0: feasible
    _add(study, TrialState.FAIL, None, 0.002, anchor="yaad", failure="time_limit",
         reason="the trial ran past its time limit of 4 s at step 9 of 32")  # 1
    _add(study, C, [5.10, 300.0], 0.003, constraints=[0.2])  # 2: dominates everything, infeasible
    _add(study, C, [5.20, 200.0], 0.004, constraints=[-0.2])  # 3: front
    _add(study, C, [5.25, 250.0], 0.005, constraints=[-0.15])  # 4: front
    _add(study, C, [5.20, 200.0], 0.004, constraints=[-0.2], reused_from=3)  # 5: duplicate of 3
    _add(study, C, [5.35, 90.0], 0.006, constraints=[-0.05])  # 6: dominated
    _add(study, C, [5.38, 80.0], 0.007, constraints=[-0.02])  # 7: dominated
    _add(study, TrialState.PRUNED, None, 0.008, constraints=[-0.1])  # 8
    return study


class FakeTrainer:
    """Stands in for ``run_trial``: long val_bpb = ``long[lr]``; records every config it gets."""

    def __init__(self, long: dict[float, float], fail: tuple[float, ...] = ()) -> None:
        self.long, self.fail = long, fail
        self.configs: list[TrialConfig] = []

    def __call__(self, point, config: TrialConfig, device: str | None = None) -> TrialResult:
        self.configs.append(config)
        if point.train.lr in self.fail:
            return TrialResult("failed", failure="time_limit", reason="too slow")
        return TrialResult("complete", metrics={"val_bpb": self.long[point.train.lr], "tokens_per_s": 1.0})


LONG = {0.001: 4.9, 0.003: 4.5, 0.004: 4.6, 0.005: 4.7, 0.006: 4.95, 0.007: 4.97}


def test_confirm_picks_the_points_best_lists(monkeypatch):
    """Feasible only, no reused duplicate, Pareto front first: the same order as `miras best`."""
    study = _make_study()
    best = [t.number for t in ranked(study)]
    assert best == [3, 4, 0, 6, 7]  # the reference: feasible, #5 (= #3) and infeasible #2 left out
    for top in (1, 2, 3):
        rows, _, _, _ = confirm_points(study, top)
        assert [r.number for r in rows][:top] == best[:top]
    monkeypatch.setattr(confirm_module, "run_trial", FakeTrainer(LONG))
    result = confirm_study(study, top=2, scale=2, seeds=(0,))
    assert [e.trial for e in result.entries] == [3, 4, 0]  # top 2, then the named model moneta
    assert 2 not in [e.trial for e in result.entries] and 5 not in [e.trial for e in result.entries]


def test_named_models_that_failed_are_not_called_unmeasured(monkeypatch):
    study = _make_study()
    _, missing, left_out, _ = confirm_points(study, 2)
    assert missing == ["memora"]  # no trial at all
    assert list(left_out) == ["yaad"]
    assert left_out["yaad"] == ("trial 1 failed in the study (time_limit: the trial ran past its "
                                "time limit of 4 s at step 9 of 32)")
    monkeypatch.setattr(confirm_module, "run_trial", FakeTrainer(LONG))
    notes: list[str] = []
    result = confirm_study(study, top=2, scale=2, seeds=(0,), notice=notes.append)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["missing"] == ["memora"] and data["named_left_out"] == left_out
    assert any(n.startswith("named model yaad is left out: trial 1 failed in the study") for n in notes)
    assert "named model memora is left out: the study has no trial of it" in notes


def test_named_model_that_breaks_a_limit_says_so():
    study = optuna.create_study(directions=["minimize"])
    study.set_user_attr("objectives", [{"name": "val_bpb", "direction": "minimize"}])
    _add(study, TrialState.COMPLETE, [5.0], 0.001, anchor="moneta", constraints=[0.3])
    _add(study, TrialState.PRUNED, None, 0.002, anchor="yaad", failure="limit",
         reason="params = 160,392 breaks params <= 1000")
    _add(study, TrialState.COMPLETE, [5.2], 0.003, anchor="memora", constraints=[-1.0])
    rows, missing, left_out, passed = confirm_points(study, 5)
    assert [r.number for r in rows] == [2] and missing == [] and passed == []
    assert "breaks the study's limits" in left_out["moneta"]
    assert left_out["yaad"] == "trial 1 was pruned in the study (limit: params = 160,392 breaks params <= 1000)"


def test_a_study_measured_the_old_way_is_not_confirmed(monkeypatch):
    study = _make_study()
    study.set_user_attr("measure_version", MEASURE_VERSION - 1)
    trainer = FakeTrainer(LONG)
    monkeypatch.setattr(confirm_module, "run_trial", trainer)
    with pytest.raises(MirasError, match=f"measure version {MEASURE_VERSION - 1}"):
        confirm_study(study, top=2, scale=2, seeds=(0,))
    assert trainer.configs == []  # refused before any long run


def test_long_runs_get_the_study_time_limit_times_the_scale(monkeypatch):
    study = _make_study()
    trainer = FakeTrainer(LONG)
    monkeypatch.setattr(confirm_module, "run_trial", trainer)
    result = confirm_study(study, top=2, scale=4, seeds=(0, 1))
    assert {c.time_limit_s for c in trainer.configs} == {16.0}  # 4 s x --scale 4
    assert {c.tokens for c in trainer.configs} == {4000}
    assert result.time_limit_s == 16.0 and "4 s per trial x 4" in result.time_limit_source
    again = ConfirmResult._from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.time_limit_s == 16.0 and again.time_limit_source == result.time_limit_source


@pytest.mark.parametrize("override, expected, words", [(100.0, 100.0, "100 s from --time-limit"),
                                                       (0.0, None, "none (--time-limit 0)")])
def test_time_limit_option_overrides_the_scaled_limit(monkeypatch, override, expected, words):
    trainer = FakeTrainer(LONG)
    monkeypatch.setattr(confirm_module, "run_trial", trainer)
    result = confirm_study(_make_study(), top=1, scale=4, seeds=(0,), time_limit=override)
    assert {c.time_limit_s for c in trainer.configs} == {expected}
    assert result.time_limit_s == expected and result.time_limit_source == words


def test_time_limit_without_a_study_limit_and_bad_values():
    assert long_time_limit(TrialConfig(tokens=10), 4.0) == (None, "none (the study's trials have no time limit)")
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(MirasError, match="--time-limit must be"):
            long_time_limit(TrialConfig(tokens=10), 4.0, bad)


def test_confirm_command_takes_time_limit_and_says_where_it_came_from(tmp_path, monkeypatch):
    journal = tmp_path / "study.journal"
    _make_study(JournalStorage(JournalFileBackend(str(journal))), name="cli-confirm")
    trainer = FakeTrainer(LONG)
    monkeypatch.setattr(confirm_module, "run_trial", trainer)
    out = tmp_path / "out"
    args = ["confirm", "cli-confirm", "--storage", str(journal), "--top", "5", "--seeds", "1", "-o", str(out)]
    result = CliRunner().invoke(app, [*args, "--time-limit", "7"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "time limit per run: 7 s from --time-limit" in result.output
    assert "named model yaad is left out: trial 1 failed in the study (time_limit:" in result.output
    assert {c.time_limit_s for c in trainer.configs} == {7.0}
    saved = json.loads((out / "confirm.json").read_text())
    assert saved["time_limit_s"] == 7.0 and saved["named_left_out"]["yaad"].startswith("trial 1 failed")
    assert [e["trial"] for e in saved["entries"]] == [3, 4, 0, 6, 7]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "time limit per run: 16 s = the study's 4 s per trial x 4" in result.output
    result = CliRunner().invoke(app, [*args, "--time-limit", "-3"], env={"COLUMNS": "250"})
    assert result.exit_code == 2 and "--time-limit" in result.output


def test_a_perfect_order_of_few_points_is_not_called_a_prediction(monkeypatch):
    """F6 end to end: 3 (and 4) points in perfect order give no verdict and no collapsed CI."""
    study = _make_study()
    monkeypatch.setattr(confirm_module, "run_trial", FakeTrainer(LONG, fail=(0.006, 0.007)))
    result = confirm_study(study, top=3, scale=2, seeds=(0,), resamples=200)
    assert [e.trial for e in result.entries if e.long] == [3, 4, 0]  # short and long in the same order
    rho = result.correlations[0]
    assert rho.value == 1.0 and rho.p_value == 1 / 6 and rho.exact
    assert result.predicts is None and "Too few points (3)" in result.verdict
    assert "1 time in 6" in result.verdict and "+1.000 .. +1.000" not in result.verdict
    monkeypatch.setattr(confirm_module, "run_trial", FakeTrainer(LONG))
    result = confirm_study(study, top=5, scale=2, seeds=(0,), resamples=200)
    assert len([e for e in result.entries if e.long]) == MIN_VERDICT_POINTS
    rho = result.correlations[0]
    assert rho.value == pytest.approx(1.0, abs=1e-12) and rho.p_value == pytest.approx(1 / 120, abs=0)
    assert result.predicts is True and "+1.000 .. +1.000" not in result.verdict


def test_an_old_confirm_json_still_reads(tmp_path: Path):
    """A confirm.json written before p-values and time limits existed still loads and prints."""
    old = {"study": "s", "objective": {"name": "val_bpb", "direction": "minimize"}, "scale": 2,
           "seeds": [0], "entries": [], "correlations": [
               {"name": "Spearman", "value": 0.5, "low": -0.2, "high": 0.9, "level": 0.95, "resamples": 2000}],
           "verdict": "v", "predicts": False, "method": "paired percentile bootstrap", "missing": ["yaad"]}
    path = tmp_path / "confirm.json"
    path.write_text(json.dumps(old))
    result = ConfirmResult.read_json(path)
    assert result.named_left_out == {} and result.time_limit_s is None
    assert result.correlations[0].describe() == "Spearman +0.500 (95% CI -0.200 .. +0.900)"


@pytest.mark.parametrize(("long", "shown"), [([], "-"), ([3.1], "-"), ([3.0, 3.2], "0.14")])
def test_the_spread_over_seeds_is_a_dash_below_two_seeds(long, shown):
    from miras_search.report.confirm import ConfirmEntry

    entry = ConfirmEntry(trial=0, label="p", anchor=None, short=3.0, tokens=1, long=long)
    assert entry.long_std_text == shown


def test_a_scale_too_small_for_one_batch_is_refused_before_any_run(monkeypatch):
    """Before: every long run started and failed with 'tokens (1) must cover at least one batch'."""
    trainer = FakeTrainer(LONG)
    monkeypatch.setattr(confirm_module, "run_trial", trainer)
    with pytest.raises(MirasError) as caught:
        confirm_study(_make_study(), top=1, scale=1e-9, seeds=(0,))
    message = str(caught.value)
    assert message.startswith("--scale 1e-09 leaves a long run less than one training batch")
    assert "tokens (1) do not cover one batch (batch_size 2 x seq_len 32 = 64)" in message
    assert message.endswith("is 0.064") and "\n" not in message
    assert trainer.configs == []
    confirm_study(_make_study(), top=1, scale=0.064, seeds=(0,))  # the scale it names is enough
    assert {c.tokens for c in trainer.configs} == {64}


def test_confirm_json_is_valid_json_with_null_for_values_that_are_not_finite(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(confirm_module, "run_trial", FakeTrainer(LONG, fail=(0.004,)))
    result = confirm_study(_make_study(), top=2, scale=2, seeds=(0,), resamples=50)
    path = tmp_path / "confirm.json"
    result.write_json(path)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in confirm.json"))
    assert data["entries"][0]["long_std"] is None and data["entries"][0]["long_mean"] is None  # failed: nan
    again = ConfirmResult.read_json(path)
    assert again.entries[1].long == result.entries[1].long
    assert [c.describe() for c in again.correlations] == [c.describe() for c in result.correlations]


def test_a_storage_that_cannot_be_written_stops_confirm_before_any_long_run(tmp_path, monkeypatch):
    """The long runs end by storing their results: a read-only storage is found before them, not
    after hours of training (the disk made read-only under the journal's writes)."""
    import errno

    from miras_search.study.journal_backend import RepairingJournalFileBackend

    journal = tmp_path / "study.journal"
    _make_study(JournalStorage(JournalFileBackend(str(journal))), name="ro-confirm")
    before = journal.read_bytes()
    trainer = FakeTrainer(LONG)
    monkeypatch.setattr(confirm_module, "run_trial", trainer)

    def read_only(self, logs):
        raise OSError(errno.EROFS, "Read-only file system", str(journal))

    monkeypatch.setattr(JournalFileBackend, "append_logs", read_only)
    monkeypatch.setattr(RepairingJournalFileBackend, "append_logs", read_only, raising=False)
    args = ["confirm", "ro-confirm", "--storage", str(journal), "--seeds", "1", "-o", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    output = " ".join(result.output.split())
    assert result.exit_code == 1, output
    assert "read-only" in output and "Traceback" not in output, output
    assert trainer.configs == []  # no long run started
    assert journal.read_bytes() == before
