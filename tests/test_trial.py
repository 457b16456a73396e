"""Trials: reproducible metrics, every failure kind on purpose, objectives, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.errors import ConfigError
from miras_search.presets import preset
from miras_search.schema import ModelPoint
from miras_search.trial import Objective, TrialConfig, TrialResult, run_trial

TINY_BLOCK = {"d_model": 32, "n_heads": 2, "n_layers": 1, "max_seq_len": 512}
TINY = TrialConfig.model_validate({
    "data": [{"task": "text"}, {"task": "mqar", "num_pairs": 4, "vocab_size": 32, "seq_len": 32}],
    "tokens": 2048, "batch_size": 4, "seq_len": 32, "eval_batches": 2, "report_every": 4,
})


def tiny(name: str, **sections) -> ModelPoint:
    data = preset(name).model_dump()
    data["block"].update(TINY_BLOCK)
    for key, value in sections.items():
        data[key] = value
    return ModelPoint.model_validate(data)


def test_same_seed_gives_identical_metrics():
    point = tiny("gated_deltanet")
    first, second = run_trial(point, TINY), run_trial(point, TINY)
    assert first.ok and second.ok, (first.reason, second.reason)
    for name in ("train_loss", "val_loss", "val_bpb", "loss/mqar", "acc/mqar"):
        assert first.metrics[name] == pytest.approx(second.metrics[name], rel=1e-6, abs=1e-9), name
    assert first.curve == second.curve
    other = run_trial(point, TINY.model_copy(update={"seed": 3}))
    assert other.metrics["val_loss"] != first.metrics["val_loss"]


def test_metrics_cover_quality_speed_and_size():
    result = run_trial(tiny("moneta"), TINY)
    assert result.ok, result.reason
    m = result.metrics
    assert {"val_loss", "val_bpb", "acc/mqar", "tokens_per_s", "peak_mem_mb", "params", "state_size",
            "wall_s", "outside_step_share"} <= set(m)
    assert m["val_bpb"] == pytest.approx(m["val_loss"] / torch.log(torch.tensor(2.0)).item())
    assert 0.0 <= m["acc/mqar"] <= 1.0 and m["tokens_per_s"] > 0
    assert len(result.curve) == TINY.tokens // (TINY.batch_size * TINY.seq_len) // TINY.report_every
    assert result.objective == m["val_loss"]


def test_unbuildable_point_fails_cleanly(monkeypatch):
    # every registered option builds now; a factory refusal is simulated
    from miras_search.errors import UnsupportedPoint
    from miras_search.trial import runner

    def refuse(point, device):
        raise UnsupportedPoint("algorithm 'imaginary' is not built")

    monkeypatch.setattr(runner, "build_model", refuse)
    result = run_trial(tiny("deltanet"), TINY)
    assert result.status == "failed" and result.failure == "build"
    assert "imaginary" in result.reason


def test_a_vocabulary_smaller_than_the_data_fails_before_training():
    """The byte corpus uses 260 ids; a smaller block.vocab_size was an IndexError mid-training."""
    data = tiny("gated_deltanet").model_dump()
    data["block"]["vocab_size"] = 100
    result = run_trial(ModelPoint.model_validate(data), TINY)
    assert result.status == "failed" and result.failure == "build"
    assert "block.vocab_size (100) is smaller than the data's vocabulary (260 ids)" in result.reason


def test_nan_is_a_clean_failure():
    # An unnormalised key and a huge inner step on an unsmoothed l4 loss: the memory overflows.
    point = ModelPoint.model_validate({
        "memory": {"kind": "vector"}, "bias": {"kind": "lp", "p": 4, "smooth": False},
        "algorithm": {"kind": "gd", "eta": {"mode": "constant", "value": 1000}},
        "block": {**TINY_BLOCK, "qk_l2_norm": False},
        "train": {"tokens": 2048, "batch_size": 2, "seq_len": 64, "lr": 0.01},
    })
    result = run_trial(point, TrialConfig(eval_batches=1))
    assert result.status == "failed" and result.failure == "nan", result.reason
    assert "NaN or inf" in result.reason and result.metrics["params"] > 0


def test_divergence_bound_fails_the_trial():
    result = run_trial(tiny("gated_deltanet"), TINY.model_copy(update={"max_loss": 0.5}))
    assert result.failure == "diverged" and "above max_loss" in result.reason


def test_time_limit_fails_the_trial_with_what_was_measured():
    result = run_trial(tiny("gated_deltanet"), TINY.model_copy(update={"time_limit_s": 1e-3}))
    assert result.failure == "time_limit"
    assert result.metrics["params"] > 0 and "wall_s" in result.metrics


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA out-of-memory needs a GPU")
def test_cuda_out_of_memory_fails_the_trial():
    huge = tiny("transformer")
    data = huge.model_dump()
    data["block"].update({"d_model": 8192, "n_heads": 64, "n_layers": 64, "vocab_size": 2**19})
    result = run_trial(ModelPoint.model_validate(data), TINY, device="cuda")
    assert result.failure == "oom"


def test_objective_naming_an_unmeasured_metric_fails_with_the_list():
    config = TINY.model_copy(update={"objective": Objective(metric="acc/niah")})
    result = run_trial(tiny("transformer"), config)
    assert result.status == "failed" and "acc/niah" in result.reason and "acc/mqar" in result.reason


def test_weighted_objective():
    objective = Objective(weights={"val_bpb": 1.0, "acc/mqar": -2.0})
    assert objective.value({"val_bpb": 3.0, "acc/mqar": 0.25}) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="minimised"):
        Objective(weights={"val_bpb": 1.0}, direction="maximize")


def test_pruning_hook_stops_the_trial():
    seen = []

    def report(step: int, loss: float) -> bool:
        seen.append(step)
        return False

    result = run_trial(tiny("gated_deltanet"), TINY, report=report)
    assert result.status == "pruned" and seen == [TINY.report_every]


def test_cli_trial_prints_metrics_and_writes_json(tmp_path, root):
    config = tmp_path / "trial.yaml"
    config.write_text(json.dumps(TINY.model_dump(mode="json")))
    point = tmp_path / "point.yaml"
    point.write_text("preset: gated_deltanet\nblock: {d_model: 32, n_heads: 2, n_layers: 1}\n")
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(app, ["trial", str(point), "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "val_loss" in result.output
    stored = json.loads(out.read_text())
    assert stored["status"] == "complete" and stored["metrics"]["val_loss"] > 0


@pytest.mark.slow
def test_recall_tasks_separate_attention_from_a_vector_memory():
    """Softmax attention (with the block's short conv) learns MQAR; a diagonal (vector) memory
    cannot bind keys to values and stays near "one of the values in context" (~25%)."""
    config = TrialConfig.model_validate({
        "data": [{"task": "mqar", "num_pairs": 4, "vocab_size": 32, "seq_len": 24}],
        "tokens": 24 * 32 * 600, "batch_size": 32, "seq_len": 24, "eval_batches": 4,
        "report_every": 100,
    })
    block = {"d_model": 64, "n_heads": 4, "n_layers": 2, "max_seq_len": 256}
    train = {"lr": 3e-3, "warmup": 0.05, "weight_decay": 0.0, "schedule": "constant"}
    attention = tiny("transformer", memory={"kind": "none", "short_conv": True}, block=block, train=train)
    vector = ModelPoint.model_validate({
        "memory": {"kind": "vector"}, "bias": {"kind": "dot"},
        "algorithm": {"kind": "gd", "eta": {"mode": "constant", "value": 1.0}}, "block": block, "train": train,
    })
    strong, weak = run_trial(attention, config), run_trial(vector, config)
    assert strong.ok and weak.ok, (strong.reason, weak.reason)
    assert strong.metrics["acc/mqar"] > 0.9
    assert weak.metrics["acc/mqar"] < strong.metrics["acc/mqar"] - 0.3


def test_a_budget_smaller_than_one_batch_fails_with_a_readable_reason():
    result = run_trial(tiny("gated_deltanet"), TINY.model_copy(update={"tokens": 10}))
    assert result.failure == "build"
    assert "train: tokens (10) do not cover one batch (batch_size 4 x seq_len 32 = 128)" in result.reason
    assert "pydantic" not in result.reason


def _no_training(monkeypatch, result: TrialResult | None = None) -> list[str]:
    """Replace the CLI's run_trial: records each call and returns ``result`` (or fails the test)."""
    calls: list[str] = []

    def fake(point, config, device=None, progress=None, weights=None):
        calls.append(point.name or "point")
        if result is None:
            pytest.fail("the command trained although its options were bad")
        return result

    monkeypatch.setattr("miras_search.trial.run_trial", fake)  # the CLI imports it when it runs
    return calls


def test_cli_trial_checks_out_before_training(tmp_path, monkeypatch):
    _no_training(monkeypatch)
    (tmp_path / "afile").write_text("kept\n")
    for out, words in [(tmp_path, "is a folder; give a file name"),
                       (tmp_path / "afile" / "m.json", "is a file")]:
        result = CliRunner().invoke(app, ["trial", "moneta", "--out", str(out)])
        assert result.exit_code == 1, result.output
        assert f"--out {out}" in result.output and words in result.output
        assert "Traceback" not in result.output
    assert (tmp_path / "afile").read_text() == "kept\n"


def test_cli_trial_out_creates_missing_folders(tmp_path, monkeypatch):
    _no_training(monkeypatch, TrialResult("complete", metrics={"val_loss": 1.5}, objective=1.5))
    out = tmp_path / "new" / "sub" / "m.json"
    result = CliRunner().invoke(app, ["trial", "moneta", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["metrics"]["val_loss"] == 1.5


def test_cli_trial_prints_reasons_as_plain_text(monkeypatch):
    reason = "data file '/nonexistent/[/b]x.txt' does not exist; pip install 'miras-search[data]'"
    _no_training(monkeypatch, TrialResult("failed", failure="data", reason=reason))
    result = CliRunner().invoke(app, ["trial", "moneta"], env={"COLUMNS": "250"})
    assert result.exit_code == 1, result.output
    assert "MarkupError" not in result.output
    assert reason in result.output


@pytest.mark.parametrize(("args", "option", "words"), [
    (["--tokens", "-5"], "--tokens", "greater than or equal to 1"),
    (["--tokens", "0"], "--tokens", "greater than or equal to 1"),
    (["--batch-size", "0"], "--batch-size", "greater than or equal to 1"),
    (["--seq-len", "0"], "--seq-len", "greater than or equal to 1"),
])
def test_cli_train_options_name_the_option_and_range(monkeypatch, args, option, words):
    _no_training(monkeypatch)
    result = CliRunner().invoke(app, ["train", "moneta", *args], env={"COLUMNS": "250"})
    assert result.exit_code == 2, result.output
    assert option in result.output and words in result.output
    assert "pydantic" not in result.output and "validation error" not in result.output


@pytest.mark.parametrize("command", ["train", "trial"])
def test_cli_device_is_checked_before_training(monkeypatch, command):
    _no_training(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device, words in [("tpu", "--device tpu: allowed: auto, cpu, cuda"),
                          ("cuda", "--device cuda: no CUDA GPU is visible here; use cpu")]:
        result = CliRunner().invoke(app, [command, "moneta", "--device", device])
        assert result.exit_code == 1, result.output
        assert words in result.output and "Traceback" not in result.output


def test_cli_trial_checks_the_config_device(tmp_path, monkeypatch):
    _no_training(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = tmp_path / "trial.yaml"
    config.write_text("device: cuda\n")
    result = CliRunner().invoke(app, ["trial", "moneta", "--config", str(config)])
    assert result.exit_code == 1, result.output
    assert f"{config}: device cuda: no CUDA GPU is visible" in result.output


def test_cli_device_auto_and_cpu_train(monkeypatch):
    calls = _no_training(monkeypatch, TrialResult("complete", metrics={"val_loss": 1.0}, objective=1.0))
    for device in ("auto", "cpu"):
        result = CliRunner().invoke(app, ["trial", "moneta", "--device", device])
        assert result.exit_code == 0, result.output
    assert len(calls) == 2


def test_a_study_file_as_trial_config_uses_the_studys_first_objective(tmp_path):
    from miras_search.cli.training import load_trial_config

    study = tmp_path / "study.yaml"
    study.write_text("type: study\nname: s\nspace: x.yaml\ntrial: {tokens: 896}\n"
                     "objectives:\n  - {metric: val_bpb}\n  - {metric: tokens_per_s, direction: maximize}\n")
    config = load_trial_config(study)
    assert config.objective.name == "val_bpb" and config.tokens == 896
    own = tmp_path / "own.yaml"  # a trial section that names its own objective keeps it
    own.write_text("type: study\nname: s\nspace: x.yaml\ntrial: {objective: {metric: val_loss}}\n"
                   "objectives: [{metric: val_bpb}]\n")
    assert load_trial_config(own).objective.name == "val_loss"
    bad = tmp_path / "bad.yaml"
    bad.write_text("type: study\nname: s\nspace: x.yaml\ntrial: {}\nobjectives: [{metric: 3, direction: up}]\n")
    with pytest.raises(ConfigError, match=r"objectives\.0\.direction"):
        load_trial_config(bad)


def test_the_trial_table_names_its_objective(monkeypatch):
    _no_training(monkeypatch, TrialResult("complete", metrics={"val_loss": 1.0}, objective=1.0))
    result = CliRunner().invoke(app, ["trial", "moneta"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "objective (val_loss)" in result.output


def test_a_result_with_a_diverged_curve_writes_valid_json_and_reads_back(tmp_path):
    import math

    result = TrialResult(status="failed", metrics={"val_loss": float("nan")},
                         curve=[(2, 5.5), (4, float("nan")), (6, float("inf"))])
    path = tmp_path / "metrics.json"
    result.write_json(path)
    data = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))
    back = TrialResult.from_dict(data)
    assert back.curve[0] == (2, 5.5) and math.isnan(back.curve[1][1]) and back.curve[2][1] == math.inf
    assert math.isnan(back.metrics["val_loss"])
