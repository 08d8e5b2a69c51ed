"""Benchmark: the report's statistics, hand-written vs the libraries (issue 9, item 4).

Three ways to compute each statistic, timed side by side in one run, on the same inputs and seeds:

* **hand-written**: the routines as they were before item 4 (``bench/stats_handwritten.py``, frozen).
* **library**: what the library offers directly, used the plain way: ``scipy.stats.bootstrap``
  (percentile method; for BLEU the per-example sufficient statistics as paired samples, summed per
  resample; for correlations ``pearsonr``/``spearmanr``/``kendalltau`` once per resample, the group
  bootstrap by materialising each resample's groups), ``scipy.stats.permutation_test``,
  ``scipy.stats.binomtest(...).proportion_ci``, ``statsmodels``' ``multipletests(method="holm")``,
  ``krippendorff.alpha``.
* **shipped**: ``harness.stats`` as it is now: the library where it serves; for corpus statistics and
  correlations ``scipy.stats.bootstrap`` drawing the resamples and taking the percentiles around our
  vectorised statistic (all resamples at once from how often each example was drawn); our own Holm.

Workloads are the sizes of the study: 13 configs x 3 models x 3 metrics (BLEU with sacrebleu's
sufficient statistics, two per-example means such as ROUGE-L and BERTScore) of 20, 100 or 1000
examples, 1000 resamples; correlations over 26-780 points (system level: one point per model x
config; example level: 20 rated examples per cell, resampled by example). The two real workloads run
``report_data.build`` (what ``harness report`` computes) and ``report_data.correlate`` (what
``harness analyze`` computes) on synthetic results of that shape, once with every routine swapped for
each of the three ways; every number of the report is compared between hand-written and shipped.

    .venv/bin/python bench/stats_libraries.py [--repeats 3] [--no-write]
    .venv/bin/python bench/stats_libraries.py --from-json bench/results/stats_libraries.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.metadata as md
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for _sub in ("", "bench", "plugins/metrics"):
    if str(ROOT / _sub) not in sys.path:
        sys.path.insert(0, str(ROOT / _sub))

import stats_handwritten as hand  # noqa: E402
from common import add_output_args, load, machine, rerender  # noqa: E402

from harness.report import data as rd  # noqa: E402
from harness.report import stats as shipped  # noqa: E402
from harness.api import ExampleScore  # noqa: E402

RESAMPLES = 1000
ORDER = 4


# ---------------------------------------------------------------------------- the library, used directly


def lib_bootstrap_ci(values, stat=np.mean, *, n_resamples=RESAMPLES, confidence=0.95, seed=0):
    from scipy.stats import bootstrap

    res = bootstrap((np.asarray(values, dtype=float),), stat, n_resamples=n_resamples, confidence_level=confidence,
                    method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _of_columns(statistic: Callable[[np.ndarray], np.ndarray], k: int, paired_configs: bool) -> Callable[..., np.ndarray]:
    """A scipy statistic over the k columns of sufficient statistics (2k with two configs): sum per resample, then the corpus value."""

    def value(cols, axis):
        sums = np.stack([c.sum(axis=axis) for c in cols], axis=-1)
        return np.asarray(statistic(sums.reshape(-1, k)), dtype=float).reshape(sums.shape[:-1])

    def of_columns(*cols, axis=-1):
        if paired_configs:
            return value(cols[:k], axis) - value(cols[k:], axis)
        return value(cols, axis)

    return of_columns


def lib_bootstrap_ci_sums(rows, statistic, *, n_resamples=RESAMPLES, confidence=0.95, seed=0):
    from scipy.stats import bootstrap

    m = np.asarray(rows, dtype=float)
    res = bootstrap(tuple(m.T), _of_columns(statistic, m.shape[1], False), paired=True, vectorized=True, n_resamples=n_resamples,
                    confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _test_result(res, observed):
    return {"diff": observed, "ci_low": float(res.confidence_interval.low), "ci_high": float(res.confidence_interval.high),
            "p_value": shipped._two_sided_bootstrap_p(res.bootstrap_distribution, observed)}


def lib_paired_bootstrap_test(a, b, *, statistic=np.mean, n_resamples=RESAMPLES, confidence=0.95, seed=0):
    from scipy.stats import bootstrap

    xa, xb = shipped._paired(a, b)
    res = bootstrap((xa, xb), lambda p, q, axis=-1: statistic(p, axis=axis) - statistic(q, axis=axis), paired=True, vectorized=True,
                    n_resamples=n_resamples, confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    return {**_test_result(res, float(statistic(xa)) - float(statistic(xb))), "n": int(xa.size)}


def lib_paired_bootstrap_test_sums(rows_a, rows_b, statistic, *, n_resamples=RESAMPLES, confidence=0.95, seed=0):
    from scipy.stats import bootstrap

    ma, mb = np.asarray(rows_a, dtype=float), np.asarray(rows_b, dtype=float)
    res = bootstrap((*ma.T, *mb.T), _of_columns(statistic, ma.shape[1], True), paired=True, vectorized=True, n_resamples=n_resamples,
                    confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    observed = float(statistic(ma.sum(axis=0, keepdims=True))[0]) - float(statistic(mb.sum(axis=0, keepdims=True))[0])
    return {**_test_result(res, observed), "n": int(ma.shape[0])}


def _coefficients(x, y):
    from scipy import stats

    if np.all(x == x[0]) or np.all(y == y[0]):
        return [math.nan] * 3
    return [stats.pearsonr(x, y)[0], stats.spearmanr(x, y)[0], stats.kendalltau(x, y)[0]]


def lib_correlation_cis(x, y, *, n_resamples=RESAMPLES, seed=0, confidence=0.95, groups=None):
    """scipy.stats.bootstrap with scipy's three coefficients per resample (pairs; or groups, materialised)."""
    import warnings

    from scipy.stats import DegenerateDataWarning, bootstrap

    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = ~(np.isnan(xs) | np.isnan(ys))
    xs, ys = xs[keep], ys[keep]
    result: dict[str, float] = dict(shipped.correlations(xs, ys))
    result["n"] = int(xs.size)
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)
        if groups is None:
            res = bootstrap((xs, ys), _coefficients, paired=True, vectorized=False, n_resamples=n_resamples,
                            confidence_level=confidence, method="percentile", rng=rng)
        else:
            _, inverse = np.unique(np.asarray(groups)[keep], return_inverse=True)
            members = [np.flatnonzero(inverse == g) for g in range(int(inverse.max()) + 1)]
            result["n_groups"] = len(members)

            def of_groups(drawn):
                rows = np.concatenate([members[int(g)] for g in drawn])
                return _coefficients(xs[rows], ys[rows])

            res = bootstrap((np.arange(len(members)),), of_groups, vectorized=False, n_resamples=n_resamples,
                            confidence_level=confidence, method="percentile", rng=rng)
    for i, name in enumerate(shipped.CORRELATIONS):
        result[f"{name}_ci_low"], result[f"{name}_ci_high"] = float(res.confidence_interval.low[i]), float(res.confidence_interval.high[i])
    return result


