"""Tests for harness.stats: checked against the libraries' own answers (scipy, statsmodels) on the same
resamples, and against hand-computed or published values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from harness.report import stats

# Two fixed samples with ties on both sides (exercises tau-b and average ranks).
X = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0, 8.0])
Y = np.array([2.0, 1.0, 3.0, 2.0, 4.0, 5.0, 1.0, 3.0, 5.0, 2.0, 4.0, 5.0])


def _ratio_of_sums(sums: np.ndarray) -> np.ndarray:
    """A corpus statistic from summed sufficient statistics, one value per row: sum(matches) / sum(totals)."""
    sums = np.atleast_2d(sums)
    with np.errstate(all="ignore"):
        return np.where(sums[:, 1] > 0, sums[:, 0] / sums[:, 1], math.nan)


def _scipy_percentile(data, statistic, *, seed, n_resamples=1000, paired=False, vectorized=False):
    """scipy.stats.bootstrap's own percentile interval and distribution, drawn from default_rng(seed) as harness.stats does."""
    res = sps.bootstrap(
        data, statistic, n_resamples=n_resamples, paired=paired, vectorized=vectorized, method="percentile", rng=np.random.default_rng(seed)
    )
    return res.confidence_interval, res.bootstrap_distribution


def _scipy_coefficients(x: np.ndarray, y: np.ndarray) -> list[float]:
    return [sps.pearsonr(x, y)[0], sps.spearmanr(x, y)[0], sps.kendalltau(x, y)[0]]


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
    group_counts = stats._resample_counts(rng.integers(0, 4, size=(20, 4)), 4)
    weights = group_counts[:, np.arange(X.size) // 3]  # whole groups of three pairs drawn
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


def test_correlation_cis_equal_scipy_bootstrap_of_scipy_coefficients():
    """Same seed, same resamples: scipy.stats.bootstrap with pearsonr/spearmanr/kendalltau per resample."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=30)
    y = np.round(x + rng.normal(0, 1, size=30))  # ties on one side
    got = stats.correlation_cis(x, y, seed=9, n_resamples=300, confidence=0.9)
    ci = sps.bootstrap((x, y), _scipy_coefficients, n_resamples=300, paired=True, vectorized=False, method="percentile",
                       confidence_level=0.9, rng=np.random.default_rng(9)).confidence_interval
    for i, name in enumerate(stats.CORRELATIONS):
        assert got[name] == pytest.approx(_scipy_coefficients(x, y)[i], abs=1e-12)
        assert (got[f"{name}_ci_low"], got[f"{name}_ci_high"]) == pytest.approx((ci.low[i], ci.high[i]), abs=1e-12)


def test_correlation_cis_groups_equal_scipy_bootstrap_of_groups():
    """The group bootstrap is scipy.stats.bootstrap over the group labels, each drawn group's pairs materialised."""
    rng = np.random.default_rng(6)
    groups = np.repeat(np.arange(15), rng.integers(1, 4, size=15))
    x = rng.normal(size=groups.size)
    y = x + rng.normal(0, 1, size=groups.size)

    def of_groups(drawn):
        rows = np.concatenate([np.flatnonzero(groups == g) for g in drawn])
        return _scipy_coefficients(x[rows], y[rows])

    got = stats.correlation_cis(x, y, groups=groups, seed=3, n_resamples=300)
    ci, _ = _scipy_percentile((np.arange(15),), of_groups, seed=3, n_resamples=300)
    assert got["n_groups"] == 15
    for i, name in enumerate(stats.CORRELATIONS):
        assert (got[f"{name}_ci_low"], got[f"{name}_ci_high"]) == pytest.approx((ci.low[i], ci.high[i]), abs=1e-12)


def test_correlation_cis_leave_out_undefined_resamples():
    """With 5 pairs some resamples are constant: their nan is left out, the rest is scipy's distribution."""
    x, y = np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([2.0, 1.0, 4.0, 3.0, 5.0])

    def coefficients(a, b):
        return [math.nan] * 3 if np.all(a == a[0]) else _scipy_coefficients(a, b)

    got = stats.correlation_cis(x, y, seed=2, n_resamples=400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)  # scipy's own interval is nan here
        _, dist = _scipy_percentile((x, y), coefficients, seed=2, n_resamples=400, paired=True)
    assert np.isnan(dist).any()
    for i, name in enumerate(stats.CORRELATIONS):
        finite = dist[i][~np.isnan(dist[i])]
        assert (got[f"{name}_ci_low"], got[f"{name}_ci_high"]) == pytest.approx(tuple(np.percentile(finite, [2.5, 97.5])), abs=1e-12)


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


def test_bootstrap_ci_is_scipy_percentile_bootstrap():
    values = np.random.default_rng(0).normal(0.5, 0.2, size=200)
    ci, _ = _scipy_percentile((values,), np.mean, seed=3, vectorized=True)
    assert stats.bootstrap_ci(values, seed=3) == pytest.approx((ci.low, ci.high), abs=1e-12)
    low, high = stats.bootstrap_ci(values, seed=3, confidence=0.8)
    assert high - low < ci.high - ci.low


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


def test_bootstrap_ci_ignores_nan_and_handles_empty_and_single():
    assert stats.bootstrap_ci([1.0, 2.0, np.nan, 3.0], seed=0) == stats.bootstrap_ci([1.0, 2.0, 3.0], seed=0)
    assert all(math.isnan(v) for v in stats.bootstrap_ci([]))
    assert stats.bootstrap_ci([0.25]) == (0.25, 0.25)  # every resample is the one value (scipy needs two)
    with pytest.raises(ValueError):
        stats.bootstrap_ci([1.0, 2.0], confidence=1.5)


def _bleu_like_rows(rng, n, p):
    totals = rng.integers(5, 30, size=n).astype(float)
    return np.column_stack([rng.binomial(totals.astype(int), p), totals])


def test_bootstrap_ci_sums_equals_scipy_on_materialised_resamples():
    """scipy.stats.bootstrap with the rows of each resample copied and summed: same interval."""
    rows = _bleu_like_rows(np.random.default_rng(1), 300, 0.4)

    def of_columns(matches, totals, axis=-1):
        return matches.sum(axis=axis) / totals.sum(axis=axis)

    ci, _ = _scipy_percentile(tuple(rows.T), of_columns, seed=5, paired=True, vectorized=True)
    low, high = stats.bootstrap_ci_sums(rows, _ratio_of_sums, seed=5)
    assert (low, high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert low < _ratio_of_sums(rows.sum(axis=0))[0] < high
    assert stats.bootstrap_ci_sums(rows, _ratio_of_sums, seed=5) == (low, high)


def test_bootstrap_ci_sums_leaves_out_undefined_resamples():
    rows = np.array([[1.0, 2.0], [0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])  # resamples of only rows 1-2 are 0/0
    low, high = stats.bootstrap_ci_sums(rows, _ratio_of_sums, seed=0, n_resamples=2000)
    assert 0.5 <= low <= high <= 0.75


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


@pytest.mark.parametrize("k, n, confidence", [(0, 1, 0.95), (3, 7, 0.95), (37, 40, 0.9), (120, 500, 0.99)])
def test_wilson_interval_equals_statsmodels(k, n, confidence):
    assert stats.wilson_interval(k, n, confidence) == pytest.approx(proportion_confint(k, n, alpha=1 - confidence, method="wilson"), abs=1e-12)


# --------------------------------------------------------------------------- paired tests


def test_two_sided_bootstrap_p_hand_computed():
    """d = 0.1; centred |d* - d| = 0.2, 0.1, 0.0, 0.05 -> two reach |d| (0.2, 0.1): p = (2 + 1) / (4 + 1)."""
    assert stats._two_sided_bootstrap_p(np.array([0.3, 0.0, 0.1, 0.15, np.nan]), 0.1) == pytest.approx(0.6)
    assert math.isnan(stats._two_sided_bootstrap_p(np.array([np.nan]), 0.1))


def test_paired_bootstrap_is_scipy_paired_bootstrap():
    rng = np.random.default_rng(7)
    b = rng.random(60)
    a = b + 0.03 + rng.normal(0, 0.1, size=60)
    got = stats.paired_bootstrap_test(a, b, seed=11, confidence=0.9)
    res = sps.bootstrap((a, b), lambda p, q, axis=-1: p.mean(axis=axis) - q.mean(axis=axis), paired=True, vectorized=True,
                        n_resamples=1000, confidence_level=0.9, method="percentile", rng=np.random.default_rng(11))
    assert got["diff"] == pytest.approx(a.mean() - b.mean(), abs=1e-15)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(tuple(res.confidence_interval), abs=1e-12)
    assert got["p_value"] == stats._two_sided_bootstrap_p(res.bootstrap_distribution, got["diff"])
    # a statistic without axis support runs per resample and gives the same numbers
    slow = stats.paired_bootstrap_test(a, b, statistic=lambda v: float(np.mean(v)), seed=11, confidence=0.9)
    assert slow == pytest.approx(got, abs=1e-12)


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


def test_paired_bootstrap_sums_equals_scipy_on_materialised_resamples():
    rng = np.random.default_rng(2)
    rows_b = _bleu_like_rows(rng, 80, 0.3)
    rows_a = np.column_stack([np.minimum(rows_b[:, 1], rows_b[:, 0] + 3), rows_b[:, 1]])

    def of_columns(ma, ta, mb, tb, axis=-1):
        return ma.sum(axis=axis) / ta.sum(axis=axis) - mb.sum(axis=axis) / tb.sum(axis=axis)

    ci, dist = _scipy_percentile((*rows_a.T, *rows_b.T), of_columns, seed=1, paired=True, vectorized=True)
    better = stats.paired_bootstrap_test_sums(rows_a, rows_b, _ratio_of_sums, seed=1)
    observed = _ratio_of_sums(rows_a.sum(axis=0))[0] - _ratio_of_sums(rows_b.sum(axis=0))[0]
    assert better["diff"] == pytest.approx(observed, abs=1e-15)
    assert (better["ci_low"], better["ci_high"]) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert better["p_value"] == pytest.approx(stats._two_sided_bootstrap_p(dist, observed), abs=1e-12)
    assert better["p_value"] < 0.01 and better["ci_low"] > 0
    same = stats.paired_bootstrap_test_sums(rows_b, rows_b.copy(), _ratio_of_sums)
    assert same["diff"] == 0.0 and same["p_value"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        stats.paired_bootstrap_test_sums(rows_a, rows_b[:-1], _ratio_of_sums)


# --------------------------------------------------------------------------- holm


def test_holm_matches_statsmodels_values():
    """statsmodels.stats.multitest.multipletests(p, method="holm")[1], by hand.

    p = (0.01, 0.04, 0.03, 0.005), m = 4. Sorted: 0.005, 0.01, 0.03, 0.04.
    Scaled by m - i + 1: 0.02, 0.03, 0.06, 0.04; running max: 0.02, 0.03, 0.06, 0.06.
    Back in input order: (0.03, 0.06, 0.06, 0.02).
    """
    got = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert got == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_is_statsmodels_over_the_p_values_present():
    rng = np.random.default_rng(8)
    p = rng.random(12) ** 3
    assert stats.holm(p) == pytest.approx(multipletests(p, method="holm")[1], abs=1e-15)
    with_nan = p.copy()
    with_nan[[2, 7]] = np.nan
    got = stats.holm(with_nan)
    assert np.isnan(got[[2, 7]]).all()
    present = ~np.isnan(with_nan)
    assert got[present] == pytest.approx(multipletests(p[present], method="holm")[1], abs=1e-15)
    with pytest.raises(ValueError):
        stats.holm([0.5, 1.5])


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
    assert math.isnan(stats.krippendorff_alpha([[1, 1], [1, 1], [2, _NAN]]))  # the one other value is not pairable
    with pytest.raises(ValueError):
        stats.krippendorff_alpha(perfect, "cardinal")


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_krippendorff_units_with_one_value_change_nothing(level):
    """A unit rated once is not pairable, whatever its value (even one no pairable unit has)."""
    extra = np.array([[7, _NAN, _NAN, _NAN], [_NAN, 2, _NAN, _NAN], [_NAN, _NAN, _NAN, _NAN]])
    with_singles = np.vstack([KRIPPENDORFF_2011, extra])
    assert stats.krippendorff_alpha(with_singles, level) == pytest.approx(stats.krippendorff_alpha(KRIPPENDORFF_2011, level), abs=1e-12)
