"""What a pruned search found, from what it recorded: the held-out confirmation, the settings to ship, plots.

A search (`harness tune`, or `harness run` with ``[sweep] prune = true``) records a
:class:`harness.tuning.SearchRecord` per model in its run's metadata and its trials as cells of
their own. This module reads them back (:func:`searches`) — needing neither Optuna nor the study's
database — and:

* :func:`confirm`: the finalists against the baseline config **on the held-out examples only**
  (set aside before the search, so the search's selection does not bias them), with the report's
  paired bootstrap and Holm correction over the finalists (:func:`harness.report.data.build`); the
  config to ship is the finalist with the best held-out value among those significantly better than
  the baseline, else the baseline itself;
* :func:`confirmation_text`: that table and the ``[sweep.defaults]`` to ship, as `tune` prints it;
* :func:`figures`: per model, the metric of every trial against each searched parameter, completed
  and pruned trials marked apart (the HTML and Markdown reports' plots).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..tuning import SearchRecord
from . import data as report_data
from .results import Results

__all__ = ["searches", "Confirmation", "Row", "confirm", "confirmation_text", "defaults_toml", "figures", "context"]


def searches(results: Results) -> dict[str, SearchRecord]:
    """The latest search record of each model, from the runs that recorded one.

    Several processes may work on one study, each recording what it saw in its own run; the most complete record wins
    (the most trials, then one with its finalists confirmed, then the newest run)."""
    best: dict[str, tuple[tuple[int, bool, int], SearchRecord]] = {}
    for run in results.runs:
        for model, d in ((run.get("metadata") or {}).get("tuning") or {}).items():
            record = SearchRecord.from_dict(d)
            key = (len(record.trials), bool(record.finalists), int(run.get("run_id") or 0))
            if model not in best or key > best[model][0]:
                best[model] = (key, record)
    return {model: record for model, (_, record) in best.items()}


@dataclass(frozen=True)
class Row:
    """One config of the confirmation table: its search value and its held-out value, difference and test."""

    config: str
    params: dict[str, Any]
    search_value: float | None
    search_n: int
    value: float | None
    n: int
    ci_low: float | None = None
    ci_high: float | None = None
    diff: float | None = None
    diff_low: float | None = None
    diff_high: float | None = None
    p_value: float | None = None
    p_holm: float | None = None
    significant: bool | None = None
    note: str = ""


@dataclass(frozen=True)
class Confirmation:
    model: str
    metric: str
    label: str
    higher_is_better: bool
    baseline: Row | None
    finalists: tuple[Row, ...]
    ship: str | None
    ship_params: dict[str, Any]
    reason: str
    n_heldout: int
    #: the significance level of the paired tests (1 - confidence)
    alpha: float
    #: generations the search's trials asked for on the search examples, and trials by state
    generations: int
    trials: dict[str, int]


def _value(agg: report_data.Aggregation, scores: Sequence[Any]) -> float | None:
    """The metric's aggregate over ``scores`` (the held-out examples), as the run would compute it."""
    if not scores:
        return None
    if agg.kind == "corpus" and agg.corpus is not None and all(s.stats is not None for s in scores):
        return float(np.asarray(agg.corpus(np.sum([s.stats for s in scores], axis=0)[None, :]))[0])
    if agg.kind == "custom" and agg.aggregate is not None:
        return float(agg.aggregate(list(scores)))
    return float(np.mean([s.value for s in scores]))


def confirm(results: Results, plugins: Any, record: SearchRecord, *, seed: int = 0, n_resamples: int = 1000, confidence: float = 0.95) -> Confirmation:
    """The finalists of ``record`` against its baseline on its held-out examples (paired bootstrap, Holm over the finalists)."""
    metric = next((m for m in results.metrics if m.name == record.metric), None)
    higher = metric.higher_is_better if metric else record.direction == "maximize"
    label = metric.label if metric else record.metric
    held = set(record.heldout)
    aggs = report_data.aggregations(results, plugins)
    agg = aggs.get(record.metric, report_data.MEAN)
    by_config = {v.config: v for v in results.values if v.model == record.model and v.metric == record.metric}
    trials_of: dict[str, Any] = {}
    for t in record.trials:
        if t.state == "complete" and t.config not in trials_of:
            trials_of[t.config] = t
    configs = [c for c in [record.baseline, *record.finalists] if c]
    rows = []
    for name in configs:
        v = by_config.get(name)
        examples = [(e, s) for e, s in (v.examples if v else ()) if e in held and not s.missing]
        rows.append({"model": record.model, "config": name, "metric": record.metric, "value": _value(agg, [s for _, s in examples]),
                     "n": len(examples), "examples": examples, "error": v.error if v else None})
    params = {c.name: dict(c.params) for c in results.experiment.configs}
    built = report_data.build(
        rows, metrics={record.metric: agg}, configs=[(c, params.get(c, {})) for c in configs], baseline=record.baseline,
        seed=seed, n_resamples=n_resamples, confidence=confidence, with_correlations=False,
    ) if record.baseline and rows else None

    def row(name: str) -> Row:
        cell = built.cell(record.model, name, record.metric) if built else None
        t = trials_of.get(name)
        r = next(r for r in rows if r["config"] == name)
        note = ""
        if r["n"] < len(held):
            note = f"held-out incomplete: {r['n']} of {len(held)} examples scored" + (f" ({r['error']})" if r.get("error") else "")
        return Row(
            name, params.get(name, {}), t.value if t else None, t.n if t else 0, cell.value if cell else None, r["n"],
            cell.ci_low if cell else None, cell.ci_high if cell else None, cell.diff if cell else None, cell.diff_ci_low if cell else None,
            cell.diff_ci_high if cell else None, cell.p_value if cell else None, cell.p_holm if cell else None, cell.significant if cell else None, note,
        )

    base_row = row(record.baseline) if record.baseline else None
    finalists = tuple(row(n) for n in record.finalists)
    better = [f for f in finalists if f.significant and f.diff is not None and (f.diff > 0 if higher else f.diff < 0) and f.value is not None]
    if better:
        best = max(better, key=lambda f: f.value if higher else -f.value)  # type: ignore[operator]
        ship, reason = best.config, f"the finalist with the best held-out {label} among those significantly better than the baseline (Holm)"
    elif record.finalists:
        ship, reason = record.baseline, "no finalist is significantly better than the baseline on the held-out examples (Holm): keep the baseline"
    else:
        ship, reason = record.baseline, "no trial completed yet: keep the baseline"
    states: dict[str, int] = {}
    for t in record.trials:
        states[t.state] = states.get(t.state, 0) + 1
    return Confirmation(record.model, record.metric, label, higher, base_row, finalists, ship, params.get(ship or "", {}), reason,
                        len(held), 1.0 - confidence, record.generations, states)


