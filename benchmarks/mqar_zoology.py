"""Zoology's MQAR picture at CPU scale: recall accuracy against model width, one line per preset.

Arora et al. (2023), "Zoology: Measuring and Improving Recall in Efficient Language Models"
(arXiv 2312.04927), Figure 2: 2-layer models trained on multi-query associative recall at a fixed
sequence length and number of key-value pairs, accuracy on the queried positions of held-out
sequences against the model width, the best of a small learning-rate sweep per point. Here each
point is a preset with ``block.d_model`` set to the width and 2 layers, trained by the toolkit's
trial runner (``run_trial``) on the ``mqar`` data task and scored by its ``acc/mqar`` metric.

    # the committed runs (results/mqar_zoology.*), 41 + 15 min on a busy 2-core CPU, then the table:
    python benchmarks/mqar_zoology.py --lrs 0.01 --workers 2 --time-limit-s 300 --resume
    python benchmarks/mqar_zoology.py --presets transformer linear_attention retnet mamba2 \
        deltanet gated_deltanet --lrs 0.003 --workers 2 --time-limit-s 300 --resume
    python benchmarks/mqar_zoology.py --lrs 0.003 0.01 --time-limit-s 300 --resume --assemble-only \
        --notes benchmarks/mqar_zoology_notes.md
    python benchmarks/mqar_zoology.py --quick      # a few seconds, into mqar_quick/

Every run is appended to ``<out-dir>/mqar_zoology_runs.jsonl`` as it finishes; ``--resume``
reuses the runs of that file that have the same settings, so an interrupted sweep continues.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import re
import shlex
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from miras_search.data.spec import parse_data_spec
from miras_search.presets import preset
from miras_search.schema import ModelPoint
from miras_search.trial.config import Objective, TrialConfig
from miras_search.trial.runner import run_trial

PRESETS = ("transformer", "linear_attention", "retnet", "mamba2", "deltanet", "gated_deltanet",
           "moneta", "yaad", "memora")
DEEP = ("moneta", "yaad", "memora")
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    # softmax attention behind the block's short causal conv (memory 'none' with short_conv), the
    # q / k / v path every recurrent preset here has; the plain transformer preset has no conv
    "transformer_conv": ("transformer", {"memory": {"short_conv": True}}),
}
WIDTHS = (16, 32, 64, 128)
LRS = (3e-3, 1e-2)


@dataclass(frozen=True)
class Settings:
    """Everything a run's accuracy depends on besides (preset, width, lr)."""

    seq_len: int
    num_pairs: int
    vocab_size: int
    train_examples: int
    eval_examples: int
    batch_size: int
    head_dim: int
    seed: int
    time_limit_s: float

    def key(self) -> dict[str, Any]:
        return dict(self.__dict__)


def heads_for(width: int, head_dim: int) -> int:
    """Heads of a width: ``width / head_dim`` (at least 1), so the per-head dim is ``head_dim``
    (or the width itself when it is smaller)."""
    return max(1, width // head_dim)


def make_point(name: str, width: int, lr: float, s: Settings) -> ModelPoint:
    """The preset (or VARIANTS entry) ``name`` at d_model ``width``, 2 layers, the sweep's lr and budget."""
    base, changes = VARIANTS.get(name, (name, {}))
    data = preset(base).model_dump()
    for section, fields in changes.items():
        data[section].update(fields)
    data["block"].update(d_model=width, n_heads=heads_for(width, s.head_dim), n_layers=2,
                         max_seq_len=max(s.seq_len, 64))
    data["train"].update(lr=lr, batch_size=s.batch_size, seq_len=s.seq_len,
                         tokens=s.train_examples * s.seq_len, seed=s.seed)
    return ModelPoint.model_validate(data)


def trial_config(s: Settings) -> TrialConfig:
    """MQAR as the only data source, accuracy on the queried positions as the objective."""
    task = parse_data_spec({"task": "mqar", "vocab_size": s.vocab_size, "num_pairs": s.num_pairs,
                            "seq_len": s.seq_len}, "MQAR settings (--vocab-size, --num-pairs, --seq-len)")
    return TrialConfig(
        data=[task], tokens=s.train_examples * s.seq_len, batch_size=s.batch_size, seq_len=s.seq_len,
        eval_batches=max(1, math.ceil(s.eval_examples / s.batch_size)), seed=s.seed,
        device="cpu", threads=1, time_limit_s=s.time_limit_s, report_every=10**9,
        objective=Objective(metric="acc/mqar", direction="maximize"),
    )


def run_one(name: str, width: int, lr: float, s: Settings) -> dict[str, Any]:
    """Train and score one (preset, width, lr); a failed run keeps its failure kind and reason."""
    result = run_trial(make_point(name, width, lr, s), trial_config(s))
    row: dict[str, Any] = {
        "preset": name, "width": width, "lr": lr, "settings": s.key(), "status": result.status,
        "accuracy": result.metrics.get("acc/mqar") if result.ok else None,
        "params": result.metrics.get("params"), "wall_s": round(result.metrics.get("wall_s", 0.0), 1),
    }
    if not result.ok:
        row["failure"], row["reason"] = result.failure, result.reason
    return row


def run_all(todo: list[tuple[str, int, float]], s: Settings, workers: int,
            finished: Callable[[dict[str, Any]], None]) -> None:
    """Run every (preset, width, lr) of ``todo``, in ``workers`` processes of one thread each
    (spawned, so none inherits the parent's torch state); ``finished`` gets each row as it ends."""
    if workers <= 1:
        for key in todo:
            finished(run_one(*key, s))
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=torch.set_num_threads,
                             initargs=(1,)) as pool:
        futures = [pool.submit(run_one, *key, s) for key in todo]
        for future in as_completed(futures):
            finished(future.result())