def lib_permutation_test(a, b, *, n_resamples=10_000, seed=0):
    from scipy.stats import permutation_test

    xa, xb = shipped._paired(a, b)
    res = permutation_test((xa, xb), lambda p, q, axis=-1: np.mean(p - q, axis=axis), permutation_type="samples", vectorized=True,
                           n_resamples=n_resamples, alternative="two-sided", rng=np.random.default_rng(seed))
    return {"diff": float(res.statistic), "p_value": float(res.pvalue), "n": int(xa.size)}


def lib_wilson_interval(successes, n, confidence=0.95):
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def lib_holm(p_values):
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, math.nan)
    valid = ~np.isnan(p)
    if valid.any():
        out[valid] = multipletests(p[valid], method="holm")[1]
    return out


def lib_krippendorff_alpha(ratings, level="nominal"):
    import krippendorff

    matrix = shipped._ratings_matrix(ratings)
    matrix = matrix[(~np.isnan(matrix)).sum(axis=1) >= 2]
    return float(krippendorff.alpha(reliability_data=matrix.T, level_of_measurement=level))


def have(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


# ---------------------------------------------------------------------------- inputs


def bleu_rows(rng: np.random.Generator, n: int, quality: float) -> np.ndarray:
    """sacrebleu-shaped sufficient statistics (hyp_len, ref_len, correct_1..4, total_1..4) of n examples."""
    hyp = rng.integers(3, 60, size=n)
    ref = np.maximum(1, hyp + rng.integers(-8, 9, size=n))
    totals = np.stack([np.maximum(hyp - k, 0) for k in range(ORDER)], axis=1)
    correct = rng.binomial(totals, np.clip(quality * np.array([1.0, 0.6, 0.4, 0.25]), 0, 1))
    return np.column_stack([hyp, ref, correct, totals]).astype(float)


def make_results(rng: np.random.Generator, n: int, models: int = 3, configs: int = 13, rated: int = 20, annotators: int = 3):
    """Recorded-results-shaped rows for BLEU, ROUGE-L, BERTScore and human ratings, and the raw ratings."""
    from harness_metrics.bleu import BleuMetric

    bleu = BleuMetric()
    ids = [f"ex{i:04d}" for i in range(n)]
    results, ratings = [], []
    for m in range(models):
        for c in range(configs):
            model, config = f"model-{m}", f"config-{c:02d}"
            q = float(np.clip(0.55 + 0.1 * m - 0.02 * abs(c - 6) + rng.normal(0, 0.02), 0.05, 0.95))
            rows = bleu_rows(rng, n, q)
            bleu_scores = [ExampleScore(0.0, tuple(r)) for r in rows]
            rouge = np.clip(q + rng.normal(0, 0.15, size=n), 0, 1)
            bert = np.clip(0.8 + 0.1 * q + rng.normal(0, 0.03, size=n), 0, 1)
            truth = np.clip(np.round(1 + 4 * rouge[:rated] + rng.normal(0, 0.7, size=rated)), 1, 5)
            per_item = []
            for i in range(rated):
                votes = [float(np.clip(truth[i] + (rng.integers(-1, 2) if rng.random() < 0.3 else 0), 1, 5)) for _ in range(annotators)]
                ratings += [rd.HumanRating(model, config, f"{model}/{config}/{ids[i]}", f"a{k}", v, "likert") for k, v in enumerate(votes)]
                per_item.append(ExampleScore((float(np.mean(votes)) - 1) / 4))
            for metric, scores, value in (
                ("bleu", bleu_scores, bleu.aggregate(bleu_scores)),
                ("rouge_l", [ExampleScore(float(v)) for v in rouge], float(rouge.mean())),
                ("bertscore", [ExampleScore(float(v)) for v in bert], float(bert.mean())),
                ("human", per_item, float(np.mean([s.value for s in per_item]))),
            ):
                examples = list(zip(ids, scores))
                results.append({"model": model, "config": config, "metric": metric, "value": value, "n": len(examples), "complete": True,
                                "error": None, "metric_key": "k", "examples": examples})
    return results, ratings, {"bleu": rd.Aggregation("corpus", corpus=bleu.corpus_values), "rouge_l": rd.MEAN, "bertscore": rd.MEAN}


# ---------------------------------------------------------------------------- timing


def side_by_side(ways: dict[str, Callable[[], Any]], repeats: int, *, once: tuple[str, ...] = (), warm_up: bool = True) -> tuple[dict[str, float], dict[str, Any]]:
    """Median seconds per way over ``repeats`` rounds, each round timing every way in turn (so a busy spell
    of the shared machine hits them alike), after one untimed call each; ways in ``once`` run in the first
    round only. A garbage collection precedes every call. Returns the medians and each way's last result."""
    results = {way: fn() for way, fn in ways.items()} if warm_up else {}
    times: dict[str, list[float]] = {way: [] for way in ways}
    for round_ in range(repeats):
        for way, fn in ways.items():
            if way in once and round_ > 0:
                continue
            gc.collect()
            t0 = time.perf_counter()
            results[way] = fn()
            times[way].append(time.perf_counter() - t0)
    return {way: statistics.median(t) for way, t in times.items()}, results


def numbers(obj: Any, prefix: str = "") -> dict[str, float]:
    """Every float in a nested result, by path (None counts as nan)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(numbers(v, f"{prefix}.{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(numbers(v, f"{prefix}[{i}]"))
    elif isinstance(obj, (float, np.floating)) or obj is None:
        out[prefix] = math.nan if obj is None else float(obj)
    return out


def max_diff(a: Any, b: Any) -> float:
    """Largest |a - b| over the numbers both hold (inf if one is nan where the other is not)."""
    na, nb = numbers(a), numbers(b)
    worst = 0.0
    for k in na.keys() & nb.keys():
        x, y = na[k], nb[k]
        if math.isnan(x) != math.isnan(y):
            return math.inf
        if not math.isnan(x):
            worst = max(worst, abs(x - y))
    return worst


def kernel_rows(repeats: int) -> list[dict[str, Any]]:
    """Each routine alone at the study's sizes: seconds per call, three ways, and how far the answers are apart."""
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    from harness_metrics.bleu import BleuMetric

    statistic = BleuMetric().corpus_values

    def add(routine: str, size: str, calls: int, ways: dict[str, Callable[[], Any]], note: str = "") -> None:
        row: dict[str, Any] = {"routine": routine, "size": size, "calls": calls, "note": note, "seconds": {}, "diff": {}}
        row["seconds"], results = side_by_side(ways, repeats)
        for way in ways:
            if way != "hand-written" and "hand-written" in results:
                row["diff"][way] = max_diff(results["hand-written"], results[way])
        rows.append(row)
        print(f"{routine:32s} {size:22s} " + "  ".join(f"{w} {s * 1e3:9.2f} ms" for w, s in row["seconds"].items()), flush=True)

    for n in (20, 100, 1000):
        x = rng.beta(5, 3, size=n)
        y = np.clip(x + rng.normal(0.02, 0.1, size=n), 0, 1)
        add("interval, mean", f"{n} examples", 1, {
            "hand-written": lambda: hand.bootstrap_ci(x, seed=1),
            "library": lambda: lib_bootstrap_ci(x, seed=1),
            "shipped": lambda: shipped.bootstrap_ci(x, seed=1)})
        add("paired test, mean", f"{n} examples", 1, {
            "hand-written": lambda: hand.paired_bootstrap_test(y, x, seed=1),
            "library": lambda: lib_paired_bootstrap_test(y, x, seed=1),
            "shipped": lambda: shipped.paired_bootstrap_test(y, x, seed=1)})
        ma, mb = bleu_rows(rng, n, 0.6), bleu_rows(rng, n, 0.55)
        add("interval, corpus BLEU", f"{n} examples", 1, {
            "hand-written": lambda: hand.bootstrap_ci_sums(ma, statistic, seed=1),
            "library": lambda: lib_bootstrap_ci_sums(ma, statistic, seed=1),
            "shipped": lambda: shipped.bootstrap_ci_sums(ma, statistic, seed=1)})
        add("paired test, corpus BLEU", f"{n} examples", 1, {
            "hand-written": lambda: hand.paired_bootstrap_test_sums(ma, mb, statistic, seed=1),
            "library": lambda: lib_paired_bootstrap_test_sums(ma, mb, statistic, seed=1),
            "shipped": lambda: shipped.paired_bootstrap_test_sums(ma, mb, statistic, seed=1)})
        add("permutation test (10,000)", f"{n} examples", 1, {
            "hand-written": lambda: hand.paired_permutation_test(y, x, seed=1),
            "library": lambda: lib_permutation_test(y, x, seed=1)},
            "removed: nothing called it; p-values differ by Monte Carlo error")

    for n, groups in ((26, None), (39, None), (200, None), (260, 20), (780, 20)):
        x = rng.normal(size=n)
        y = np.round(np.clip(3 + x + rng.normal(0, 1, size=n), 1, 5))  # Likert-like: many ties
        g = None if groups is None else np.arange(n) % groups
        size = f"{n} points" + ("" if groups is None else f", {groups} groups")
        add("correlations + 3 intervals", size, 1, {
            "hand-written": lambda: hand.correlation_cis(x, y, seed=1, groups=g),
            "library": lambda: lib_correlation_cis(x, y, seed=1, groups=g),
            "shipped": lambda: shipped.correlation_cis(x, y, seed=1, groups=g)})

    ks = rng.integers(0, 40, size=39)
    add("Wilson interval", "39 cells of 40", 39, {
        "hand-written": lambda: [hand.wilson_interval(int(k), 40) for k in ks],
        "library": lambda: [lib_wilson_interval(int(k), 40) for k in ks],
        "shipped": lambda: [shipped.wilson_interval(int(k), 40) for k in ks]})
    families = [rng.random(12) ** 2 for _ in range(12)]
    holm_ways = {"hand-written": lambda: [shipped.holm(p) for p in families], "shipped": lambda: [shipped.holm(p) for p in families]}
    if have("statsmodels"):
        holm_ways["library"] = lambda: [lib_holm(p) for p in families]
    add("Holm", "12 families of 12", 12, holm_ways,
        "statsmodels runs gc.collect() on every call: its time grows with the objects alive in the process")
    for level, scale in (("ordinal", 5), ("nominal", 2)):
        units = [[float(v) for v in rng.integers(1 if scale == 5 else 0, scale + (1 if scale == 5 else 0), size=3)] for _ in range(780)]
        add(f"Krippendorff's alpha, {level}", "780 items x 3 raters", 1, {
            "hand-written": lambda: hand.krippendorff_alpha(units, level),
            "library": lambda: lib_krippendorff_alpha(units, level),
            "shipped": lambda: shipped.krippendorff_alpha(units, level)})
    return rows


# ---------------------------------------------------------------------------- the commands' workloads


WAYS: dict[str, dict[str, Callable[..., Any]]] = {
    "hand-written": {"bootstrap_ci": hand.bootstrap_ci, "bootstrap_ci_sums": hand.bootstrap_ci_sums,
                     "paired_bootstrap_test": hand.paired_bootstrap_test, "paired_bootstrap_test_sums": hand.paired_bootstrap_test_sums,
                     "wilson_interval": hand.wilson_interval, "krippendorff_alpha": hand.krippendorff_alpha,
                     "correlation_cis": hand.correlation_cis},
    "library": {"bootstrap_ci": lib_bootstrap_ci, "bootstrap_ci_sums": lib_bootstrap_ci_sums,
                "paired_bootstrap_test": lib_paired_bootstrap_test, "paired_bootstrap_test_sums": lib_paired_bootstrap_test_sums,
                "wilson_interval": lib_wilson_interval, "krippendorff_alpha": lib_krippendorff_alpha,
                "correlation_cis": lib_correlation_cis, **({"holm": lib_holm} if have("statsmodels") else {})},
    "shipped": {},
}


@contextlib.contextmanager
def swapped(way: str) -> Iterator[None]:
    """``harness.stats`` with its routines replaced by ``way``'s (report_data and analysis call them through the module)."""
    saved = {name: getattr(shipped, name) for name in WAYS[way]}
    try:
        for name, fn in WAYS[way].items():
            setattr(shipped, name, fn)
        yield
    finally:
        for name, fn in saved.items():
            setattr(shipped, name, fn)


def command_rows(repeats: int) -> list[dict[str, Any]]:
    rows = []
    for n in (100, 1000):
        results, ratings, metrics = make_results(np.random.default_rng(n), n)
        configs = [(f"config-{c:02d}", {"i": c}) for c in range(13)]
        names = ["bleu", "rouge_l", "bertscore"]
        work = {
            "report": lambda: rd.build(results, metrics=metrics, configs=configs, ratings=ratings, seed=0, n_resamples=RESAMPLES),
            "analyze": lambda: rd.correlate(results, names, seed=0, n_resamples=RESAMPLES, confidence=0.95),
        }
        for command, fn in work.items():
            row: dict[str, Any] = {"command": command, "examples": n, "seconds": {}, "diff": {}}
            fn()  # imports and first-call costs, once

            def way_of(name: str, fn: Callable[[], Any] = fn) -> Callable[[], Any]:
                def call() -> Any:
                    with swapped(name):
                        return fn()

                return call

            row["seconds"], out = side_by_side({way: way_of(way) for way in WAYS}, repeats, once=("library",), warm_up=False)
            for way in ("library", "shipped"):
                row["diff"][way] = max_diff(out["hand-written"], out[way])
            rows.append(row)
            print(f"{command:8s} {n:5d} examples  " + "  ".join(f"{w} {s:7.2f} s" for w, s in row["seconds"].items())
                  + f"  max|diff| shipped {row['diff']['shipped']:.1e}", flush=True)
    return rows


# ---------------------------------------------------------------------------- install and import costs


def closure(name: str, seen: set[str] | None = None) -> set[str]:
    """The installed distributions ``name`` needs (its requirements, recursively; extras left out)."""
    from packaging.requirements import Requirement

    seen = set() if seen is None else seen
    key = name.lower().replace("_", "-")
    if key in seen:
        return seen
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        return seen
    seen.add(key)
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            closure(req.name, seen)
    return seen


def size_mb(names: set[str]) -> float:
    total = 0
    for name in names:
        for f in md.distribution(name).files or []:
            with contextlib.suppress(OSError):
                total += f.locate().stat().st_size
    return total / 1e6


def import_seconds(statement: str, repeats: int = 3) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    return statistics.median(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) for _ in range(repeats))


