"""Rank correlation (Spearman, Kendall tau-b) with permutation p-values and bootstrap intervals.

Ranks come from scipy.stats.rankdata; the correlations are written out in numpy and checked
against scipy.stats' spearmanr / kendalltau to 1e-12 in the tests. They stay here because the
exact permutation null needs them vectorised over all n! orderings of one side at once (40,320
at 8 points, one matrix product), where calling scipy per ordering is about 100x slower and
``scipy.stats.permutation_test(permutation_type="pairings")`` reorders both samples (n!^2).

Two things are reported for each correlation, because a proxy check has few points:

* a one-sided **permutation p-value** (alternative: the two rankings agree, i.e. the correlation
  is positive): the share of the orderings of ``y`` against ``x`` whose correlation is at least the
  observed one. It is exact (all ``n!`` orderings) up to ``EXACT_MAX_POINTS`` points, and a seeded
  Monte-Carlo estimate ``(1 + hits) / (1 + permutations)`` beyond. Unlike an interval, it does not
  collapse for small ``n``: 3 points in perfect order give p = 1/6, 4 give 1/24.
* a **paired percentile bootstrap** interval, only from ``BOOTSTRAP_MIN_POINTS`` points, and never
  a degenerate one: when every resample gives the same value (points in perfect order: every
  resample of them is in perfect order too) the interval is reported as undefined (nan, nan)
  rather than as "+1.000 .. +1.000", which would look certain while saying nothing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats

BOOTSTRAP_METHOD = "paired percentile bootstrap"
EXACT_MAX_POINTS = 8
"""Up to this many points the permutation p-value enumerates all n! orderings (8! = 40320)."""
PERMUTATIONS = 20000
"""Random orderings of the Monte-Carlo permutation p-value beyond ``EXACT_MAX_POINTS`` points."""
BOOTSTRAP_MIN_POINTS = 5
"""Fewer points than this get no bootstrap interval (resamples of 3-4 points are mostly repeats)."""
PERMUTATION_METHOD = (f"one-sided permutation p-value (exact over all orderings up to "
                      f"{EXACT_MAX_POINTS} points, else {PERMUTATIONS} seeded random orderings)")
_TOLERANCE = 1e-9  # orderings whose statistic equals the observed one up to rounding count as hits
_CHUNK = 4096  # permutations scored at once (bounds memory for large n)

Statistic = Callable[[np.ndarray, np.ndarray], float]


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x: [N]``; tied values share the mean of their ranks (scipy's rankdata)."""
    return stats.rankdata(np.asarray(x, dtype=float), method="average")


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


def _spearman_orderings(x: np.ndarray, y: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Spearman's rho of ``x: [N]`` against ``y[orders[k]]`` for each row of ``orders: [K, N]``.

    Ranks of a reordered ``y`` are the reordered ranks, and both sums of squares are unchanged
    by reordering, so only the cross term is computed per ordering.
    """
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((rx**2).sum() * (ry**2).sum())
    return (ry[orders] @ rx) / denominator  # [K]


def _kendall_orderings(x: np.ndarray, y: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of ``x: [N]`` against ``y[orders[k]]`` for each row of ``orders: [K, N]``."""
    first, second = np.triu_indices(len(x), k=1)  # [P] each pair once
    sx = np.sign(x[first] - x[second])  # [P]
    moved = y[orders]  # [K, N]
    sy = np.sign(moved[:, first] - moved[:, second])  # [K, P]
    denominator = np.sqrt(float((sx != 0).sum()) * float((np.sign(y[first] - y[second]) != 0).sum()))
    return (sy @ sx) / denominator  # [K]


_ORDERINGS = {spearman: _spearman_orderings, kendall: _kendall_orderings}


@lru_cache(maxsize=EXACT_MAX_POINTS)
def _all_orders(n: int) -> np.ndarray:
    """Every permutation of ``range(n)`` as rows: [n!, n] (the first row is the identity)."""
    return np.array(list(itertools.permutations(range(n))), dtype=np.intp).reshape(-1, n)


@dataclass(frozen=True)
class PermutationTest:
    """A one-sided permutation p-value and how it was obtained."""

    p_value: float  # nan when the statistic is undefined (a side is constant)
    orderings: int  # orderings scored (n! when exact)
    exact: bool


def permutation_pvalue(x: np.ndarray, y: np.ndarray, statistic: Statistic = spearman, *,
                       permutations: int = PERMUTATIONS, seed: int = 0,
                       exact_max: int = EXACT_MAX_POINTS) -> PermutationTest:
    """One-sided p-value of "``statistic(x, y)`` is this large by chance" under random pairing.

    ``statistic`` is ``spearman`` or ``kendall``. With ``n <= exact_max`` points it is exact: the
    share of all ``n!`` orderings of ``y`` whose statistic is at least the observed one (ties in
    the data are kept, so it is the exact conditional distribution). Beyond, ``permutations``
    seeded random orderings give ``(1 + hits) / (1 + permutations)``, which never reaches 0.
    """
    if statistic not in _ORDERINGS:
        raise ValueError("permutation_pvalue supports the spearman and kendall statistics")
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} vs {len(y)})")
    n = len(x)
    orderings = _ORDERINGS[statistic]
    if n < 2 or not math.isfinite(statistic(x, y)):
        return PermutationTest(float("nan"), 0, n <= exact_max)
    observed = float(orderings(x, y, np.arange(n)[None, :])[0])  # same arithmetic as the null
    threshold = observed - _TOLERANCE
    if n <= exact_max:
        null = orderings(x, y, _all_orders(n))
        return PermutationTest(float((null >= threshold).sum()) / len(null), len(null), True)
    rng = np.random.default_rng(seed)
    hits, done = 0, 0
    while done < permutations:
        size = min(_CHUNK, permutations - done)
        orders = rng.permuted(np.tile(np.arange(n), (size, 1)), axis=1)  # [size, N]
        hits += int((orderings(x, y, orders) >= threshold).sum())
        done += size
    return PermutationTest((1.0 + hits) / (1.0 + permutations), permutations, False)


