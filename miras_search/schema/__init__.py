"""Pydantic v2 schemas of the Miras design space; they know nothing of torch."""

from miras_search.schema import plugins  # imports every axis module itself
from miras_search.schema._base import canonical_data, unused_paths
from miras_search.schema.algorithm import (
    ALGORITHM_KINDS,
    GD,
    Algorithm,
    Implicit,
    Momentum,
    Multistep,
    Muon,
    NoAlgorithm,
)
from miras_search.schema.bias import (
    BIAS_KINDS,
    Bias,
    DotBias,
    HuberBias,
    L2Bias,
    LpBias,
    RobustBias,
)
from miras_search.schema.block import Block
from miras_search.schema.gates import Gate
from miras_search.schema.memory import (
    MEMORY_KINDS,
    AttentionMemory,
    MatrixMemory,
    Memory,
    MLPMemory,
    VectorMemory,
)
from miras_search.schema.point import AXES, ModelPoint, cross_axis_problems, exact_delta_applies
from miras_search.schema.retention import (
    RETENTION_KINDS,
    BregmanRetention,
    ElasticRetention,
    KLRetention,
    L2Retention,
    LqRetention,
    NoRetention,
    Retention,
)
from miras_search.schema.train import Train

plugins.install()

__all__ = [
    "ALGORITHM_KINDS",
    "AXES",
    "BIAS_KINDS",
    "GD",
    "MEMORY_KINDS",
    "RETENTION_KINDS",
    "Algorithm",
    "AttentionMemory",
    "Bias",
    "Block",
    "BregmanRetention",
    "DotBias",
    "ElasticRetention",
    "Gate",
    "HuberBias",
    "Implicit",
    "KLRetention",
    "L2Bias",
    "L2Retention",
    "LpBias",
    "LqRetention",
    "MLPMemory",
    "MatrixMemory",
    "Memory",
    "ModelPoint",
    "Momentum",
    "Multistep",
    "Muon",
    "NoAlgorithm",
    "NoRetention",
    "Retention",
    "RobustBias",
    "Train",
    "VectorMemory",
    "canonical_data",
    "cross_axis_problems",
    "exact_delta_applies",
    "unused_paths",
]
