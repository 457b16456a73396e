"""benchmarks/mqar_zoology.py: the quick mode writes its table and figure, and an attention model
trained by the same machinery learns a tiny MQAR."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("mqar_zoology", ROOT / "benchmarks" / "mqar_zoology.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mqar_zoology"] = module
    spec.loader.exec_module(module)
    return module


bench = _load_benchmark()


def test_quick_mode_writes_table_and_figure(tmp_path: Path) -> None:
    assert bench.main(["--quick", "--out-dir", str(tmp_path)]) == 0
    table = (tmp_path / "mqar_zoology.md").read_text()
    figure = tmp_path / "mqar_zoology.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = [json.loads(line) for line in (tmp_path / "mqar_zoology_runs.jsonl").read_text().splitlines()]
    assert {(r["preset"], r["width"]) for r in runs} == {
        (p, w) for p in ("transformer", "deltanet") for w in (16, 32)
    }
    for run in runs:
        assert run["status"] == "complete", run
        assert 0.0 <= run["accuracy"] <= 1.0
        assert f"{run['accuracy']:.3f}" in table
    assert "| transformer |" in table and "| deltanet |" in table
    assert "d_model 16" in table and "d_model 32" in table
    assert "--quick" in table  # the exact command


def test_resume_reuses_finished_runs(tmp_path: Path) -> None:
    args = ["--quick", "--presets", "transformer", "--widths", "16", "--out-dir", str(tmp_path)]
    assert bench.main(args) == 0
    runs = tmp_path / "mqar_zoology_runs.jsonl"
    first = runs.read_text()
    assert bench.main([*args, "--resume"]) == 0
    assert runs.read_text() == first  # nothing retrained, nothing appended
    # a second lr that has no runs: --assemble-only trains nothing and takes the runs there are
    assert bench.main([*args, "--lrs", "0.003", "0.01", "--resume", "--assemble-only"]) == 0
    assert runs.read_text() == first
    assert "(lr 0.003)" in (tmp_path / "mqar_zoology.md").read_text()
    assert bench.main([*args, "--presets", "deltanet", "--resume", "--assemble-only"]) == 0
    assert "| deltanet | not run |" in (tmp_path / "mqar_zoology.md").read_text()


def test_bad_preset_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--quick", "--presets", "no_such_model", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no_such_model" in err and "Traceback" not in err
    assert not (tmp_path / "mqar_zoology.md").exists()
    # 20 pairs and their 20 queries do not fit in 32 tokens: refused before any training
    assert bench.main(["--num-pairs", "20", "--seq-len", "32", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "seq_len 32 is too short" in err and "Traceback" not in err
    assert not (tmp_path / "mqar_zoology_runs.jsonl").exists()


def test_heads_keep_the_head_dim() -> None:
    assert [bench.heads_for(w, 32) for w in (16, 32, 64, 128)] == [1, 1, 2, 4]


def test_attention_learns_a_tiny_mqar() -> None:
    """Softmax attention (the transformer preset, 2 layers, width 32, 4 heads of 8), trained by
    run_trial on MQAR with 2 pairs among 4 keys and 4 values, answers held-out queries right:
    guessing a value gets 1/4, copying one of the two context values about 5/8."""
    s = bench.Settings(seq_len=8, num_pairs=2, vocab_size=8, train_examples=32768, eval_examples=256,
                       batch_size=32, head_dim=8, seed=0, time_limit_s=900.0)
    row = bench.run_one("transformer", 32, 3e-3, s)
    assert row["status"] == "complete", row
    assert row["accuracy"] >= 0.9
