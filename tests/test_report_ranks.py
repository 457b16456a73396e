"""Rank correlations, permutation p-values, bootstrap intervals, the proxy verdict, Pareto masks
and axis grouping against references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from miras_search.report import ranks as ranks_module
from miras_search.report.confirm import MIN_VERDICT_POINTS, _verdict
from miras_search.report.importance import axis_of, group_by_axis
from miras_search.report.leaderboard import pareto_mask
from miras_search.report.ranks import (
    BOOTSTRAP_MIN_POINTS,
    Correlation,
    average_ranks,
    bootstrap_ci,
    kendall,
    permutation_pvalue,
    rank_agreement,
    spearman,
)


def _pairs(n: int, seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = 0.6 * x + rng.normal(size=n)
    if ties:  # coarse rounding creates many tied values on both sides
        x, y = np.round(x, 0), np.round(y * 2, 0) / 2
    return x, y


def _rho_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's definition: Pearson correlation of the average ranks (ties by hand)."""
    def ranks(v):
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(1, len(v) + 1)
        for value in np.unique(v):  # tied values share the mean of their ranks
            r[v == value] = r[v == value].mean()
        return r - r.mean()
    rx, ry = ranks(np.asarray(x, float)), ranks(np.asarray(y, float))
    denominator = math.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / denominator) if denominator > 0 else float("nan")


def _tau_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b by counting pairs: (C - D) / sqrt((pairs - ties_x) (pairs - ties_y))."""
    concordance, untied_x, untied_y = 0, 0, 0
    for i, j in itertools.combinations(range(len(x)), 2):
        sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        concordance += int(sx * sy)
        untied_x += int(sx != 0)
        untied_y += int(sy != 0)
    return concordance / math.sqrt(untied_x * untied_y) if untied_x * untied_y else float("nan")


_REFERENCE = {spearman: _rho_reference, kendall: _tau_reference}


@pytest.mark.parametrize("n", [3, 7, 63, 100])
@pytest.mark.parametrize("ties", [False, True])
def test_correlations_match_their_definitions(n, ties):
    x, y = _pairs(n, seed=n, ties=ties)
    np.testing.assert_allclose(average_ranks(x), stats.rankdata(x), rtol=0, atol=1e-12)
    ref_rho, ref_tau = _rho_reference(x, y), _tau_reference(x, y)
    if np.isnan(ref_rho):
        assert np.isnan(spearman(x, y)) and np.isnan(kendall(x, y))
        return
    assert abs(spearman(x, y) - ref_rho) <= 1e-12 * max(1.0, abs(ref_rho))
    assert abs(kendall(x, y) - ref_tau) <= 1e-12 * max(1.0, abs(ref_tau))


@pytest.mark.parametrize("n", [3, 7, 63, 100])
@pytest.mark.parametrize("ties", [False, True])
def test_vectorised_statistics_of_the_permutation_test_match_the_definitions(n, ties):
    """The rows permutation_test scores (y reordered against x) and the bootstrap's rows."""
    x, y = _pairs(n, seed=n + 1, ties=ties)
    rng = np.random.default_rng(n)
    moved = np.stack([y[rng.permutation(n)] for _ in range(5)] + [y])  # [6, N]
    for function in (spearman, kendall):
        against = ranks_module._AGAINST[function](x)(moved, axis=-1)
        reference = np.array([_REFERENCE[function](x, row) for row in moved])
        np.testing.assert_allclose(against, reference, rtol=1e-12, atol=1e-12)
    xs = np.stack([x[rng.permutation(n)] for _ in range(6)])  # [6, N]: both sides vary
    rows = ranks_module._spearman_rows(xs, moved, axis=-1)
    np.testing.assert_allclose(rows, [_rho_reference(a, b) for a, b in zip(xs, moved, strict=True)],
                               rtol=1e-12, atol=1e-12)


def test_known_small_cases():
    up = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    assert spearman(up, up**3) == pytest.approx(1.0, abs=1e-15)
    assert kendall(up, -up) == pytest.approx(-1.0, abs=1e-15)
    # one swapped neighbour pair among 7: tau = 1 - 2 * 1 / 21, rho = 1 - 6 * 2 / (7 * 48)
    swapped = np.array([1.0, 2.0, 4.0, 3.0, 5.0, 6.0, 7.0])
    assert kendall(up, swapped) == pytest.approx(1 - 2 / 21, abs=1e-12)
    assert spearman(up, swapped) == pytest.approx(1 - 12 / 336, abs=1e-12)
    assert np.isnan(spearman(up, np.ones(7))) and np.isnan(kendall(up, np.ones(7)))


