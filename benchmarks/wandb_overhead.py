"""What W&B logging costs a study: time inside run_trial and orchestration per trial (driver
time outside run_trial), with W&B offline vs off, trials run in the driver's process (--inline).

    OMP_NUM_THREADS=1 python benchmarks/wandb_overhead.py [--trials 8] [--rounds 5] [--out FILE]

Per trial (the goal: at most 0.05 s): one process, W&B already started, then ``--rounds`` pairs
of the same study with W&B off and offline, alternating which runs first so that a busy
machine's drift cancels; both train the same points in the same order (random sampler, same
seed, no pruner, so neither mode runs a validation pass the other does not) on a tiny space.
With W&B on, each trial's run is written by a background thread while the trial trains
(tracking.live); its finish overlaps the next trial, and the study's wall time includes the
summary run and the wait for the last trial's run. Figures are medians over rounds.

The CPU figure (this process and its children, W&B's service, over the whole study) moves least
when other work shares the machine; wall-clock figures there grow with the load.

Once per process: W&B's start (import, ``wandb.setup()``, its first run), measured in a fresh
process. A study pays it once in the driver (on a background thread while the study sets up) and
once in each Ray worker (on a background thread, during the worker's first trial).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _tree_cpu_s() -> float:
    """CPU seconds of this process and its children (W&B's service), so far."""
    total = 0.0
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def run_once(trials: int, wandb: str) -> dict[str, float]:
    from test_study import TINY_SPACE, TINY_TRIAL

    from miras_search.study import InlinePool, load_study_file, run_study
    from miras_search.tracking import WandbTracker

    with tempfile.TemporaryDirectory(prefix="miras-wandb-bench-") as folder:
        root = Path(folder)
        (root / "space.yaml").write_text(yaml.safe_dump(TINY_SPACE))
        study = {"type": "study", "name": "bench", "space": "space.yaml",
                 "trial": {**TINY_TRIAL, "tokens": 4096}, "objectives": [{"metric": "val_bpb"}],
                 "sampler": {"kind": "random", "anchors": []}, "pruner": {"kind": "none"},
                 "trials": trials, "run_dir": str(root / "runs"), "tracking": {"wandb": wandb}}
        (root / "study.yaml").write_text(yaml.safe_dump(study))
        spec = load_study_file(root / "study.yaml")
        cpu = _tree_cpu_s()
        tracker = None if wandb == "off" else WandbTracker(spec.name, spec.out_dir() / "wandb", wandb)
        summary = run_study(spec, lambda: InlinePool(threads=1), tracker=tracker)
        return {"trial_s": statistics.mean(summary.trial_s), "overhead_s": statistics.mean(summary.overhead_s),
                "wall_s": summary.wall_s, "cpu_s": _tree_cpu_s() - cpu}


def start_cost() -> dict[str, float]:
    """In this (fresh) process: W&B's start and its first trial run, wall and CPU seconds."""
    from miras_search.tracking.live import TRIAL_RUN_SETTINGS, wandb_session

    with tempfile.TemporaryDirectory(prefix="miras-wandb-start-") as folder:
        cpu, wall = _tree_cpu_s(), time.perf_counter()
        wandb = wandb_session({"mode": "offline", "dir": folder})
        run = wandb.init(project="bench", dir=folder, mode="offline", reinit="create_new",
                         settings=wandb.Settings(**TRIAL_RUN_SETTINGS))
        run.finish()
        return {"wall_s": time.perf_counter() - wall, "cpu_s": _tree_cpu_s() - cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--start", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    if args.start:
        print(json.dumps(start_cost()))
        return
    starts = [json.loads(subprocess.run([sys.executable, __file__, "--start"], check=True, capture_output=True,
                                        text=True).stdout.strip().splitlines()[-1]) for _ in range(3)]
    run_once(2, "offline")  # W&B started in this process; not counted
    rounds = []
    for index in range(args.rounds):
        modes = ("off", "offline") if index % 2 == 0 else ("offline", "off")
        result = {mode: run_once(args.trials, mode) for mode in modes}
        off, on = result["off"], result["offline"]
        rounds.append({"inside": on["trial_s"] - off["trial_s"], "orchestration": on["overhead_s"] - off["overhead_s"],
                       "wall": (on["wall_s"] - off["wall_s"]) / args.trials,
                       "cpu": (on["cpu_s"] - off["cpu_s"]) / args.trials, "trial_off": off["trial_s"]})
        print(f"round {index + 1}: " + ", ".join(f"{k} {v:+.3f} s" for k, v in rounds[-1].items()), flush=True)

    def median(key: str, rows=rounds) -> float:
        return statistics.median(r[key] for r in rows)

    lines = [
        f"# OMP_NUM_THREADS=1 python benchmarks/wandb_overhead.py --trials {args.trials} --rounds {args.rounds}"
        f"  (--inline, tiny space, {os.cpu_count()} CPUs; W&B offline minus off, medians over rounds)",
        f"per trial, inside run_trial:               {median('inside'):+.3f} s"
        f" (a trial takes {median('trial_off'):.2f} s without W&B)",
        f"per trial, orchestration (driver):         {median('orchestration'):+.3f} s",
        f"per trial, study wall / trials:            {median('wall'):+.3f} s"
        " (summary run and the wait for the last run included)",
        f"per trial, CPU (driver + W&B's service):   {median('cpu'):+.3f} s (summary run included; the"
        " least noisy figure on a shared machine)",
        f"once per process, W&B start + first run:   {median('wall_s', starts):.2f} s wall, "
        f"{median('cpu_s', starts):.2f} s CPU (driver: while the study sets up; Ray worker: during its first trial)",
        "rounds (inside run_trial): " + ", ".join(f"{r['inside']:+.3f}" for r in rounds),
        "rounds (CPU per trial):    " + ", ".join(f"{r['cpu']:+.3f}" for r in rounds),
        f"load average while measuring: {os.getloadavg()[0]:.1f} (1 min)",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
