"""Rank correlation (Spearman, Kendall tau-b) with seeded bootstrap confidence intervals.

numpy only (scipy is optional at run time); the tests check these against scipy.stats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOTSTRAP_METHOD = "paired percentile bootstrap"


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x: [N]``; tied values share the mean of their ranks."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.r_[True, sorted_x[1:] != sorted_x[:-1]]  # [N] first of each tie group
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], len(x)] - 1
    mean_rank = (first + last) / 2.0 + 1.0  # [G]
    ranks = np.empty(len(x))
    ranks[order] = mean_rank[group]
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson correlation of the average ranks; nan when a side is constant."""
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / denominator) if denominator > 0 else float("nan")


def kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b (ties in either side handled); nan when a side is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    upper = np.triu(np.ones((len(x), len(x)), dtype=bool), k=1)  # each pair (i < j) once
    sx = np.sign(x[:, None] - x[None, :])[upper]
    sy = np.sign(y[:, None] - y[None, :])[upper]
    concordance = float((sx * sy).sum())  # concordant - discordant
    denominator = np.sqrt(float((sx != 0).sum()) * float((sy != 0).sum()))
    return concordance / denominator if denominator > 0 else float("nan")


@dataclass(frozen=True)
class Correlation:
    """One rank correlation with its bootstrap interval (``level`` e.g. 0.95)."""

    name: str
    value: float
    low: float
    high: float
    level: float
    resamples: int  # bootstrap resamples that gave a defined value

    def describe(self) -> str:
        return f"{self.name} {self.value:+.3f} ({self.level:.0%} CI {self.low:+.3f} .. {self.high:+.3f})"


def bootstrap_ci(x: np.ndarray, y: np.ndarray, statistic, *, resamples: int = 2000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float, int]:
    """Percentile interval of ``statistic(x[idx], y[idx])`` over paired resamples of the indices.

    Resamples where the statistic is undefined (a side became constant) are dropped; returns
    (low, high, kept); (nan, nan, 0) when none is defined.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(x), size=(resamples, len(x)))  # [R, N]
    stats = np.array([statistic(x[i], y[i]) for i in index])
    stats = stats[np.isfinite(stats)]
    if len(stats) == 0:
        return float("nan"), float("nan"), 0
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return float(low), float(high), len(stats)


def rank_agreement(x: np.ndarray, y: np.ndarray, *, resamples: int = 2000, level: float = 0.95,
                   seed: int = 0) -> list[Correlation]:
    """Spearman and Kendall between ``x: [N]`` and ``y: [N]`` with bootstrap CIs (same seed)."""
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} vs {len(y)})")
    if len(x) < 3:
        raise ValueError(f"a rank correlation needs at least 3 pairs, got {len(x)}")
    out = []
    for name, function in (("Spearman", spearman), ("Kendall", kendall)):
        low, high, kept = bootstrap_ci(x, y, function, resamples=resamples, level=level, seed=seed)
        out.append(Correlation(name, function(x, y), low, high, level, kept))
    return out
