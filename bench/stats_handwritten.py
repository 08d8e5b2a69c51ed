"""The hand-written statistics that issue 9 (item 4) replaced with library calls, frozen as they were in
``harness/stats.py`` and ``harness/report_data.py`` before the change (commit 4bc76ae).

Only ``bench/stats_libraries.py`` uses this module: it times these routines against the libraries and
checks that the report's numbers did not move. Nothing in the harness imports it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from harness.report import stats as shipped


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    samples = np.asarray(samples, dtype=float)
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2.0
    low, high = np.percentile(samples, [100.0 * tail, 100.0 * (1.0 - tail)])
    return float(low), float(high)


def _apply_stat(stat: Callable[..., Any], samples: np.ndarray) -> np.ndarray:
    try:
        out = np.asarray(stat(samples, axis=1), dtype=float)
        if out.shape == (samples.shape[0],):
            return out
    except TypeError:
        pass
    return np.array([float(stat(row)) for row in samples], dtype=float)


def _indices(rng: np.random.Generator, n: int, n_resamples: int) -> np.ndarray:
    return rng.integers(0, n, size=(int(n_resamples), n))


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    rows = idx.shape[0]
    flat = (idx + n * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(float)


def bootstrap_ci(values: Any, stat: Callable[..., Any] = np.mean, *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    samples = x[_indices(rng, x.size, n_resamples)]
    return percentile_interval(_apply_stat(stat, samples), confidence)


def bootstrap_ci_sums(rows: Any, statistic: Callable[[np.ndarray], np.ndarray], *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """report_data's corpus interval before the change: counts x matrix, then the vectorised statistic."""
    matrix = np.asarray(rows, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, matrix.shape[0], size=(int(n_resamples), matrix.shape[0]))
    return percentile_interval(statistic(_counts(idx, matrix.shape[0]) @ matrix), confidence)


