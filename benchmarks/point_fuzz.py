"""The whole fuzz pass over buildable points (tests/test_point_fuzz.py runs a small seeded slice).

Every point a space or the schema produces must either build and train a step (finite loss and
gradients, ``param_count`` and the memory estimate's parameter count equal to the model's) or be
refused by validation. This draws:

- ``--points`` points per shipped space (``spaces/*.yaml``) with the project's own sampling path
  (Optuna's RandomSampler, seeds 0 and 1), and as many from Optuna's TPE sampler;
- ``--combos`` combinations of every memory, bias, retention, algorithm, feature map and gate
  mode, block shape and chunking option, kept where ``ModelPoint`` accepts them;

shrinks each to a tiny block (at most 2 heads of width 8, 2 layers, vocabulary 32) and runs one
forward and backward on the CPU at sequence lengths 1, 7, 13, 63 and 100 (chunk sizes that do not
divide them), a fifth in float64. Prints each failure class once, with an example, and the time.

    python benchmarks/point_fuzz.py [--points 150] [--combos 3000] [--seed 0]

Measured on one core of a 2-core CPU: ``--points 20 --combos 400``, 346 points in 94 s (the
defaults draw about 2600, about 12 minutes). What it may still print is a NonFiniteError of an
MLP memory without LayerNorm at these 8-wide heads, in the chunked minibatch form at length 63
or 100: the overshoot that error's message describes (the token-by-token recurrence stays
finite, and the same point at the space's own widths does too).
"""

from __future__ import annotations

import argparse
import collections.abc
import random
import time
import warnings
from pathlib import Path

import optuna
import torch

from miras_search.schema import ModelPoint
from miras_search.space import InfeasiblePoint, SearchSpace
from miras_search.testing.point_fuzz import axis_combinations, step_problem, tiny

ROOT = Path(__file__).resolve().parent.parent
LENGTHS = (1, 7, 13, 63, 100)


def space_points(count: int) -> collections.abc.Iterator[tuple[str, ModelPoint]]:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for path in sorted((ROOT / "spaces").glob("*.yaml")):
        space = SearchSpace.load(path)
        for seed in (0, 1):
            for point in space.sample(count // 2, seed=seed):
                yield path.name, point
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=10))
        values = random.Random(0)  # a made-up objective, seeded: the same points every run
        for _ in range(count):
            trial = study.ask()
            try:
                point = space.point_from_trial(trial)
            except InfeasiblePoint:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            study.tell(trial, values.random())
            yield f"{path.name} (tpe)", point


def combinations(count: int, seed: int) -> collections.abc.Iterator[tuple[str, ModelPoint]]:
    for data in axis_combinations(count, seed):
        yield "schema", ModelPoint.model_validate(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=150, help="points per space and sampler")
    parser.add_argument("--combos", type=int, default=3000, help="schema combinations drawn")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    rng = random.Random(args.seed)
    failures: collections.Counter[tuple[str, str]] = collections.Counter()
    examples: dict[tuple[str, str], str] = {}
    runs = 0
    start = time.perf_counter()
    sources = [space_points(args.points), combinations(args.combos, args.seed)]
    for source in sources:
        for origin, point in source:
            length = rng.choice(LENGTHS)
            dtype = torch.float64 if rng.random() < 0.2 else torch.float32
            chunk = rng.choice((None, 3, 5)) if origin != "schema" else None
            data = tiny(point.model_dump(mode="json"), chunk_size=chunk) if origin != "schema" else point.model_dump(mode="json")
            runs += 1
            try:
                problem = step_problem(ModelPoint.model_validate(data), length, dtype)
            except Exception as error:  # every failure is a finding: grouped by its type and words
                problem = f"{type(error).__name__}: {str(error)[:200]}"
            if problem is not None:
                key = (origin, problem)
                failures[key] += 1
                examples.setdefault(key, f"{point.axes} length {length} {dtype}")
    seconds = time.perf_counter() - start
    print(f"{runs} points in {seconds:.0f} s, {sum(failures.values())} failed")
    for (origin, problem), count in failures.most_common():
        print(f"{count}x [{origin}] {problem}\n    e.g. {examples[origin, problem]}")


if __name__ == "__main__":
    main()
