"""Statistics for "which metric tracks human judgment, and which differences are real".

Pure functions over numpy arrays: no I/O, no plugin imports. Everything random takes a
``seed`` and draws from ``numpy.random.default_rng(seed)``, so every number is
repeatable. scipy is imported inside the functions that need it.

* :func:`bootstrap_ci`, :func:`bootstrap_ci_rows`: percentile bootstrap intervals over
  examples, for per-example scores and for corpus statistics (BLEU) computed from
  per-example sufficient statistics.
* :func:`wilson_interval`: a binomial proportion interval.
* :func:`correlations`, :func:`correlation_cis`: Pearson, Spearman and Kendall tau-b,
  with bootstrap intervals that resample pairs (or whole groups of pairs).
* :func:`paired_bootstrap_test`, :func:`paired_bootstrap_test_rows`,
  :func:`paired_permutation_test`: is config A really better than config B on the same
  examples?
* :func:`holm`: Holm–Bonferroni adjustment when many such questions are asked at once.
* :func:`krippendorff_alpha`: agreement between human raters.

Missing values are ``nan``. Functions over one array drop them; functions over pairs
drop every pair in which either value is missing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "bootstrap_ci",
    "bootstrap_ci_rows",
    "wilson_interval",
    "correlations",
    "correlation_cis",
    "paired_bootstrap_test",
    "paired_bootstrap_test_rows",
    "paired_permutation_test",
    "holm",
    "krippendorff_alpha",
    "CORRELATIONS",
]

#: the correlation coefficients reported by :func:`correlations`, in order
CORRELATIONS: tuple[str, ...] = ("pearson", "spearman", "kendall")

# Up to this many pairs, bootstrap Kendall taus come from n x n sign matrices and one
# matrix product for all resamples (3 * n^2 floats of memory); above it, scipy's
# O(n log n) kendalltau runs once per resample.
_MATRIX_KENDALL_MAX_N = 1500
# Sign patterns drawn per chunk of the permutation test (bounds its memory).
_PERMUTATION_CHUNK = 1_000_000


# --------------------------------------------------------------------------- helpers


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")


def _check_resamples(n_resamples: int) -> None:
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")


def _as_1d(values: Any, name: str = "values") -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _as_rows(rows: Any, name: str = "rows") -> np.ndarray:
    arr = np.asarray(rows, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a two-dimensional (examples x statistics) array, got shape {arr.shape}")
    return arr


def _paired(a: Any, b: Any, names: tuple[str, str] = ("a", "b")) -> tuple[np.ndarray, np.ndarray]:
    """Two equally long 1-D arrays with every pair containing a nan removed."""
    x, y = _as_1d(a, names[0]), _as_1d(b, names[1])
    if x.shape != y.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same length, got {x.size} and {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    return x[keep], y[keep]


def _percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of ``samples``, ignoring nan; (nan, nan) if none are finite."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2.0
    low, high = np.percentile(samples, [100.0 * tail, 100.0 * (1.0 - tail)])
    return float(low), float(high)


def _apply_stat(stat: Callable[..., Any], samples: np.ndarray) -> np.ndarray:
    """``stat`` of every row of ``samples`` (resamples x n).

    Numpy reductions take ``axis`` and run once over the whole matrix; any other
    callable is applied row by row.
    """
    try:
        out = np.asarray(stat(samples, axis=1), dtype=float)
        if out.shape == (samples.shape[0],):
            return out
    except TypeError:
        pass
    return np.array([float(stat(row)) for row in samples], dtype=float)


def _bootstrap_indices(rng: np.random.Generator, n: int, n_resamples: int) -> np.ndarray:
    """All resampling index arrays at once: shape (n_resamples, n)."""
    return rng.integers(0, n, size=(int(n_resamples), n))


# --------------------------------------------------------------------------- bootstrap intervals


def bootstrap_ci(
    values: Any,
    stat: Callable[..., Any] = np.mean,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(values)``, resampling examples.

    ``values`` are per-example scores; nan entries are dropped. If ``stat`` accepts an
    ``axis`` keyword (numpy reductions do) it runs once over all resamples, otherwise
    once per resample. Returns ``(nan, nan)`` when no values remain.
    """
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    x = _as_1d(values)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    samples = x[_bootstrap_indices(rng, x.size, n_resamples)]
    return _percentile_interval(_apply_stat(stat, samples), confidence)


