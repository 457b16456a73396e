"""YAML search spaces over ModelPoint: format, sampling with Optuna, constraints, encoding."""

from miras_search.space.search_space import InfeasiblePoint, SearchSpace, SpaceSummary
from miras_search.space.spec import Choice, Constraint, FloatRange, IntRange, SpaceFile

__all__ = [
    "Choice", "Constraint", "FloatRange", "InfeasiblePoint", "IntRange", "SearchSpace",
    "SpaceFile", "SpaceSummary",
]
