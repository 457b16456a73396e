"""ModelPoint: one point of the Miras design space (the four axes + block + training)."""

from __future__ import annotations

from pydantic import Field, model_validator

from miras_search.schema._base import Schema
from miras_search.schema.algorithm import GD, Algorithm
from miras_search.schema.bias import Bias, DotBias
from miras_search.schema.block import Block
from miras_search.schema.feature_map import MAX_FEATURES
from miras_search.schema.gates import Gate
from miras_search.schema.memory import MatrixMemory, Memory
from miras_search.schema.retention import NoRetention, Retention
from miras_search.schema.train import Train

AXES = ("memory", "bias", "retention", "algorithm")
"""The four axes of a point, in the order the paper and every table show them."""


class ModelPoint(Schema):
    """A fully specified architecture: memory, attentional bias, retention, algorithm, block, train."""

    name: str | None = Field(None, description="Optional label (presets carry their name).")
    memory: Memory = Field(default_factory=MatrixMemory)
    bias: Bias = Field(default_factory=DotBias)
    retention: Retention = Field(default_factory=NoRetention)
    algorithm: Algorithm = Field(default_factory=GD)
    block: Block = Field(default_factory=Block)
    train: Train = Field(default_factory=Train)

    @model_validator(mode="after")
    def _cross_axis_rules(self) -> ModelPoint:
        problems = cross_axis_problems(self)
        if problems:  # one line per broken rule: validation.problems_from makes each a Problem
            raise ValueError("\n".join(f"{path}: {message}" for path, message in problems))
        return self

    @property
    def axes(self) -> dict[str, str]:
        """The four axis choices, e.g. {'memory': 'mlp', 'bias': 'lp', ...}."""
        return {axis: getattr(self, axis).kind for axis in AXES}

    def gates(self) -> dict[str, Gate]:
        """Every gate the point's axes define, by field name (eta and theta on the algorithm, alpha
        on the retention, delta on the bias): the one map of which axis owns which gate."""
        return {
            name: value for axis in AXES for name, value in getattr(self, axis)
            if isinstance(value, Gate)
        }

    def uses_exact_delta(self) -> bool:
        """Whether the chunked form is the exact chunked delta rule for this point."""
        if self.train.chunk_form == "minibatch":
            return False
        return self.train.chunk_form == "exact_delta" or exact_delta_applies(self)


def exact_delta_applies(point: ModelPoint) -> bool:
    """Matrix memory, l2 bias, gd/implicit, none/l2 retention (the gradient at the retained
    memory, as the delta rule takes it) without channel-wise gates; or a generalized delta rule
    with RWKV-7's separate write key (``algorithm.write_key`` 'lerp'), whose exact chunked form
    takes channel-wise gates and either gradient point."""
    alpha = getattr(point.retention, "alpha", None)
    eta = getattr(point.algorithm, "eta", None)
    if point.bias.window > 1:  # the Omega rule's window: the minibatch form only
        return False
    if getattr(point.algorithm, "write_key", "key") == "lerp":
        return (
            point.memory.kind == "matrix"
            and point.bias.kind == "l2"
            and point.retention.kind in ("none", "l2")
        )
    return (
        point.memory.kind == "matrix"
        and point.bias.kind == "l2"
        and point.algorithm.kind in ("gd", "implicit", "multistep")
        and point.retention.kind in ("none", "l2")
        and getattr(point.retention, "gradient_at", "retained") == "retained"
        and (alpha is None or alpha.mode != "channel")
        and (eta is None or eta.mode != "channel")
    )


def cross_axis_problems(point: ModelPoint) -> list[tuple[str, str]]:
    """Every broken rule that ties two axes together, as (dotted path, message); empty if valid."""
    memory, bias, retention, algorithm = point.memory, point.bias, point.retention, point.algorithm
    problems: list[tuple[str, str]] = []
    if memory.kind == "none" or algorithm.kind == "none":
        if not (memory.kind == "none" and algorithm.kind == "none"):
            problems.append((
                "algorithm.kind",
                "memory 'none' (softmax attention) goes with algorithm 'none' and vice versa; "
                f"got memory '{memory.kind}' with algorithm '{algorithm.kind}'",
            ))
        if memory.kind == "none" and (bias.kind != "dot" or retention.kind != "none"):
            problems.append((
                "bias.kind",
                "memory 'none' (softmax attention) needs bias 'dot' and retention 'none'; "
                f"got bias '{bias.kind}' and retention '{retention.kind}'",
            ))
        return problems
    problems.extend(_atlas_problems(point))
    if algorithm.kind == "implicit" and (bias.kind != "l2" or memory.kind != "matrix"):
        problems.append((
            "algorithm.kind",
            f"algorithm '{algorithm.kind}' needs bias 'l2' and memory 'matrix'; "
            f"got bias '{bias.kind}' and memory '{memory.kind}'",
        ))
    if algorithm.kind == "implicit" and retention.kind not in ("none", "l2"):
        problems.append((
            "algorithm.kind",
            f"algorithm '{algorithm.kind}' needs retention 'none' or 'l2', got '{retention.kind}'",
        ))
    eta = getattr(algorithm, "eta", None)
    if algorithm.kind == "implicit" and eta is not None and eta.mode == "channel":
        problems.append((
            "algorithm.eta.mode",
            f"algorithm '{algorithm.kind}' needs a scalar eta; eta.mode 'channel' is not allowed",
        ))
    if memory.kind in ("mlp", "vector") and point.block.head_k != point.block.head_v:
        problems.append((
            "block.value_dim",
            f"memory '{memory.kind}' needs equal key and value dims per head (residual / diagonal "
            f"map); got block.key_dim {point.block.head_k} and block.value_dim {point.block.head_v}",
        ))
    if getattr(memory, "init", "auto") == "zeros" and (memory.kind == "mlp" or retention.learned_init):
        problems.append((
            "memory.init",
            f"memory.init 'zeros' cannot start memory '{memory.kind}' with retention "
            f"'{retention.kind}' (needs a positive / non-zero initial state); use 'auto' or 'learned'",
        ))
    problems.extend(_write_key_problems(point))
    if point.train.chunk_form == "exact_delta" and not exact_delta_applies(point) and not any(
        path == "algorithm.write_key" for path, _ in problems
    ):
        problems.append((
            "train.chunk_form",
            "chunk_form 'exact_delta' needs memory 'matrix', bias 'l2', algorithm 'gd', "
            "'multistep' or 'implicit', retention 'none' or 'l2' (gradient_at 'retained') and no "
            "channel-wise gates",
        ))
    if point.train.seq_len > point.block.max_seq_len:
        problems.append((
            "train.seq_len",
            f"seq_len ({point.train.seq_len}) exceeds block.max_seq_len ({point.block.max_seq_len})",
        ))
    return problems