def bootstrap_ci_rows(
    rows: Any,
    statistic: Callable[[np.ndarray], float],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a corpus statistic, resampling rows (examples).

    ``rows`` is an (examples x k) matrix of per-example sufficient statistics, e.g. the
    n-gram matches and totals and the lengths behind corpus BLEU; ``statistic`` maps such
    a matrix to one number (for BLEU: sum the columns, then compute the score).
    Resamples where ``statistic`` is nan are ignored.
    """
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    matrix = _as_rows(rows)
    if matrix.shape[0] == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = _bootstrap_indices(rng, matrix.shape[0], n_resamples)
    samples = np.array([float(statistic(matrix[i])) for i in idx], dtype=float)
    return _percentile_interval(samples, confidence)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n``.

    Returns ``(nan, nan)`` for ``n == 0``.
    """
    from scipy.stats import norm

    _check_confidence(confidence)
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return math.nan, math.nan
    z = float(norm.ppf(1.0 - (1.0 - confidence) / 2.0))
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2.0 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


# --------------------------------------------------------------------------- correlations


def _is_constant(v: np.ndarray) -> bool:
    return v.size == 0 or bool(np.all(v == v[0]))


def correlations(x: Any, y: Any) -> dict[str, float]:
    """Pearson r, Spearman rho and Kendall tau-b of the pairs ``(x[i], y[i])``.

    Pairs with a nan are dropped. A coefficient that is undefined (fewer than two pairs,
    or either side constant) is nan, without warnings.
    """
    from scipy import stats

    xs, ys = _paired(x, y, ("x", "y"))
    out = {name: math.nan for name in CORRELATIONS}
    if xs.size < 2 or _is_constant(xs) or _is_constant(ys):
        return out
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        out["pearson"] = float(stats.pearsonr(xs, ys)[0])
        out["spearman"] = float(stats.spearmanr(xs, ys)[0])
        out["kendall"] = float(stats.kendalltau(xs, ys, variant="b")[0])
    return out


def _resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` items occurs in each row of ``idx``: shape (rows, n)."""
    rows = idx.shape[0]
    flat = (idx + n * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(float)


class _Ties:
    """The tie structure of one variable: its distinct values and which items share them."""

    def __init__(self, values: np.ndarray):
        self.order = np.argsort(values, kind="stable")
        _, group = np.unique(values[self.order], return_inverse=True)
        self.starts = np.flatnonzero(np.r_[True, np.diff(group) > 0])
        self.group_of_item = np.empty(values.size, dtype=np.int64)
        self.group_of_item[self.order] = group

    def group_weights(self, weights: np.ndarray) -> np.ndarray:
        """Total weight of each distinct value, per resample: (resamples, n_distinct)."""
        return np.add.reduceat(weights[:, self.order], self.starts, axis=1)

    def constant(self, weights: np.ndarray) -> np.ndarray:
        """Per resample: True when at most one distinct value has positive weight."""
        return (self.group_weights(weights) > 0).sum(axis=1) <= 1

    def ranks(self, weights: np.ndarray) -> np.ndarray:
        """Average ranks each item would get in the resample its weights (counts) describe."""
        g = self.group_weights(weights)
        below = np.cumsum(g, axis=1) - g
        return (below + (g + 1.0) / 2.0)[:, self.group_of_item]


def _weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pearson r per resample, each resample given as counts (weights) over the items.

    ``x`` and ``y`` are either 1-D (the same values in every resample) or per resample.
    """
    total = weights.sum(axis=1, keepdims=True)
    dx = x - (weights * x).sum(axis=1, keepdims=True) / total
    dy = y - (weights * y).sum(axis=1, keepdims=True) / total
    with np.errstate(all="ignore"):
        r = (weights * dx * dy).sum(axis=1) / np.sqrt(
            (weights * dx * dx).sum(axis=1) * (weights * dy * dy).sum(axis=1)
        )
    return np.clip(r, -1.0, 1.0)


def _pair_signs(values: np.ndarray) -> np.ndarray:
    """n x n matrix of sign(values[i] - values[j])."""
    return np.sign(values[:, None] - values[None, :])


def _weighted_kendall(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Kendall tau-b per resample, each resample given as counts over the items.

    In a resample item i appears w_i times. Copies of one item are tied on both sides
    and add nothing, so over the resample's pairs tau-b is
    ``w' S w / sqrt(w' |Sx| w * w' |Sy| w)`` with ``S = Sx * Sy`` and ``Sx[i, j] =
    sign(x_i - x_j)``: |Sx| summed counts the pairs not tied in x. Small inputs use these
    n x n matrices for all resamples at once; large ones run scipy once per resample.
    """
    n = x.size
    if n <= _MATRIX_KENDALL_MAX_N:
        sx, sy = _pair_signs(x), _pair_signs(y)
        concordance = ((weights @ (sx * sy)) * weights).sum(axis=1)
        untied = ((weights @ np.abs(sx)) * weights).sum(axis=1) * ((weights @ np.abs(sy)) * weights).sum(axis=1)
        with np.errstate(all="ignore"):
            tau = np.where(untied > 0, concordance / np.sqrt(untied), math.nan)
        return np.clip(tau, -1.0, 1.0)

    from scipy.stats import kendalltau

    counts = weights.astype(np.int64)
    tau = np.full(weights.shape[0], math.nan)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for r in range(weights.shape[0]):
            tau[r] = kendalltau(np.repeat(x, counts[r]), np.repeat(y, counts[r]), variant="b")[0]
    return tau


def _batch_correlations(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """All three coefficients for every resample.

    ``x`` and ``y`` are the complete pairs; ``weights`` (resamples x n) says how often
    each pair occurs in each resample, so a resample never has to be materialised.
    Coefficients of resamples in which either side is constant are nan.
    """
    tx, ty = _Ties(x), _Ties(y)
    undefined = tx.constant(weights) | ty.constant(weights)
    out = {
        "pearson": _weighted_pearson(x, y, weights),
        "spearman": _weighted_pearson(tx.ranks(weights), ty.ranks(weights), weights),
        "kendall": _weighted_kendall(x, y, weights),
    }
    for values in out.values():
        values[undefined] = math.nan
    return out


def _resample_weights(
    n: int, rng: np.random.Generator, n_resamples: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """Bootstrap counts (n_resamples x n): pairs drawn with replacement, or whole groups.

    With ``groups`` (one label per pair), groups are drawn with replacement and every
    pair of a group drawn k times gets weight k.
    """
    if groups is None:
        return _resample_counts(_bootstrap_indices(rng, n, n_resamples), n)
    _, inverse = np.unique(groups, return_inverse=True)
    n_groups = int(inverse.max()) + 1
    group_counts = _resample_counts(_bootstrap_indices(rng, n_groups, n_resamples), n_groups)
    return group_counts[:, inverse.ravel()]


def correlation_cis(
    x: Any,
    y: Any,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    groups: Sequence[Hashable] | np.ndarray | None = None,
) -> dict[str, float]:
    """Correlations of ``x`` and ``y`` with percentile bootstrap intervals.

    Returns ``pearson``, ``spearman``, ``kendall`` (from :func:`correlations`), each with
    ``<name>_ci_low`` and ``<name>_ci_high``, and ``n`` (the number of complete pairs).
    The bootstrap resamples pairs with replacement; with ``groups`` (one label per pair,
    e.g. the example id when each example was rated under several configs) it resamples
    whole groups instead, and ``n_groups`` is added. Resamples in which a coefficient is
    undefined (constant input) are left out of its interval.
    """
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    xs, ys = _as_1d(x, "x"), _as_1d(y, "y")
    if xs.shape != ys.shape:
        raise ValueError(f"x and y must have the same length, got {xs.size} and {ys.size}")
    keep = ~(np.isnan(xs) | np.isnan(ys))
    labels: np.ndarray | None = None
    if groups is not None:
        labels = np.asarray(groups)
        if labels.shape != xs.shape:
            raise ValueError(f"groups must have one label per pair, got {labels.size} labels for {xs.size} pairs")
        labels = labels[keep]
    xs, ys = xs[keep], ys[keep]

    result: dict[str, float] = dict(correlations(xs, ys))
    result["n"] = int(xs.size)
    if labels is not None:
        result["n_groups"] = int(np.unique(labels).size)
    for name in CORRELATIONS:
        result[f"{name}_ci_low"] = result[f"{name}_ci_high"] = math.nan
    if xs.size < 2:
        return result

    rng = np.random.default_rng(seed)
    boot = _batch_correlations(xs, ys, _resample_weights(xs.size, rng, n_resamples, labels))
    for name in CORRELATIONS:
        result[f"{name}_ci_low"], result[f"{name}_ci_high"] = _percentile_interval(boot[name], confidence)
    return result


# --------------------------------------------------------------------------- paired tests


def _two_sided_bootstrap_p(boot_diffs: np.ndarray, observed: float) -> float:
    """Two-sided p-value of ``observed`` against its bootstrap distribution shifted to mean 0.

    Under the null of no difference the centred bootstrap differences ``d* - d`` estimate
    the spread of ``d``; p is the share at least as far from 0 as ``d`` itself, with the
    usual +1 so it is never exactly 0 (Berg-Kirkpatrick et al. 2012; Koehn 2004).
    """
    boot_diffs = boot_diffs[~np.isnan(boot_diffs)]
    if boot_diffs.size == 0 or math.isnan(observed):
        return math.nan
    tol = 1e-12 * max(1.0, abs(observed))
    extreme = int(np.sum(np.abs(boot_diffs - observed) >= abs(observed) - tol))
    return min(1.0, (extreme + 1) / (boot_diffs.size + 1))


def paired_bootstrap_test(
    a: Any,
    b: Any,
    *,
    statistic: Callable[..., Any] = np.mean,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Paired bootstrap test of ``statistic(a) - statistic(b)``.

    ``a`` and ``b`` are per-example scores of two configs on the same examples, in the
    same order; pairs with a nan are dropped. Each resample draws the same example
    indices for both. Returns ``diff`` (observed), ``ci_low``/``ci_high`` (percentile
    interval of the difference), a two-sided ``p_value`` and ``n``.
    """
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    xa, xb = _paired(a, b)
    result = {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan, "n": int(xa.size)}
    if xa.size == 0:
        return result
    observed = float(statistic(xa)) - float(statistic(xb))
    rng = np.random.default_rng(seed)
    idx = _bootstrap_indices(rng, xa.size, n_resamples)
    boot = _apply_stat(statistic, xa[idx]) - _apply_stat(statistic, xb[idx])
    low, high = _percentile_interval(boot, confidence)
    result.update(diff=observed, ci_low=low, ci_high=high, p_value=_two_sided_bootstrap_p(boot, observed))
    return result


def paired_bootstrap_test_rows(
    rows_a: Any,
    rows_b: Any,
    statistic: Callable[[np.ndarray], float],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Paired bootstrap test for a corpus statistic such as BLEU.

    ``rows_a`` and ``rows_b`` are (examples x k) sufficient statistics of two configs on
    the same examples, row i of each being example i; every resample takes the same rows
    from both. Returns the same keys as :func:`paired_bootstrap_test`.
    """
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    ma, mb = _as_rows(rows_a, "rows_a"), _as_rows(rows_b, "rows_b")
    if ma.shape[0] != mb.shape[0]:
        raise ValueError(f"rows_a and rows_b must cover the same examples, got {ma.shape[0]} and {mb.shape[0]} rows")
    result = {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan, "n": int(ma.shape[0])}
    if ma.shape[0] == 0:
        return result
    observed = float(statistic(ma)) - float(statistic(mb))
    rng = np.random.default_rng(seed)
    idx = _bootstrap_indices(rng, ma.shape[0], n_resamples)
    boot = np.array([float(statistic(ma[i])) - float(statistic(mb[i])) for i in idx], dtype=float)
    low, high = _percentile_interval(boot, confidence)
    result.update(diff=observed, ci_low=low, ci_high=high, p_value=_two_sided_bootstrap_p(boot, observed))
    return result


def paired_permutation_test(a: Any, b: Any, *, n_resamples: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Sign-flip permutation test of the mean paired difference ``mean(a - b)``.

    Under the null, each example's difference is as likely positive as negative.
    When ``2**n <= n_resamples`` all sign patterns are enumerated and the p-value is
    exact; otherwise ``n_resamples`` random patterns are drawn and
    ``p = (1 + extreme) / (1 + n_resamples)``. Two-sided. Returns ``diff``, ``p_value``,
    ``n`` and ``exact``.
    """
    _check_resamples(n_resamples)
    xa, xb = _paired(a, b)
    d = xa - xb
    n = int(d.size)
    if n == 0:
        return {"diff": math.nan, "p_value": math.nan, "n": 0, "exact": False}
    observed = float(d.mean())
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    exact = n < 63 and 2**n <= n_resamples
    if exact:
        patterns = (((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1).astype(float)
        flipped = np.abs(patterns @ d) / n
        p = float(np.mean(flipped >= abs(observed) - tol))
    else:
        rng = np.random.default_rng(seed)
        extreme = 0
        chunk = max(1, _PERMUTATION_CHUNK // n)
        for start in range(0, int(n_resamples), chunk):
            rows = min(chunk, int(n_resamples) - start)
            signs = np.where(rng.random((rows, n)) < 0.5, -1.0, 1.0)
            extreme += int(np.sum(np.abs(signs @ d) / n >= abs(observed) - tol))
        p = (extreme + 1) / (int(n_resamples) + 1)
    return {"diff": observed, "p_value": min(1.0, p), "n": n, "exact": exact}


# --------------------------------------------------------------------------- multiple testing


def holm(p_values: Any) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values, in the input order.

    The i-th smallest of m p-values is multiplied by ``m - i + 1``; a running maximum
    keeps the adjusted values monotone and they are capped at 1 (as statsmodels'
    ``multipletests(method="holm")``). nan entries stay nan and do not count in m.
    """
    p = _as_1d(p_values, "p_values")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie between 0 and 1")
    out = np.full(p.shape, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = p[order] * (m - np.arange(m))
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


# --------------------------------------------------------------------------- agreement


_LEVELS = ("nominal", "ordinal", "interval", "ratio")


def _ratings_matrix(ratings: Any) -> np.ndarray:
    """A units x coders float matrix (nan = missing) from a matrix or a list of per-unit dicts."""
    if isinstance(ratings, np.ndarray):
        matrix = ratings.astype(float)
    else:
        items = list(ratings)
        if items and all(isinstance(item, Mapping) for item in items):
            coders: dict[Hashable, int] = {}
            for item in items:
                for coder in item:
                    coders.setdefault(coder, len(coders))
            matrix = np.full((len(items), len(coders)), math.nan)
            for u, item in enumerate(items):
                for coder, value in item.items():
                    matrix[u, coders[coder]] = math.nan if value is None else float(value)
        else:
            matrix = np.array([[math.nan if v is None else float(v) for v in row] for row in items], dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"ratings must be a units x coders matrix, got shape {matrix.shape}")
    return matrix


def _distance_matrix(values: np.ndarray, totals: np.ndarray, level: str) -> np.ndarray:
    """Squared difference function delta^2(c, k) over the sorted distinct values."""
    if level == "nominal":
        return 1.0 - np.eye(values.size)
    if level == "interval":
        return (values[:, None] - values[None, :]) ** 2
    if level == "ratio":
        total = values[:, None] + values[None, :]
        with np.errstate(all="ignore"):
            d = np.where(total == 0, 0.0, (values[:, None] - values[None, :]) / total)
        return d**2
    # ordinal: (sum_{g=c..k} n_g - (n_c + n_k)/2)^2, i.e. the squared distance between the
    # values' mid-cumulative frequencies
    mid = np.cumsum(totals) - totals / 2.0
    return (mid[:, None] - mid[None, :]) ** 2


def krippendorff_alpha(ratings: Any, level: str = "nominal") -> float:
    """Krippendorff's alpha for any number of coders, with missing values.

    ``ratings`` is a units x coders matrix (nan or None = missing), or a list with one
    dict per unit mapping coder -> value (absent or None = missing). Values are numbers;
    ``level`` (``nominal``, ``ordinal``, ``interval``, ``ratio``) picks the difference
    function. Computed from the coincidence matrix as in Krippendorff (2011), "Computing
    Krippendorff's Alpha-Reliability": units with fewer than two values are not
    pairable and are ignored. Returns nan when alpha is undefined (no pairable values,
    or a single value used throughout).
    """
    if level not in _LEVELS:
        raise ValueError(f"unknown level '{level}'; allowed: {', '.join(_LEVELS)}")
    matrix = _ratings_matrix(ratings)
    present = ~np.isnan(matrix)
    matrix = matrix[present.sum(axis=1) >= 2]
    if matrix.size == 0:
        return math.nan
    values, codes = np.unique(matrix[~np.isnan(matrix)], return_inverse=True)
    # counts[u, c]: how many coders gave value c to unit u
    units = np.nonzero(~np.isnan(matrix))[0]
    counts = np.zeros((matrix.shape[0], values.size))
    np.add.at(counts, (units, codes), 1.0)
    pairable = counts.sum(axis=1)
    weighted = counts / (pairable - 1.0)[:, None]
    # o[c, k] = sum_u (n_uc * n_uk - [c == k] * n_uc) / (m_u - 1)
    coincidences = weighted.T @ counts - np.diag(weighted.sum(axis=0))
    totals = coincidences.sum(axis=1)
    n = totals.sum()
    delta2 = _distance_matrix(values, totals, level)
    expected = float(totals @ delta2 @ totals)
    if expected <= 0.0:
        return math.nan
    observed = float(np.sum(coincidences * delta2))
    return 1.0 - (n - 1.0) * observed / expected
