"""Rank correlation (Spearman, Kendall tau-b) with permutation p-values and bootstrap intervals.

Everything statistical is ``scipy.stats``: ``spearmanr`` and ``kendalltau`` (tau-b) give the
correlations, ``permutation_test`` the p-value and ``bootstrap`` the interval. What is written
here is only the vectorised form of the two statistics that ``permutation_test`` scores its
orderings with (40,320 at 8 points in one call; ``spearmanr`` once per ordering would be about
100x slower), in integer arithmetic so that orderings with the same statistic compare equal; the
tests check it against ``spearmanr`` / ``kendalltau``. Only ``y`` is reordered (one sample given
to ``permutation_type="pairings"``): reordering both sides would count each pairing ``n!`` times.

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

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

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
_TOLERANCE = 1e-9  # a bootstrap interval narrower than this is degenerate
_BATCH_ELEMENTS = 2**22  # orderings x pairs scored at once (bounds memory for large n)

Statistic = Callable[[np.ndarray, np.ndarray], float]


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x: [N]``; tied values share the mean of their ranks (scipy's rankdata)."""
    return stats.rankdata(np.asarray(x, dtype=float), method="average")


def _quiet(function: Callable[[], float]) -> float:
    """``function()`` without scipy's warning for a constant side (the result is nan then)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(function())


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (``scipy.stats.spearmanr``); nan when a side is constant."""
    return _quiet(lambda: stats.spearmanr(np.asarray(x, dtype=float), np.asarray(y, dtype=float)).statistic)


def kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b (``scipy.stats.kendalltau``, ties handled); nan when a side is constant."""
    return _quiet(lambda: stats.kendalltau(np.asarray(x, dtype=float), np.asarray(y, dtype=float),
                                           variant="b").statistic)


def _spearman_against(x: np.ndarray) -> Callable[..., np.ndarray]:
    """Spearman's rho of ``x: [N]`` against each row of ``y: [..., N]``, vectorised.

    Twice a centred average rank is an integer, so the cross term is exact in float64 and equal
    pairings give bitwise-equal values (the p-value counts ties with the observed value).
    """
    rx = 2.0 * average_ranks(x) - (len(x) + 1)  # [N] integers

    def statistic(y: np.ndarray, axis: int = -1) -> np.ndarray:
        ry = 2.0 * stats.rankdata(np.moveaxis(y, axis, -1), axis=-1) - (len(x) + 1)  # [..., N]
        return (ry @ rx) / np.sqrt((rx**2).sum() * (ry**2).sum(axis=-1))  # [...]

    return statistic


def _kendall_against(x: np.ndarray) -> Callable[..., np.ndarray]:
    """Kendall's tau-b of ``x: [N]`` against each row of ``y: [..., N]``, vectorised (exact
    integer concordance counts over the ``P = N (N - 1) / 2`` pairs)."""
    first, second = np.triu_indices(len(x), k=1)  # [P] each pair once
    sx = np.sign(x[first] - x[second])  # [P]

    def statistic(y: np.ndarray, axis: int = -1) -> np.ndarray:
        y = np.moveaxis(y, axis, -1)
        sy = np.sign(y[..., first] - y[..., second])  # [..., P]
        return (sy @ sx) / np.sqrt(np.count_nonzero(sx) * np.count_nonzero(sy, axis=-1))  # [...]

    return statistic


_AGAINST = {spearman: _spearman_against, kendall: _kendall_against}


def _spearman_rows(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho of each row pair of ``x, y: [..., N]``: ``scipy.stats.pearsonr`` of the
    average ranks, which is how ``spearmanr`` defines it (nan for a constant row)."""
    return stats.pearsonr(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis=axis).statistic


_ROWS = {spearman: _spearman_rows}  # statistics scipy computes for many resamples in one call


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

    ``statistic`` is ``spearman`` or ``kendall``; ``scipy.stats.permutation_test`` reorders ``y``
    against ``x``. With ``n <= exact_max`` points it is exact: the share of all ``n!`` orderings
    whose statistic is at least the observed one (ties in the data are kept, so it is the exact
    conditional distribution). Beyond, ``permutations`` seeded random orderings give
    ``(1 + hits) / (1 + permutations)``, which never reaches 0.
    """
    if statistic not in _AGAINST:
        raise ValueError("permutation_pvalue supports the spearman and kendall statistics")
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} vs {len(y)})")
    n = len(x)
    if n < 2 or not math.isfinite(statistic(x, y)):
        return PermutationTest(float("nan"), 0, n <= exact_max)
    exact = n <= exact_max
    pairs = max(n * (n - 1) // 2, n)
    result = stats.permutation_test(
        (y,), _AGAINST[statistic](x), permutation_type="pairings", vectorized=True,
        n_resamples=np.inf if exact else permutations, alternative="greater",
        batch=max(1, _BATCH_ELEMENTS // pairs), rng=np.random.default_rng(seed),
    )
    orderings = math.factorial(n) if exact else permutations
    return PermutationTest(float(result.pvalue), orderings, exact)


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
    """Percentile interval of ``statistic(x[idx], y[idx])`` over paired resamples of the indices
    (``scipy.stats.bootstrap``, ``paired=True``, ``method="percentile"``).

    A resample where the statistic is undefined (a side became constant) does not count: the
    interval is then the same percentiles of the defined ones. Returns (low, high, kept); (nan,
    nan, 0) when none is defined, and (nan, nan, kept) when the interval is degenerate (every kept
    resample gave the same value, e.g. points in perfect order).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    with warnings.catch_warnings():
        for quiet in (stats.DegenerateDataWarning, stats.ConstantInputWarning, RuntimeWarning):
            warnings.simplefilter("ignore", quiet)  # undefined resamples: handled below
        result = stats.bootstrap((x, y), _ROWS.get(statistic, statistic), paired=True,
                                 vectorized=statistic in _ROWS, n_resamples=resamples, confidence_level=level,
                                 method="percentile", rng=np.random.default_rng(seed))
    values = np.asarray(result.bootstrap_distribution)  # [R]
    defined = values[np.isfinite(values)]
    if len(defined) == 0:
        return float("nan"), float("nan"), 0
    if len(defined) == len(values):
        low, high = result.confidence_interval
    else:  # scipy's percentiles (linear interpolation) over the defined resamples only
        tail = (1.0 - level) / 2.0
        low, high = stats.quantile(defined, [tail, 1.0 - tail])
    if not high - low > _TOLERANCE:
        return float("nan"), float("nan"), len(defined)
    return float(low), float(high), len(defined)


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
        out.append(Correlation(name, function(x, y), low, high, level, kept, test.p_value,
                               test.orderings, test.exact, len(x)))
    return out