@dataclass(frozen=True)
class Correlation:
    """One rank correlation, its bootstrap interval (``level`` e.g. 0.95) and permutation p-value.

    ``low``/``high`` are nan when no interval is reported: fewer than ``BOOTSTRAP_MIN_POINTS``
    points, or every resample gave the same value (a degenerate interval says nothing).
    """

    name: str
    value: float
    low: float
    high: float
    level: float
    resamples: int  # bootstrap resamples that gave a defined value
    p_value: float = float("nan")  # one-sided (agreement) permutation p-value
    orderings: int = 0  # orderings the p-value was computed over
    exact: bool = False  # p-value over all n! orderings
    points: int = 0  # pairs the correlation was computed from

    @property
    def has_interval(self) -> bool:
        """Whether ``low .. high`` is a reportable (defined, non-degenerate) interval."""
        return math.isfinite(self.low) and math.isfinite(self.high) and self.high > self.low

    def describe_p(self) -> str:
        """``one-sided p = 0.167, exact over all 6 orderings``, or ``no p-value``."""
        if not math.isfinite(self.p_value):
            return "no p-value"
        how = f"exact over all {self.orderings} orderings" if self.exact else f"{self.orderings} random orderings"
        return f"one-sided p = {self.p_value:.3g}, {how}"

    def describe_interval(self) -> str:
        """``95% CI -0.300 .. +1.000``, or why no interval is shown."""
        if self.has_interval:
            return f"{self.level:.0%} CI {self.low:+.3f} .. {self.high:+.3f}"
        if 0 < self.points < BOOTSTRAP_MIN_POINTS:
            return f"no {self.level:.0%} CI: too few points ({self.points}) for a bootstrap"
        if self.resamples > 0 and math.isfinite(self.value):
            return (f"no {self.level:.0%} CI: every bootstrap resample gives {self.value:+.3f}, "
                    "which says nothing about the uncertainty")
        return f"no {self.level:.0%} CI"

    def describe(self) -> str:
        """One line: value, p-value and interval (never a collapsed ``+1.000 .. +1.000``)."""
        if not math.isfinite(self.value):
            return f"{self.name} undefined (all short or all long scores are equal)"
        if not math.isfinite(self.p_value) and self.points == 0:  # a result written before p-values
            legacy = self.describe_interval() if self.has_interval else f"no {self.level:.0%} CI"
            return f"{self.name} {self.value:+.3f} ({legacy})"
        return f"{self.name} {self.value:+.3f} ({self.describe_p()}; {self.describe_interval()})"


def bootstrap_ci(x: np.ndarray, y: np.ndarray, statistic: Statistic, *, resamples: int = 2000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float, int]:
    """Percentile interval of ``statistic(x[idx], y[idx])`` over paired resamples of the indices.

    Resamples where the statistic is undefined (a side became constant) are dropped; returns
    (low, high, kept); (nan, nan, 0) when none is defined, and (nan, nan, kept) when the interval
    is degenerate (every kept resample gave the same value, e.g. points in perfect order).
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
    if not high - low > _TOLERANCE:
        return float("nan"), float("nan"), len(stats)
    return float(low), float(high), len(stats)


def rank_agreement(x: np.ndarray, y: np.ndarray, *, resamples: int = 2000, level: float = 0.95,
                   seed: int = 0, permutations: int = PERMUTATIONS) -> list[Correlation]:
    """Spearman and Kendall between ``x: [N]`` and ``y: [N]``: permutation p-values (exact up to
    ``EXACT_MAX_POINTS`` points) and, from ``BOOTSTRAP_MIN_POINTS`` points, bootstrap CIs (same
    seed for both)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} vs {len(y)})")
    if len(x) < 3:
        raise ValueError(f"a rank correlation needs at least 3 pairs, got {len(x)}")
    out = []
    for name, function in (("Spearman", spearman), ("Kendall", kendall)):
        if len(x) >= BOOTSTRAP_MIN_POINTS:
            low, high, kept = bootstrap_ci(x, y, function, resamples=resamples, level=level, seed=seed)
        else:
            low, high, kept = float("nan"), float("nan"), 0
        test = permutation_pvalue(x, y, function, permutations=permutations, seed=seed)
        out.append(Correlation(name, float(function(x, y)), low, high, level, kept, test.p_value,
                               test.orderings, test.exact, len(x)))
    return out
