"""The Table-1 rows added in issue 24 (RWKV-7, HGRN2, Lightning Attention) and Transformer++:
stable at the paper's context, and how they train next to their neighbours.

    python benchmarks/table1_rows.py [--tokens 4096] [--seeds 2] [--out FILE]

1. Noise sensitivity at initialisation (``miras_search.model.noise_sensitivity``: relative change
   of a float64 2-layer LM's logits when its embeddings get 1e-12 of relative noise) at head dims
   32 and 64 over ``--tokens`` tokens (the paper trains at 4096).
2. val_bpb on the quickstart budget (embedded text, 65k tokens, d_model 64, 2 heads, 2 layers,
   one CPU thread), mean and std over ``--seeds`` seeds, beside gla, gated_deltanet and retnet.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from miras_search.model import noise_sensitivity
from miras_search.presets import preset
from miras_search.schema import ModelPoint
from miras_search.trial import TrialConfig, run_trial

NEW = ("rwkv7", "hgrn2", "lightning_attention", "transformer")
NEIGHBOURS = ("gla", "gated_deltanet", "retnet", "transformer+conv")
"""transformer+conv: softmax attention with the Miras block's short conv (the old `transformer`)."""
QUICKSTART = TrialConfig.model_validate({"data": [{"task": "text"}], "tokens": 65536, "batch_size": 8,
                                         "seq_len": 128, "eval_batches": 8})


def point(name: str, d_model: int, seed: int = 0, max_seq_len: int = 1024) -> ModelPoint:
    spec = preset(name.removesuffix("+conv")).model_dump()
    if name.endswith("+conv"):
        spec["memory"]["short_conv"] = True
    spec["block"].update({"d_model": d_model, "n_heads": 2, "n_layers": 2, "max_seq_len": max_seq_len})
    spec["train"].update({"tokens": QUICKSTART.tokens, "batch_size": QUICKSTART.batch_size,
                          "seq_len": QUICKSTART.seq_len, "lr": 0.003, "chunk_size": 16, "seed": seed})
    return ModelPoint.model_validate(spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = [f"| preset | head dim 32: 1e-12 noise moves logits by ({args.tokens} tokens) | head dim 64 |",
             "|---|---|---|"]
    for name in NEW:
        cells = []
        for d_model in (64, 128):
            started = time.time()
            moved = noise_sensitivity(point(name, d_model, max_seq_len=args.tokens), 1e-12, args.tokens)
            cells.append(f"{moved:.1e}")
            print(f"{name} d_model {d_model}: {moved:.2e} ({time.time() - started:.0f} s)", flush=True)
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    lines += ["", "| preset | val_bpb (quickstart budget, head dim 32) | seeds |", "|---|---|---|"]
    for name in NEW + NEIGHBOURS:
        started = time.time()
        scores = []
        for seed in range(args.seeds):
            result = run_trial(point(name, 64, seed), QUICKSTART)
            scores.append(result.metrics["val_bpb"] if result.ok else float("nan"))
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        lines.append(f"| {name} | {statistics.fmean(scores):.3f} ± {spread:.3f} | "
                     f"{', '.join(f'{s:.3f}' for s in scores)} |")
        print(lines[-1], f"({time.time() - started:.0f} s)", flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
