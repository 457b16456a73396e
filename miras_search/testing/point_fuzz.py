"""Fuzzing buildable points: every point a space or the schema produces must either build and
train a step (finite loss and gradients, the parameter count the toolkit reports equal to the
model's) or be refused by validation.

``tests/test_point_fuzz.py`` runs a small seeded slice of this; ``benchmarks/point_fuzz.py`` the
whole pass. Points are shrunk to a tiny block (at most 2 heads of width 8, 2 layers, a vocabulary
of ``VOCAB``) so that one forward and backward takes milliseconds on a CPU.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from pydantic import ValidationError

from miras_search.model import build_model
from miras_search.model.factory import param_count
from miras_search.model.memory_estimate import parameters
from miras_search.schema import ModelPoint

VOCAB = 32

_GATES = ({"mode": "constant"}, {"mode": "head"}, {"mode": "channel", "rank": 4})
_ALPHAS = (*_GATES, {"mode": "mamba"}, {"mode": "retnet"}, {"mode": "alibi"})
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


def tiny(data: dict[str, Any], seq_len: int = 16, chunk_size: int | None = None) -> dict[str, Any]:
    """A point's data on a tiny block: at most 2 heads of width 8, 2 layers, batch 2, eager, the
    PyTorch path; ``chunk_size`` replaces the point's when given."""
    block, train = dict(data["block"]), dict(data["train"])
    heads = min(block["n_heads"], 2)
    block.update(n_heads=heads, d_model=8 * heads, n_layers=min(block["n_layers"], 2), vocab_size=VOCAB)
    for name in ("key_dim", "value_dim"):
        if block.get(name) is not None:
            block[name] = min(block[name], 8)
    if block.get("key_dim") and block.get("value_dim") and data["block"]["key_dim"] == data["block"]["value_dim"]:
        block["value_dim"] = block["key_dim"]  # a point whose widths are equal keeps them equal
    train.update(batch_size=2, seq_len=seq_len, compile=False, kernel="torch")
    if chunk_size is not None:
        train["chunk_size"] = chunk_size
    return {**data, "block": block, "train": train}


def axis_combinations(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` point data drawn with ``seed`` from every memory, bias, retention, algorithm,
    feature map and gate mode, block shape and chunking option, on a tiny block, keeping only
    those ``ModelPoint`` accepts."""
    rng, found = random.Random(seed), []
    while len(found) < count:
        data = {
            "memory": rng.choice(MEMORIES), "bias": rng.choice(BIASES), "retention": rng.choice(RETENTIONS),
            "algorithm": rng.choice(ALGORITHMS),
            "block": {"d_model": 16, "n_heads": 2, "n_layers": 2, "vocab_size": VOCAB, **rng.choice(BLOCKS)},
            "train": {"batch_size": 2, "seq_len": 16, "compile": False, "kernel": "torch", **rng.choice(TRAINS)},
        }
        try:
            ModelPoint.model_validate(data)
        except ValidationError:
            continue
        found.append(data)
    return found


def step_problem(point: ModelPoint, length: int, dtype: torch.dtype = torch.float32) -> str | None:
    """Build ``point`` on the CPU and run one forward and backward of ``length`` tokens (batch 2):
    what went wrong (parameter counts that differ, a non-finite loss or gradient), or None."""
    torch.manual_seed(0)
    model = build_model(point, device="cpu").to(dtype)
    count = sum(p.numel() for p in model.parameters())
    if count != param_count(point) or count != parameters(point):
        return f"parameter counts differ: model {count}, param_count {param_count(point)}, estimate {parameters(point)}"
    tokens = torch.randint(0, VOCAB, (2, length))
    _, loss = model(tokens, tokens)
    if not torch.isfinite(loss):
        return f"non-finite loss: {loss.item()}"
    loss.backward()
    bad = [name for name, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all()]
    return f"non-finite gradients: {bad[:3]}" if bad else None
