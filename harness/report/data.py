"""The numbers behind a report: intervals, paired tests, agreement, correlations, provenance.

:func:`build` takes rows shaped like the recorded results (:mod:`harness.report.results`; one per
(model, config, metric), plus a ``human`` row per cell) and returns a
:class:`ReportData`; :func:`from_runner` gathers its inputs from a runner and the
store. Reporters receive the result through :meth:`ReportData.context` (plain,
JSON-able dicts and lists), never this module.

* **Intervals** (95% by default) on every cell value: a percentile bootstrap over the
  cell's examples for per-example means (ROUGE-L, BERTScore, Likert or multi-annotator
  human ratings); for metrics whose per-example scores carry sufficient statistics
  (BLEU) the corpus value is recomputed from the resampled statistics in every
  resample; a Wilson interval for a binary human rate (one 0/1 verdict per item).
* **Paired comparisons** of every config against the baseline config of the same model,
  on the examples both cells share: a paired bootstrap (the same resampled examples for
  both configs; corpus BLEU recomputed per resample) giving the difference, its
  interval and a two-sided p-value. p-values are Holm-corrected within each (model,
  metric): one family per column of a model's table.
* **Agreement**: Krippendorff's alpha over items rated by two or more annotators,
  nominal for binary ratings and ordinal for Likert ratings, overall and per model.
* **Correlations** of every metric with the human ratings (system and example level)
  and the findings text, from :mod:`harness.analysis`.

Every random draw comes from ``numpy.random.default_rng`` seeded from the report seed
and the cell's name, so a cell's interval does not depend on which other cells are
in the report, and the same inputs always give the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import analysis
from . import stats as st
from ..api import ExampleScore
from ..errors import UserError, unknown_name
from ..registry import config_with_defaults
from .pairwise import PairOutcome
from .results import Results

__all__ = [
    "HUMAN",
    "CellStats",
    "Comparison",
    "ReportData",
    "HumanRating",
    "build",
    "from_results",
    "aggregations",
    "Aggregation",
    "choose_baseline",
    "system_rows",
    "example_items",
]

HUMAN = "human"


# --------------------------------------------------------------------------- records


@dataclass
class CellStats:
    """One (model, config, metric) number with its interval and its comparison with the baseline."""

    model: str
    config: str
    metric: str
    value: float | None
    n: int
    error: str | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    interval: str | None = None  # "bootstrap", "bootstrap-corpus", "wilson"
    baseline: bool = False
    diff: float | None = None  # value - baseline value, on the shared examples
    diff_ci_low: float | None = None
    diff_ci_high: float | None = None
    n_paired: int | None = None
    p_value: float | None = None
    p_holm: float | None = None
    significant: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: _clean(v) for k, v in asdict(self).items()}


@dataclass
class Comparison:
    model: str
    metric: str
    config: str
    baseline: str
    n: int
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_holm: float | None
    significant: bool | None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: _clean(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class HumanRating:
    """One imported rating: ``rating`` on the sheet's own scale (0/1 binary, 1-5 Likert)."""

    model: str
    config: str
    item: str  # the rated generation (item id or gen key)
    annotator: str
    rating: float
    scale: str


@dataclass
class ReportData:
    experiment: str
    metrics: list[dict[str, Any]]
    cells: list[CellStats]
    comparisons: list[Comparison]
    baseline: dict[str, Any]
    agreement: list[dict[str, Any]]
    correlations: list[analysis.CorrelationRow]
    findings: list[str]
    correlation_notes: list[str]
    sweep: dict[str, Any]
    statistics: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    pairwise: dict[str, Any] = field(default_factory=dict)

    def cell(self, model: str, config: str, metric: str) -> CellStats | None:
        for c in self.cells:
            if (c.model, c.config, c.metric) == (model, config, metric):
                return c
        return None

    def context(self) -> dict[str, Any]:
        """What reporters receive (merged into their ``context``): plain JSON-able values."""
        cells: dict[str, dict[str, dict[str, Any]]] = {}
        for c in self.cells:
            cells.setdefault(c.model, {}).setdefault(c.config, {})[c.metric] = c.as_dict()
        return {
            "cells": cells,
            "baseline": self.baseline,
            "comparisons": [c.as_dict() for c in self.comparisons],
            "agreement": self.agreement,
            "correlations": [{k: _clean(v) for k, v in r.as_dict().items()} for r in self.correlations],
            "findings": list(self.findings),
            "correlation_notes": list(self.correlation_notes),
            "sweep": self.sweep,
            "statistics": self.statistics,
            "run_provenance": self.provenance,
            "pairwise": {k: ([{kk: _clean(vv) for kk, vv in d.items()} for d in v] if isinstance(v, list) else v) for k, v in self.pairwise.items()},
        }


