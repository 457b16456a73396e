"""Study throughput on Ray: trials per hour with 1 vs 2 workers, and orchestration overhead.

    python benchmarks/study_throughput.py [--study studies/quickstart.yaml] [--workers 1,2]
        [--trials 12] [--as-shipped] [--wandb offline|off] [--json out.json]

Each worker count runs the study from scratch in a temporary folder on a fresh local Ray
instance. By default the sampler is switched to random (same seed) and pruning off, so both runs
train the same points in the same order and the comparison measures parallelism, not luck;
``--as-shipped`` keeps the file's sampler and pruner. CPU threads are split between workers
(1 worker: all cores; 2 workers: half each), as ``miras run`` does.

Reported per run: wall time (Ray start included), trials/hour, mean time inside run_trial, and
the orchestration overhead per trained trial = (ask -> tell in the driver) - (time inside
run_trial): sampling, point validation, Ray dispatch and result transfer, storage writes,
W&B logging.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile

from miras_search.parallel import RayPool
from miras_search.study import load_study_file, open_study, run_study
from miras_search.tracking import WandbTracker


def run_once(path: str, workers: int, trials: int | None, as_shipped: bool, wandb: str) -> dict:
    spec = load_study_file(path)
    with tempfile.TemporaryDirectory(prefix="miras-bench-") as folder:
        update = {"run_dir": folder, "storage": None}
        if not as_shipped:
            update["sampler"] = spec.sampler.model_copy(update={"kind": "random", "options": {}})
            update["pruner"] = spec.pruner.model_copy(update={"kind": "none"})
        bench = spec.model_copy(update=update)
        bench._source = spec.source
        tracker = None if wandb == "off" else WandbTracker(bench.name, bench.out_dir() / "wandb", wandb)
        summary = run_study(bench, lambda: RayPool(workers), trials=trials, tracker=tracker)
        trials_done = open_study(bench).get_trials()
    states = collections.Counter(t.state.name.lower() for t in trials_done)
    failures = collections.Counter(str(t.user_attrs.get("reason"))[:120] for t in trials_done if t.state.name == "FAIL")
    overhead = summary.overhead_s or [0.0]
    return {
        "workers": workers, "states": dict(states), "failures": dict(failures), "finished": summary.finished, "trained": summary.ran, "reused": summary.reused,
        "wall_s": summary.wall_s, "trials_per_hour": 3600 * summary.finished / summary.wall_s,
        "mean_trial_s": statistics.mean(summary.trial_s or [0.0]),
        "overhead_mean_s": statistics.mean(overhead), "overhead_median_s": statistics.median(overhead),
        "overhead_max_s": max(overhead),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="studies/quickstart.yaml")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--trials", type=int, default=None, help="Default: the study's.")
    parser.add_argument("--as-shipped", action="store_true", help="Keep the file's sampler and pruner.")
    parser.add_argument("--wandb", default="offline", choices=["offline", "off"])
    parser.add_argument("--json", default=None, help="Also write the results here.")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}  load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = [run_once(args.study, int(w), args.trials, args.as_shipped, args.wandb) for w in args.workers.split(",")]
    base = rows[0]["trials_per_hour"]
    print(f"{'workers':>7} {'trials':>6} {'wall s':>8} {'trials/h':>9} {'speedup':>7} "
          f"{'trial s':>8} {'overhead s (mean/median/max)':>30}")
    for row in rows:
        row["speedup"] = row["trials_per_hour"] / base
        print(f"states {row['states']}" + (f"  failures {row['failures']}" if row["failures"] else ""))
        print(f"{row['workers']:>7} {row['finished']:>6} {row['wall_s']:>8.1f} {row['trials_per_hour']:>9.1f} "
              f"{row['speedup']:>6.2f}x {row['mean_trial_s']:>8.2f} "
              f"{row['overhead_mean_s']:>12.3f} / {row['overhead_median_s']:.3f} / {row['overhead_max_s']:.3f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
