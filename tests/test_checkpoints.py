"""Weights kept by a study, exported, continued with `miras train --from`, and the file format."""

from __future__ import annotations

import pytest
import torch
from test_study import TINY_TRIAL, run_inline, trials_of, write_study
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.errors import MirasError
from miras_search.model import build_model
from miras_search.presets import preset
from miras_search.study import load_study_file, open_study
from miras_search.study.summary import ranked
from miras_search.trial import TrialConfig, run_trial
from miras_search.trial.checkpoint import (
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    weights_mb,
)
from miras_search.trial.runner import Weights

runner = CliRunner()


def _tiny():
    return preset("gated_deltanet", block={"d_model": 32, "n_heads": 2, "n_layers": 1, "max_seq_len": 512})


def test_save_and_load_give_the_same_model(tmp_path):
    point = _tiny()
    torch.manual_seed(0)
    model = build_model(point, "cpu")
    assert save_checkpoint(tmp_path / "m.pt", point, model, {"val_bpb": 3.0})
    loaded_point, loaded = load_checkpoint(tmp_path / "m.pt", "cpu")
    assert loaded_point == point and read_checkpoint(tmp_path / "m.pt").metrics == {"val_bpb": 3.0}
    tokens = torch.randint(0, 256, (2, 7))
    model.eval()
    torch.testing.assert_close(loaded(tokens), model(tokens), rtol=0, atol=0)  # [2, 7, vocab] logits
    assert not save_checkpoint(tmp_path / "big.pt", point, model, max_mb=weights_mb(model) / 2)
    assert not (tmp_path / "big.pt").exists()


def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MirasError, match="is not a miras checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")
    torch.save({"format": 99}, tmp_path / "other.pt")
    with pytest.raises(MirasError, match=r"written by a newer version of miras-search .*reads format 1"):
        read_checkpoint(tmp_path / "other.pt")
    with pytest.raises(MirasError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "missing.pt")


def test_a_study_keeps_the_best_weights_which_export_and_train_from_use(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_study(tmp_path, trials=3, sampler={"kind": "random", "anchors": []},
                       checkpoints={"keep": 1, "max_mb": 50})
    run_inline(path)
    study = trials_of(path)
    best = ranked(open_study(load_study_file(path)))[0]
    folder = load_study_file(path).checkpoint_dir()
    assert sorted(p.name for p in folder.iterdir()) == [f"trial{best.number}.pt"]
    assert len(study) == 3
    kept = read_checkpoint(folder / f"trial{best.number}.pt")
    assert kept.metrics["val_bpb"] == pytest.approx(best.values[0])

    exported = runner.invoke(app, ["export", str(path), "--top", "1", "--weights", "--out", str(tmp_path / "pts")])
    assert exported.exit_code == 0, exported.output
    weights = tmp_path / "pts" / f"rank01-trial{best.number}.pt"
    assert weights.is_file()
    missing = runner.invoke(app, ["export", str(path), "--top", "2", "--weights", "--out", str(tmp_path / "p2")])
    assert missing.exit_code == 1 and "checkpoints: {keep: N}" in " ".join(missing.output.split())

    # continuing starts from the trained weights: the first loss is the trained model's, not 5.5 nats
    config = TrialConfig.model_validate({**TINY_TRIAL, "tokens": 256})
    fresh = run_trial(kept.point, config)
    continued = run_trial(kept.point, config, weights=Weights(start=read_checkpoint(weights)))
    assert continued.ok and continued.curve[0][1] < fresh.curve[0][1] - 0.2

    trained = runner.invoke(app, ["train", "--from", str(weights), "--tokens", "512", "--batch-size", "4",
                                  "--seq-len", "32", "--save", str(tmp_path / "more.pt")])
    assert trained.exit_code == 0, trained.output
    assert read_checkpoint(tmp_path / "more.pt").point.memory == kept.point.memory
    both = runner.invoke(app, ["train", "moneta", "--from", str(weights)])
    assert both.exit_code == 1 and "one of the two" in both.output


def test_a_run_says_once_when_weights_are_over_the_size_kept(tmp_path, monkeypatch):
    """checkpoints.max_mb below every trial's weights keeps none: the run says so, once."""
    monkeypatch.chdir(tmp_path)
    path = write_study(tmp_path, trials=2, sampler={"kind": "random", "anchors": []},
                       checkpoints={"keep": 2, "max_mb": 0.001})
    result = runner.invoke(app, ["run", str(path), "--inline", "--wandb", "off"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    said = [line for line in result.output.splitlines() if "checkpoints.max_mb (0.001 MiB)" in line]
    assert len(said) == 1 and "not kept" in said[0], result.output
    assert not list(load_study_file(path).checkpoint_dir().glob("*.pt"))
