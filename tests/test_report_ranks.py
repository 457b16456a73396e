"""Rank correlations, bootstrap intervals, Pareto masks and axis grouping against references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from miras_search.report.confirm import _verdict
from miras_search.report.importance import axis_of, group_by_axis
from miras_search.report.leaderboard import pareto_mask
from miras_search.report.ranks import (
    Correlation,
    average_ranks,
    bootstrap_ci,
    kendall,
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


@pytest.mark.parametrize("n", [3, 7, 63, 100])
@pytest.mark.parametrize("ties", [False, True])
def test_correlations_match_scipy(n, ties):
    x, y = _pairs(n, seed=n, ties=ties)
    np.testing.assert_allclose(average_ranks(x), stats.rankdata(x), rtol=0, atol=1e-12)
    rho, tau = spearman(x, y), kendall(x, y)
    ref_rho = stats.spearmanr(x, y).statistic
    ref_tau = stats.kendalltau(x, y, variant="b").statistic
    if np.isnan(ref_rho):
        assert np.isnan(rho) and np.isnan(tau)
        return
    assert abs(rho - ref_rho) <= 1e-12 * max(1.0, abs(ref_rho))
    assert abs(tau - ref_tau) <= 1e-12 * max(1.0, abs(ref_tau))


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
        ref = stats.bootstrap((x, y), function, paired=True, vectorized=False,
                              n_resamples=1500, method="percentile", confidence_level=0.95,
                              rng=np.random.default_rng(11)).confidence_interval
        # two independent Monte Carlo estimates of the same quantiles (sd ~0.01 each at n=63)
        assert abs(corr.low - ref.low) < 0.06 and abs(corr.high - ref.high) < 0.06


def test_bootstrap_edge_cases():
    up = np.arange(7.0)
    low, high, kept = bootstrap_ci(up, 2 * up + 1, spearman, resamples=300, seed=0)
    assert (low, high) == (1.0, 1.0) and 0 < kept <= 300  # resamples of one repeated point drop out
    low, high, kept = bootstrap_ci(up, np.zeros(7), spearman, resamples=50, seed=0)
    assert np.isnan(low) and np.isnan(high) and kept == 0
    with pytest.raises(ValueError, match="at least 3"):
        rank_agreement(np.arange(2.0), np.arange(2.0))


def test_verdict_says_plainly_when_the_proxy_fails():
    good = [Correlation("Spearman", 0.9, 0.4, 1.0, 0.95, 2000)]
    unsure = [Correlation("Spearman", 0.3, -0.5, 0.9, 0.95, 2000)]
    bad = [Correlation("Spearman", -0.2, -0.8, 0.5, 0.95, 2000)]
    text, predicts = _verdict(good, 6, 4.0)
    assert predicts is True and "predicts" in text and "NOT" not in text
    text, predicts = _verdict(unsure, 6, 4.0)
    assert predicts is False and "NOT shown to predict" in text and "includes zero" in text
    text, predicts = _verdict(bad, 6, 4.0)
    assert predicts is False and "does NOT predict" in text
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
