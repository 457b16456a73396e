"""Are the presets' inner loops chaotic at their initial gates, at the paper's context, and do
the deep memories train?

    python benchmarks/inner_loop_stability.py [--contexts 512 1024 2048 4096] [--weight-seeds N] [--out FILE]
    python benchmarks/inner_loop_stability.py --train quickstart --seeds 3 [--rows moneta yaad ...]
    python benchmarks/inner_loop_stability.py --train lm --tokens 1000000 [--rows ...]

1. Noise sensitivity (``miras_search.model.noise_sensitivity``): the relative change of a float64
   one-layer LM's logits (two heads, head dims 32 and 64) when its embeddings get 1e-12 of
   relative noise, at each context length. A smooth model answers about noise x its condition
   number; a chaotic inner loop (perturbations growing by a fixed factor per token) answers O(1).
   Every preset, and the deep memories' earlier gates, for comparison.
2. ``--train quickstart``: val_bpb at the quickstart study's budget (text, 65k tokens, d_model 64,
   2 heads, 2 layers), mean and std over seeds. ``--train lm``: one seed at d_model 128, 4 layers,
   4 heads, seq_len 256, ``--batch-size`` (default 16) and ``--tokens`` (default 1M), with the
   training curve.
   Huber-switch points also report the share of tokens on the l2 branch at init and after training.
One CPU thread throughout.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from miras_search.model import l2_branch_shares, noise_sensitivity
from miras_search.presets import preset, preset_names
from miras_search.schema import ModelPoint
from miras_search.trial import TrialConfig, run_trial
from miras_search.trial import runner as trial_runner


def _set(axis: str, **fields) -> Callable[[dict], None]:
    def edit(spec: dict) -> None:
        for key, value in fields.items():
            if isinstance(value, dict):
                spec[axis][key].update(value)
            else:
                spec[axis][key] = value
    return edit


EARLIER: dict[str, tuple[str, Callable[[dict], None]]] = {
    "moneta, alpha 0.95 (earlier)": ("moneta", _set("retention", alpha={"value": 0.95})),
    "moneta, alpha 0.999": ("moneta", _set("retention", alpha={"value": 0.999})),
    "moneta, alpha 0.9995 (earlier)": ("moneta", _set("retention", alpha={"value": 0.9995})),
    "titans, alpha 0.95 (earlier)": ("titans", _set("retention", alpha={"value": 0.95})),
    "yaad, delta tanh(10 e), threshold 1 (earlier)": (
        "yaad", _set("bias", sharpness_scale="absolute", sharpness=10.0, threshold_units="absolute",
                     delta={"value": 1.0})),
    "yaad, delta tanh(10 e)": ("yaad", _set("bias", sharpness_scale="absolute", sharpness=10.0)),
    "memora, kl step 0.5 (earlier)": ("memora", _set("algorithm", eta={"value": 0.5})),
    "memora, alpha 0.95 (earlier)": ("memora", _set("retention", alpha={"value": 0.95})),
}
ROWS: dict[str, tuple[str, Callable[[dict], None] | None]] = {
    **{name: (name, None) for name in preset_names()}, **EARLIER,
}
QUICKSTART = TrialConfig.model_validate({"data": [{"task": "text"}], "tokens": 65536, "batch_size": 8,
                                         "seq_len": 128, "eval_batches": 8})


def spec_of(row: str) -> dict:
    name, edit = ROWS[row]
    spec = preset(name).model_dump()
    if edit is not None:
        edit(spec)
    return spec


def sensitivity_point(row: str, head_dim: int, context: int) -> ModelPoint:
    spec = spec_of(row)
    spec["block"].update({"d_model": 2 * head_dim, "n_heads": 2, "n_layers": 1, "max_seq_len": context})
    return ModelPoint.model_validate(spec)


def training_point(row: str, budget: str, seed: int) -> ModelPoint:
    spec = spec_of(row)
    if budget == "quickstart":
        spec["block"].update({"d_model": 64, "n_heads": 2, "n_layers": 2, "max_seq_len": 1024})
        spec["train"].update({"lr": 0.003, "chunk_size": 16})
    else:
        spec["block"].update({"d_model": 128, "n_heads": 4, "n_layers": 4, "max_seq_len": 1024})
    spec["train"]["seed"] = seed
    return ModelPoint.model_validate(spec)


def lm_config(tokens: int, batch_size: int) -> TrialConfig:
    return TrialConfig.model_validate({"data": [{"task": "text"}], "tokens": tokens, "batch_size": batch_size,
                                       "seq_len": 256, "eval_batches": 4, "report_every": 10})


class _KeepModel:
    """Wraps the trial's build_model to keep the model it builds (for the branch shares)."""

    def __init__(self) -> None:
        self.model: torch.nn.Module | None = None
        self._build = trial_runner.build_model

    def __call__(self, *args, **kwargs):
        self.model = self._build(*args, **kwargs)
        return self.model