def _atlas_problems(point: ModelPoint) -> list[tuple[str, str]]:
    """The rules of Atlas's axes (arXiv 2505.23735): the Omega window (bias.window > 1), an
    algorithm whose step is not linear in the gradients (muon, or a new one) and the feature
    maps. Such an algorithm runs with per-token weights materialised in the chunked form (the
    window, with gd or momentum, as c entries per token of the linear form), which covers linear
    retentions (none, l2) on matrix and MLP memories."""
    memory, bias, retention, algorithm = point.memory, point.bias, point.retention, point.algorithm
    write_key = getattr(algorithm, "write_key", "key")
    problems: list[tuple[str, str]] = []
    for what, path, used in (
        (f"bias.window {bias.window} (the Omega rule)", "bias.window", bias.window > 1),
        (f"algorithm '{algorithm.kind}'", "algorithm.kind", not algorithm.linear_chunks),
    ):
        if not used:
            continue
        if memory.kind not in ("matrix", "mlp") or retention.kind not in ("none", "l2"):
            problems.append((
                path,
                f"{what} needs memory 'matrix' or 'mlp' and retention 'none' or 'l2'; got memory "
                f"'{memory.kind}' and retention '{retention.kind}'",
            ))
        if write_key != "key":
            problems.append((path, f"{what} takes algorithm.write_key 'key', got '{write_key}'"))
    if bias.window > 1 and not algorithm.takes_window:
        takes = [kind for kind, option in type(algorithm).registry.items() if option.takes_window]
        problems.append((
            "bias.window",
            f"bias.window > 1 (the Omega rule) needs algorithm {', '.join(takes[:-1])} or "
            f"{takes[-1]}; got '{algorithm.kind}'",
        ))
    feature_map = getattr(memory, "feature_map", None)
    if feature_map is not None and feature_map.kind != "identity":
        width = feature_map.width(point.block.head_k)
        if width > MAX_FEATURES:
            problems.append((
                "memory.feature_map.degree",
                f"feature map '{feature_map.label()}' makes "
                f"{width} features from keys of {point.block.head_k} per head; at most "
                f"{MAX_FEATURES} (lower the degree or block.key_dim)",
            ))
        if write_key != "key":
            problems.append((
                "memory.feature_map",
                f"a feature map needs algorithm.write_key 'key', got '{write_key}'",
            ))
    return problems


def _write_key_problems(point: ModelPoint) -> list[tuple[str, str]]:
    """The rules of ``algorithm.write_key`` other than 'key' (HGRN2's and RWKV-7's write keys)."""
    write_key = getattr(point.algorithm, "write_key", "key")
    memory, bias, retention = point.memory.kind, point.bias.kind, point.retention.kind
    if write_key == "one_minus_alpha" and (
        memory not in ("matrix", "vector") or bias != "dot" or retention != "l2"
    ):
        return [(
            "algorithm.write_key",
            "write_key 'one_minus_alpha' (HGRN2: the key is 1 - alpha_t) needs memory 'matrix' or "
            f"'vector', bias 'dot' and retention 'l2'; got memory '{memory}', bias '{bias}', "
            f"retention '{retention}'",
        )]
    if write_key == "lerp":
        if memory != "matrix" or bias != "l2" or retention not in ("none", "l2"):
            return [(
                "algorithm.write_key",
                "write_key 'lerp' (RWKV-7's generalized delta rule) needs memory 'matrix', bias "
                f"'l2' and retention 'none' or 'l2'; got memory '{memory}', bias '{bias}', "
                f"retention '{retention}'",
            )]
        if point.train.chunk_form == "minibatch":
            return [(
                "train.chunk_form",
                "write_key 'lerp' runs the exact chunked generalized delta rule; chunk_form "
                "'minibatch' has no form for it (use 'auto' or 'exact_delta')",
            )]
    return []
