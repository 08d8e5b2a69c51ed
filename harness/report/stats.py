"""Statistics for "which metric tracks human judgment, and which differences are real".

Pure functions over numpy arrays: no I/O, no plugin imports. Everything random takes a
``seed`` and draws from ``numpy.random.default_rng(seed)``, so every number is
repeatable. The statistics come from libraries wherever one serves (imported inside
the functions that need them):

* :func:`bootstrap_ci`, :func:`bootstrap_ci_sums`: percentile bootstrap intervals over
  examples (``scipy.stats.bootstrap``), for per-example scores and for corpus statistics
  (BLEU) computed from the summed per-example sufficient statistics.
* :func:`wilson_interval`: a binomial proportion interval (``scipy.stats.binomtest``).
* :func:`correlations`, :func:`correlation_cis`: Pearson, Spearman and Kendall tau-b
  (``scipy.stats``), with bootstrap intervals that resample pairs (or whole groups of
  pairs) through ``scipy.stats.bootstrap``.
* :func:`paired_bootstrap_test`, :func:`paired_bootstrap_test_sums`: is config A really
  better than config B on the same examples?
* :func:`holm`: Holm–Bonferroni adjustment when many such questions are asked at once.
* :func:`krippendorff_alpha`: agreement between human raters (the ``krippendorff``
  package).

Our own code is kept only where ``bench/stats_libraries.py`` (BENCHMARKS.md) shows the
library too slow for a report, and the tests check it against the library's answer:
the statistics the bootstrap evaluates on all resamples at once from how often each
example was drawn (column sums of sufficient statistics for corpus BLEU; weighted
Pearson, Spearman and Kendall tau-b), where the libraries would run once per resample
(scipy still draws the resamples and takes the percentiles); and Holm, where statsmodels
runs a full garbage collection on every call. The paired bootstrap test's p-value has
no library equivalent.

Missing values are ``nan``. Functions over one array drop them; functions over pairs
drop every pair in which either value is missing.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "bootstrap_ci",
    "bootstrap_ci_sums",
    "wilson_interval",
    "correlations",
    "correlation_cis",
    "paired_bootstrap_test",
    "paired_bootstrap_test_sums",
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


def _takes_axis(stat: Callable[..., Any]) -> bool:
    """Whether ``stat`` accepts an ``axis`` keyword (numpy reductions do): then it runs once over all resamples."""
    try:
        params = inspect.signature(stat).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "axis" for p in params)


def _bootstrap(
    data: tuple[np.ndarray, ...],
    statistic: Callable[..., Any],
    *,
    vectorized: bool,
    paired: bool,
    n_resamples: int,
    confidence: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``scipy.stats.bootstrap`` (percentile method): ``(distribution, low, high)``.

    ``distribution`` holds the statistic of every resample along its last axis. Where it
    holds nan (resamples on which the statistic is undefined) the interval is taken over
    the others; where all are nan it is nan. With a single observation every resample
    is that observation (scipy needs two), so the distribution is constant.
    """
    from scipy import stats

    n = data[0].shape[-1]
    if n < 2:
        resample = tuple(np.repeat(d[None, :], int(n_resamples), axis=0) for d in data)
        if vectorized:
            dist = np.asarray(statistic(*resample, axis=-1), dtype=float)
        else:
            dist = np.array([statistic(*(r[i] for r in resample)) for i in range(int(n_resamples))], dtype=float).T
        return dist, *_quantiles(dist, confidence)
    with warnings.catch_warnings():
        # scipy warns when an end of the interval is nan (some resamples undefined): handled below
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(
            data,
            statistic,
            n_resamples=int(n_resamples),
            vectorized=vectorized,
            paired=paired,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    low = np.asarray(res.confidence_interval.low, dtype=float)
    high = np.asarray(res.confidence_interval.high, dtype=float)
    if np.isnan(low).any() or np.isnan(high).any():
        low, high = _quantiles(dist, confidence)
    return dist, low, high


def _quantiles(dist: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The central ``confidence`` interval along the last axis, leaving nan out (nan where nothing is left)."""
    from scipy import stats

    tail = (1.0 - confidence) / 2.0
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        q = np.asarray(stats.quantile(dist, np.array([tail, 1.0 - tail]), axis=-1, nan_policy="omit"), dtype=float)
    return q[..., 0], q[..., 1]


def _resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` items occurs in each row of ``idx``: shape (rows, n)."""
    idx = np.asarray(idx, dtype=np.int64).reshape(-1, idx.shape[-1])
    rows = idx.shape[0]
    flat = (idx + n * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(float)


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

    ``scipy.stats.bootstrap(method="percentile")`` with ``rng=default_rng(seed)``.
    ``values`` are per-example scores; nan entries are dropped. If ``stat`` accepts an
    ``axis`` keyword (numpy reductions do) it runs once over all resamples, otherwise
    once per resample. Resamples where ``stat`` is nan are left out. Returns
    ``(nan, nan)`` when no values remain.
    """
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    x = _as_1d(values)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan, math.nan
    _, low, high = _bootstrap(
        (x,), stat, vectorized=_takes_axis(stat), paired=False, n_resamples=n_resamples, confidence=confidence, seed=seed
    )
    return float(low), float(high)


def _sums_statistic(matrices: Sequence[np.ndarray], statistic: Callable[[np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    """A vectorised bootstrap statistic over example indices: ``statistic`` of each matrix's resampled column sums.

    The sums come from how often each example was drawn times the matrix (one product for
    all resamples), not from copying every resample's rows.
    """
    n = matrices[0].shape[0]

    def of_indices(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        counts = _resample_counts(idx, n)
        values = [np.asarray(statistic(counts @ m), dtype=float) for m in matrices]
        out = values[0] if len(values) == 1 else values[0] - values[1]
        return out.reshape(idx.shape[:-1])

    return of_indices


def bootstrap_ci_sums(
    rows: Any,
    statistic: Callable[[np.ndarray], np.ndarray],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a corpus statistic, resampling rows (examples).

    ``rows`` is an (examples x k) matrix of per-example sufficient statistics, e.g. the
    n-gram matches and totals and the lengths behind corpus BLEU; ``statistic`` maps an
    (m x k) matrix of summed statistics to m values (one corpus value per row of sums).
    ``scipy.stats.bootstrap`` draws the resamples exactly as :func:`bootstrap_ci` does
    with the same seed; each resample's sums are computed without copying its rows.
    Resamples where ``statistic`` is nan are left out.
    """
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    matrix = _as_rows(rows)
    if matrix.shape[0] == 0:
        return math.nan, math.nan
    _, low, high = _bootstrap(
        (np.arange(matrix.shape[0]),),
        _sums_statistic([matrix], statistic),
        vectorized=True,
        paired=False,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )
    return float(low), float(high)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n``.

    ``scipy.stats.binomtest(successes, n).proportion_ci(confidence, method="wilson")``
    (no continuity correction). Returns ``(nan, nan)`` for ``n == 0``.
    """
    from scipy.stats import binomtest

    _check_confidence(confidence)
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return math.nan, math.nan
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


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


def _correlation_statistic(x: np.ndarray, y: np.ndarray, inverse: np.ndarray | None) -> Callable[..., np.ndarray]:
    """A vectorised bootstrap statistic over the indices of pairs (or of groups): the three coefficients per resample.

    ``inverse`` maps each pair to its group; a group drawn k times gives each of its
    pairs weight k. Output: (coefficients x resamples), in :data:`CORRELATIONS` order.
    """
    n_items = x.size if inverse is None else int(inverse.max()) + 1

    def of_indices(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        counts = _resample_counts(idx, n_items)
        boot = _batch_correlations(x, y, counts if inverse is None else counts[:, inverse])
        return np.stack([boot[name] for name in CORRELATIONS]).reshape(len(CORRELATIONS), *idx.shape[:-1])

    return of_indices


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
    The bootstrap (``scipy.stats.bootstrap``, percentile method, ``rng=default_rng(seed)``)
    resamples pairs with replacement; with ``groups`` (one label per pair, e.g. the example
    id when each example was rated under several configs) it resamples whole groups
    instead, and ``n_groups`` is added. The coefficients of all resamples are computed at
    once from how often each pair was drawn; they equal scipy's ``pearsonr``,
    ``spearmanr`` and ``kendalltau`` on the materialised resamples. Resamples in which a
    coefficient is undefined (constant input) are left out of its interval.
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
    inverse: np.ndarray | None = None
    if labels is not None:
        _, inverse = np.unique(labels, return_inverse=True)
        inverse = inverse.ravel()
        result["n_groups"] = int(inverse.max()) + 1 if inverse.size else 0
    for name in CORRELATIONS:
        result[f"{name}_ci_low"] = result[f"{name}_ci_high"] = math.nan
    if xs.size < 2:
        return result

    n_items = xs.size if inverse is None else int(inverse.max()) + 1
    _, low, high = _bootstrap(
        (np.arange(n_items),),
        _correlation_statistic(xs, ys, inverse),
        vectorized=True,
        paired=False,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )
    for i, name in enumerate(CORRELATIONS):
        result[f"{name}_ci_low"], result[f"{name}_ci_high"] = float(low[i]), float(high[i])
    return result


# --------------------------------------------------------------------------- paired tests


def _two_sided_bootstrap_p(boot_diffs: np.ndarray, observed: float) -> float:
    """Two-sided p-value of ``observed`` against its bootstrap distribution shifted to mean 0.

    Under the null of no difference the centred bootstrap differences ``d* - d`` estimate
    the spread of ``d``; p is the share at least as far from 0 as ``d`` itself, with the
    usual +1 so it is never exactly 0 (Berg-Kirkpatrick et al. 2012; Koehn 2004).
    scipy has no bootstrap p-value; this is the formula the report states.
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
    indices for both (``scipy.stats.bootstrap(paired=True)``, percentile method). Returns
    ``diff`` (observed), ``ci_low``/``ci_high`` (percentile interval of the difference),
    a two-sided ``p_value`` (:func:`_two_sided_bootstrap_p`) and ``n``.
    """
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    xa, xb = _paired(a, b)
    result = {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan, "n": int(xa.size)}
    if xa.size == 0:
        return result
    observed = float(statistic(xa)) - float(statistic(xb))
    vectorized = _takes_axis(statistic)
    if vectorized:

        def difference(p: np.ndarray, q: np.ndarray, axis: int = -1) -> np.ndarray:
            return np.asarray(statistic(p, axis=axis), dtype=float) - np.asarray(statistic(q, axis=axis), dtype=float)

    else:

        def difference(p: np.ndarray, q: np.ndarray) -> float:  # type: ignore[misc]
            return float(statistic(p)) - float(statistic(q))

    boot, low, high = _bootstrap(
        (xa, xb), difference, vectorized=vectorized, paired=True, n_resamples=n_resamples, confidence=confidence, seed=seed
    )
    result.update(diff=observed, ci_low=float(low), ci_high=float(high), p_value=_two_sided_bootstrap_p(boot, observed))
    return result


def paired_bootstrap_test_sums(
    rows_a: Any,
    rows_b: Any,
    statistic: Callable[[np.ndarray], np.ndarray],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Paired bootstrap test for a corpus statistic such as BLEU.

    ``rows_a`` and ``rows_b`` are (examples x k) sufficient statistics of two configs on
    the same examples, row i of each being example i; ``statistic`` is as in
    :func:`bootstrap_ci_sums`. Every resample takes the same rows from both; the
    resamples are those :func:`paired_bootstrap_test` draws with the same seed. Returns
    the same keys as :func:`paired_bootstrap_test`.
    """
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    ma, mb = _as_rows(rows_a, "rows_a"), _as_rows(rows_b, "rows_b")
    if ma.shape[0] != mb.shape[0]:
        raise ValueError(f"rows_a and rows_b must cover the same examples, got {ma.shape[0]} and {mb.shape[0]} rows")
    result = {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan, "n": int(ma.shape[0])}
    if ma.shape[0] == 0:
        return result
    observed = float(statistic(ma.sum(axis=0, keepdims=True))[0]) - float(statistic(mb.sum(axis=0, keepdims=True))[0])
    boot, low, high = _bootstrap(
        (np.arange(ma.shape[0]),),
        _sums_statistic([ma, mb], statistic),
        vectorized=True,
        paired=False,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )
    result.update(diff=observed, ci_low=float(low), ci_high=float(high), p_value=_two_sided_bootstrap_p(boot, observed))
    return result


# --------------------------------------------------------------------------- multiple testing


def holm(p_values: Any) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values, in the input order.

    The i-th smallest of m p-values is multiplied by ``m - i + 1``; a running maximum
    keeps the adjusted values monotone and they are capped at 1: the values of
    statsmodels' ``multipletests(p, method="holm")[1]``, which the tests check. nan
    entries stay nan and do not count in m. Our own because statsmodels runs a full
    ``gc.collect()`` on every call (25-55 ms in a report process, far more in a large
    one: see BENCHMARKS.md) and would add pandas to the core install.
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


def krippendorff_alpha(ratings: Any, level: str = "nominal") -> float:
    """Krippendorff's alpha for any number of coders, with missing values.

    ``ratings`` is a units x coders matrix (nan or None = missing), or a list with one
    dict per unit mapping coder -> value (absent or None = missing). Values are numbers;
    ``level`` (``nominal``, ``ordinal``, ``interval``, ``ratio``) picks the difference
    function. Computed by the ``krippendorff`` package (``krippendorff.alpha``, from the
    coincidence matrix as in Krippendorff (2011), "Computing Krippendorff's
    Alpha-Reliability") over the pairable units: units with fewer than two values add
    nothing to alpha and are left out. Returns nan when alpha is undefined (no pairable
    values, or a single value used throughout), where the package would raise or divide
    by zero.
    """
    if level not in _LEVELS:
        raise ValueError(f"unknown level '{level}'; allowed: {', '.join(_LEVELS)}")
    matrix = _ratings_matrix(ratings)
    matrix = matrix[(~np.isnan(matrix)).sum(axis=1) >= 2]
    if np.unique(matrix[~np.isnan(matrix)]).size < 2:
        return math.nan
    import krippendorff

    with np.errstate(all="ignore"):
        alpha = float(krippendorff.alpha(reliability_data=matrix.T, level_of_measurement=level))
    return alpha if math.isfinite(alpha) else math.nan