def test_bootstrap_interval_is_seeded_and_agrees_with_scipy():
    x, y = _pairs(63, seed=5, ties=False)
    first = rank_agreement(x, y, resamples=1500, seed=3)
    again = rank_agreement(x, y, resamples=1500, seed=3)
    other = rank_agreement(x, y, resamples=1500, seed=4)
    assert first == again
    assert first[0].low != other[0].low
    for corr, function in zip(first, (spearman, kendall), strict=True):
        assert corr.low <= corr.value <= corr.high
        ref_low, ref_high, _ = _bootstrap_reference(x, y, _REFERENCE[function], 1500, 0.95, seed=11)
        # two independent Monte Carlo estimates of the same quantiles (sd ~0.01 each at n=63)
        assert abs(corr.low - ref_low) < 0.06 and abs(corr.high - ref_high) < 0.06


def _bootstrap_reference(x, y, function, resamples, level, seed, index=None):
    """Paired percentile bootstrap by hand: resample pair indices, drop undefined values, take
    the (linearly interpolated) percentiles."""
    if index is None:
        index = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    values = np.array([function(x[i], y[i]) for i in index])
    values = values[np.isfinite(values)]
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high), len(values)


@pytest.mark.parametrize("function", [spearman, kendall])
def test_bootstrap_drops_undefined_resamples_like_the_hand_computation(function):
    """Many ties: some resamples have a constant side (no correlation); the interval is the
    percentiles of the defined ones. scipy draws a paired resample as ``rng.integers(0, n,
    (resamples, n))``; the hand computation uses the same draw."""
    x = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 2.0])
    y = np.array([1.0, 2.0, 3.0, 4.0, 4.0, 6.0])
    index = np.random.default_rng(9).integers(0, len(x), size=(800, len(x)))
    ref_low, ref_high, ref_kept = _bootstrap_reference(x, y, _REFERENCE[function], 800, 0.9, 9, index)
    low, high, kept = bootstrap_ci(x, y, function, resamples=800, level=0.9, seed=9)
    assert 0 < kept == ref_kept < 800
    assert low == pytest.approx(ref_low, abs=1e-12) and high == pytest.approx(ref_high, abs=1e-12)


def test_bootstrap_edge_cases():
    up = np.arange(7.0)
    # every resample of points in perfect order is in perfect order: the interval collapses to
    # [1, 1], which says nothing, so no interval is given (kept still counts the defined resamples)
    low, high, kept = bootstrap_ci(up, 2 * up + 1, spearman, resamples=300, seed=0)
    assert np.isnan(low) and np.isnan(high) and 0 < kept <= 300
    low, high, kept = bootstrap_ci(up, np.zeros(7), spearman, resamples=50, seed=0)
    assert np.isnan(low) and np.isnan(high) and kept == 0
    with pytest.raises(ValueError, match="at least 3"):
        rank_agreement(np.arange(2.0), np.arange(2.0))


def _brute_pvalue(x: np.ndarray, y: np.ndarray, function) -> float:
    """Share of all orderings of y whose statistic reaches the observed one (the definition)."""
    function = _REFERENCE.get(function, function)
    observed = function(x, y)
    hits = [function(x, y[list(order)]) >= observed - 1e-9 for order in itertools.permutations(range(len(x)))]
    return sum(hits) / len(hits)


def test_exact_permutation_pvalues_of_perfect_and_near_perfect_orders():
    for n in range(3, 9):  # a perfect order is the best of n! orderings: p = 1 / n!
        up = np.arange(float(n))
        for function in (spearman, kendall):
            test = permutation_pvalue(up, up**2 + 1, function)
            assert test.exact and test.orderings == math.factorial(n)
            assert test.p_value == 1 / math.factorial(n)
    # 5 points with one swapped neighbour pair: the identity and the 4 single swaps reach it
    swapped = np.array([0.0, 1.0, 3.0, 2.0, 4.0])
    assert permutation_pvalue(np.arange(5.0), swapped, spearman).p_value == 5 / 120
    assert permutation_pvalue(np.arange(5.0), swapped, kendall).p_value == 5 / 120
    # reversed order: every ordering is at least as large
    assert permutation_pvalue(np.arange(4.0), -np.arange(4.0)).p_value == 1.0
    assert math.isnan(permutation_pvalue(np.arange(4.0), np.ones(4)).p_value)


@pytest.mark.parametrize("n", [4, 5, 7, 8])
@pytest.mark.parametrize("ties", [False, True])
def test_exact_pvalues_match_brute_force_and_scipy(n, ties):
    x, y = _pairs(n, seed=100 + n, ties=ties)
    for function in (spearman, kendall) if n < 8 else (spearman,):  # 8! hand-made taus take a while
        if np.isnan(function(x, y)):
            continue
        test = permutation_pvalue(x, y, function)
        assert test.exact and test.p_value == pytest.approx(_brute_pvalue(x, y, function), abs=1e-15)
        if n <= 5:  # scipy reordering both samples: (n!)^2 calls, each pairing n! times; kept small
            ref = stats.permutation_test((x, y), function, permutation_type="pairings", vectorized=False,
                                         alternative="greater", n_resamples=np.inf).pvalue
            assert test.p_value == pytest.approx(ref, abs=1e-15)


