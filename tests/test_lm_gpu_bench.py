"""benchmarks/lm_gpu.py and benchmarks/layer_gpu.py run end to end on a CPU (--tiny) before a GPU sees them."""

from __future__ import annotations

import subprocess
import sys


def test_the_whole_model_benchmark_runs_tiny_on_cpu(root, tmp_path):
    out = tmp_path / "lm.md"
    result = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "lm_gpu.py"), "--tiny", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
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
    out = tmp_path / "layer.md"
    result = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "layer_gpu.py"), "--tiny", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    for name in ("deltanet", "gated_deltanet", "titans", "moneta", "yaad", "memora"):
        assert f"│ {name} " in text
    assert "pytorch (" in text  # on a CPU every layer says why it ran the PyTorch form