def _shares(model: torch.nn.Module) -> str:
    ids = torch.randint(0, 256, (4, 256), generator=torch.Generator().manual_seed(0))
    shares = l2_branch_shares(model, ids)
    return ", ".join(f"{share:.0%}" for share in shares)


def sensitivity_table(rows: list[str], contexts: list[int], weight_seeds: int = 1) -> list[str]:
    """Each cell: the largest change over ``weight_seeds`` draws of the weights (seeds 0, 1, ...)."""
    head = " | ".join(f"T = {t}" for t in contexts)
    lines = [f"| point | head dim | {head} |", "|---|---|" + "---|" * len(contexts)]
    for row in rows:
        for head_dim in (32, 64):
            moved = [max(noise_sensitivity(sensitivity_point(row, head_dim, t), 1e-12, tokens=t, batch=1, seed=seed)
                         for seed in range(weight_seeds)) for t in contexts]
            lines.append(f"| {row} | {head_dim} | " + " | ".join(f"{m:.1e}" for m in moved) + " |")
            print(lines[-1], flush=True)
    return lines


def training_table(rows: list[str], budget: str, seeds: int, tokens: int, batch_size: int) -> list[str]:
    config = QUICKSTART if budget == "quickstart" else lm_config(tokens, batch_size)
    lines = [f"| point | val_bpb ({budget} budget) | seeds | l2-branch share, init -> trained | curve (step: loss) |",
             "|---|---|---|---|---|"]
    for row in rows:
        started = time.time()
        scores, shares, curve = [], "", ""
        for seed in range(seeds):
            point = training_point(row, budget, seed)
            keep = _KeepModel()
            trial_runner.build_model = keep
            try:
                result = run_trial(point, config, device="cpu")
            finally:
                trial_runner.build_model = keep._build
            scores.append(result.metrics["val_bpb"] if result.ok else float("nan"))
            if seed == 0:
                curve = ", ".join(f"{step}: {loss:.2f}" for step, loss in result.curve[::3] + result.curve[-1:])
                trained = _shares(keep.model) if keep.model is not None else ""
                if trained:
                    torch.manual_seed(point.train.seed)  # the model the trial started from
                    shares = f"{_shares(keep._build(point, 'cpu'))} -> {trained}"
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        lines.append(f"| {row} | {statistics.fmean(scores):.3f} ± {spread:.3f} | "
                     f"{', '.join(f'{s:.3f}' for s in scores)} | {shares} | {curve} |")
        print(lines[-1], f"({time.time() - started:.0f} s)", flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS), metavar="ROW")
    parser.add_argument("--contexts", nargs="*", type=int, default=[512, 1024, 2048, 4096])
    parser.add_argument("--train", choices=["quickstart", "lm"], default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=1_000_000, help="training tokens of --train lm")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size of --train lm")
    parser.add_argument("--weight-seeds", type=int, default=1,
                        help="noise table: the largest change over this many weight draws")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.train is None:
        lines = sensitivity_table(args.rows, args.contexts, args.weight_seeds)
    else:
        seeds = 1 if args.train == "lm" else args.seeds
        lines = training_table(args.rows, args.train, seeds, args.tokens, args.batch_size)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