def dependency_rows() -> list[dict[str, Any]]:
    core = set().union(*(closure(p) for p in ("numpy", "scipy", "pluggy", "click", "rich")))
    out = []
    for package, statement in (("scipy", "import scipy.stats"), ("krippendorff", "import krippendorff"),
                               ("statsmodels", "from statsmodels.stats.multitest import multipletests")):
        if not have(package):
            continue
        extra = closure(package) - (core if package != "scipy" else set())
        out.append({"package": package, "version": md.version(package), "adds": sorted(extra), "size_mb": round(size_mb(extra), 1),
                    "import_s": round(import_seconds(statement), 2)})
    return out


# ---------------------------------------------------------------------------- output


def _ms(s: float | None) -> str:
    return "—" if s is None else f"{s * 1e3:,.1f}"


def _diff(d: float | None) -> str:
    return "—" if d is None else ("0" if d == 0 else f"{d:.0e}")


def render(r: dict[str, Any]) -> str:
    m, v = r["machine"], r["versions"]
    lines = [
        f"Measured {r['date']} on {m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, Python {m['python']}, a shared machine "
        f"(load average {r['load'][0][0]} at the start, {r['load'][1][0]} at the end); "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + f". {RESAMPLES} resamples throughout; each time is the median of {r['repeats']} rounds that time the three ways in turn,"
        " after an untimed call of each (the commands with the library's routines: one call). \"max |Δ| vs hand-written\": the largest difference of any"
        " returned number on the same seed.",
        "",
        "| routine | size | hand-written (ms) | library (ms) | shipped (ms) | library ÷ hand-written | max \\|Δ\\| library | max \\|Δ\\| shipped |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["kernels"]:
        s, d = row["seconds"], row["diff"]
        ratio = f"{s['library'] / s['hand-written']:.1f}×" if "library" in s else "—"
        lines.append(f"| {row['routine']} | {row['size']} | {_ms(s.get('hand-written'))} | {_ms(s.get('library'))} | {_ms(s.get('shipped'))} | "
                     f"{ratio} | {_diff(d.get('library'))} | {_diff(d.get('shipped'))} |")
    lines += [
        "",
        "The commands' statistics on synthetic results of the study's shape (13 configs × 3 models; BLEU, ROUGE-L, BERTScore; "
        "20 examples per cell rated by 3 annotators on a Likert scale): `report` = `report_data.build` (39 × 4 intervals, "
        "36 × 4 paired tests, Holm, agreement, system- and example-level correlations), `analyze` = `report_data.correlate`.",
        "",
        "| command | examples per cell | hand-written (s) | library (s) | shipped (s) | shipped ÷ hand-written | max \\|Δ\\| of every number, library | max \\|Δ\\| of every number, shipped |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["commands"]:
        s = row["seconds"]
        lines.append(f"| {row['command']} | {row['examples']} | {s['hand-written']:.2f} | {s['library']:.2f} | {s['shipped']:.2f} | "
                     f"{s['shipped'] / s['hand-written']:.2f}× | {_diff(row['diff']['library'])} | {_diff(row['diff']['shipped'])} |")
    if r.get("dependencies"):
        lines += ["", "| package | version | adds to the core install | size (MB) | import (s) |", "|---|---|---|---:|---:|"]
        for d in r["dependencies"]:
            adds = ", ".join(d["adds"]) if d["package"] != "scipy" else "(already core)"
            lines.append(f"| {d['package']} | {d['version']} | {adds} | {d['size_mb']} | {d['import_s']} |")
    return "\n".join(lines)


def write_section(table: str) -> None:
    from common import write_section as write_marked

    write_marked(
        "stats-libraries",
        table,
        "## The report's statistics: hand-written vs the libraries (CPU; issue 9, item 4)\n\n"
        "Script: `bench/stats_libraries.py`: every statistic of `harness report` and `harness analyze` three ways, side by side "
        "in one run on the same inputs and seeds — **hand-written** (the routines before item 4, frozen in "
        "`bench/stats_handwritten.py`), **library** (scipy.stats `bootstrap`/`permutation_test`/`binomtest`, statsmodels' "
        "`multipletests`, `krippendorff.alpha`, each used the plain way: BLEU's sufficient statistics as paired samples summed "
        "per resample, correlations computed by `pearsonr`/`spearmanr`/`kendalltau` once per resample) and **shipped** "
        "(`harness.stats` now). Raw numbers: `bench/results/stats_libraries.json`.\n\n",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "stats_libraries.json"))
    ap.add_argument("--skip-commands", action="store_true", help="only the routines (quick)")
    add_output_args(ap)
    args = ap.parse_args()
    if rerender(args, render, write_section):
        return
    start = load()
    kernels = kernel_rows(args.repeats)
    commands = [] if args.skip_commands else command_rows(args.repeats)
    packages = ("numpy", "scipy", "statsmodels", "krippendorff", "sacrebleu")
    r = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "load": [start, load()], "repeats": args.repeats,
         "versions": {p: md.version(p) for p in packages if have(p)}, "kernels": kernels, "commands": commands,
         "dependencies": dependency_rows()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2) + "\n")
    table = render(r)
    print(table)
    if not args.no_write:
        write_section(table)


if __name__ == "__main__":
    main()
