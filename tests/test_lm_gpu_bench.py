"""benchmarks/lm_gpu.py and benchmarks/layer_gpu.py run end to end on a CPU (--tiny) before a GPU sees them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _run_tiny(root: Path, tmp_path: Path, script: str, *extra: str) -> str:
    """Run ``benchmarks/<script> --tiny`` on the CPU in a fresh process; the table it wrote."""
    out = tmp_path / "table.md"
    result = subprocess.run(
        [sys.executable, str(root / "benchmarks" / script), "--tiny", "--out", str(out), *extra],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out.read_text()


def test_the_whole_model_benchmark_runs_tiny_on_cpu(root, tmp_path):
    text = _run_tiny(root, tmp_path, "lm_gpu.py")
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.startswith("│") and
            line.split("│")[1].strip()}
    for name in ("transformer", "gated_deltanet", "titans", "moneta", "yaad", "memora", "sdpa"):
        cells = [c.strip() for c in rows[name].split("│")[1:-1]]
        assert float(cells[5].replace(",", "")) > 0, rows[name]  # tokens/s
        assert int(cells[3].replace(",", "")) > 0  # params
    # fla's model needs CUDA: its row says so instead of failing the run
    assert "needs CUDA" in rows["fla_gated_deltanet"] or "not installed" in rows["fla_gated_deltanet"]
    assert "moneta / sdpa tokens/s" in text


def test_the_layer_benchmark_runs_tiny_on_cpu(root, tmp_path):
    text = _run_tiny(root, tmp_path, "layer_gpu.py")
    for name in ("deltanet", "gated_deltanet", "titans", "moneta", "yaad", "memora"):
        assert f"│ {name} " in text
    assert "pytorch (" in text  # on a CPU every layer says why it ran the PyTorch form
    for name in ("omeganet/mlp", "omeganet/matrix"):  # the window rows time the PyTorch form too
        row = next(line for line in text.splitlines() if line.startswith(f"│ {name} "))
        assert float(row.split("│")[7]) > 0, row


def test_the_whole_model_benchmark_profiles_a_step_per_model(root, tmp_path):
    _run_tiny(root, tmp_path, "lm_gpu.py", "--models", "sdpa,moneta", "--profile", str(tmp_path / "prof"))
    for name in ("sdpa", "moneta"):
        table = (tmp_path / "prof" / f"{name}_T64.txt").read_text()
        assert "aten::" in table and "Self CPU" in table


def test_the_layer_benchmark_runs_the_rows_asked_for_in_order(root, tmp_path):
    text = _run_tiny(root, tmp_path, "layer_gpu.py", "--layers", "moneta@32,gated_deltanet")
    rows = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")]
    assert rows == ["moneta@32", "gated_deltanet"]