def test_monte_carlo_pvalue_beyond_eight_points():
    x, y = _pairs(14, seed=3, ties=False)
    test = permutation_pvalue(x, y, kendall, permutations=20000, seed=1)
    assert not test.exact and test.orderings == 20000
    assert test == permutation_pvalue(x, y, kendall, permutations=20000, seed=1)  # seeded
    ref = stats.kendalltau(x, y, alternative="greater", method="exact").pvalue
    assert abs(test.p_value - ref) < 4 * math.sqrt(ref * (1 - ref) / 20000) + 1e-4
    up = np.arange(12.0)
    perfect = permutation_pvalue(up, up, spearman, permutations=999, seed=0)
    assert perfect.p_value == 1 / 1000  # (1 + hits) / (1 + permutations): never 0


def test_few_points_in_order_get_a_p_value_not_a_collapsed_interval():
    """F6: 3 points in the same order were "Spearman +1.000 (95% CI +1.000 .. +1.000)", "predicts"."""
    for correlation in rank_agreement(np.array([1.0, 2, 3]), np.array([1.0, 2, 3.5])):
        assert correlation.value == 1.0 and correlation.p_value == 1 / 6 and correlation.exact
        assert np.isnan(correlation.low) and np.isnan(correlation.high)
        text = correlation.describe()
        assert "+1.000 .. +1.000" not in text and "p = 0.167" in text and "too few points (3)" in text
    text, predicts = _verdict(rank_agreement(np.array([1.0, 2, 3]), np.array([1.0, 2, 3.5])), 3, 4.0)
    assert predicts is None and "Too few points (3)" in text and "1 time in 6" in text
    four = rank_agreement(np.arange(4.0), np.arange(4.0) ** 2)
    assert four[0].p_value == 1 / 24
    text, predicts = _verdict(four, 4, 4.0)
    assert predicts is None and "1 time in 24" in text
    # from BOOTSTRAP_MIN_POINTS points a CI is tried, but a collapsed one is still not printed
    perfect = rank_agreement(np.arange(10.0), np.arange(10.0) ** 3, resamples=300)
    assert BOOTSTRAP_MIN_POINTS <= 10 and not perfect[0].has_interval and perfect[0].resamples > 0
    assert "+1.000 .. +1.000" not in perfect[0].describe() and "every bootstrap resample" in perfect[0].describe()
    spread = rank_agreement(*_pairs(12, seed=7, ties=False), resamples=500)
    assert spread[0].has_interval and "95% CI" in spread[0].describe()


def test_verdict_rule_needs_five_points_and_a_small_p_value():
    assert MIN_VERDICT_POINTS == 5
    up5 = np.arange(5.0)
    text, predicts = _verdict(rank_agreement(up5, up5 + 1.0, resamples=200), 5, 4.0)
    assert predicts is True and "predicts" in text and "NOT" not in text  # p = 1/120
    swapped = np.array([0.0, 1.0, 3.0, 2.0, 4.0])  # rho = 0.9, but p = 5/120 > 0.025
    text, predicts = _verdict(rank_agreement(up5, swapped, resamples=200), 5, 4.0)
    assert predicts is False and "NOT shown to predict" in text and "0.042" in text
    text, predicts = _verdict(rank_agreement(up5, -up5, resamples=200), 5, 4.0)
    assert predicts is False and "does NOT predict" in text
    # the rule reads the p-value, not the interval: a tight positive CI with a large p is not enough
    odd = [Correlation("Spearman", 0.9, 0.4, 1.0, 0.95, 2000, 0.2, 720, True, 6)]
    assert _verdict(odd, 6, 4.0)[1] is False
    # a looser level loosens the threshold but never below MIN_VERDICT_POINTS points
    loose = [Correlation("Spearman", 1.0, float("nan"), float("nan"), 0.8, 0, 1 / 24, 24, True, 4)]
    assert _verdict(loose, 4, 4.0)[1] is None
    undefined = [Correlation("Spearman", float("nan"), float("nan"), float("nan"), 0.95, 0, float("nan"), 0, True, 6)]
    assert _verdict(undefined, 6, 4.0)[1] is None
    text, predicts = _verdict([], 2, 4.0)
    assert predicts is None and "Too few points" in text


def _dominated_brute(values: np.ndarray, minimize: list[bool]) -> np.ndarray:
    costs = values * np.where(minimize, 1, -1)
    out = np.zeros(len(values), dtype=bool)
    for j in range(len(values)):
        for i in range(len(values)):
            if np.all(costs[i] <= costs[j]) and np.any(costs[i] < costs[j]):
                out[j] = True
    return out


