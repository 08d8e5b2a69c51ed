"""How many test examples and human ratings a claim needs (``harness plan``), from a pilot run or stated assumptions.

* **Test examples** to detect a difference ``delta`` between a config and the baseline with a paired
  test at level ``alpha`` and power ``power`` (Miller 2024, "Adding Error Bars to Evals"):
  ``n = ceil((z(1 - alpha/2) + z(power))^2 * s_d^2 / delta^2)``, ``s_d`` the standard deviation
  (ddof 1) of the per-example differences; and the difference the current ``n`` can detect,
  ``(z(1 - alpha/2) + z(power)) * s_d / sqrt(n)``.
* **Human ratings** per cell for a ``1 - alpha`` interval of half-width ``w``: ratings only,
  ``ceil((z(1 - alpha/2) * sd / w)^2)``; with PPI, ppi_py's power analysis (``ppi_mean_power`` on the
  pilot's ratings and predictor, ``ppi_power`` for a stated correlation): the cheapest pair of
  ratings and predicted examples (a prediction costing ``prediction_cost`` ratings) whose PPI
  estimate is worth as many plain ratings.
* **Ratings to estimate a metric-human correlation** to ``± w`` (Fisher z: the interval
  ``tanh(atanh(r) ± z / sqrt(n - 3))``).

Everything is read from what a pilot run recorded (:class:`harness.report.results.Results`), or
from ``--sd`` / ``--rho`` when there is no pilot (or to override it).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import UserError

__all__ = [
    "Targets",
    "PairedRow",
    "RatingsRow",
    "CorrelationRow",
    "Plan",
    "examples_needed",
    "detectable",
    "power",
    "ratings_needed",
    "ratings_with_ppi",
    "ratings_for_correlation",
    "paired_rows",
    "from_results",
    "assumed",
    "render",
]

HUMAN = "human"
#: the fewest points a pilot's standard deviation or correlation is taken from
MIN_PILOT = 3


@dataclass(frozen=True)
class Targets:
    """What the plan is for: a paired test at ``alpha`` with ``power`` against a difference ``delta``; human
    intervals of half-width ``half_width``; correlations to ``± corr_half_width``; one prediction costs
    ``prediction_cost`` human ratings (ppi_py's cost model)."""

    alpha: float = 0.05
    power: float = 0.8
    delta: float = 0.05
    half_width: float = 0.05
    corr_half_width: float = 0.1
    prediction_cost: float = 0.01

    def check(self) -> None:
        for key, value, low, high in (
            ("--alpha", self.alpha, 0.0, 1.0), ("--power", self.power, 0.0, 1.0), ("--half-width", self.half_width, 0.0, 1.0),
            ("--corr-half-width", self.corr_half_width, 0.0, 1.0),
        ):
            if not low < value < high:
                raise UserError(f"must be between {low:g} and {high:g} (exclusive), got {value:g}", key=key)
        if not self.delta > 0:
            raise UserError(f"must be above 0, got {self.delta:g}", key="--delta")
        if self.prediction_cost < 0:
            raise UserError(f"must be at least 0, got {self.prediction_cost:g}", key="--prediction-cost")


# --------------------------------------------------------------------------- formulas


def _z(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))


def _z_sum(alpha: float, power_: float) -> float:
    return _z(1 - alpha / 2) + _z(power_)


def examples_needed(sd: float, delta: float, *, alpha: float = 0.05, power_: float = 0.8) -> int:
    """Examples a paired test at ``alpha`` needs to detect ``delta`` with probability ``power_`` (at least 2)."""
    if delta <= 0:
        raise ValueError("delta must be above 0")
    return max(2, math.ceil((_z_sum(alpha, power_) * sd / delta) ** 2 - 1e-9))


def detectable(sd: float, n: int, *, alpha: float = 0.05, power_: float = 0.8) -> float:
    """The smallest difference ``n`` paired examples detect with probability ``power_`` at ``alpha``."""
    return _z_sum(alpha, power_) * sd / math.sqrt(n) if n > 0 else math.inf


