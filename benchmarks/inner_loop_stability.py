"""Are the deep-memory presets' inner loops chaotic at their initial gates, and what does it cost?

    python benchmarks/inner_loop_stability.py [--train] [--seeds 3] [--out FILE]

1. Noise sensitivity (``miras_search.model.noise_sensitivity``): the relative change of a float64
   2-layer LM's logits (512 tokens) when its embeddings get 1e-9 and 1e-13 of relative noise. A
   smooth model answers about noise x its condition number (so 1e-13 gives 1e4 times less than
   1e-9); a chaotic inner loop answers O(1) to both.
2. ``--train``: val_bpb after the quickstart study's budget (text, 65k tokens, d_model 64,
   2 heads, 2 layers, one CPU thread), mean and std over seeds.

Each row is a preset as shipped or with one initial gate changed (Memora's old step; a Yaad
threshold above the errors).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from miras_search.model import noise_sensitivity
from miras_search.presets import preset
from miras_search.schema import ModelPoint
from miras_search.trial import TrialConfig, run_trial


def _gate(axis: str, gate: str, value: float) -> Callable[[dict], None]:
    def edit(spec: dict) -> None:
        spec[axis][gate]["value"] = value
    return edit


ROWS: dict[str, tuple[str, Callable[[dict], None] | None]] = {
    "moneta": ("moneta", None),
    "yaad": ("yaad", None),
    "yaad, threshold 16 (above the error norms)": ("yaad", _gate("bias", "delta", 16.0)),
    "memora": ("memora", None),
    "memora, old eta 0.5": ("memora", _gate("algorithm", "eta", 0.5)),
    "titans": ("titans", None),
    "ttt_mlp": ("ttt_mlp", None),
}
QUICKSTART = TrialConfig.model_validate({"data": [{"task": "text"}], "tokens": 65536, "batch_size": 8,
                                         "seq_len": 128, "eval_batches": 8})


def point(row: str, d_model: int, n_heads: int, seed: int = 0) -> ModelPoint:
    name, edit = ROWS[row]
    spec = preset(name).model_dump()
    spec["block"].update({"d_model": d_model, "n_heads": n_heads, "n_layers": 2, "conv_size": 4,
                          "max_seq_len": 1024})
    spec["train"].update({"tokens": QUICKSTART.tokens, "batch_size": QUICKSTART.batch_size,
                          "seq_len": QUICKSTART.seq_len, "lr": 0.003, "chunk_size": 16, "seed": seed})
    if edit is not None:
        edit(spec)
    return ModelPoint.model_validate(spec)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", action="store_true", help="also train each row at the quickstart budget")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = ["| point | head dim | 1e-9 noise moves logits by | 1e-13 noise |", "|---|---|---|---|"]
    for row in ROWS:
        for d_model, n_heads in ((64, 2), (128, 2)):
            p = point(row, d_model, n_heads)
            moved = [noise_sensitivity(p, noise) for noise in (1e-9, 1e-13)]
            lines.append(f"| {row} | {d_model // n_heads} | {moved[0]:.1e} | {moved[1]:.1e} |")
            print(lines[-1], flush=True)
    if args.train:
        lines += ["", "| point | val_bpb (quickstart budget, head dim 32) | seeds |", "|---|---|---|"]
        for row in ROWS:
            started = time.time()
            scores = []
            for seed in range(args.seeds):
                result = run_trial(point(row, 64, 2, seed), QUICKSTART)
                scores.append(result.metrics["val_bpb"] if result.ok else float("nan"))
            spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
            lines.append(f"| {row} | {statistics.fmean(scores):.3f} ± {spread:.3f} | "
                         f"{', '.join(f'{s:.3f}' for s in scores)} |")
            print(lines[-1], f"({time.time() - started:.0f} s)", flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