def load_runs(path: Path, s: Settings) -> dict[tuple[str, int, float], dict[str, Any]]:
    """Runs of an earlier sweep with the same settings, by (preset, width, lr)."""
    runs: dict[tuple[str, int, float], dict[str, Any]] = {}
    if not path.exists():
        return runs
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("settings") == s.key():
            runs[(row["preset"], row["width"], row["lr"])] = row
    return runs


NOT_RUN: dict[str, Any] = {"accuracy": None, "failure": "not run"}


def best_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the highest accuracy; without any complete run, the first failure (NOT_RUN
    when there is no run at all: ``--assemble-only``)."""
    done = [r for r in rows if r["accuracy"] is not None]
    return max(done, key=lambda r: r["accuracy"]) if done else rows[0] if rows else NOT_RUN


def cell(row: dict[str, Any]) -> str:
    if row is NOT_RUN:
        return "not run"
    if row["accuracy"] is None:
        reached = re.search(r"at step (\d+) of (\d+)", row.get("reason") or "")
        if row.get("failure") == "time_limit" and reached:
            return f"too slow (step {reached[1]}/{reached[2]} at the time limit)"
        return f"failed ({row.get('failure')})"
    return f"{row['accuracy']:.3f} (lr {row['lr']:g})"


def markdown(best: dict[tuple[str, int], dict[str, Any]], presets: list[str], widths: list[int],
             s: Settings, lrs: list[float], command: str, minutes: float, notes: str) -> str:
    head = "| preset | " + " | ".join(f"d_model {w}" for w in widths) + " |"
    lines = [
        "# Zoology's MQAR picture at CPU scale", "",
        f"Accuracy on the queried positions of {s.eval_examples} held-out MQAR sequences, best of "
        f"lr in {{{', '.join(f'{lr:g}' for lr in lrs)}}} per cell (the lr in brackets; of those run, "
        "see below). "
        f"Sequence length {s.seq_len}, {s.num_pairs} key-value pairs (every key queried once), "
        f"vocabulary {s.vocab_size} (keys {s.vocab_size // 2}, values {s.vocab_size // 2}); 2 layers, "
        f"head dim {s.head_dim} (one head below that width); {s.train_examples} training sequences "
        f"(one pass), batch {s.batch_size}, seed {s.seed}; one CPU thread; a run past "
        f"{s.time_limit_s:g} s fails as `time_limit`.", "",
        f"Command: `{command}` ({minutes:.0f} min of training and scoring in all, one thread of a busy "
        "2-core CPU).", "",
        head, "|" + "---|" * (len(widths) + 1),
    ]
    for name in presets:
        lines.append(f"| {name} | " + " | ".join(cell(best[name, w]) for w in widths) + " |")
    lines += ["", "![accuracy against width](mqar_zoology.png)", ""]
    if notes:
        lines += [notes.rstrip(), ""]
    return "\n".join(lines)


def plot(best: dict[tuple[str, int], dict[str, Any]], presets: list[str], widths: list[int],
         s: Settings, path: Path) -> None:
    """Accuracy against width (log2 axis), one line per preset, as Zoology's Figure 2."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    styles = ["-", "--", ":"]
    for i, name in enumerate(presets):
        xs = [w for w in widths if best[name, w]["accuracy"] is not None]
        ys = [best[name, w]["accuracy"] for w in xs]
        if not xs:  # no complete run: the table says why
            continue
        ax.plot(xs, ys, styles[i // 10 % 3], marker="o", label=name)
    ax.axhline(2 / s.vocab_size, color="grey", lw=0.8, ls=":", label="chance (a random value)")
    ax.axhline(1 / s.num_pairs, color="grey", lw=0.8, ls="--", label="copying a context value")
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("model width (d_model)")
    ax.set_ylabel("MQAR accuracy")
    ax.set_title(f"MQAR, seq len {s.seq_len}, {s.num_pairs} kv pairs, 2 layers")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", help=f"Default: {' '.join(PRESETS)}.")
    parser.add_argument("--widths", nargs="+", type=int, help=f"Default: {' '.join(map(str, WIDTHS))}.")
    parser.add_argument("--lrs", nargs="+", type=float, help=f"Default: {' '.join(map(str, LRS))}.")
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--num-pairs", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=64, help="At most 256, the byte vocabulary.")
    parser.add_argument("--train-examples", type=int, default=16384, help="Training sequences (one pass).")
    parser.add_argument("--eval-examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit-s", type=float, default=300.0, help="Per run.")
    parser.add_argument("--workers", type=int, default=1, help="Runs side by side, one thread each.")
    parser.add_argument("--out-dir", default=None, help="Default: results (--quick: mqar_quick).")
    parser.add_argument("--notes", default=None, help="A markdown file appended to the table (the comparison).")
    parser.add_argument("--resume", action="store_true", help="Reuse finished runs of the runs file.")
    parser.add_argument("--assemble-only", action="store_true",
                        help="With --resume: train nothing; each cell is the best of the lrs it has runs for.")
    parser.add_argument("--quick", action="store_true",
                        help="Two presets, widths 16 and 32, one lr, 64 sequences: a smoke test.")
    args = parser.parse_args(argv)
    presets, widths, lrs = (["transformer", "deltanet"], [16, 32], [3e-3]) if args.quick else (PRESETS, WIDTHS, LRS)
    args.presets = args.presets or list(presets)
    args.widths = args.widths or list(widths)
    args.lrs = args.lrs or list(lrs)
    args.out_dir = args.out_dir or ("mqar_quick" if args.quick else "results")
    if args.quick:
        args.train_examples, args.eval_examples, args.batch_size = 64, 32, 16
        args.num_pairs = min(args.num_pairs, 4)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    s = Settings(args.seq_len, args.num_pairs, args.vocab_size, args.train_examples, args.eval_examples,
                 args.batch_size, args.head_dim, args.seed, args.time_limit_s)
    try:
        trial_config(s)
        for name in args.presets:
            make_point(name, args.widths[0], args.lrs[0], s)
    except Exception as error:  # a bad option: one clear line, not a traceback
        print(f"mqar_zoology: bad settings: {error}", file=sys.stderr)
        return 2
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs_path = out / "mqar_zoology_runs.jsonl"
    done = load_runs(runs_path, s) if args.resume else {}
    if not args.resume:
        runs_path.write_text("")
    keys = [(name, width, lr) for name in args.presets for width in args.widths for lr in args.lrs]
    # the slow deep memories and wide models first, so that parallel workers end together
    todo = sorted((key for key in keys if key not in done), key=lambda k: (k[0] not in DEEP, -k[1]))
    started, count = time.perf_counter(), len(keys) - len(todo)

    def finished(row: dict[str, Any]) -> None:
        nonlocal count
        count += 1
        done[row["preset"], row["width"], row["lr"]] = row
        with runs_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(f"[{count}/{len(keys)} {time.perf_counter() - started:.0f}s] {row['preset']} d_model "
              f"{row['width']} lr {row['lr']:g}: {cell(row)} in {row['wall_s']} s", flush=True)

    if args.assemble_only:
        todo = []
    run_all(todo, s, args.workers, finished)
    all_rows = [done[key] for key in keys if key in done]
    best = {(name, width): best_of([done[name, width, lr] for lr in args.lrs if (name, width, lr) in done])
            for name in args.presets for width in args.widths}
    command = "python benchmarks/mqar_zoology.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    notes = Path(args.notes).read_text() if args.notes else ""
    minutes = sum(row["wall_s"] for row in all_rows) / 60
    (out / "mqar_zoology.md").write_text(
        markdown(best, args.presets, args.widths, s, args.lrs, command.strip(), minutes, notes))
    plot(best, args.presets, args.widths, s, out / "mqar_zoology.png")
    print(f"wrote {out / 'mqar_zoology.md'} and {out / 'mqar_zoology.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