def power(sd: float, delta: float, n: int, *, alpha: float = 0.05) -> float:
    """The probability that a two-sided paired z-test at ``alpha`` on ``n`` examples rejects when the true difference is ``delta``."""
    from scipy.stats import norm

    if sd <= 0:
        return 1.0 if delta != 0 else alpha
    shift = abs(delta) * math.sqrt(n) / sd
    z = _z(1 - alpha / 2)
    return float(norm.sf(z - shift) + norm.cdf(-z - shift))


def ratings_needed(sd: float, half_width: float, *, alpha: float = 0.05) -> int:
    """Plain ratings for a ``1 - alpha`` normal interval of half-width ``half_width`` (at least 2)."""
    return max(2, math.ceil((_z(1 - alpha / 2) * sd / half_width) ** 2 - 1e-9))


def ratings_with_ppi(
    n_classical: int,
    test_size: int | None = None,
    *,
    rho: float | None = None,
    y: Sequence[float] | None = None,
    yhat: Sequence[float] | None = None,
    prediction_cost: float = 0.01,
) -> dict[str, Any]:
    """The cheapest PPI design worth ``n_classical`` plain ratings (ppi_py's power analysis): ratings and predictions.

    From a pilot's ratings ``y`` and predictions ``yhat`` (``ppi_py.ppi_mean_power``, which measures
    their correlation) or a stated correlation ``rho`` (``ppi_py.ppi_power``), a prediction costing
    ``prediction_cost`` ratings; ``test_size`` caps the examples predicted (None: as many as is
    cheapest). Returns ``n`` (ratings), ``n_predicted`` (examples with a prediction, rated ones
    included), ``effective_n`` and ``rho`` (ppi_py's PPI correlation). A correlation of 0 or below
    gains nothing: then ``n = n_classical``. ``n_classical`` above ``test_size`` cannot be reached
    (PPI is worth at most every example rated).
    """
    from .ppi import load_ppi_py

    ppi_py = load_ppi_py()
    if test_size is not None and n_classical > test_size:
        raise ValueError(f"{n_classical} plain ratings cannot be matched on {test_size} test examples")
    if rho is None:
        a, b = np.asarray(y, dtype=float), np.asarray(yhat, dtype=float)
        if a.size < MIN_PILOT or np.ptp(a) == 0 or np.ptp(b) == 0:
            rho = 0.0
        else:
            result = ppi_py.ppi_mean_power(a, b, cost_Y=1.0, cost_Yhat=prediction_cost, effective_n=n_classical, n_max=test_size)
            rho = float(result["ppi_corr"])
    if rho <= 0:
        return {"n": n_classical, "n_predicted": n_classical, "effective_n": n_classical, "rho": rho}
    result = ppi_py.ppi_power(min(rho, 0.999), cost_X=0.0, cost_Y=1.0, cost_Yhat=prediction_cost, effective_n=n_classical, n_max=test_size)
    n = int(result["n"])
    return {"n": n, "n_predicted": n + int(result["N"]), "effective_n": int(result["effective_n"]), "rho": rho}


def ratings_for_correlation(r: float, half_width: float, *, alpha: float = 0.05) -> int:
    """The fewest rated items whose ``1 - alpha`` Fisher-z interval for a correlation ``r`` is at most ``2 * half_width`` wide."""
    z = _z(1 - alpha / 2)
    centre = math.atanh(max(-0.999999, min(0.999999, r)))

    def width(n: int) -> float:
        se = 1.0 / math.sqrt(n - 3)
        return math.tanh(centre + z * se) - math.tanh(centre - z * se)

    low, high = 4, 4
    while width(high) > 2 * half_width:
        low, high = high, high * 2
        if high > 10**9:
            return high
    while low < high:
        mid = (low + high) // 2
        if width(mid) <= 2 * half_width:
            high = mid
        else:
            low = mid + 1
    return high


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class PairedRow:
    """One config against the baseline on one metric: the pilot's ``n`` shared examples and the spread ``sd`` of their differences.

    ``unit``: "examples" (test examples), or "ratings" (rated examples per cell, for ``human``).
    ``diff``: the pilot's observed mean difference.
    """

    model: str
    metric: str
    config: str
    baseline: str
    n: int | None
    sd: float
    n_needed: int
    detectable: float | None
    diff: float | None = None
    unit: str = "examples"
    source: str = "pilot"


