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
    table = Table(title=f"trial throughput at the quickstart size ({args.device}, {args.threads} thread(s))")
    for column in ("preset", "params", "tokens", "tokens/s (train)", "wall s", "outside step %"):
        table.add_column(column, justify="right")
    for name in args.presets:
        # the space's block and train settings with the preset's four axes: the quickstart size
        base = space.base
        point = preset(name).model_dump()
        point["block"], point["train"] = base["block"], base["train"]
        result = run_trial(preset(name).model_validate(point), config, device=args.device)
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
