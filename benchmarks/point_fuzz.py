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
import collections
import random
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import torch
from pydantic import ValidationError

from miras_search.model import build_model
from miras_search.model.factory import param_count
from miras_search.model.memory_estimate import parameters
from miras_search.schema import ModelPoint
from miras_search.space import InfeasiblePoint, SearchSpace

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 32
LENGTHS = (1, 7, 13, 63, 100)

_GATES = ({"mode": "constant"}, {"mode": "head"}, {"mode": "channel", "rank": 4})
_ALPHAS = (*_GATES, {"mode": "mamba", "value": 0.9}, {"mode": "retnet"}, {"mode": "alibi"})
_MAPS = ({"kind": "identity"}, {"kind": "polynomial", "degree": 2}, {"kind": "exponential", "degree": 2},
         {"kind": "polynomial", "degree": 1})
MEMORIES = (
    {"kind": "vector"}, {"kind": "vector", "init": "learned"}, {"kind": "none"},
    {"kind": "none", "window": 3, "short_conv": False},
    *({"kind": "matrix", "feature_map": phi, "init": init} for phi in _MAPS for init in ("auto", "zeros", "learned")),
    *({"kind": "mlp", "depth": depth, "expansion": 1, "activation": act, "layer_norm": norm, "feature_map": phi}
      for depth in (2, 3) for act in ("gelu", "relu") for norm in (True, False) for phi in _MAPS[:3]),
)
BIASES = (
    *({"kind": kind, "window": window} for kind in ("dot", "l2", "lp", "robust") for window in (1, 3)),
    *({"kind": "lp", "p": 1.0, "smooth": smooth} for smooth in (True, False)),
    *({"kind": "huber", "variant": variant, "delta": gate, "smooth": smooth, "sharpness_scale": scale,
       "threshold_units": units, "window": window}
      for variant in ("coordinate", "norm", "switch") for gate in _GATES for smooth in (True, False)
      for scale in ("absolute", "threshold") for units in ("absolute", "sqrt_dv") for window in (1, 3)),
    *({"kind": "l2", "window": 2, "gamma": {**gate, "value": value}} for gate in _GATES for value in (0.5, 1.0)),
)
RETENTIONS = (
    {"kind": "none"}, {"kind": "bregman"}, {"kind": "elastic", "smooth": False}, {"kind": "lq", "q": 2.0},
    {"kind": "kl", "scale": 5.0},
    *({"kind": kind, "alpha": alpha} for kind in ("l2", "lq", "kl", "elastic") for alpha in _ALPHAS),
    *({"kind": "l2", "gradient_at": "previous", "alpha": alpha} for alpha in _ALPHAS),
)
ALGORITHMS = (
    {"kind": "none"}, {"kind": "gd", "eta": {"mode": "head", "max_ratio": 3.0, "value": 0.2}},
    *({"kind": kind, "eta": eta} for kind in ("gd", "momentum", "implicit", "multistep") for eta in _GATES),
    *({"kind": "momentum", "eta": eta, "theta": {"mode": "constant"}} for eta in _GATES),
    *({"kind": "gd", "write_key": key, "eta": eta} for key in ("one_minus_alpha", "lerp") for eta in _GATES),
    *({"kind": "muon", "eta": eta, "ns_steps": 2} for eta in _GATES),
)
BLOCKS = (
    {}, {"hybrid": "samba", "window": 3}, {"layer_pattern": ["memory", "swa"], "window": 4},
    {"layer_pattern": ["memory", "attention"]}, {"layer_pattern": ["attention"]},
    {"key_dim": 4, "value_dim": 6}, {"key_dim": 6, "value_dim": 6}, {"n_heads": 1, "d_model": 8},
    {"conv_size": 0, "qk_l2_norm": False, "output_norm": False, "output_gate": False},
    {"tie_embeddings": False, "mlp_ratio": 0.5},
)
TRAINS = ({}, {"mode": "recurrent"}, {"chunk_size": 1}, {"chunk_size": 3}, {"chunk_size": 7},
          {"chunk_size": 64}, {"chunk_form": "minibatch"}, {"chunk_form": "exact_delta"})


def tiny(data: dict[str, Any], chunk_size: int | None = None) -> dict[str, Any]:
    """A sampled point's data on a tiny block: at most 2 heads of width 8, 2 layers."""
    block, train = dict(data["block"]), dict(data["train"])
    heads = min(block["n_heads"], 2)
    block.update(n_heads=heads, d_model=8 * heads, n_layers=min(block["n_layers"], 2), vocab_size=VOCAB)
    for name in ("key_dim", "value_dim"):
        if block.get(name) is not None:
            block[name] = min(block[name], 8)
    train.update(batch_size=2, seq_len=8, compile=False, kernel="torch")
    if chunk_size is not None:
        train["chunk_size"] = chunk_size
    return {**data, "block": block, "train": train}


def step(point: ModelPoint, length: int, dtype: torch.dtype) -> str | None:
    """One forward and backward of ``length`` tokens; what went wrong, or None."""
    torch.manual_seed(0)
    model = build_model(point, device="cpu").to(dtype)
    count = sum(p.numel() for p in model.parameters())
    if count != param_count(point) or count != parameters(point):
        return f"parameter counts differ: model {count}, param_count {param_count(point)}, estimate {parameters(point)}"
    tokens = torch.randint(0, VOCAB, (2, length))
    _, loss = model(tokens, tokens)
    loss.backward()
    bad = [name for name, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all()]
    return f"non-finite gradients: {bad[:3]}" if bad else None


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
    rng = random.Random(seed)
    for _ in range(count):
        data = {
            "memory": rng.choice(MEMORIES), "bias": rng.choice(BIASES), "retention": rng.choice(RETENTIONS),
            "algorithm": rng.choice(ALGORITHMS),
            "block": {"d_model": 16, "n_heads": 2, "n_layers": 2, "vocab_size": VOCAB, **rng.choice(BLOCKS)},
            "train": {"batch_size": 2, "seq_len": 16, "compile": False, "kernel": "torch", **rng.choice(TRAINS)},
        }
        try:
            yield "schema", ModelPoint.model_validate(data)
        except ValidationError:
            continue


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
            data = tiny(point.model_dump(mode="json"), chunk) if origin != "schema" else point.model_dump(mode="json")
            runs += 1
            try:
                problem = step(ModelPoint.model_validate(data), length, dtype)
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