@dataclass(frozen=True)
class RatingsRow:
    """Human ratings per cell for an interval of half-width ``w``: ratings only, and with PPI given the predictor's correlation ``rho``."""

    model: str
    sd: float
    n_rated: int | None  # ratings per cell in the pilot (median over the model's rated cells)
    n_needed: int
    predictor: str | None
    rho: float | None
    n_ppi: int | None
    n_predicted: int | None  # examples with a prediction (rated ones included) PPI uses
    source: str = "pilot"
    note: str | None = None

    @property
    def test_size(self) -> int:
        """The test examples the row needs: the predicted ones with PPI, else one per rating."""
        return self.n_predicted if self.n_ppi is not None and self.n_predicted else self.n_needed


@dataclass(frozen=True)
class CorrelationRow:
    """Ratings to estimate ``metric``'s example-level correlation with humans to ``± w`` (Fisher z)."""

    metric: str
    r: float
    n: int | None
    n_needed: int
    source: str = "pilot"


@dataclass(frozen=True)
class Plan:
    targets: Targets
    source: str  # "pilot: <store>" or "assumptions"
    test_size: int | None  # the current test set
    paired: tuple[PairedRow, ...] = ()
    ratings: tuple[RatingsRow, ...] = ()
    correlations: tuple[CorrelationRow, ...] = ()
    registry: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _sd(values: Sequence[float]) -> float | None:
    return float(statistics.stdev(values)) if len(values) >= 2 else None


def _per_example(results: Any) -> dict[tuple[str, str, str], dict[str, float]]:
    """(model, config, metric) -> example id -> score (missing scores left out; ``human``: the mean rating on 0-1)."""
    return {(v.model, v.config, v.metric): {e: float(s.value) for e, s in v.examples if not s.missing} for v in results.values}


def paired_rows(results: Any, baseline: str | None, targets: Targets, *, metrics: Sequence[str] | None = None) -> list[PairedRow]:
    """Every (model, metric, config) against ``baseline`` in ``results``: the spread of the per-example differences and what it allows."""
    if baseline is None:
        return []
    per = _per_example(results)
    names = list(metrics) if metrics is not None else [*results.metric_names, HUMAN]
    out = []
    for model in results.models:
        for metric in names:
            base = per.get((model, baseline, metric))
            if not base:
                continue
            for config in (c.name for c in results.configs):
                mine = per.get((model, config, metric))
                if config == baseline or not mine:
                    continue
                shared = [e for e in base if e in mine]
                diffs = [mine[e] - base[e] for e in shared]
                sd = _sd(diffs)
                if sd is None:
                    continue
                n = len(diffs)
                out.append(PairedRow(
                    model, metric, config, baseline, n, sd,
                    examples_needed(sd, targets.delta, alpha=targets.alpha, power_=targets.power),
                    detectable(sd, n, alpha=targets.alpha, power_=targets.power), float(np.mean(diffs)),
                    "ratings" if metric == HUMAN else "examples",
                ))
    return out


def _rated_items(results: Any, model: str | None) -> tuple[list[float], dict[str, list[float]]]:
    """Every rated generation once (of ``model``, or all): its human score and each metric's score (nan: none)."""
    per = _per_example(results)
    gens = {(c.model, c.config): dict(c.keys) for c in results.cells}
    seen: set[str] = set()
    human: list[float] = []
    scores: dict[str, list[float]] = {m: [] for m in results.metric_names}
    for (m, c), gen_of in gens.items():
        if model is not None and m != model:
            continue
        for e, y in (per.get((m, c, HUMAN)) or {}).items():
            g = gen_of.get(e)
            if g is None or g in seen:
                continue
            seen.add(g)
            human.append(y)
            for name in results.metric_names:
                scores[name].append((per.get((m, c, name)) or {}).get(e, math.nan))
    return human, scores