@pytest.mark.parametrize("n, m", [(1, 2), (7, 2), (63, 3)])
def test_pareto_mask_matches_brute_force(n, m):
    rng = np.random.default_rng(n)
    values = np.round(rng.normal(size=(n, m)), 1)  # rounding creates ties and duplicates
    minimize = [True, False, True][:m]
    np.testing.assert_array_equal(pareto_mask(values, minimize), ~_dominated_brute(values, minimize))
    with pytest.raises(ValueError, match="must be"):
        pareto_mask(values, [True] * (m + 1))


def test_axis_of_parameter_names():
    assert axis_of("memory.kind") == "memory"
    assert axis_of("bias.kind=lp/bias.p") == "bias"
    assert axis_of("memory.kind=mlp/memory.expansion") == "memory"
    assert axis_of("one_of=deep/memory.depth") == "memory"
    assert axis_of("block.d_model") == "block"
    assert axis_of("one_of") == "other"
    grouped = group_by_axis({"train.lr": 0.1, "bias.kind": 0.3, "bias.kind=lp/bias.p": 0.2, "memory.kind": 0.4})
    assert list(grouped) == ["memory", "bias", "train"]
    assert grouped["bias"] == pytest.approx(0.5, rel=1e-12)


def test_leaderboard_prints_names_with_brackets_as_written():
    """Objective, metric and model names go into Rich tables as text, not as markup ([/b] crashed)."""
    from rich.console import Console

    from miras_search.report.leaderboard import leaderboard_table
    from miras_search.report.study_data import ObjectiveInfo, TrialRow

    axes = {"memory": "mlp", "bias": "l2", "retention": "l2", "algorithm": "gd"}
    row = TrialRow(number=0, state="COMPLETE", values=(1.0,), axes=axes, anchor="my[/b]model", point=None)
    console = Console(record=True, width=250)
    console.print(leaderboard_table([row], [ObjectiveInfo("loss[/b]", "minimize")]))
    text = console.export_text()
    assert "loss[/b]" in text and "my[/b]model" in text


def test_a_broken_limit_shows_its_value_unless_the_metric_has_a_column():
    from rich.console import Console

    from miras_search.report.leaderboard import leaderboard_table
    from miras_search.report.study_data import BrokenLimit, ObjectiveInfo, TrialRow

    axes = {"memory": "mlp", "bias": "l2", "retention": "l2", "algorithm": "gd"}
    broken = (BrokenLimit("val_bpb", "val_bpb <= 5", "val_bpb = 5.2 breaks val_bpb <= 5"),
              BrokenLimit("peak_mem_mb", "peak_mem_mb <= 500", "peak_mem_mb = 812 breaks peak_mem_mb <= 500"))
    row = TrialRow(number=3, state="COMPLETE", values=(5.2,), axes=axes, anchor=None, point=None,
                   feasible=False, broken=broken)
    console = Console(record=True, width=250)
    console.print(leaderboard_table([row], [ObjectiveInfo("val_bpb", "minimize")]))
    text = console.export_text()
    assert "val_bpb <= 5 " in text and "val_bpb = 5.2 breaks" not in text  # its value has a column
    assert "peak_mem_mb = 812 breaks peak_mem_mb <= 500" in text


def test_the_kernel_share_column_shows_only_where_a_trial_ran_a_kernel():
    """On a GPU the leaderboard says which trials' tokens/s came from a kernel; on a CPU, where
    every trial reports 0, the column would be noise and is left out."""
    from rich.console import Console

    from miras_search.report.leaderboard import leaderboard_table, shown_metrics
    from miras_search.report.study_data import ObjectiveInfo, TrialRow

    axes = {"memory": "mlp", "bias": "l2", "retention": "l2", "algorithm": "gd"}

    def row(number: int, share: float) -> TrialRow:
        return TrialRow(number=number, state="COMPLETE", values=(4.0 + number,), axes=axes, anchor=None,
                        point=None, rank=number + 1, metrics={"tokens_per_s": 1000.0, "kernel_share": share})

    objectives = [ObjectiveInfo("val_bpb", "minimize")]
    assert "kernel_share" not in shown_metrics([row(0, 0.0), row(1, 0.0)], objectives)
    rows = [row(0, 1.0), row(1, 0.0), row(2, 0.5)]
    assert shown_metrics(rows, objectives) == ["tokens_per_s", "kernel_share"]
    console = Console(record=True, width=250)
    console.print(leaderboard_table(rows, objectives))
    lines = [line for line in console.export_text().splitlines() if "#" in line]
    assert [line.split("│")[-2].strip() for line in lines] == ["100%", "0%", "50%"]