def paired_bootstrap_test(a: Any, b: Any, *, statistic: Callable[..., Any] = np.mean, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    xa, xb = shipped._paired(a, b)
    result = {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan, "n": int(xa.size)}
    if xa.size == 0:
        return result
    observed = float(statistic(xa)) - float(statistic(xb))
    rng = np.random.default_rng(seed)
    idx = _indices(rng, xa.size, n_resamples)
    boot = _apply_stat(statistic, xa[idx]) - _apply_stat(statistic, xb[idx])
    low, high = percentile_interval(boot, confidence)
    result.update(diff=observed, ci_low=low, ci_high=high, p_value=shipped._two_sided_bootstrap_p(boot, observed))
    return result


def paired_bootstrap_test_sums(rows_a: Any, rows_b: Any, statistic: Callable[[np.ndarray], np.ndarray], *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """report_data's paired corpus test before the change."""
    ma, mb = np.asarray(rows_a, dtype=float), np.asarray(rows_b, dtype=float)
    n = ma.shape[0]
    observed = float(statistic(ma.sum(axis=0, keepdims=True))[0] - statistic(mb.sum(axis=0, keepdims=True))[0])
    rng = np.random.default_rng(seed)
    counts = _counts(rng.integers(0, n, size=(int(n_resamples), n)), n)
    boot = statistic(counts @ ma) - statistic(counts @ mb)
    low, high = percentile_interval(boot, confidence)
    return {"diff": observed, "ci_low": low, "ci_high": high, "p_value": shipped._two_sided_bootstrap_p(boot, observed), "n": n}


def paired_permutation_test(a: Any, b: Any, *, n_resamples: int = 10000, seed: int = 0) -> dict[str, Any]:
    xa, xb = shipped._paired(a, b)
    d = xa - xb
    n = int(d.size)
    if n == 0:
        return {"diff": math.nan, "p_value": math.nan, "n": 0, "exact": False}
    observed = float(d.mean())
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    exact = n < 63 and 2**n <= n_resamples
    if exact:
        patterns = (((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1).astype(float)
        p = float(np.mean(np.abs(patterns @ d) / n >= abs(observed) - tol))
    else:
        rng = np.random.default_rng(seed)
        extreme = 0
        chunk = max(1, 1_000_000 // n)
        for start in range(0, int(n_resamples), chunk):
            rows = min(chunk, int(n_resamples) - start)
            signs = np.where(rng.random((rows, n)) < 0.5, -1.0, 1.0)
            extreme += int(np.sum(np.abs(signs @ d) / n >= abs(observed) - tol))
        p = (extreme + 1) / (int(n_resamples) + 1)
    return {"diff": observed, "p_value": min(1.0, p), "n": n, "exact": exact}


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    from scipy.stats import norm

    if n == 0:
        return math.nan, math.nan
    z = float(norm.ppf(1.0 - (1.0 - confidence) / 2.0))
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2.0 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def _distance_matrix(values: np.ndarray, totals: np.ndarray, level: str) -> np.ndarray:
    if level == "nominal":
        return 1.0 - np.eye(values.size)
    if level == "interval":
        return (values[:, None] - values[None, :]) ** 2
    if level == "ratio":
        total = values[:, None] + values[None, :]
        with np.errstate(all="ignore"):
            d = np.where(total == 0, 0.0, (values[:, None] - values[None, :]) / total)
        return d**2
    mid = np.cumsum(totals) - totals / 2.0
    return (mid[:, None] - mid[None, :]) ** 2


def krippendorff_alpha(ratings: Any, level: str = "nominal") -> float:
    matrix = shipped._ratings_matrix(ratings)
    present = ~np.isnan(matrix)
    matrix = matrix[present.sum(axis=1) >= 2]
    if matrix.size == 0:
        return math.nan
    values, codes = np.unique(matrix[~np.isnan(matrix)], return_inverse=True)
    units = np.nonzero(~np.isnan(matrix))[0]
    counts = np.zeros((matrix.shape[0], values.size))
    np.add.at(counts, (units, codes), 1.0)
    pairable = counts.sum(axis=1)
    weighted = counts / (pairable - 1.0)[:, None]
    coincidences = weighted.T @ counts - np.diag(weighted.sum(axis=0))
    totals = coincidences.sum(axis=1)
    n = totals.sum()
    delta2 = _distance_matrix(values, totals, level)
    expected = float(totals @ delta2 @ totals)
    if expected <= 0.0:
        return math.nan
    observed = float(np.sum(coincidences * delta2))
    return 1.0 - (n - 1.0) * observed / expected


def correlation_cis(x: Any, y: Any, *, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95, groups: Any = None) -> dict[str, float]:
    """The driver before the change: our own draws and percentiles around the same vectorised kernels."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = ~(np.isnan(xs) | np.isnan(ys))
    labels = None if groups is None else np.asarray(groups)[keep]
    xs, ys = xs[keep], ys[keep]
    result: dict[str, float] = dict(shipped.correlations(xs, ys))
    result["n"] = int(xs.size)
    if labels is not None:
        result["n_groups"] = int(np.unique(labels).size)
    for name in shipped.CORRELATIONS:
        result[f"{name}_ci_low"] = result[f"{name}_ci_high"] = math.nan
    if xs.size < 2:
        return result
    rng = np.random.default_rng(seed)
    if labels is None:
        weights = _counts(_indices(rng, xs.size, n_resamples), xs.size)
    else:
        _, inverse = np.unique(labels, return_inverse=True)
        n_groups = int(inverse.max()) + 1
        weights = _counts(_indices(rng, n_groups, n_resamples), n_groups)[:, inverse.ravel()]
    boot = shipped._batch_correlations(xs, ys, weights)
    for name in shipped.CORRELATIONS:
        result[f"{name}_ci_low"], result[f"{name}_ci_high"] = percentile_interval(boot[name], confidence)
    return result