def _pearson(x: Sequence[float], y: Sequence[float]) -> tuple[float | None, int]:
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]
    if a.size < MIN_PILOT or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None, int(a.size)
    return float(np.corrcoef(a, b)[0, 1]), int(a.size)


def from_results(
    results: Any,
    targets: Targets,
    *,
    baseline: str | None,
    predictor: str | None = None,
    sd: float | None = None,
    rho: float | None = None,
) -> Plan:
    """The plan from a pilot run's records; ``sd`` / ``rho`` override the pilot's spread of differences and predictor correlation."""
    targets.check()
    test_size = int((results.experiment.snapshot.get("dataset") or {}).get("test_size") or 0) or None
    cell_sizes = [len(c.keys) for c in results.cells]
    current_n = max(cell_sizes) if cell_sizes else test_size
    notes: list[str] = []
    if sd is not None:
        paired = [_assumed_paired(sd, current_n, targets)]
    else:
        paired = paired_rows(results, baseline, targets)
        if any(r.metric in _corpus_metrics(results) for r in paired):
            notes.append(
                "For a corpus-level metric (" + ", ".join(sorted(_corpus_metrics(results) & {r.metric for r in paired}))
                + ") s_d is taken from its per-example (sentence-level) scores; the report's corpus-level test is close to it, not equal."
            )
    automatic = [r.n_needed for r in paired if r.unit == "examples"]

    ratings_pilot: list[tuple[str, float, int | None, str | None, float | None, list[float], list[float]]] = []
    if results.has_human:
        for model in results.models:
            human, scores = _rated_items(results, model)
            rating_sd = _sd(human)
            if rating_sd is None or len(human) < MIN_PILOT:
                continue
            rated_per_cell = [v.n for v in results.values if v.model == model and v.metric == HUMAN and v.n]
            chosen, r = predictor, None
            if chosen is not None:
                r, _ = _pearson(scores.get(chosen, []), human)
            else:
                for name, xs in scores.items():
                    found, _ = _pearson(xs, human)
                    if found is not None and found > 0 and (r is None or found > r):
                        chosen, r = name, found
            if rho is not None:
                chosen, r = chosen or "(assumed)", rho
            xs = scores.get(chosen, [])
            ok = [i for i, x in enumerate(xs) if not math.isnan(x)]
            ratings_pilot.append((model, rating_sd, int(statistics.median(rated_per_cell)) if rated_per_cell else None, chosen, r,
                                  [human[i] for i in ok], [xs[i] for i in ok]))
    ratings = []
    for model, rating_sd, n_rated, chosen, r, ys, xs in ratings_pilot:
        n0 = ratings_needed(rating_sd, targets.half_width, alpha=targets.alpha)
        row = RatingsRow(model, rating_sd, n_rated, n0, chosen, r, None, None)
        if chosen is not None and r is not None:
            found = ratings_with_ppi(n0, rho=rho, y=None if rho is not None else ys,
                                     yhat=None if rho is not None else xs, prediction_cost=targets.prediction_cost)
            row = _replace(row, n_ppi=found["n"], n_predicted=found["n_predicted"], rho=found["rho"] if rho is None else rho)
        elif chosen is None:
            row = _replace(row, note="no metric correlates positively with the ratings: PPI would not help")
        ratings.append(row)

    correlations = []
    if rho is not None:
        correlations.append(CorrelationRow(predictor or "(assumed)", rho, None, ratings_for_correlation(rho, targets.corr_half_width, alpha=targets.alpha), "assumed"))
    elif results.has_human:
        human, scores = _rated_items(results, None)
        for name, xs in scores.items():
            r, n = _pearson(xs, human)
            if r is not None:
                correlations.append(CorrelationRow(name, r, n, ratings_for_correlation(r, targets.corr_half_width, alpha=targets.alpha)))
    if not results.has_human:
        notes.append("The pilot has no human ratings: the ratings lines need some (harness human export / serve, then import), or --rho.")
    notes += _holm_note(paired, targets.alpha)
    registry = _registry(max([*automatic, *(r.test_size for r in ratings)], default=0) or None, ratings, predictor)
    return Plan(targets, f"pilot: {results.store_path}", test_size, tuple(paired), tuple(ratings), tuple(correlations), registry, tuple(notes))


