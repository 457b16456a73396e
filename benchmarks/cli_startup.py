"""Wall time of `miras --help` (a fresh process each time) and the heavy modules that importing
the CLI loads. Usage: python benchmarks/cli_startup.py [--runs 5] [--out FILE]."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("torch", "optuna", "matplotlib", "ray", "wandb", "scipy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "miras_search", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    probe = f"import sys, miras_search.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.strip()
    text = (f"miras --help: median {statistics.median(times):.2f} s, min {min(times):.2f} s over "
            f"{args.runs} runs; heavy modules imported with the CLI: {loaded}\n")
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
