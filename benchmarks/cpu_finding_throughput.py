"""How long studies/cpu-finding.yaml takes: measured tokens/s of its anchors, and the plan's estimate.

    python benchmarks/cpu_finding_throughput.py [--tokens 16384] [--presets ...] [--out FILE]

Each preset is trained on the study's space block (d_model 128, 4 layers) with the study's trial
settings (text and the six MAD tasks, batch 16, one torch thread) for ``--tokens`` tokens, one
process at a time. A trial's cost is then ``overhead + tokens / tokens_per_s``: ``tokens_per_s`` is
the trial's own training throughput, ``overhead`` the rest of its wall time (model build,
evaluation on every source). The estimate adds up the study file's plan with these costs:

- the study: its anchors once each, the searched points at the mean of a matrix point (Gated
  DeltaNet's cost) and an MLP point (the mean of Moneta's and Yaad's), half of each (the space's
  memory choice), over ``parallel.workers`` workers;
- ``miras confirm --top N --scale S --seeds K``: sequential, in one process: the top N points (at an
  MLP point's cost, the dearer kind) and the named models the study holds (Moneta, Yaad, Memora);
- ``miras scale``: the ``scale:`` block's points on its rungs, over the workers, each rung's cost
  the point's cost per token at d_model 128 times (d_model / 128)^2 x (n_layers / 4) (the dense
  work's growth, an upper bound for the memory's own, which grows with d_model only).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from miras_search.data import load_corpus
from miras_search.presets import preset
from miras_search.study.spec import load_study_file
from miras_search.trial import run_trial

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "cpu-finding.yaml"


def measure(names: list[str], tokens: int) -> dict[str, dict[str, float]]:
    spec = load_study_file(STUDY)
    space = spec.load_space()
    config = spec.trial.model_copy(update={"tokens": tokens, "time_limit_s": None})
    sections = {"block": space.base["block"], "train": {**space.base["train"], "tokens": tokens}}
    load_corpus()  # the corpus cache's one-time build is no trial's cost
    run_trial(preset("transformer", **sections), config.model_copy(update={"tokens": 4096, "eval_batches": 1}))
    out = {}
    for name in names:
        started = time.perf_counter()
        result = run_trial(preset(name, **sections), config)
        wall = time.perf_counter() - started
        if not result.ok:
            print(f"{name}: failed: {result.reason}")
            continue
        m = result.metrics
        per_token = 1.0 / m["tokens_per_s"]
        out[name] = {"params": m["params"], "tokens": m["tokens"], "tokens_per_s": m["tokens_per_s"],
                     "wall_s": wall, "overhead_s": max(0.0, wall - m["tokens"] * per_token), "s_per_token": per_token}
        print(f"{name}: {m['tokens_per_s']:,.0f} tokens/s, {wall:.1f} s wall", flush=True)
    return out


def _cost(row: dict[str, float], tokens: float, size: float = 1.0) -> float:
    return row["overhead_s"] + tokens * row["s_per_token"] * size


def estimate(rows: dict[str, dict[str, float]], top: int, scale: float, seeds: int) -> list[tuple[str, float, str]]:
    """(step, wall seconds, how) for the study, confirm and scale, from the measured costs."""
    spec = load_study_file(STUDY)
    tokens, workers = spec.trial.tokens or 0, spec.parallel.workers
    anchors = spec.sampler.anchor_names
    mlp = {k: statistics.mean(rows[n][k] for n in ("moneta", "yaad")) for k in ("overhead_s", "s_per_token")}
    searched = {k: (rows["gated_deltanet"][k] + mlp[k]) / 2 for k in mlp}
    anchor_s = [_cost(rows[a], tokens) for a in anchors]
    searched_n = (spec.trials or 0) - len(anchors)
    study_total = sum(anchor_s) + searched_n * _cost(searched, tokens)
    study_wall = max(study_total / workers, max(anchor_s))
    named = [n for n in ("moneta", "yaad", "memora") if n in anchors]
    confirm_wall = seeds * (top * _cost(mlp, scale * tokens) + sum(_cost(rows[n], scale * tokens) for n in named))
    scale_s = []
    block = spec.scale
    points = list(block.points) + ["mlp"] * block.top
    for rung in block.rungs:
        size = (rung.d_model / 128) ** 2 * rung.n_layers / 4
        for name in points:
            row = mlp if name == "mlp" else rows[name]
            scale_s.append(_cost(row, rung.tokens, size))
    scale_wall = max(sum(scale_s) * len(block.seeds) / workers, max(scale_s))
    return [
        ("study", study_wall, f"{len(anchors)} anchors + {searched_n} searched x {tokens:,} tokens, "
         f"{workers} workers"),
        ("confirm", confirm_wall, f"top {top} + {', '.join(named)} x {scale:g} x {tokens:,} tokens x {seeds} seeds, "
         "one process"),
        ("scale", scale_wall, f"{len(points)} points x {len(block.rungs)} rungs, {workers} workers"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--presets", nargs="+", default=["gated_deltanet", "transformer", "moneta", "yaad", "memora"])
    parser.add_argument("--top", type=int, default=3, help="confirm's --top")
    parser.add_argument("--scale", type=float, default=4.0, help="confirm's --scale")
    parser.add_argument("--seeds", type=int, default=2, help="confirm's --seeds")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu_finding_throughput_cpu.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = measure(args.presets, args.tokens)
    lines = [
        "# studies/cpu-finding.yaml: measured throughput and the plan's time",
        "",
        f"    python benchmarks/cpu_finding_throughput.py --tokens {args.tokens} --top {args.top} "
        f"--scale {args.scale:g} --seeds {args.seeds}",
        "",
        f"{platform.machine()}, {torch.get_num_threads()} torch thread, torch {torch.__version__}; each preset on "
        f"the study's block and trial settings for {args.tokens:,} tokens, one process at a time.",
        "",
        "| preset | params | tokens/s (train) | wall s | overhead s (build, eval) |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['params']:,.0f} | {row['tokens_per_s']:,.0f} | {row['wall_s']:.1f} | "
                     f"{row['overhead_s']:.1f} |")
    if all(n in rows for n in ("gated_deltanet", "moneta", "yaad", "memora", "transformer")):
        plan = estimate(rows, args.top, args.scale, args.seeds)
        lines += ["", "| step | estimated wall time | what |", "|---|---|---|"]
        lines += [f"| {step} | {wall / 60:.0f} min | {how} |" for step, wall, how in plan]
        lines.append(f"| all | {sum(w for _, w, _ in plan) / 60:.0f} min | |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
