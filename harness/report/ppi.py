"""Prediction-powered estimates of the human score of every (model, config) cell (PPI++, ``ppi_py``).

A cell's human column averages the ratings of a few of its test examples. Every test example
also has a predictor — a metric the run computed (or a judge). Prediction-powered inference
(Angelopoulos et al. 2023; PPI++ with the power-tuned λ, 2024) combines the two into an
estimate of the *human* score of the whole cell whose interval is valid whatever the predictor
is, and narrower the better the predictor tracks the humans:

* ``Y``: per rated example, the mean of its human ratings on the report's 0-1 scale;
* ``Yhat``: the (calibrated) predictor on those examples; ``Yhat_unlabeled``: the predictor on
  every other test example of the cell;
* ``ppi_py.ppi_mean_ci(Y, Yhat, Yhat_unlabeled, alpha=1 - confidence, lam=None)``.

What PPI needs: the rated examples are a uniform random sample of the cell's test examples
(``harness human export`` and ``serve`` sample them so), and the predictor is fixed without the
cell's ratings. So the predictor is either the user's (``--predictor``, ``[human] predictor``)
or chosen by cross-fitting: the metric whose per-example scores correlate best (Pearson) with
the human ratings of every rated generation *outside* the cell (a generation the cell shares
with another config is the cell's, so it is left out too). The same outside ratings calibrate
the predictor onto the human scale (a least-squares line ``a + b * metric``): an affine map fixed
without the cell keeps the interval valid and lets the tuned λ (clipped to [0, 1] by ppi_py)
use a metric whose spread is unlike the ratings' (BERTScore's 0.85-0.95).

Paired differences between a config and the baseline of the same model are estimated the same
way on per-example differences (human, predictor) over the examples rated in both cells; their
p-values (the normal test that matches the interval) are Holm-corrected within each model.

``ppi_py`` is an optional dependency (it pulls numba, pandas, scikit-learn and statsmodels):
without it the report says how to install it in place of the estimates.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import MissingDependency, UserError, unknown_name
from . import stats as st

__all__ = [
    "INSTALL",
    "MIN_RATED",
    "CellPPI",
    "Calibration",
    "DiffPPI",
    "PPIReport",
    "classical_ci",
    "estimate",
    "from_results",
    "load_ppi_py",
    "mean_ci",
    "check_predictor",
]

HUMAN = "human"
#: how to install ppi_py (an extra of this package)
INSTALL = "pip install 'llm-decoding-harness[ppi]'"
#: fewest rated examples (with a predictor score) a cell's estimate is made from
MIN_RATED = 3
#: fewest rated generations outside a cell that choose (and calibrate) its predictor
MIN_OUTSIDE = 3


# --------------------------------------------------------------------------- ppi_py


def load_ppi_py():
    """``ppi_py``, imported on first use; :class:`MissingDependency` with the install line when it is missing.

    Importing ``ppi_py`` runs ``warnings.simplefilter("ignore")`` (in ``ppi_py.ppi``), which would
    silence every warning of the process; the import runs inside ``catch_warnings`` so the
    filters are restored.
    """
    try:
        with warnings.catch_warnings():
            import ppi_py
    except ImportError:
        raise MissingDependency("ppi-python", "ppi", purpose="prediction-powered human estimates (Human (PPI))") from None
    return ppi_py


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def mean_ci(y: Any, yhat: Any, yhat_unlabeled: Any, *, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PPI++ point estimate and ``confidence`` interval of the mean of ``y``: ``(value, low, high)``.

    ``y``, ``yhat`` are (n,) or (n, k) and ``yhat_unlabeled`` (N,) or (N, k); with k columns,
    each column is an independent problem (its own power-tuned λ: ppi_py's
    ``lam_optim_mode="element"``), which is how the simulation tests run thousands of cells
    in one call. Returns arrays of shape (k,) ((1,) for 1-D input).
    """
    ppi_py = load_ppi_py()
    y, yhat, unl = (np.asarray(a, dtype=float) for a in (y, yhat, yhat_unlabeled))
    if y.shape != yhat.shape:
        raise ValueError(f"Y and Yhat must have the same shape, got {y.shape} and {yhat.shape}")
    if y.shape[0] < 2 or unl.shape[0] < 1:
        raise ValueError(f"PPI needs at least 2 rated and 1 unrated example, got {y.shape[0]} and {unl.shape[0]}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = ppi_py.ppi_mean_ci(y, yhat, unl, alpha=1.0 - confidence, lam=None, lam_optim_mode="element")
    low, high = (np.atleast_1d(np.asarray(v, dtype=float)).ravel() for v in (low, high))
    # the interval is symmetric about ppi_py's point estimate (ppi_mean_pointestimate with the same λ): its midpoint
    return (low + high) / 2, low, high


def classical_ci(y: Any, *, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ratings-only interval PPI is compared with: the CLT interval ``mean ± z * sd / sqrt(n)`` (ppi_py's ``classical_mean_ci``), per column."""
    y = np.asarray(y, dtype=float)
    y2 = y.reshape(-1, 1) if y.ndim == 1 else y
    mean = y2.mean(axis=0)
    half = _z(confidence) * y2.std(axis=0) / math.sqrt(y2.shape[0])
    return mean, mean - half, mean + half


def _lam(y: np.ndarray, yhat: np.ndarray, unl: np.ndarray) -> float:
    """The power-tuned λ ppi_py uses for a 1-D mean (``_calc_lam_glm``, clipped to [0, 1]); for the record only."""
    n, big_n = y.size, unl.size
    cov = float(np.mean((y - y.mean()) * (yhat - yhat.mean())))
    var = float(np.var(np.concatenate([yhat, unl]), ddof=1))
    if var <= 0:
        return 0.0
    return float(np.clip(cov / ((1 + n / big_n) * var), 0.0, 1.0))


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Calibration:
    """The predictor on the human scale, ``a + b * metric``, fitted on ``n`` rated generations outside the cell(s).

    ``r`` is their Pearson correlation with the ratings (what the automatic choice ranks by).
    """

    metric: str
    a: float
    b: float
    r: float | None
    n: int


@dataclass(frozen=True)
class CellPPI:
    """A cell's prediction-powered human estimate (``value`` None: see ``note``).

    ``n_rated`` rated examples with a predictor score, ``n_total`` examples with one (rated or
    not); ``n_effective``: the number of plain ratings whose interval would be as narrow
    (``n_rated * (classical half-width / PPI half-width)^2``); ``lam`` the power-tuned λ.
    """

    model: str
    config: str
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    predictor: str | None = None
    n_rated: int = 0
    n_total: int = 0
    n_effective: float | None = None
    lam: float | None = None
    classical_low: float | None = None
    classical_high: float | None = None
    calibration: Calibration | None = None
    note: str | None = None


@dataclass(frozen=True)
class DiffPPI:
    """A config minus the baseline of the same model, by PPI on per-example differences over the examples rated in both."""

    model: str
    config: str
    baseline: str
    diff: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    p_holm: float | None = None
    significant: bool | None = None
    predictor: str | None = None
    n_rated: int = 0
    n_total: int = 0
    n_effective: float | None = None
    note: str | None = None


@dataclass(frozen=True)
class PPIReport:
    """Every cell's estimate and every paired difference, and how they were made."""

    cells: tuple[CellPPI, ...] = ()
    diffs: tuple[DiffPPI, ...] = ()
    confidence: float = 0.95
    choice: str = "cross-fitted"  # or "named" (--predictor / [human] predictor)
    available: bool = True  # ppi_py is installed
    note: str | None = None  # why there are no estimates at all
    method: str = ""

    def cell(self, model: str, config: str) -> CellPPI | None:
        return next((c for c in self.cells if (c.model, c.config) == (model, config)), None)

    def diff(self, model: str, config: str) -> DiffPPI | None:
        return next((d for d in self.diffs if (d.model, d.config) == (model, config)), None)

    def context(self) -> dict[str, Any]:
        """What reporters receive as ``context["ppi"]``: per cell, the fields JSON rows for ``human`` carry."""
        cells: dict[str, dict[str, dict[str, Any]]] = {}
        for c in self.cells:
            cells.setdefault(c.model, {})[c.config] = row_fields(c, self.diff(c.model, c.config))
        predictors: dict[str, dict[str, int]] = {}
        for c in self.cells:
            if c.predictor and c.value is not None:
                counts = predictors.setdefault(c.model, {})
                counts[c.predictor] = counts.get(c.predictor, 0) + 1
        return {
            "cells": cells,
            "confidence": self.confidence,
            "choice": self.choice,
            "available": self.available,
            "install": None if self.available else INSTALL,
            "note": self.note,
            "method": self.method,
            "predictors": predictors,
            "any": any(c.value is not None for c in self.cells),
        }


def row_fields(c: CellPPI, d: DiffPPI | None) -> dict[str, Any]:
    """The ``ppi_*`` fields of a ``human`` row (JSON report)."""
    out = {
        "ppi_value": c.value,
        "ppi_ci_low": c.ci_low,
        "ppi_ci_high": c.ci_high,
        "ppi_predictor": c.predictor,
        "ppi_n_rated": c.n_rated,
        "ppi_n_total": c.n_total,
        "ppi_n_effective": c.n_effective,
        "ppi_lambda": c.lam,
        "ppi_calibration": None if c.calibration is None else asdict(c.calibration),
        "ppi_note": c.note,
    }
    if d is not None:
        out.update(
            ppi_diff=d.diff, ppi_diff_ci_low=d.ci_low, ppi_diff_ci_high=d.ci_high, ppi_diff_predictor=d.predictor,
            ppi_diff_n_rated=d.n_rated, ppi_p_value=d.p_value, ppi_p_holm=d.p_holm, ppi_significant=d.significant, ppi_diff_note=d.note,
        )
    return {k: _clean(v) for k, v in out.items()}


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


# --------------------------------------------------------------------------- the data of a report


@dataclass(frozen=True)
class CellData:
    """What PPI reads of one cell: its examples' generation keys, human scores (0-1) and every metric's scores."""

    model: str
    config: str
    gens: Mapping[str, str]  # example id -> gen key
    human: Mapping[str, float]  # rated example id -> mean rating on 0-1
    scores: Mapping[str, Mapping[str, float]]  # metric -> example id -> score (missing scores left out)


@dataclass
class _Items:
    """Every rated generation once: its human score and each metric's score (for choosing and calibrating predictors)."""

    gen: list[str] = field(default_factory=list)
    human: list[float] = field(default_factory=list)
    scores: dict[str, list[float]] = field(default_factory=dict)


def _items(cells: Sequence[CellData], metrics: Sequence[str]) -> _Items:
    out = _Items(scores={m: [] for m in metrics})
    seen: set[str] = set()
    for c in cells:
        for e, y in c.human.items():
            g = c.gens.get(e)
            if g is None or g in seen:
                continue
            seen.add(g)
            out.gen.append(g)
            out.human.append(y)
            for m in metrics:
                out.scores[m].append(c.scores.get(m, {}).get(e, math.nan))
    return out


def _calibrate(items: _Items, metric: str, exclude: set[str]) -> Calibration | None:
    """``metric``'s least-squares line onto the human scores of the rated generations not in ``exclude`` (None: too few, or constant)."""
    keep = np.array([g not in exclude for g in items.gen], dtype=bool)
    if not keep.any():
        return None
    x = np.asarray(items.scores[metric], dtype=float)[keep]
    y = np.asarray(items.human, dtype=float)[keep]
    ok = ~np.isnan(x)
    x, y = x[ok], y[ok]
    if x.size < MIN_OUTSIDE or np.ptp(x) == 0:
        return None
    vx = float(np.var(x))
    cov = float(np.mean((x - x.mean()) * (y - y.mean())))
    r = cov / math.sqrt(vx * float(np.var(y))) if np.ptp(y) > 0 else None
    b = cov / vx
    return Calibration(metric, float(y.mean() - b * x.mean()), float(b), r, int(x.size))


def _choose(items: _Items, metrics: Sequence[str], exclude: set[str]) -> Calibration | None:
    """The metric whose scores correlate best (and positively) with the human scores outside ``exclude``, calibrated."""
    best: Calibration | None = None
    for m in metrics:
        cal = _calibrate(items, m, exclude)
        if cal is None or cal.r is None or cal.r <= 0:
            continue
        if best is None or cal.r > best.r:  # type: ignore[operator]
            best = cal
    return best


def _varies(values: Any) -> bool:
    """Whether a predictor takes more than one value (a constant one predicts nothing: a pairwise metric on the baseline itself)."""
    return len(set(values)) > 1


def _differences(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    return {e: a[e] - b[e] for e in a if e in b}


def _predict(cal: Calibration | None, x: np.ndarray) -> np.ndarray:
    """The predictor on the human scale (raw when it could not be calibrated, or the line does not rise)."""
    if cal is None or cal.b <= 0:
        return x
    return cal.a + cal.b * x


def _one(y: np.ndarray, yhat: np.ndarray, unl: np.ndarray, confidence: float) -> dict[str, float]:
    value, low, high = mean_ci(y, yhat, unl, confidence=confidence)
    _, c_low, c_high = classical_ci(y, confidence=confidence)
    half, c_half = float(high[0] - low[0]) / 2, float(c_high[0] - c_low[0]) / 2
    n_eff = y.size * (c_half / half) ** 2 if half > 0 else math.nan
    return {"value": float(value[0]), "low": float(low[0]), "high": float(high[0]), "c_low": float(c_low[0]), "c_high": float(c_high[0]),
            "n_eff": n_eff, "lam": _lam(y, yhat, unl), "half": half}


def _why_not(y: np.ndarray, x: np.ndarray, n_unrated: int, metric: str, *, what: str = "examples") -> str | None:
    if y.size < MIN_RATED:
        return f"{y.size} rated {what} with a {metric} score; PPI needs at least {MIN_RATED}"
    if n_unrated < 1:
        return "every test example is rated: there is nothing to predict (the Human column is the whole story)"
    if np.ptp(y) == 0:
        return f"every rated {what[:-1]} has the same human score: a normal-approximation interval is undefined"
    if np.ptp(x) == 0:
        return f"{metric} is constant over the cell's examples: it cannot predict anything"
    return None


def estimate(
    cells: Sequence[CellData],
    metrics: Sequence[str],
    *,
    baseline: str | None,
    predictor: str | None = None,
    confidence: float = 0.95,
) -> PPIReport:
    """PPI estimates of every cell with ratings, and paired differences with ``baseline`` (see the module's docstring)."""
    choice = "named" if predictor else "cross-fitted"
    method = (
        f"PPI++ (ppi_py.ppi_mean_ci, power-tuned λ, {confidence:.0%} normal interval): the human ratings of a cell combined with a predictor "
        "on all its test examples; assumes the rated examples are a uniform random sample of the cell's. "
        + (f"Predictor: {predictor}, named by the user" if predictor else
           "Predictor: per cell, the metric that correlates best with the ratings of every rated generation outside the cell (cross-fitting)")
        + ", calibrated onto the human scale by a least-squares line fitted outside the cell."
    )
    rated = [c for c in cells if c.human]
    if not rated:  # nothing to estimate: ppi_py (seconds to import) is not loaded
        return PPIReport(confidence=confidence, choice=choice, note="no human ratings", method=method)
    try:
        load_ppi_py()
    except MissingDependency:
        return PPIReport(
            cells=tuple(CellPPI(c.model, c.config, n_rated=len(c.human), note=f"needs ppi-python: {INSTALL}") for c in rated),
            confidence=confidence, choice=choice, available=False, note=f"Human (PPI) needs the package ppi-python: {INSTALL}", method=method,
        )
    items = _items(cells, metrics)
    candidates = [predictor] if predictor else list(metrics)
    by_cell = {(c.model, c.config): c for c in cells}

    def pick(exclude: set[str], varies: Callable[[str], bool]) -> tuple[str | None, Calibration | None, str | None]:
        """The predictor (named, or the best outside ``exclude`` among the metrics that ``varies`` in the cell) and its calibration."""
        if predictor:
            return predictor, _calibrate(items, predictor, exclude), None
        cal = _choose(items, [m for m in candidates if varies(m)], exclude)
        if cal is None:
            return None, None, (
                f"no metric correlates positively with at least {MIN_OUTSIDE} rated generations outside this cell: "
                "name a predictor with --predictor (or [human] predictor)"
            )
        return cal.metric, cal, None

    out_cells: list[CellPPI] = []
    for c in rated:
        metric, cal, why = pick(set(c.gens.values()), lambda m, c=c: _varies(c.scores.get(m, {}).values()))
        if metric is None:
            out_cells.append(CellPPI(c.model, c.config, n_rated=len(c.human), note=why))
            continue
        scores = c.scores.get(metric, {})
        labelled = [e for e in c.human if e in scores]
        unlabelled = [e for e in c.gens if e not in c.human and e in scores]
        y = np.array([c.human[e] for e in labelled], dtype=float)
        x = _predict(cal, np.array([scores[e] for e in labelled], dtype=float))
        u = _predict(cal, np.array([scores[e] for e in unlabelled], dtype=float))
        why = _why_not(y, np.concatenate([x, u]), len(unlabelled), metric)
        base = CellPPI(c.model, c.config, predictor=metric, n_rated=int(y.size), n_total=int(y.size + u.size), calibration=cal)
        if why is not None:
            out_cells.append(_replace(base, note=why))
            continue
        r = _one(y, x, u, confidence)
        unscored = len(c.human) - len(labelled)
        out_cells.append(_replace(base, value=r["value"], ci_low=r["low"], ci_high=r["high"], n_effective=_opt(r["n_eff"]), lam=r["lam"],
                                  classical_low=r["c_low"], classical_high=r["c_high"],
                                  note=f"{unscored} rated example{'s' if unscored != 1 else ''} without a {metric} score left out" if unscored else None))

    diffs: list[DiffPPI] = []
    if baseline is not None:
        for model in dict.fromkeys(c.model for c in rated):
            base = by_cell.get((model, baseline))
            family: list[DiffPPI] = []
            for c in cells:
                if c.model != model or c.config == baseline or not c.human:
                    continue
                d = DiffPPI(model, c.config, baseline)
                if base is None or not base.human:
                    family.append(_replace(d, note="the baseline has no ratings"))
                    continue
                metric, cal, why = pick(
                    set(c.gens.values()) | set(base.gens.values()),
                    lambda m, c=c, base=base: _varies(_differences(c.scores.get(m, {}), base.scores.get(m, {})).values()),
                )
                if metric is None:
                    family.append(_replace(d, note=why))
                    continue
                sa, sb = c.scores.get(metric, {}), base.scores.get(metric, {})
                both = [e for e in c.gens if e in base.gens and e in sa and e in sb]
                labelled = [e for e in both if e in c.human and e in base.human]
                unlabelled = [e for e in both if not (e in c.human and e in base.human)]
                y = np.array([c.human[e] - base.human[e] for e in labelled], dtype=float)
                xa, xb = (np.array([s[e] for e in labelled], dtype=float) for s in (sa, sb))
                ua, ub = (np.array([s[e] for e in unlabelled], dtype=float) for s in (sa, sb))
                x, u = _predict(cal, xa) - _predict(cal, xb), _predict(cal, ua) - _predict(cal, ub)
                d = _replace(d, predictor=metric, n_rated=int(y.size), n_total=int(y.size + u.size))
                why = _why_not(y, np.concatenate([x, u]), len(unlabelled), f"{metric} difference", what="pairs")
                if why is not None:
                    family.append(_replace(d, note=why))
                    continue
                r = _one(y, x, u, confidence)
                se = r["half"] / _z(confidence)
                p = _p_two_sided(r["value"], se)
                family.append(_replace(d, diff=r["value"], ci_low=r["low"], ci_high=r["high"], p_value=p, n_effective=_opt(r["n_eff"])))
            ps = np.array([math.nan if d.p_value is None else d.p_value for d in family], dtype=float)
            adjusted = st.holm(ps) if ps.size else ps
            for d, p_adj in zip(family, adjusted):
                holm = _opt(float(p_adj))
                diffs.append(_replace(d, p_holm=holm, significant=None if holm is None else bool(holm < 1.0 - confidence)))
    return PPIReport(tuple(out_cells), tuple(diffs), confidence=confidence, choice=choice, method=method)


def _p_two_sided(value: float, se: float) -> float:
    """The two-sided p-value of the normal test that matches the interval (ppi_py's ``ppi_mean_pval`` with the same λ)."""
    from scipy.stats import norm

    if se <= 0:
        return 0.0 if value != 0 else 1.0
    return float(2 * norm.sf(abs(value) / se))


def _replace(obj, **changes):
    from dataclasses import replace

    return replace(obj, **changes)


def _opt(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


# --------------------------------------------------------------------------- from recorded results


def check_predictor(predictor: str | None, metrics: Sequence[str], *, selected: Sequence[str] | None = None, key: str = "--predictor") -> None:
    """A predictor must name a metric of the experiment (and, when metrics are selected, one of those)."""
    if predictor is None:
        return
    if predictor not in metrics:
        raise UserError(unknown_name("metric", predictor, metrics) + " (the predictor is one of the experiment's metrics)", key=key)
    if selected is not None and predictor not in selected:
        raise UserError(f"metric '{predictor}' is not among the selected metrics; add --metric {predictor}", key=key)


def cell_data(results: Any) -> list[CellData]:
    """Every recorded (model, config) cell as PPI reads it (from :class:`harness.report.results.Results`)."""
    gens = {(c.model, c.config): dict(c.keys) for c in results.cells}
    human: dict[tuple[str, str], dict[str, float]] = {}
    scores: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    for v in results.values:
        key = (v.model, v.config)
        if v.metric == HUMAN:
            human[key] = {e: float(s.value) for e, s in v.examples}
        else:
            scores.setdefault(key, {})[v.metric] = {e: float(s.value) for e, s in v.examples if not s.missing}
    return [CellData(m, c, gens[(m, c)], human.get((m, c), {}), scores.get((m, c), {})) for (m, c) in gens]


def from_results(results: Any, *, baseline: str | None, predictor: str | None = None, confidence: float = 0.95) -> PPIReport:
    """:func:`estimate` on what a run recorded; ``predictor`` (else ``[human] predictor`` as recorded) names the metric to use."""
    if predictor is None:
        predictor = (results.experiment.human or {}).get("predictor")
        if predictor is not None and predictor not in results.metric_names:
            predictor = None  # the recorded predictor is not among the selected metrics (--metric): choose by cross-fitting
    else:
        check_predictor(predictor, list(results.experiment.metrics), selected=list(results.metric_names))
    return estimate(cell_data(results), list(results.metric_names), baseline=baseline, predictor=predictor, confidence=confidence)
