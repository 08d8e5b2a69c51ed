"""What a report's numbers can and cannot claim.

* Per model and metric, the smallest difference from the baseline its test set detects (with
  ``POWER`` at the report's significance level; :func:`harness.report.plan.detectable`, from the
  spread of each config's per-example differences): the median over the configs, and the range.
* For a comparison that is not significant, how many test examples (ratings, for ``human``) a
  paired test needs to detect a difference of the observed size (:func:`harness.report.plan.examples_needed`).
* Configs whose outputs are the same text as the baseline's for the same example, with their share:
  the engines' seeded sampler gives every sampled config the same random draws for an example, so
  configs that differ only in ``top_k`` (40 vs 75) often write identical text — identical columns
  are expected, not a bug.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

from . import plan

__all__ = ["POWER", "Detectable", "Settle", "Identical", "Claims", "from_results"]

#: the power the report's claims are stated at
POWER = 0.8


@dataclass(frozen=True)
class Detectable:
    """The differences ``model``'s test set detects on ``metric``: median, smallest and largest over its configs."""

    model: str
    metric: str
    n: int  # shared examples per comparison (the median)
    median: float
    smallest: float
    largest: float
    unit: str  # "examples" or "ratings"


@dataclass(frozen=True)
class Settle:
    """A comparison that is not significant: ``n_needed`` examples (or ratings) detect its observed ``diff`` with ``POWER``."""

    model: str
    metric: str
    config: str
    diff: float
    n: int
    n_needed: int
    unit: str


@dataclass(frozen=True)
class Identical:
    """``same`` of the ``shared`` examples have the same output text under ``config`` as under ``baseline``."""

    model: str
    config: str
    baseline: str
    same: int
    shared: int
    sampled: bool  # both configs sample (so the shared draws explain it)

    @property
    def share(self) -> float:
        return self.same / self.shared if self.shared else 0.0


@dataclass(frozen=True)
class Claims:
    alpha: float
    power: float
    detectable: tuple[Detectable, ...] = ()
    settle: tuple[Settle, ...] = ()
    identical: tuple[Identical, ...] = ()

    def context(self) -> dict[str, Any]:
        """``context["claims"]`` for reporters: the records, plus per (model, config, metric) what JSON rows carry."""
        cells: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        for s in self.settle:
            cells.setdefault(s.model, {}).setdefault(s.config, {})[s.metric] = {"n_to_settle": s.n_needed, "settle_unit": s.unit}
        return {
            "alpha": self.alpha,
            "power": self.power,
            "detectable": [asdict(d) for d in self.detectable],
            "settle": [asdict(s) for s in self.settle],
            "identical": [{**asdict(i), "share": i.share} for i in self.identical],
            "cells": cells,
        }


def identical_outputs(results: Any, baseline: str | None) -> list[Identical]:
    """Every config whose outputs are, for some examples, the same text as the baseline's (from the run's records)."""
    if baseline is None:
        return []
    keys = {(c.model, c.config): {e for e, _ in c.keys} for c in results.cells}
    same: dict[tuple[str, str], int] = {}
    for model, _example, configs in results.same_outputs:
        if baseline in configs:
            for c in configs:
                if c != baseline:
                    same[(model, c)] = same.get((model, c), 0) + 1
    sampled = {c.name: bool((c.decoding or {}).get("do_sample") or (c.decoding or {}).get("strategy") in ("sample", "beam_sample"))
               for c in results.configs}
    out = []
    for model in results.models:
        base = keys.get((model, baseline))
        if not base:
            continue
        for c in results.configs:
            n = same.get((model, c.name), 0)
            if c.name == baseline or not n:
                continue
            shared = len(base & keys.get((model, c.name), set()))
            out.append(Identical(model, c.name, baseline, n, shared, sampled.get(c.name, False) and sampled.get(baseline, False)))
    return out


def from_results(results: Any, comparisons: list[dict[str, Any]], *, baseline: str | None, confidence: float = 0.95) -> Claims:
    """The claims of a report on ``results``; ``comparisons`` as the report context holds them (diff, significant)."""
    alpha = 1.0 - confidence
    targets = plan.Targets(alpha=alpha, power=POWER)
    rows = plan.paired_rows(results, baseline, targets)
    detect: dict[tuple[str, str], list[plan.PairedRow]] = {}
    for r in rows:
        if r.detectable is not None:
            detect.setdefault((r.model, r.metric), []).append(r)
    detectable = [
        Detectable(model, metric, int(statistics.median(r.n for r in rs)), float(statistics.median(r.detectable for r in rs)),
                   min(r.detectable for r in rs), max(r.detectable for r in rs), rs[0].unit)
        for (model, metric), rs in detect.items()
    ]
    by = {(r.model, r.metric, r.config): r for r in rows}
    settle = []
    for c in comparisons:
        row = by.get((c["model"], c["metric"], c["config"]))
        diff = c.get("diff")
        if row is None or c.get("significant") is not False or diff is None or diff == 0 or row.sd == 0:
            continue
        needed = plan.examples_needed(row.sd, abs(diff), alpha=alpha, power_=POWER)
        settle.append(Settle(c["model"], c["metric"], c["config"], float(diff), row.n or 0, needed, row.unit))
    return Claims(alpha, POWER, tuple(detectable), tuple(settle), tuple(identical_outputs(results, baseline)))

