"""What W&B logging costs a study: orchestration per trial (driver time outside run_trial) and
the time inside run_trial, with W&B offline vs off, trials run in this process (--inline).

    OMP_NUM_THREADS=1 python benchmarks/wandb_overhead.py [--trials 6] [--out FILE]

Both runs train the same points in the same order (random sampler, same seed, no pruner) on a
tiny space. With W&B on, each trial's run is written by a background thread while the trial
trains (tracking.live); the driver's summary run is not counted (it is once per study).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_study import TINY_SPACE, TINY_TRIAL

from miras_search.study import InlinePool, load_study_file, run_study
from miras_search.tracking import WandbTracker


def run_once(trials: int, wandb: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="miras-wandb-bench-") as folder:
        root = Path(folder)
        (root / "space.yaml").write_text(yaml.safe_dump(TINY_SPACE))
        study = {"type": "study", "name": "bench", "space": "space.yaml",
                 "trial": {**TINY_TRIAL, "tokens": 4096}, "objectives": [{"metric": "val_bpb"}],
                 "sampler": {"kind": "random", "anchors": []}, "pruner": {"kind": "none"},
                 "trials": trials, "run_dir": str(root / "runs"), "tracking": {"wandb": wandb}}
        (root / "study.yaml").write_text(yaml.safe_dump(study))
        spec = load_study_file(root / "study.yaml")
        tracker = None if wandb == "off" else WandbTracker(spec.name, spec.out_dir() / "wandb", wandb)
        summary = run_study(spec, lambda: InlinePool(threads=1), tracker=tracker)
        return {"orchestration_s": statistics.mean(summary.overhead_s),
                "trial_s": statistics.mean(summary.trial_s), "wall_s": summary.wall_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    lines = [f"# python benchmarks/wandb_overhead.py --trials {args.trials}  (--inline, tiny space, 1 thread)"]
    for mode in ("off", "offline"):
        r = run_once(args.trials, mode)
        lines.append(f"wandb {mode:8s}: orchestration {r['orchestration_s']:.3f} s/trial, inside run_trial "
                     f"{r['trial_s']:.2f} s/trial, study wall {r['wall_s']:.1f} s (summary run included)")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
