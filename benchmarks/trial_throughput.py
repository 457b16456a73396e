"""Trial throughput at the quickstart size: tokens/s and the share of time outside the model step.

    python benchmarks/trial_throughput.py [--presets transformer gated_deltanet moneta] [--threads 1]

The trial config is the ``trial:`` section of studies/quickstart.yaml when it exists. The corpus
cache is warmed first so that its one-time build is not counted. "outside" = wall time of the
trial minus the time spent in optimiser steps (forward, backward, update): data generation,
evaluation, model build and bookkeeping.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from miras_search.cli.training import load_trial_config
from miras_search.data import load_corpus
from miras_search.presets import preset
from miras_search.space import SearchSpace
from miras_search.trial import TrialConfig, run_trial

ROOT = Path(__file__).resolve().parents[1]


def _quickstart_sections(space: SearchSpace) -> dict:
    """The quickstart space's block and train settings: a preset's four axes at that size."""
    return {"block": space.base["block"], "train": {**space.base["train"], "tokens": 1024}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["transformer", "gated_deltanet", "moneta"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    study = ROOT / "studies" / "quickstart.yaml"
    config = load_trial_config(study) if study.exists() else TrialConfig()
    space = SearchSpace.load(ROOT / "spaces" / "quickstart.yaml")
    load_corpus()  # warm the cache: its one-time build is not part of a trial
    # one throw-away trial pays the process's one-time costs (lazy imports, kernel selection)
    run_trial(preset("transformer", **_quickstart_sections(space)),
              config.model_copy(update={"tokens": None, "eval_batches": 1}), device=args.device)
    table = Table(title=f"trial throughput at the quickstart size ({args.device}, {args.threads} thread(s))")
    for column in ("preset", "params", "tokens", "tokens/s (train)", "wall s", "outside step %"):
        table.add_column(column, justify="right")
    for name in args.presets:
        result = run_trial(preset(name, **_quickstart_sections(space)), config, device=args.device)
        m = result.metrics
        if not result.ok:
            table.add_row(name, "-", "-", f"failed: {result.reason}", "-", "-")
            continue
        table.add_row(
            name, f"{m['params']:,.0f}", f"{m['tokens']:,.0f}", f"{m['tokens_per_s']:,.0f}",
            f"{m['wall_s']:.1f}", f"{100 * m['outside_step_share']:.1f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