def _corpus_metrics(results: Any) -> set[str]:
    return {m.name for m in results.metrics if m.aggregation == "corpus"}


def _holm_note(paired: Sequence[PairedRow], alpha: float) -> list[str]:
    per_family: dict[tuple[str, str], int] = {}
    for r in paired:
        per_family[(r.model, r.metric)] = per_family.get((r.model, r.metric), 0) + 1
    m = max(per_family.values(), default=0)
    if m < 2:
        return []
    return [
        f"The report tests up to {m} configs per model and metric and corrects with Holm: the strictest of them is tested at "
        f"alpha / {m}. For that guarantee, plan with --alpha {alpha / m:.4g}."
    ]


def _assumed_paired(sd: float, n: int | None, targets: Targets) -> PairedRow:
    return PairedRow("—", "—", "(assumed)", "—", n, sd, examples_needed(sd, targets.delta, alpha=targets.alpha, power_=targets.power),
                     detectable(sd, n, alpha=targets.alpha, power_=targets.power) if n else None, source="assumed")


def assumed(targets: Targets, *, sd: float | None, rho: float | None, rating_sd: float = 0.5, test_size: int | None = None,
            predictor: str | None = None) -> Plan:
    """The plan from stated assumptions only: ``sd`` of per-example differences, ``rho`` of a predictor with the humans, ``rating_sd`` of a rating."""
    targets.check()
    if sd is None and rho is None:
        raise UserError("no pilot run to plan from: run a pilot (`harness run`, rate a sample) or state assumptions with --sd and/or --rho")
    paired = [_assumed_paired(sd, test_size, targets)] if sd is not None else []
    n0 = ratings_needed(rating_sd, targets.half_width, alpha=targets.alpha)
    row = RatingsRow("—", rating_sd, None, n0, predictor or ("(assumed)" if rho is not None else None), rho, None, None, "assumed")
    if rho is not None:
        found = ratings_with_ppi(n0, rho=rho, prediction_cost=targets.prediction_cost)
        row = _replace(row, n_ppi=found["n"], n_predicted=found["n_predicted"])
    size = max([*(r.n_needed for r in paired), row.test_size])
    correlations = [CorrelationRow(predictor or "(assumed)", rho, None, ratings_for_correlation(rho, targets.corr_half_width, alpha=targets.alpha), "assumed")] if rho is not None else []
    notes = [f"A rating's standard deviation is taken as {rating_sd:g} (--rating-sd; 0.5 is the largest a 0-1 score can have)."]
    return Plan(targets, "assumptions", test_size, tuple(paired), (row,), tuple(correlations), _registry(size, [row], predictor), tuple(notes))