def _clean(v: Any) -> Any:
    """nan -> None, numpy scalars -> Python, so the result is strict JSON."""
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return None if math.isnan(f) else f
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _opt(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


# --------------------------------------------------------------------------- seeds


def cell_seed(seed: int, *parts: str) -> int:
    """A seed for one cell: the report seed and the cell's name, hashed (order-independent)."""
    digest = hashlib.sha256("\x1f".join([str(seed), *parts]).encode("utf-8")).hexdigest()
    return int(digest[:12], 16)


# --------------------------------------------------------------------------- how values aggregate


@dataclass(frozen=True)
class Aggregation:
    """How a metric's cell value follows from its per-example scores, for resampling.

    ``kind``: "mean" (the default aggregate), "corpus" (``corpus`` maps summed sufficient
    statistics, resamples × k, to one value per resample), "custom" (``aggregate`` runs
    on every resample) or "unknown" (no interval; ``note`` says why, e.g. the metric's
    plugin is not installed on this machine).
    """

    kind: str = "mean"
    corpus: Callable[[np.ndarray], np.ndarray] | None = None
    aggregate: Callable[[list[ExampleScore]], float] | None = None
    note: str = ""


MEAN = Aggregation()


def _as_statistic(corpus: Callable[[Any], Any]) -> Callable[[np.ndarray], np.ndarray]:
    """A metric's ``corpus_values`` as a function returning a float array."""
    return lambda sums: np.asarray(corpus(sums), dtype=float)


def _stats_matrix(scores: Sequence[ExampleScore]) -> np.ndarray | None:
    if not scores or any(s.stats is None for s in scores):
        return None
    lengths = {len(s.stats) for s in scores}
    if len(lengths) != 1:
        return None
    return np.array([s.stats for s in scores], dtype=float)


# --------------------------------------------------------------------------- intervals


def _interval(
    metric_name: str,
    agg: Aggregation,
    scores: Sequence[ExampleScore],
    *,
    binary_human: bool,
    seed: int,
    n_resamples: int,
    confidence: float,
) -> tuple[float, float, str] | None:
    if not scores:
        return None
    values = np.array([s.value for s in scores], dtype=float)
    if metric_name == HUMAN:
        if binary_human and np.all((values == 0.0) | (values == 1.0)):
            lo, hi = st.wilson_interval(int(round(values.sum())), int(values.size), confidence)
            return lo, hi, "wilson"
        lo, hi = st.bootstrap_ci(values, np.mean, n_resamples=n_resamples, confidence=confidence, seed=seed)
        return lo, hi, "bootstrap"
    if agg.kind == "corpus" and agg.corpus is not None:
        matrix = _stats_matrix(scores)
        if matrix is None:
            return None
        lo, hi = st.bootstrap_ci_sums(matrix, _as_statistic(agg.corpus), n_resamples=n_resamples, confidence=confidence, seed=seed)
        return lo, hi, "bootstrap-corpus"
    if agg.kind == "mean":
        lo, hi = st.bootstrap_ci(values, np.mean, n_resamples=n_resamples, confidence=confidence, seed=seed)
        return lo, hi, "bootstrap"
    if agg.kind == "custom" and agg.aggregate is not None:
        fn = agg.aggregate
        lo, hi = st.bootstrap_ci(values, lambda v: fn([ExampleScore(float(x)) for x in v]), n_resamples=n_resamples, confidence=confidence, seed=seed)
        return lo, hi, "bootstrap"
    return None


def _paired(
    metric_name: str,
    agg: Aggregation,
    a: Sequence[ExampleScore],
    b: Sequence[ExampleScore],
    *,
    seed: int,
    n_resamples: int,
    confidence: float,
) -> dict[str, float] | None:
    """Paired bootstrap of value(a) - value(b) over the same examples (row i of each); None when it cannot be resampled here."""
    if metric_name != HUMAN and agg.kind == "corpus" and agg.corpus is not None:
        matrix_a, matrix_b = _stats_matrix(a), _stats_matrix(b)
        if matrix_a is None or matrix_b is None or matrix_a.shape != matrix_b.shape:
            return None
        return st.paired_bootstrap_test_sums(matrix_a, matrix_b, _as_statistic(agg.corpus), n_resamples=n_resamples, confidence=confidence, seed=seed)
    va = np.array([s.value for s in a], dtype=float)
    vb = np.array([s.value for s in b], dtype=float)
    if metric_name == HUMAN or agg.kind == "mean":
        return st.paired_bootstrap_test(va, vb, n_resamples=n_resamples, confidence=confidence, seed=seed)
    if agg.kind == "custom" and agg.aggregate is not None:
        fn = agg.aggregate

        def stat(v: np.ndarray) -> float:
            return float(fn([ExampleScore(float(x)) for x in v]))

        return st.paired_bootstrap_test(va, vb, statistic=stat, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return None


# --------------------------------------------------------------------------- baseline and sweep


def choose_baseline(
    configs: Sequence[tuple[str, Mapping[str, Any]]],
    defaults: Mapping[str, Any] | None,
    requested: str | None = None,
    *,
    all_configs: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The baseline config: ``requested``, else the one whose params equal the sweep defaults, else the first.

    ``configs`` are the (name, params) of the configs in the report, in sweep order.
    Returns ``{"config": name, "reason": text, "how": "requested"|"defaults"|"first"}``.
    An unknown ``requested`` name raises :class:`UserError` with a did-you-mean hint.
    """
    names = [n for n, _ in configs]
    if requested is not None:
        if requested not in names:
            known = list(all_configs) if all_configs is not None else names
            if requested in known:
                raise UserError(
                    f"config '{requested}' is not among the selected configs; add --config {requested} or pick another baseline",
                    key="--baseline",
                )
            raise UserError(unknown_name("config", requested, known), key="--baseline")
        return {"config": requested, "how": "requested", "reason": "chosen with --baseline"}
    if not names:
        return {"config": None, "how": "none", "reason": "no configs"}
    if defaults:
        found = config_with_defaults(configs, defaults)
        if found is not None:
            return {"config": found, "how": "defaults", "reason": "its parameters are the sweep's defaults"}
        swept = [k for k in defaults if len({repr(p.get(k)) for _, p in configs}) > 1]
        shown = ", ".join(f"{k}={defaults[k]}" for k in (swept or list(defaults)))
        return {
            "config": names[0],
            "how": "first",
            "reason": f"the sweep's defaults ({shown}) are not among the configs, so the first config of the sweep is the baseline",
        }
    return {"config": names[0], "how": "first", "reason": "the first config of the sweep"}


def sweep_info(configs: Sequence[tuple[str, Mapping[str, Any]]], defaults: Mapping[str, Any] | None) -> dict[str, Any]:
    """The swept parameters and, for each, the configs that vary only that parameter.

    ``series[p]`` lists ``[value, config]`` for every config whose other parameters equal
    the defaults (one-at-a-time sweeps, and the defaults' slice of a grid), sorted by value.
    """
    keys = list(dict.fromkeys(k for _, p in configs for k in p))
    values = {k: list(dict.fromkeys(p.get(k) for _, p in configs)) for k in keys}
    swept = [k for k in keys if len(values[k]) > 1]
    defaults = dict(defaults or {})
    series: dict[str, list[list[Any]]] = {}
    for k in swept:
        points = []
        for name, p in configs:
            others = [q for q in swept if q != k]
            if all(q in defaults and p.get(q) == defaults[q] for q in others):
                points.append([p.get(k), name])
        try:
            points.sort(key=lambda pv: pv[0])
        except TypeError:
            points.sort(key=lambda pv: str(pv[0]))
        series[k] = points
    return {
        "params": {k: _sorted(values[k]) for k in swept},
        "defaults": {k: v for k, v in defaults.items()},
        "series": series,
        "config_params": {name: dict(p) for name, p in configs},
    }


def _sorted(values: list[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


# --------------------------------------------------------------------------- correlations input


def system_rows(results: Sequence[Mapping[str, Any]], metric_names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (model, config) that has a human value: ``{model, config, human, <metric>: value}``."""
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        cell = cells.setdefault((r["model"], r["config"]), {"model": r["model"], "config": r["config"]})
        if r["metric"] == HUMAN or r["metric"] in metric_names:
            cell[r["metric"]] = math.nan if r["value"] is None else float(r["value"])
    out = []
    for cell in cells.values():
        if not math.isnan(cell.get(HUMAN, math.nan)):
            out.append({"model": cell["model"], "config": cell["config"], HUMAN: cell[HUMAN], **{m: cell.get(m, math.nan) for m in metric_names}})
    return out


def example_items(results: Sequence[Mapping[str, Any]], metric_names: Sequence[str]) -> list[tuple[str, str, str, dict[str, float], float]]:
    """``(model, config, example_id, {metric: per-example score}, human)`` for every rated generation."""
    by_cell: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    for r in results:
        if r["metric"] in metric_names:
            per = by_cell.setdefault((r["model"], r["config"]), {})
            for ex_id, score in r.get("examples") or []:
                per.setdefault(ex_id, {})[r["metric"]] = float(score.value)
    out = []
    for r in results:
        if r["metric"] != HUMAN:
            continue
        per = by_cell.get((r["model"], r["config"]), {})
        for ex_id, score in r.get("examples") or []:
            out.append((r["model"], r["config"], ex_id, dict(per.get(ex_id, {})), float(score.value)))
    return out


def correlation_notes(rows: Sequence[analysis.CorrelationRow], scopes: Sequence[str], metric_names: Sequence[str], level: str, counts: Mapping[str, int]) -> list[str]:
    """Which (scope, metric) pairs had too few points for a correlation at ``level``."""
    have = {(r.scope, r.metric) for r in rows if r.level == level}
    notes = []
    for scope in scopes:
        missing = [m for m in metric_names if (scope, m) not in have]
        if missing:
            where = "overall" if scope == analysis.ALL else f"model '{scope}'"
            notes.append(
                f"{level.capitalize()} level, {where}: no correlation for {', '.join(missing)} "
                f"({counts.get(scope, 0)} rated point{'s' if counts.get(scope, 0) != 1 else ''}; at least {analysis.MIN_ROWS} are needed)."
            )
    return notes


def correlate(
    results: Sequence[Mapping[str, Any]],
    metric_names: Sequence[str],
    *,
    seed: int,
    n_resamples: int,
    confidence: float,
    levels: Sequence[str] = ("system", "example", "pairwise"),
    pairs: Sequence[PairOutcome] = (),
) -> tuple[list[analysis.CorrelationRow], list[str]]:
    """System-, example- and pairwise-level correlations of every metric with human ratings, and notes on what was skipped.

    Pairwise level: one point per judged pair (model, config a, config b, example): the
    metric's difference a - b against the humans' mean share of the win for a, minus 0.5. A
    metric agrees where it prefers the side the humans prefer.
    """
    rows: list[analysis.CorrelationRow] = []
    notes: list[str] = []
    models = list(dict.fromkeys(r["model"] for r in results))
    if "system" in levels:
        sys_rows = system_rows(results, metric_names)
        if sys_rows:
            found = analysis.analyze(sys_rows, metrics=list(metric_names), seed=seed, n_resamples=n_resamples, confidence=confidence)
            rows += found
            counts = {analysis.ALL: len(sys_rows), **{m: sum(1 for r in sys_rows if r["model"] == m) for m in models}}
            notes += correlation_notes(found, [analysis.ALL, *[m for m in models if counts[m]]], metric_names, "system", counts)
    if "example" in levels:
        items = example_items(results, metric_names)
        if items:
            found = analysis.example_level(items, metrics=list(metric_names), seed=seed, n_resamples=n_resamples, confidence=confidence)
            rows += found
            counts = {analysis.ALL: len(items), **{m: sum(1 for it in items if it[0] == m) for m in models}}
            notes += correlation_notes(found, [analysis.ALL, *[m for m in models if counts[m]]], metric_names, "example", counts)
    if "pairwise" in levels and pairs:
        items = pairwise_items(results, metric_names, pairs)
        if items:
            found = analysis.example_level(items, metrics=list(metric_names), seed=seed, n_resamples=n_resamples, confidence=confidence, level="pairwise")
            rows += found
            counts = {analysis.ALL: len(items), **{m: sum(1 for it in items if it[0] == m) for m in models}}
            notes += correlation_notes(found, [analysis.ALL, *[m for m in models if counts[m]]], metric_names, "pairwise", counts)
    return rows, notes


def pairwise_items(results: Sequence[Mapping[str, Any]], metric_names: Sequence[str], pairs: Sequence[PairOutcome]) -> list[tuple[str, str, str, dict[str, float], float]]:
    """``(model, "a vs b", example, {metric: score a - score b}, mean share of the win for a - 0.5)`` per judged pair."""
    score: dict[tuple[str, str, str, str], float] = {}
    for r in results:
        if r["metric"] in metric_names:
            for ex_id, s in r.get("examples") or []:
                score[(r["model"], r["config"], r["metric"], ex_id)] = float(s.value)
    judged: dict[tuple[str, str, str, str], list[float]] = {}
    for o in pairs:
        judged.setdefault((o.model, o.config_a, o.config_b, o.example_id), []).append(float(o.value))
    out = []
    for (model, a, b, ex), values in judged.items():
        diffs = {}
        for m in metric_names:
            x, y = score.get((model, a, m, ex)), score.get((model, b, m, ex))
            if x is not None and y is not None:
                diffs[m] = x - y
        out.append((model, f"{a} vs {b}", ex, diffs, sum(values) / len(values) - 0.5))
    return out


def sign_agreement(items: Sequence[tuple[str, str, str, Mapping[str, float], float]], metric_names: Sequence[str]) -> list[str]:
    """How often each metric prefers the side the humans prefer, over the pairs where both have a preference."""
    out = []
    for m in metric_names:
        both = [(d[m], h) for _, _, _, d, h in items if m in d and d[m] != 0 and h != 0]
        if both:
            agree = sum(1 for d, h in both if (d > 0) == (h > 0))
            out.append(f"Pairwise: {m} prefers the output the annotators preferred in {agree} of {len(both)} pairs where both prefer one ({agree / len(both):.0%}).")
    return out


def pairwise_summary(pairs: Sequence[PairOutcome], confidence: float) -> dict[str, Any]:
    """Win rates of every config against the config it was compared with, and a Bradley-Terry ranking per model (3+ configs)."""
    from . import pairwise

    if not pairs:
        return {"win_rates": [], "ranking": [], "n_ratings": 0}
    win = []
    for base in dict.fromkeys(o.config_b for o in pairs):
        win += [asdict(w) for w in pairwise.win_rates([o for o in pairs if o.config_b == base], base, confidence=confidence)]
    ranking = []
    for model in dict.fromkeys(o.model for o in pairs):
        mine = [o for o in pairs if o.model == model]
        if len({c for o in mine for c in (o.config_a, o.config_b)}) > 2:
            try:
                ranking += [asdict(b) for b in pairwise.bradley_terry(mine)]
            except ValueError:
                pass  # comparisons that do not connect the configs: no common scale
    return {
        "win_rates": win,
        "ranking": ranking,
        "n_ratings": len(pairs),
        "method": "win rate: share of the win for the config (ties count half), per example then averaged; "
        "Wilson score interval on the example-level mean; Bradley-Terry strengths (choix, log scale, mean 0 per model)",
    }


# --------------------------------------------------------------------------- agreement


_LEVEL_OF_SCALE = {"binary": "nominal", "likert": "ordinal"}


def agreement(ratings: Sequence[HumanRating], models: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Krippendorff's alpha per scale, overall and per model, where items have two or more annotators."""
    out: list[dict[str, Any]] = []
    scales = list(dict.fromkeys(r.scale for r in ratings))
    model_order = list(models) if models is not None else list(dict.fromkeys(r.model for r in ratings))
    for scale in scales:
        of_scale = [r for r in ratings if r.scale == scale]
        level = _LEVEL_OF_SCALE.get(scale, "interval")
        for scope in ["all", *model_order]:
            chosen = [r for r in of_scale if scope == "all" or r.model == scope]
            units: dict[str, dict[str, float]] = {}
            for r in chosen:
                units.setdefault(r.item, {})[r.annotator] = r.rating
            multi = {k: v for k, v in units.items() if len(v) >= 2}
            if not multi:
                continue
            alpha = st.krippendorff_alpha(list(multi.values()), level=level)
            out.append(
                {
                    "scope": scope,
                    "scale": scale,
                    "level": level,
                    "alpha": _opt(alpha),
                    "n_items": len(multi),
                    "n_items_rated": len(units),
                    "n_annotators": len({a for v in multi.values() for a in v}),
                    "n_ratings": sum(len(v) for v in multi.values()),
                }
            )
    return out


# --------------------------------------------------------------------------- build


def build(
    results: Sequence[Mapping[str, Any]],
    *,
    metrics: Mapping[str, Aggregation],
    configs: Sequence[tuple[str, Mapping[str, Any]]],
    defaults: Mapping[str, Any] | None = None,
    baseline: str | None = None,
    all_configs: Sequence[str] | None = None,
    ratings: Sequence[HumanRating] = (),
    seed: int = 0,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    experiment: str = "",
    labels: Mapping[str, str] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    with_correlations: bool = True,
    provenance: Mapping[str, Any] | None = None,
    pairs: Sequence[PairOutcome] = (),
) -> ReportData:
    """Intervals, paired tests against the baseline, agreement and correlations for ``results``.

    ``metrics`` maps every automatic metric name to how its value aggregates (see
    :class:`Aggregation`); ``configs`` are the (name, params) of the configs in the report,
    in sweep order; ``defaults`` the sweep's default params (for the baseline and the
    plots); ``ratings`` the raw human ratings (for agreement and Wilson intervals).
    """
    if n_resamples < 1:
        raise UserError(f"must be at least 1, got {n_resamples}", key="--resamples")
    if not 0.0 < confidence < 1.0:
        raise UserError(f"must be between 0 and 1, got {confidence}", key="--confidence")
    labels = dict(labels or {})
    higher = dict(higher_is_better or {})
    metric_names = list(metrics)
    base = choose_baseline(configs, defaults, baseline, all_configs=all_configs)
    base_name = base["config"]

    # binary human cells: every rating of the cell is binary
    scales_of_cell: dict[tuple[str, str], set[str]] = {}
    for r in ratings:
        scales_of_cell.setdefault((r.model, r.config), set()).add(r.scale)

    cells: list[CellStats] = []
    by_key: dict[tuple[str, str, str], CellStats] = {}
    examples_of: dict[tuple[str, str, str], list[tuple[str, ExampleScore]]] = {}
    for r in results:
        c = CellStats(r["model"], r["config"], r["metric"], _opt(r["value"]) if r["value"] is not None else None, int(r["n"]), error=r.get("error"))
        c.baseline = c.config == base_name
        key = (c.model, c.config, c.metric)
        examples_of[key] = list(r.get("examples") or [])
        if c.value is not None and examples_of[key]:
            scales = scales_of_cell.get((c.model, c.config))
            binary = scales == {"binary"} if ratings else True
            found = _interval(
                c.metric,
                metrics.get(c.metric, MEAN),
                [s for _, s in examples_of[key]],
                binary_human=binary,
                seed=cell_seed(seed, "ci", *key),
                n_resamples=n_resamples,
                confidence=confidence,
            )
            if found is not None:
                c.ci_low, c.ci_high, c.interval = _opt(found[0]), _opt(found[1]), found[2]
        cells.append(c)
        by_key[key] = c

    # paired comparisons against the baseline, Holm within (model, metric)
    comparisons: list[Comparison] = []
    alpha_level = 1.0 - confidence
    models = list(dict.fromkeys(c.model for c in cells))
    all_metrics = list(dict.fromkeys(c.metric for c in cells))
    config_order = [n for n, _ in configs]
    for model in models:
        for metric in all_metrics:
            base_cell = by_key.get((model, base_name, metric))
            family: list[tuple[CellStats, Comparison]] = []
            for config in config_order:
                if config == base_name or (model, config, metric) not in by_key:
                    continue
                cell = by_key[(model, config, metric)]
                comp = Comparison(model, metric, config, base_name, 0, None, None, None, None, None, None)
                if base_cell is None or base_cell.value is None:
                    comp.note = "the baseline has no value"
                elif cell.value is None:
                    comp.note = "no value"
                else:
                    a = dict(examples_of[(model, config, metric)])
                    b = dict(examples_of[(model, base_name, metric)])
                    shared = [e for e, _ in examples_of[(model, base_name, metric)] if e in a]
                    if len(shared) < 2:
                        comp.note = f"only {len(shared)} shared example{'s' if len(shared) != 1 else ''}"
                    else:
                        agg = metrics.get(metric, MEAN)
                        res = _paired(
                            metric,
                            agg,
                            [a[e] for e in shared],
                            [b[e] for e in shared],
                            seed=cell_seed(seed, "paired", model, config, metric),
                            n_resamples=n_resamples,
                            confidence=confidence,
                        )
                        if res is None:
                            comp.note = agg.note or "these scores cannot be resampled"
                        else:
                            comp.n = int(res["n"])
                            comp.diff, comp.ci_low, comp.ci_high = _opt(res["diff"]), _opt(res["ci_low"]), _opt(res["ci_high"])
                            comp.p_value = _opt(res["p_value"])
                family.append((cell, comp))
            ps = np.array([math.nan if comp.p_value is None else comp.p_value for _, comp in family], dtype=float)
            adjusted = st.holm(ps) if ps.size else ps
            for (cell, comp), p_adj in zip(family, adjusted):
                comp.p_holm = _opt(p_adj)
                comp.significant = None if comp.p_holm is None else bool(comp.p_holm < alpha_level)
                cell.diff, cell.diff_ci_low, cell.diff_ci_high = comp.diff, comp.ci_low, comp.ci_high
                cell.n_paired = comp.n or None
                cell.p_value, cell.p_holm, cell.significant = comp.p_value, comp.p_holm, comp.significant
                comparisons.append(comp)

    corr_rows: list[analysis.CorrelationRow] = []
    notes: list[str] = []
    if with_correlations:
        corr_rows, notes = correlate(results, metric_names, seed=seed, n_resamples=n_resamples, confidence=confidence, pairs=pairs)
    findings = analysis.findings(corr_rows) if corr_rows else []
    if with_correlations and pairs:
        findings += sign_agreement(pairwise_items(results, metric_names, pairs), metric_names)

    metric_info = [{"name": m, "label": labels.get(m, m), "higher_is_better": higher.get(m, True)} for m in metric_names]
    metric_info.append({"name": HUMAN, "label": labels.get(HUMAN, "Human"), "higher_is_better": True})
    statistics = {
        "confidence": confidence,
        "resamples": int(n_resamples),
        "seed": int(seed),
        "significance_level": alpha_level,
        "interval": "percentile bootstrap over the cell's examples (corpus value recomputed per resample for metrics with sufficient statistics, e.g. BLEU); Wilson for a binary human rate",
        "test": "paired bootstrap over the examples both configs share, two-sided",
        "correction": "Holm within each model and metric",
        "agreement": "Krippendorff's alpha: nominal for binary ratings, ordinal for Likert",
        "correlations": "Pearson, Spearman, Kendall tau-b; percentile bootstrap over rows (system level) or over examples (example level)",
    }
    return ReportData(
        experiment=experiment,
        metrics=metric_info,
        cells=cells,
        comparisons=comparisons,
        baseline=base,
        agreement=agreement(ratings, models) if ratings else [],
        correlations=corr_rows,
        findings=findings,
        correlation_notes=notes,
        sweep=sweep_info(configs, defaults),
        statistics=statistics,
        provenance=dict(provenance or {}),
        pairwise=pairwise_summary(pairs, confidence),
    )


# --------------------------------------------------------------------------- from recorded results


def aggregations(results: Results, plugins: Any) -> dict[str, Aggregation]:
    """How each metric of ``results`` aggregates, from what the run recorded.

    A mean needs nothing; a corpus-level or custom aggregate needs the metric's plugin
    class, created with the recorded settings (cheap: no model is loaded). Where the
    plugin is not installed, the metric's intervals are left out with a note.
    """
    out: dict[str, Aggregation] = {}
    settings = {m["name"]: m.get("settings") or {} for m in results.experiment.snapshot.get("metrics", [])}
    for m in results.metrics:
        kind = m.aggregation
        if kind == "mean":
            out[m.name] = MEAN
            continue
        try:
            metric = plugins.create("metric", m.name, settings.get(m.name, {}))
        except Exception as exc:  # not installed here: the recorded values still show
            out[m.name] = Aggregation("unknown", note=f"no interval: the metric plugin '{m.name}' is not available here ({exc})")
            continue
        if kind == "corpus" and type(metric).aggregation() == "corpus":
            out[m.name] = Aggregation("corpus", corpus=metric.corpus_values)
        else:
            out[m.name] = Aggregation("custom", aggregate=metric.aggregate)
    return out


def _rows(results: Results) -> list[dict[str, Any]]:
    """One row per recorded value; examples that could not be scored (NaN) are left out of every statistic (``n_missing`` counts them)."""
    return [
        {"model": v.model, "config": v.config, "metric": v.metric, "value": v.value, "n": v.n, "complete": v.complete,
         "error": v.error, "metric_key": v.metric_key, "examples": [(e, s) for e, s in v.examples if not s.missing],
         "n_missing": v.n_missing, "against": v.against}
        for v in results.values
    ]


def provenance(results: Results, *, seed: int, n_resamples: int, confidence: float) -> dict[str, Any]:
    """Where every number comes from, as the run recorded it: versions, hardware, seeds, metric identities, models, decoding."""
    exp = results.experiment
    snap = exp.snapshot
    last = results.runs[-1] if results.runs else None
    last_run = None
    if last:
        m = last.get("metadata") or {}
        last_run = {
            "command": last.get("command"),
            "status": last.get("status"),
            "started": _iso(last.get("started")),
            "finished": _iso(last.get("finished")),
            "hardware": m.get("hardware"),
            "versions": m.get("versions"),
            "seconds": m.get("seconds"),
        }
    models: dict[str, Any] = {}
    engines: dict[str, Any] = {}
    for cell in results.cells:
        info = dict(cell.model_info)
        models.setdefault(cell.model, {
            "adapter_plugin": info.get("adapter_plugin"),
            "base_model": info.get("base_model"),
            "template": info.get("template"),
            "identity": info.get("identity"),
            "finetune": info.get("finetune"),
            "lora_adapter_sha256": info.get("lora_adapter_sha256"),
        })
        engines[json.dumps(cell.engine, sort_keys=True)] = cell.engine
    from .. import __version__

    return {
        "harness": __version__,
        "generated": _iso(time.time()),
        "experiment_file": snap.get("registry"),
        "versions": (last_run or {}).get("versions") or {},
        "hardware": (last_run or {}).get("hardware") or {},
        "last_run": last_run,
        "seeds": {"experiment": exp.seed, "split": (snap.get("dataset") or {}).get("seed"), "sweep": snap.get("sweep_seed"), "report_bootstrap": seed},
        "statistics": {"resamples": n_resamples, "confidence": confidence},
        "dataset": snap.get("dataset"),
        "engine": {"name": (snap.get("engine") or {}).get("name"), "identity": list(engines.values())[0] if len(engines) == 1 else list(engines.values()),
                   "settings": (snap.get("engine") or {}).get("settings")},
        "metrics": {m.name: m.identity for m in results.metrics},
        "models": models,
        "decoding": {c.config: {"requested": c.params, "effective": c.decoding} for c in results.cells if c.model == (results.models or ("",))[0]},
    }


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def from_results(
    results: Results,
    plugins: Any,
    *,
    baseline: str | None = None,
    seed: int | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    with_correlations: bool = True,
    with_provenance: bool = True,
) -> ReportData:
    """:func:`build` on what a run recorded."""
    exp = results.experiment
    seed = exp.seed if seed is None else seed
    configs = [(c.name, dict(c.params)) for c in results.configs]
    ratings = [HumanRating(r.model, r.config, r.item, r.annotator, r.rating, r.scale) for r in results.ratings]
    return build(
        _rows(results),
        metrics=aggregations(results, plugins),
        configs=configs,
        defaults=exp.sweep_defaults or None,
        baseline=baseline,
        all_configs=[c.name for c in exp.configs],
        ratings=ratings,
        seed=seed,
        n_resamples=n_resamples,
        confidence=confidence,
        experiment=exp.name,
        labels={m.name: m.label for m in results.metrics},
        higher_is_better={m.name: m.higher_is_better for m in results.metrics},
        with_correlations=with_correlations,
        provenance=provenance(results, seed=seed, n_resamples=n_resamples, confidence=confidence) if with_provenance else None,
        pairs=results.pairs,
    )
