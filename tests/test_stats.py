"""Tests for harness.stats: checked against scipy and hand-computed or published values."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from harness.report import stats

# Two fixed samples with ties on both sides (exercises tau-b and average ranks).
X = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0, 8.0])
Y = np.array([2.0, 1.0, 3.0, 2.0, 4.0, 5.0, 1.0, 3.0, 5.0, 2.0, 4.0, 5.0])


def _bleu_like(rows: np.ndarray) -> float:
    """A corpus statistic from per-example sufficient statistics: sum(matches) / sum(totals)."""
    totals = rows.sum(axis=0)
    return float(totals[0] / totals[1]) if totals[1] else math.nan


# --------------------------------------------------------------------------- correlations


def test_correlations_match_scipy():
    got = stats.correlations(X, Y)
    assert got["pearson"] == pytest.approx(sps.pearsonr(X, Y)[0], abs=1e-12)
    assert got["spearman"] == pytest.approx(sps.spearmanr(X, Y)[0], abs=1e-12)
    assert got["kendall"] == pytest.approx(sps.kendalltau(X, Y)[0], abs=1e-12)  # tau-b is scipy's default


def test_correlations_drop_incomplete_pairs():
    x = np.r_[X, np.nan, 7.0]
    y = np.r_[Y, 3.0, np.nan]
    assert stats.correlations(x, y) == pytest.approx(stats.correlations(X, Y))


def test_correlations_constant_input_is_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = stats.correlations([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0])
        assert all(math.isnan(v) for v in got.values())
        assert all(math.isnan(v) for v in stats.correlations([1.0], [2.0]).values())


def test_bootstrap_correlation_kernels_match_scipy_on_each_resample():
    """The vectorised bootstrap (resamples as counts) equals scipy on materialised resamples."""
    rng = np.random.default_rng(3)
    idx = rng.integers(0, X.size, size=(25, X.size))
    weights = stats._resample_counts(idx, X.size)
    got = stats._batch_correlations(X, Y, weights)
    for r, rows in enumerate(idx):
        expected = stats.correlations(X[rows], Y[rows])
        for name in stats.CORRELATIONS:
            assert got[name][r] == pytest.approx(expected[name], abs=1e-9, nan_ok=True)


def test_large_n_kendall_path_matches_matrix_path(monkeypatch):
    rng = np.random.default_rng(4)
    weights = stats._resample_weights(X.size, rng, 20, np.arange(X.size) // 3)
    matrix = stats._weighted_kendall(X, Y, weights)
    monkeypatch.setattr(stats, "_MATRIX_KENDALL_MAX_N", 0)
    assert np.allclose(stats._weighted_kendall(X, Y, weights), matrix, equal_nan=True)


def test_correlation_cis_repeatable_and_cover_estimate():
    first = stats.correlation_cis(X, Y, seed=7)
    assert first == stats.correlation_cis(X, Y, seed=7)
    assert first != stats.correlation_cis(X, Y, seed=8)
    assert first["n"] == X.size
    for name in stats.CORRELATIONS:
        assert first[name] == pytest.approx(stats.correlations(X, Y)[name])
        assert first[f"{name}_ci_low"] <= first[name] <= first[f"{name}_ci_high"]


def test_correlation_cis_group_bootstrap():
    groups = np.repeat(np.arange(4), 3)
    got = stats.correlation_cis(X, Y, groups=groups, seed=1)
    assert got["n_groups"] == 4 and got["n"] == 12
    assert got == stats.correlation_cis(X, Y, groups=groups, seed=1)
    for name in stats.CORRELATIONS:
        assert got[f"{name}_ci_low"] <= got[name] <= got[f"{name}_ci_high"]
    # unequal groups go through the same path
    uneven = stats.correlation_cis(X, Y, groups=[0, 0, 0, 0, 0, 1, 2, 2, 3, 3, 3, 4], seed=1)
    assert uneven["n_groups"] == 5 and not math.isnan(uneven["spearman_ci_low"])


def test_correlation_cis_drop_undefined_resamples_quietly():
    # with 3 pairs many resamples are constant; they are dropped, not warned about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = stats.correlation_cis([1.0, 2.0, 3.0], [1.0, 3.0, 2.0], seed=0)
    assert got["n"] == 3
    assert -1.0 <= got["pearson_ci_low"] <= got["pearson_ci_high"] <= 1.0


# --------------------------------------------------------------------------- bootstrap intervals


def test_bootstrap_ci_repeatable_and_covers_mean():
    values = np.random.default_rng(0).normal(0.5, 0.2, size=200)
    low, high = stats.bootstrap_ci(values, seed=3)
    assert (low, high) == stats.bootstrap_ci(values, seed=3)
    assert (low, high) != stats.bootstrap_ci(values, seed=4)
    assert low < values.mean() < high
    # roughly mean +- 1.96 standard errors
    se = values.std(ddof=1) / math.sqrt(values.size)
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_bootstrap_ci_same_result_with_and_without_axis_support():
    values = np.arange(30, dtype=float) ** 1.5
    assert stats.bootstrap_ci(values, np.median, seed=2) == stats.bootstrap_ci(
        values, lambda v: float(np.median(v)), seed=2
    )


def test_bootstrap_ci_ignores_nan_and_handles_empty():
    assert stats.bootstrap_ci([1.0, 2.0, np.nan, 3.0], seed=0) == stats.bootstrap_ci([1.0, 2.0, 3.0], seed=0)
    assert all(math.isnan(v) for v in stats.bootstrap_ci([]))
    with pytest.raises(ValueError):
        stats.bootstrap_ci([1.0, 2.0], confidence=1.5)


def test_bootstrap_ci_rows_for_a_corpus_statistic():
    rng = np.random.default_rng(1)
    totals = rng.integers(5, 30, size=300).astype(float)
    rows = np.column_stack([rng.binomial(totals.astype(int), 0.4), totals])
    low, high = stats.bootstrap_ci_rows(rows, _bleu_like, seed=5)
    assert (low, high) == stats.bootstrap_ci_rows(rows, _bleu_like, seed=5)
    assert low < _bleu_like(rows) < high


def test_bootstraps_are_fast():
    rng = np.random.default_rng(2)
    values = rng.normal(size=500)
    rows = np.column_stack([rng.integers(0, 10, 500), rng.integers(10, 20, 500)]).astype(float)
    start = time.perf_counter()
    stats.bootstrap_ci(values, n_resamples=1000)
    stats.bootstrap_ci_rows(rows, _bleu_like, n_resamples=1000)
    stats.correlation_cis(values, values + rng.normal(size=500), n_resamples=1000)
    assert time.perf_counter() - start < 1.0


def test_wilson_interval_hand_computed():
    """8 of 10, 95%: z = 1.959964, p = 0.8.

    centre = (p + z^2/2n) / (1 + z^2/n) = 0.992073 / 1.384146 = 0.716737
    half   = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2) = 1.416009 * 0.160011 = 0.226578
    -> (0.490159, 0.943315)
    """
    low, high = stats.wilson_interval(8, 10)
    assert low == pytest.approx(0.490159, abs=1e-5)
    assert high == pytest.approx(0.943315, abs=1e-5)
    assert stats.wilson_interval(0, 20)[0] == 0.0
    assert stats.wilson_interval(20, 20)[1] == 1.0
    assert all(math.isnan(v) for v in stats.wilson_interval(0, 0))
    with pytest.raises(ValueError):
        stats.wilson_interval(5, 3)


# --------------------------------------------------------------------------- paired tests


def test_paired_bootstrap_identical_inputs():
    a = np.random.default_rng(0).random(50)
    got = stats.paired_bootstrap_test(a, a.copy())
    assert got["diff"] == 0.0 and got["p_value"] == pytest.approx(1.0)
    assert got["ci_low"] == got["ci_high"] == 0.0


def test_paired_bootstrap_clear_shift():
    rng = np.random.default_rng(1)
    b = rng.random(100)
    a = b + 0.1 + rng.normal(0, 0.02, size=100)
    got = stats.paired_bootstrap_test(a, b, seed=3)
    assert got["diff"] == pytest.approx(np.mean(a - b))
    assert got["p_value"] < 0.01
    assert 0 < got["ci_low"] < got["diff"] < got["ci_high"]
    assert got == stats.paired_bootstrap_test(a, b, seed=3)
    # noise alone is not called a difference
    noise = stats.paired_bootstrap_test(b + rng.normal(0, 0.05, size=100), b, seed=3)
    assert noise["p_value"] > 0.05 or noise["ci_low"] <= 0 <= noise["ci_high"]


def test_paired_bootstrap_rows_corpus_statistic():
    rng = np.random.default_rng(2)
    totals = rng.integers(5, 30, size=80).astype(float)
    rows_b = np.column_stack([rng.binomial(totals.astype(int), 0.3), totals])
    rows_a = np.column_stack([np.minimum(totals, rows_b[:, 0] + 3), totals])
    same = stats.paired_bootstrap_test_rows(rows_b, rows_b.copy(), _bleu_like)
    assert same["diff"] == 0.0 and same["p_value"] == pytest.approx(1.0)
    better = stats.paired_bootstrap_test_rows(rows_a, rows_b, _bleu_like, seed=1)
    assert better["diff"] == pytest.approx(_bleu_like(rows_a) - _bleu_like(rows_b))
    assert better["p_value"] < 0.01 and better["ci_low"] > 0
    with pytest.raises(ValueError):
        stats.paired_bootstrap_test_rows(rows_a, rows_b[:-1], _bleu_like)


def test_paired_permutation_test():
    a = np.random.default_rng(0).random(40)
    assert stats.paired_permutation_test(a, a.copy())["p_value"] == pytest.approx(1.0)
    shifted = stats.paired_permutation_test(a + 0.2, a, seed=1)
    assert shifted["p_value"] < 0.001 and shifted["diff"] == pytest.approx(0.2)
    assert shifted == stats.paired_permutation_test(a + 0.2, a, seed=1)


def test_paired_permutation_exact_hand_computed():
    """d = (1, 2, 3): of the 8 sign patterns only +-(1+2+3) reach |sum| >= 6, so p = 2/8."""
    got = stats.paired_permutation_test([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert got["exact"] is True
    assert got["p_value"] == pytest.approx(0.25)
    assert got["diff"] == pytest.approx(2.0)


# --------------------------------------------------------------------------- holm


def test_holm_matches_statsmodels_values():
    """statsmodels.stats.multitest.multipletests(p, method="holm")[1], by hand.

    p = (0.01, 0.04, 0.03, 0.005), m = 4. Sorted: 0.005, 0.01, 0.03, 0.04.
    Scaled by m - i + 1: 0.02, 0.03, 0.06, 0.04; running max: 0.02, 0.03, 0.06, 0.06.
    Back in input order: (0.03, 0.06, 0.06, 0.02).
    """
    got = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert got == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_keeps_nan():
    """(0.6, 0.7): 2 * 0.6 = 1.2 -> 1; max(1, 0.7) = 1."""
    assert stats.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    got = stats.holm([0.02, np.nan, 0.01])
    assert math.isnan(got[1])
    assert got[[0, 2]] == pytest.approx([0.02, 0.02])  # m = 2: 2 * 0.01, max(0.02, 1 * 0.02)
    assert stats.holm([]).size == 0


# --------------------------------------------------------------------------- krippendorff

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C:
# 4 observers x 12 units, nominal data with missing values (rows = units).
_NAN = np.nan
KRIPPENDORFF_2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, _NAN, _NAN, _NAN],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, _NAN, 3],
        [_NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, _NAN],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, _NAN],
    ]
).T


@pytest.mark.parametrize(
    "level, published",
    [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)],
)
def test_krippendorff_published_values(level, published):
    assert stats.krippendorff_alpha(KRIPPENDORFF_2011, level) == pytest.approx(published, abs=5e-4)


def test_krippendorff_hand_computed_small_case():
    """Two coders, units (1,1), (2,3), (3,3).

    Coincidences: o11 = 2, o23 = o32 = 1, o33 = 2; n1 = 2, n2 = 1, n3 = 3, n = 6.
    alpha = 1 - (n - 1) * sum(o * d2) / sum(n_c * n_k * d2).
    nominal: 1 - 5 * 2 / (36 - 14) = 6/11.
    ordinal: mid-cumulative frequencies 1, 2.5, 4.5 -> d2_12 = 2.25, d2_13 = 12.25, d2_23 = 4;
             1 - 5 * 8 / (2 * (2 * 2.25 + 6 * 12.25 + 3 * 4)) = 1 - 40/180 = 7/9.
    interval: d2 = 1, 4, 1 -> 1 - 5 * 2 / (2 * (2 + 24 + 3)) = 24/29.
    """
    data = np.array([[1, 1], [2, 3], [3, 3]], dtype=float)
    assert stats.krippendorff_alpha(data, "nominal") == pytest.approx(6 / 11)
    assert stats.krippendorff_alpha(data, "ordinal") == pytest.approx(7 / 9)
    assert stats.krippendorff_alpha(data, "interval") == pytest.approx(24 / 29)


def test_krippendorff_dict_input_and_edge_cases():
    as_dicts = [
        {coder: value for coder, value in zip("ABCD", unit) if not math.isnan(value)} for unit in KRIPPENDORFF_2011
    ]
    assert stats.krippendorff_alpha(as_dicts, "interval") == pytest.approx(
        stats.krippendorff_alpha(KRIPPENDORFF_2011, "interval")
    )
    perfect = np.array([[1, 1, 1], [2, 2, _NAN], [5, 5, 5], [3, _NAN, 3]], dtype=float)
    for level in ("nominal", "ordinal", "interval"):
        assert stats.krippendorff_alpha(perfect, level) == pytest.approx(1.0)
    assert math.isnan(stats.krippendorff_alpha([[1, 1], [1, 1]]))  # no variation: undefined
    assert math.isnan(stats.krippendorff_alpha([[1, _NAN], [_NAN, 2]]))  # nothing pairable
    with pytest.raises(ValueError):
        stats.krippendorff_alpha(perfect, "cardinal")