def defaults_toml(params: Mapping[str, Any]) -> str:
    """``[sweep.defaults]`` with ``params``, ready to paste into the experiment file."""
    lines = ["[sweep.defaults]"]
    for k, v in params.items():
        lines.append(f"{k} = {json.dumps(v) if isinstance(v, (bool, str)) else repr(v)}".replace("True", "true").replace("False", "false"))
    return "\n".join(lines)


def _f(v: float | None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def confirmation_text(c: Confirmation) -> str:
    """The confirmation table and the settings to ship, as plain text."""
    done = ", ".join(f"{n} {s}" for s, n in sorted(c.trials.items()))
    out = [
        f"{c.model}: {c.label} on {c.n_heldout} held-out examples (set aside before the search); "
        f"trials: {done or 'none'}; {c.generations} generations on the search examples",
        "",
    ]
    header = ["config", "search (n)", "held-out [95% CI]", "diff vs baseline [95% CI]", "p", "p (Holm)"]
    body = []
    for r, is_base in ([(c.baseline, True)] if c.baseline else []) + [(f, False) for f in c.finalists]:
        mark = " †" if r.significant else ""
        body.append([
            r.config + (" (baseline)" if is_base else ""),
            f"{_f(r.search_value)} ({r.search_n})" if r.search_value is not None else "—",
            f"{_f(r.value)} [{_f(r.ci_low)}, {_f(r.ci_high)}]" if r.value is not None else "—",
            "" if is_base else (f"{_f(r.diff, True)} [{_f(r.diff_low, True)}, {_f(r.diff_high, True)}]{mark}" if r.diff is not None else "—"),
            "" if is_base else _f(r.p_value),
            "" if is_base else _f(r.p_holm),
        ])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    out.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    out.append("  ".join("-" * w for w in widths))
    for b in body:
        out.append("  ".join(x.ljust(w) for x, w in zip(b, widths)).rstrip())
    notes = [f"{r.config}: {r.note}" for r in ([c.baseline] if c.baseline else []) + list(c.finalists) if r.note]
    out += [""] + notes if notes else []
    out += ["", f"† significant at p < {c.alpha:.2g} after Holm over the finalists (paired bootstrap over the held-out examples).",
            f"Ship: {c.ship} — {c.reason}.", "", defaults_toml(c.ship_params), ""]
    return "\n".join(out)


def context(results: Results) -> dict[str, Any]:
    """The searches as plain JSON-able values, for reporters (``context["tuning"]``)."""
    return {model: r.to_dict() for model, r in searches(results).items()}


def figures(tuning: Mapping[str, Any], metrics: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Per searched model, a panel per parameter: each trial's mean on the search examples against the parameter's value,
    completed trials as filled dots, pruned ones as crosses (their mean over the examples they saw)."""
    if not tuning:
        return []
    from .plots import FigureImage, _matplotlib, _png, _safe

    Figure = _matplotlib()
    labels = {m["name"]: m.get("label") or m["name"] for m in metrics}
    out = []
    for model, d in tuning.items():
        record = SearchRecord.from_dict(dict(d))
        trials = [t for t in record.trials if t.state in ("complete", "pruned") and t.value is not None]
        params = list(record.space) or [k for k in dict.fromkeys(k for t in trials for k in t.params) if len({repr(t.params.get(k)) for t in trials}) > 1]
        if not trials or not params:
            continue
        fig = Figure(figsize=(3.4 * len(params), 3.2), layout="constrained")
        axes = fig.subplots(1, len(params), squeeze=False)[0]
        for ax, p in zip(axes, params):
            for state, style in (("complete", {"marker": "o", "color": "#1f77b4", "linestyle": "none"}), ("pruned", {"marker": "x", "color": "#d62728", "linestyle": "none"})):
                pts = [(t.params.get(p), t.value) for t in trials if t.state == state and isinstance(t.params.get(p), (int, float))]
                if pts:
                    ax.plot([float(x) for x, _ in pts], [y for _, y in pts], label=f"{state} ({len(pts)})", alpha=0.8, **style)
            ax.set_xlabel(p)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(f"{labels.get(record.metric, record.metric)} (search examples)")
        handles, names = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, names, loc="outside lower center", ncols=2, frameon=False)
        what = "tune" if record.mode == "tune" else "pruned sweep"
        caption = (f"{model}, {what} ({record.sampler}, pruner {record.pruner}): each trial's mean {labels.get(record.metric, record.metric)} on the "
                   f"search examples against each parameter; dots completed trials, crosses pruned ones (mean over the examples they saw).")
        out.append(FigureImage(f"tune-{_safe(model)}", f"Search over the decoding space: {model}", caption, _png(fig)))
    return out