def _registry(test_size: int | None, ratings: Sequence[RatingsRow], predictor: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if test_size:
        out["test_size"] = int(test_size)
    needs = [r.n_ppi if r.n_ppi is not None else r.n_needed for r in ratings]
    if needs:
        out["n_per_cell"] = int(max(needs))
    chosen = predictor or next((r.predictor for r in ratings if r.n_ppi is not None and r.predictor and not r.predictor.startswith("(")), None)
    if chosen:
        out["predictor"] = chosen
    return out


def _replace(obj, **changes):
    from dataclasses import replace

    return replace(obj, **changes)


# --------------------------------------------------------------------------- rendering


def registry_lines(plan: Plan) -> list[str]:
    """The ``registry.toml`` lines to set."""
    reg = plan.registry
    out = []
    if "test_size" in reg:
        out += ["[dataset]", f"test_size = {reg['test_size']}"]
    human = [f"n_per_cell = {reg['n_per_cell']}"] if "n_per_cell" in reg else []
    if "predictor" in reg:
        human.append(f'predictor = "{reg["predictor"]}"')
    if human:
        out += (["", "[human]"] if out else ["[human]"]) + human
    return out


def _f(v: float | None, digits: int = 3) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def _i(v: int | None) -> str:
    return "—" if v is None else f"{v:,}"


def render(plan: Plan, fmt: str = "table", *, width: int | None = None, color: bool = False) -> str:
    """The plan as terminal tables (``table``) or ``json``."""
    if fmt == "json":
        return json.dumps({**plan.as_dict(), "registry_toml": "\n".join(registry_lines(plan))}, indent=2) + "\n"
    import io
    import shutil

    from rich.console import Console
    from rich.table import Table

    t = plan.targets
    buf = io.StringIO()
    console = Console(file=buf, width=max(int(width or shutil.get_terminal_size((120, 24)).columns), 60), force_terminal=color)
    say = lambda text, style="": console.print(text, style=style, markup=False, highlight=False)  # noqa: E731
    say(f"Plan ({plan.source}; current test set: {_i(plan.test_size)} examples)", "bold")
    if plan.paired:
        table = Table(title=f"Test examples to detect a paired difference of {t.delta:g} (alpha {t.alpha:g}, power {t.power:g})", title_justify="left")
        for h in ("Model", "Metric", "Config", "n now", "s_d", "Observed Δ", "Needed", "Detectable at n now"):
            table.add_column(h, justify="left" if h in ("Model", "Metric", "Config") else "right", overflow="fold")
        for r in plan.paired:
            unit = " ratings" if r.unit == "ratings" else ""
            table.add_row(r.model, r.metric, r.config, _i(r.n), _f(r.sd), _f(r.diff), _i(r.n_needed) + unit, _f(r.detectable))
        console.print(table)
        say("n = ceil((z(1-alpha/2) + z(power))^2 * s_d^2 / delta^2), s_d: the SD (ddof 1) of the per-example differences from the baseline "
            "(Miller 2024); for human, n counts examples rated in both cells.", "dim")
    if plan.ratings:
        table = Table(title=f"Human ratings per cell for a {1 - t.alpha:.0%} interval of ± {t.half_width:g}", title_justify="left")
        for h in ("Model", "Rating SD", "Rated now", "Ratings only", "Predictor", "ρ", "With PPI", "Of examples"):
            table.add_column(h, justify="left" if h in ("Model", "Predictor") else "right", overflow="fold")
        for r in plan.ratings:
            table.add_row(r.model, _f(r.sd), _i(r.n_rated), _i(r.n_needed), r.predictor or "—", _f(r.rho, 2), _i(r.n_ppi), _i(r.n_predicted))
        console.print(table)
        say(f"With PPI: ppi_py's power analysis, the cheapest design worth the ratings-only count when a prediction costs {t.prediction_cost:g} "
            "of a rating (--prediction-cost): the predictor on the predicted examples, a uniform random sample of them rated.", "dim")
        for r in plan.ratings:
            if r.note:
                say(f"{r.model}: {r.note}", "yellow")
    if plan.correlations:
        table = Table(title=f"Rated examples to estimate a metric-human correlation to ± {t.corr_half_width:g} (Fisher z, {1 - t.alpha:.0%})", title_justify="left")
        for h in ("Metric", "r (example level)", "Rated now", "Needed"):
            table.add_column(h, justify="left" if h == "Metric" else "right")
        for r in plan.correlations:
            table.add_row(r.metric, _f(r.r, 2), _i(r.n), _i(r.n_needed))
        console.print(table)
    for n in plan.notes:
        say(n, "yellow")
    lines = registry_lines(plan)
    if lines:
        say("\nSet in registry.toml:", "bold")
        for line in lines:
            say("  " + line if line else "")
    return buf.getvalue()
