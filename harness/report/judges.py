"""What a report says about LLM judges: their reliability, their length bias, self-preference, what they said,
and how often they agree with the humans' preferences.

A judge is any metric whose recorded identity has an ``llm_judge`` mapping (the built-in ``judge`` and
``judge-pairwise`` plugins write one; the reading side names no plugin). Everything here is computed from what
the run recorded — the per-example ``detail`` of each score (the verdicts, their source, the order, the outputs'
lengths) and the cells' model identities — never by running a judge.

* **Reliability** (pairwise judges): with ``order = "both"``, the share of pairs whose verdict survives swapping
  the outputs (*consistency*; MT-Bench's GPT-4 kept about 65-87%); over every call, the share won by the answer
  shown first (*first position wins*; 0.5 without position bias, ties left out) — and the missing (unparseable)
  verdicts, with their reasons.
* **Length control** (:func:`length_controlled`): AlpacaEval 2's idea, on this experiment's own judgments: a
  logistic model of each output's preference on ``tanh`` of the standardised length difference (characters,
  the output's minus the compared one's) and the example's difficulty (how the other configs of the same model
  fared on it, leave-one-out), read at zero length difference and averaged over the examples. Fitted with
  statsmodels' GLM (binomial family; fractional preferences allowed), lazily imported: where statsmodels is not
  installed the report says so. The report gives raw minus LC for every cell.
* **Self-preference**: a judge whose model is (the base of) a model it judges gets a warning.
* **Agreement with human preferences** (:func:`preference_agreement`): for every pair the annotators judged
  (``human serve --pairwise``), each metric's preference — a pairwise judge's verdict on that pair, any other
  metric's sign of score(a) − score(b) — against the humans' (the mean of their shares): agreement with ties
  (three classes), without ties (pairs where neither side calls a tie), and Cohen's kappa (three classes), each
  with a bootstrap interval over examples.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .results import Results

__all__ = ["judge_metrics", "summary", "length_controlled", "cohen_kappa", "preference_agreement", "PreferenceRow", "preference_findings"]

#: examples sampled for the HTML report's "what the judges said"
SAMPLES = 4
#: fewest judged examples an LC fit is attempted on
MIN_LC = 5


def judge_metrics(results: Results) -> dict[str, dict[str, Any]]:
    """Metric name -> the judge part of its recorded identity, for every judge in ``results``."""
    out = {}
    for m in results.metrics:
        judge = (m.identity or {}).get("llm_judge")
        if isinstance(judge, Mapping):
            out[m.name] = dict(judge)
    return out


def _details(results: Results, metric: str) -> dict[tuple[str, str], list[tuple[str, float, dict[str, Any]]]]:
    """(model, config) -> [(example id, value, detail)] of a metric's scores (missing ones included, value NaN)."""
    out: dict[tuple[str, str], list[tuple[str, float, dict[str, Any]]]] = {}
    for v in results.values:
        if v.metric == metric:
            out[(v.model, v.config)] = [(e, s.value, dict(s.detail or {})) for e, s in v.examples]
    return out


# --------------------------------------------------------------------------- reliability


def _reliability(rows: Sequence[tuple[str, float, dict[str, Any]]]) -> dict[str, Any]:
    n_missing = sum(1 for _, v, _ in rows if v != v)
    reasons: dict[str, int] = {}
    for _, v, d in rows:
        if v != v:
            why = str(d.get("why") or "no reason recorded")
            reasons[why] = reasons.get(why, 0) + 1
    sources: dict[str, int] = {}
    for _, v, d in rows:
        if v == v and d.get("source"):
            sources[d["source"]] = sources.get(d["source"], 0) + 1
    calls = [c for _, _, d in rows for c in d.get("calls") or [] if c.get("verdict") in ("A", "B", "C")]
    decided = [c for c in calls if c["verdict"] in ("A", "B")]
    consistent = [d["consistent"] for _, v, d in rows if v == v and d.get("consistent") is not None]
    return {
        "n_missing": n_missing,
        "missing_reasons": reasons,
        "sources": sources,
        "n_calls": len(calls),
        "verdict_shares": {k: round(sum(1 for c in calls if c["verdict"] == k) / len(calls), 4) for k in ("A", "B", "C")} if calls else {},
        "first_position_wins": round(sum(1 for c in decided if c["verdict"] == "A") / len(decided), 4) if decided else None,
        "n_decided": len(decided),
        "consistency": round(sum(consistent) / len(consistent), 4) if consistent else None,
        "n_both_orders": len(consistent),
        "identical": sum(1 for _, _, d in rows if d.get("identical")),
    }


# --------------------------------------------------------------------------- length control


def length_controlled(
    y: Sequence[float], length_diff: Sequence[float], difficulty: Sequence[float] | None = None
) -> dict[str, Any]:
    """AlpacaEval-style length-controlled win rate of one cell.

    ``y``: each example's preference for the output (0-1, ties 1/2); ``length_diff``: its length minus the
    compared output's; ``difficulty``: a per-example logit of how hard the compared output is to beat (None: left
    out). Fits ``logit P = θ + φ·tanh(Δ/sd(Δ)) [+ ψ·difficulty]`` (statsmodels GLM, binomial) and returns the
    mean over examples of the prediction at Δ = 0, with the coefficients, or ``{"lc": None, "note": why}``.
    """
    y_ = np.asarray(y, dtype=float)
    d_ = np.asarray(length_diff, dtype=float)
    if y_.size < MIN_LC:
        return {"lc": None, "note": f"too few judged examples for a fit ({y_.size}; at least {MIN_LC})"}
    sd = float(np.std(d_))
    if sd == 0:
        return {"lc": None, "note": "every output has the same length difference: nothing to control for"}
    try:
        import statsmodels.api as sm
    except ImportError:
        return {"lc": None, "note": "statsmodels is not installed here (pip install statsmodels): no length-controlled win rate"}
    columns = [np.ones_like(y_), np.tanh(d_ / sd)]
    if difficulty is not None:
        diff = np.asarray(difficulty, dtype=float)
        if np.std(diff) > 0:
            columns.append(diff)
    X = np.column_stack(columns)
    import warnings

    fit = "mle"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            params = np.asarray(sm.GLM(y_, X, family=sm.families.Binomial()).fit().params, dtype=float)
            if not np.all(np.isfinite(params)) or np.max(np.abs(params)) > 30:
                raise ValueError("separated")
        except Exception:  # (quasi-)separation: a light ridge keeps the coefficients finite
            fit = "ridge"
            try:
                params = np.asarray(sm.GLM(y_, X, family=sm.families.Binomial()).fit_regularized(alpha=1e-2, L1_wt=0.0).params, dtype=float)
            except Exception as exc:
                return {"lc": None, "note": f"the logistic fit failed ({type(exc).__name__}: {exc})"}
    at_zero = X.copy()
    at_zero[:, 1] = 0.0
    lc = float(np.mean(1.0 / (1.0 + np.exp(-(at_zero @ params)))))
    names = ["intercept", "length", "difficulty"][: len(params)]
    return {"lc": lc, "coefficients": {k: float(v) for k, v in zip(names, params)}, "fit": fit, "length_sd": sd, "n": int(y_.size)}


def _logit(p: float) -> float:
    p = min(max(p, 0.02), 0.98)
    return math.log(p / (1 - p))


def _lc_cells(details: Mapping[tuple[str, str], Sequence[tuple[str, float, dict[str, Any]]]], baseline_of: Mapping[tuple[str, str], str | None]) -> dict[tuple[str, str], dict[str, Any]]:
    """LC fits of every pairwise-judge cell (the difficulty from the same model's other cells, leave-one-out)."""
    usable: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    for cell, rows in details.items():
        if baseline_of.get(cell) == cell[1]:
            continue  # the baseline against itself: every example a tie
        per = {}
        for e, v, d in rows:
            lengths = d.get("lengths")
            if v == v and isinstance(lengths, list) and len(lengths) == 2 and not d.get("identical"):
                per[e] = (float(v), float(lengths[0]) - float(lengths[1]))
        usable[cell] = per
    out = {}
    for (model, config), per in usable.items():
        if not per:
            continue
        others = [p for (m, c), p in usable.items() if m == model and c != config]
        examples = sorted(per)
        difficulty = None
        if len(others) >= 2:
            difficulty = []
            for e in examples:
                seen = [o[e][0] for o in others if e in o]
                difficulty.append(-_logit(sum(seen) / len(seen)) if seen else 0.0)
        fit = length_controlled([per[e][0] for e in examples], [per[e][1] for e in examples], difficulty)
        raw = sum(per[e][0] for e in examples) / len(examples)
        fit["raw"] = raw
        fit["raw_minus_lc"] = None if fit.get("lc") is None else raw - fit["lc"]
        fit["difficulty"] = "leave-one-out over the model's other configs" if difficulty is not None else "left out (fewer than 3 compared configs)"
        out[(model, config)] = fit
    return out


# --------------------------------------------------------------------------- self-preference


def _same_model(judge: Mapping[str, Any], cell_info: Mapping[str, Any]) -> bool:
    ident = dict(judge.get("model_identity") or {})
    cell = dict(cell_info.get("identity") or {})
    for key in ("base", "served_model"):
        if key in ident and key in cell and ident[key] == cell[key] and (key != "served_model" or ident.get("endpoint") == cell.get("endpoint")):
            return True
    return bool(judge.get("model")) and judge.get("model") == cell_info.get("base_model")


def self_preference(results: Results, judges: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    infos = {}
    for c in results.cells:
        infos.setdefault(c.model, c.model_info)
    for metric, judge in judges.items():
        same = [m for m, info in infos.items() if _same_model(judge, info)]
        if same:
            tuned = [m for m in same if (infos[m] or {}).get("finetune")]
            out.append({
                "metric": metric,
                "models": same,
                "text": (
                    f"{metric}: the judge ({judge.get('model')}) is the model being judged in {', '.join(same)}"
                    + (f" (fine-tuned from it: {', '.join(tuned)})" if tuned else "")
                    + ". LLM judges tend to prefer their own outputs (self-preference): use a judge of another family to compare these models."
                ),
            })
    return out


# --------------------------------------------------------------------------- samples


def _samples(results: Results, judges: Mapping[str, Mapping[str, Any]], seed: int) -> list[dict[str, Any]]:
    """A few (model, config, example) triples and what each judge said of them."""
    per_metric = {m: _details(results, m) for m in judges}
    triples = sorted({(model, config, e) for d in per_metric.values() for (model, config), rows in d.items()
                      for e, _, det in rows if det.get("calls") or det.get("reply")})
    rng = random.Random(int(hashlib.sha256(f"{seed}:judge-samples".encode()).hexdigest()[:8], 16))
    chosen = rng.sample(triples, min(SAMPLES, len(triples)))
    out = []
    for model, config, example in sorted(chosen):
        said = []
        for metric, details in per_metric.items():
            for e, v, d in details.get((model, config), []):
                if e != example:
                    continue
                calls = d.get("calls")
                replies = [{"output_as": c.get("output_as"), "verdict": c.get("verdict"), "reply": c.get("reply", ""), "source": c.get("source")} for c in calls] if calls else (
                    [{"verdict": d.get("grade"), "reply": d.get("reply", ""), "source": d.get("source")}] if d.get("reply") is not None else [])
                said.append({"metric": metric, "value": None if v != v else v, "why": d.get("why"), "outcome": d.get("outcome"),
                             "expected_grade": d.get("expected_grade"), "identical": bool(d.get("identical")), "replies": replies})
        out.append({"model": model, "config": config, "example": example, "judges": said})
    return out


# --------------------------------------------------------------------------- summary


def summary(results: Results, *, seed: int = 0) -> dict[str, Any]:
    """Everything the reports show about the judges of ``results`` (empty when there are none): JSON-able."""
    judges = judge_metrics(results)
    if not judges:
        return {}
    against = {(v.model, v.config, v.metric): v.against for v in results.values}
    out: dict[str, Any] = {"judges": [], "cells": {}, "warnings": self_preference(results, judges), "samples": _samples(results, judges, seed)}
    for metric, judge in judges.items():
        details = _details(results, metric)
        everything = [r for rows in details.values() for r in rows]
        entry = {"metric": metric, **{k: judge.get(k) for k in ("kind", "model", "adapter", "ask", "logprobs", "order", "scale", "against", "reference")},
                 "engine": (judge.get("engine") or {}).get("engine"), **_reliability(everything)}
        lc = {}
        if judge.get("kind") == "pairwise":
            lc = _lc_cells(details, {(m, c): against.get((m, c, metric)) for (m, c) in details})
            diffs = [f["raw_minus_lc"] for f in lc.values() if f.get("raw_minus_lc") is not None]
            entry["lc_max_abs_difference"] = max((abs(d) for d in diffs), default=None)
            entry["lc_mean_difference"] = sum(diffs) / len(diffs) if diffs else None
            notes = sorted({f["note"] for f in lc.values() if f.get("note")})
            entry["lc_notes"] = notes
        out["judges"].append(entry)
        for (model, config), rows in details.items():
            cell = _reliability(rows)
            fit = lc.get((model, config))
            if fit is not None:
                cell.update(lc_win_rate=fit.get("lc"), raw_minus_lc=fit.get("raw_minus_lc"), lc_note=fit.get("note"), lc_fit=fit.get("fit"))
            out["cells"].setdefault(model, {}).setdefault(config, {})[metric] = cell
    return out


def summary_lines(context: Mapping[str, Any]) -> list[str]:
    """The judges' section as plain sentences (terminal and Markdown reports)."""
    info = context.get("judges") or {}
    lines = [w["text"] for w in info.get("warnings") or []]
    for j in info.get("judges") or []:
        head = f"{j['metric']}: judge {j.get('model')} through {j.get('engine')}, ask = {j.get('ask')}"
        if j.get("kind") == "pairwise":
            head += f", order = {j.get('order')}"
        src = j.get("sources") or {}
        head += f"; verdicts read from log-probabilities {src.get('logprobs', 0)}, from text {src.get('text', 0)}"
        lines.append(head + ".")
        if j.get("n_missing"):
            reasons = "; ".join(f"{n}× {why}" for why, n in sorted(j["missing_reasons"].items(), key=lambda kv: -kv[1])[:3])
            lines.append(f"{j['metric']}: {j['n_missing']} verdict(s) could not be read and are missing (not scored): {reasons}.")
        if j.get("consistency") is not None:
            lines.append(f"{j['metric']}: {j['consistency']:.0%} of {j['n_both_orders']} pairs kept their verdict when the outputs swapped places (the rest count as ties).")
        if j.get("first_position_wins") is not None:
            lines.append(f"{j['metric']}: the answer shown first won {j['first_position_wins']:.0%} of {j['n_decided']} decided calls (0.50 = no position bias).")
        if j.get("lc_max_abs_difference") is not None:
            lines.append(
                f"{j['metric']}: length-controlled win rates differ from the raw ones by {j['lc_mean_difference']:+.3f} on average "
                f"(at most {j['lc_max_abs_difference']:.3f}); raw − LC > 0 means the raw rate owes some of its wins to length."
            )
        for note in j.get("lc_notes") or []:
            lines.append(f"{j['metric']}: length control: {note}.")
    return lines


# --------------------------------------------------------------------------- agreement with human preferences


def cohen_kappa(a: Sequence[Any], b: Sequence[Any], labels: Sequence[Any] | None = None) -> float:
    """Cohen's kappa of two raters' labels (NaN when the chance agreement is 1)."""
    labels = list(labels) if labels is not None else sorted(set(a) | set(b))
    index = {k: i for i, k in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)))
    for x, y in zip(a, b):
        m[index[x], index[y]] += 1
    n = m.sum()
    if n == 0:
        return math.nan
    po = np.trace(m) / n
    pe = float((m.sum(axis=1) @ m.sum(axis=0)) / (n * n))
    return math.nan if pe == 1 else float((po - pe) / (1 - pe))


@dataclass(frozen=True)
class PreferenceRow:
    """How often one metric prefers what the annotators preferred, over the pairs they judged (``level`` "preference")."""

    metric: str
    scope: str
    n: int
    agreement: float
    agreement_ci_low: float
    agreement_ci_high: float
    n_no_ties: int
    agreement_no_ties: float
    agreement_no_ties_ci_low: float
    agreement_no_ties_ci_high: float
    kappa: float
    kappa_ci_low: float
    kappa_ci_high: float
    level: str = "preference"
    confidence: float = 0.95

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cls(x: float) -> int:
    return 1 if x > 0 else (-1 if x < 0 else 0)


def preference_items(results: Results, rows: Sequence[Mapping[str, Any]], metric_names: Sequence[str]) -> list[tuple[str, str, dict[str, int], int]]:
    """(model, example, {metric: preference of a over b: 1, 0 (tie), -1}, the humans' preference) per judged pair."""
    judges = judge_metrics(results)
    score: dict[tuple[str, str, str, str], float] = {}
    pair_value: dict[tuple[str, str, str, str, str], tuple[float, str | None]] = {}  # (model, config, against, metric, example)
    for r in rows:
        if r["metric"] not in metric_names:
            continue
        for e, s in r.get("examples") or []:
            score[(r["model"], r["config"], r["metric"], e)] = float(s.value)
            if r["metric"] in judges and r.get("against"):
                pair_value[(r["model"], r["config"], r["against"], r["metric"], e)] = (float(s.value), (s.detail or {}).get("outcome"))
    judged: dict[tuple[str, str, str, str], list[float]] = {}
    for o in results.pairs:
        judged.setdefault((o.model, o.config_a, o.config_b, o.example_id), []).append(float(o.value))
    out = []
    for (model, a, b, e), values in judged.items():
        prefs: dict[str, int] = {}
        for m in metric_names:
            if m in judges and (judges[m].get("kind") == "pairwise"):
                found = pair_value.get((model, a, b, m, e))
                flip = 1
                if found is None:
                    found, flip = pair_value.get((model, b, a, m, e)), -1
                if found is not None:
                    value, outcome = found
                    cls = {"win": 1, "loss": -1, "tie": 0}.get(outcome or "", _cls(value - 0.5))
                    prefs[m] = cls * flip
                continue
            x, y = score.get((model, a, m, e)), score.get((model, b, m, e))
            if x is not None and y is not None:
                prefs[m] = _cls(x - y)
        out.append((model, e, prefs, _cls(sum(values) / len(values) - 0.5)))
    return out


def _agreement_stats(m: np.ndarray, h: np.ndarray) -> tuple[float, float, int, float]:
    agree = float(np.mean(m == h)) if m.size else math.nan
    keep = (m != 0) & (h != 0)
    no_ties = float(np.mean(m[keep] == h[keep])) if keep.any() else math.nan
    return agree, no_ties, int(keep.sum()), cohen_kappa(m.tolist(), h.tolist(), labels=[-1, 0, 1])


def preference_agreement(items: Sequence[tuple[str, str, Mapping[str, int], int]], metric_names: Sequence[str], *,
                         seed: int = 0, n_resamples: int = 1000, confidence: float = 0.95) -> list[PreferenceRow]:
    """Agreement of every metric's preferences with the humans', overall and per model, with bootstrap intervals over examples."""
    out = []
    models = list(dict.fromkeys(it[0] for it in items))
    for scope in ["all", *models]:
        for metric in metric_names:
            chosen = [(e, p[metric], h) for model, e, p, h in items if metric in p and (scope == "all" or model == scope)]
            if len(chosen) < 3:
                continue
            examples = np.array([e for e, _, _ in chosen])
            m = np.array([x for _, x, _ in chosen])
            h = np.array([x for _, _, x in chosen])
            agree, no_ties, n_no_ties, kappa = _agreement_stats(m, h)
            groups = {e: np.flatnonzero(examples == e) for e in dict.fromkeys(examples.tolist())}
            keys = list(groups)
            rng = np.random.default_rng(int(hashlib.sha256(f"{seed}:pref:{scope}:{metric}".encode()).hexdigest()[:12], 16))
            boots = []
            for _ in range(n_resamples):
                idx = np.concatenate([groups[keys[i]] for i in rng.integers(0, len(keys), len(keys))])
                boots.append(_agreement_stats(m[idx], h[idx]))
            arr = np.array([(a, nt, k) for a, nt, _, k in boots], dtype=float)
            lo_q, hi_q = (1 - confidence) / 2, 1 - (1 - confidence) / 2

            def ci(col: int) -> tuple[float, float]:
                v = arr[:, col]
                v = v[~np.isnan(v)]
                return (float(np.quantile(v, lo_q)), float(np.quantile(v, hi_q))) if v.size else (math.nan, math.nan)

            (a_lo, a_hi), (n_lo, n_hi), (k_lo, k_hi) = ci(0), ci(1), ci(2)
            out.append(PreferenceRow(metric, scope, len(chosen), agree, a_lo, a_hi, n_no_ties, no_ties, n_lo, n_hi, kappa, k_lo, k_hi, confidence=confidence))
    return out


def preference_findings(rows: Sequence[PreferenceRow]) -> list[str]:
    """Which metric or judge agrees best with the humans' preferences, and whether the intervals support it."""
    out = []
    for scope in dict.fromkeys(r.scope for r in rows):
        ranked = sorted((r for r in rows if r.scope == scope and not math.isnan(r.agreement)), key=lambda r: (-r.agreement, r.metric))
        if not ranked:
            continue
        where = "overall" if scope == "all" else f"within model '{scope}'"
        best = ranked[0]
        text = (f"Preferences, {where}: {best.metric} agrees best with the annotators' preferences "
                f"({best.agreement:.0%} of {best.n} pairs, {confidence_text(best.agreement_ci_low, best.agreement_ci_high, best.confidence)}; "
                f"{_pct(best.agreement_no_ties)} without ties over {best.n_no_ties}; Cohen's kappa {_num(best.kappa)})")
        if len(ranked) > 1:
            second = ranked[1]
            overlap = not (best.agreement_ci_low > second.agreement_ci_high or second.agreement_ci_low > best.agreement_ci_high)
            text += (f", ahead of {second.metric} ({second.agreement:.0%}, {confidence_text(second.agreement_ci_low, second.agreement_ci_high, second.confidence)})"
                     + ("; the intervals do not separate them." if overlap else "; the intervals do not overlap."))
        else:
            text += "."
        out.append(text)
        for r in ranked:
            if not math.isnan(r.kappa_ci_low) and r.kappa_ci_low <= 0 <= r.kappa_ci_high:
                out.append(f"Preferences, {where}: {r.metric}'s agreement with the annotators is not distinguishable from chance "
                           f"(Cohen's kappa {_num(r.kappa)}, {confidence_text(r.kappa_ci_low, r.kappa_ci_high, r.confidence)}, n={r.n}).")
    return out


def confidence_text(lo: float, hi: float, confidence: float) -> str:
    if math.isnan(lo) or math.isnan(hi):
        return "no interval"
    return f"{confidence:.0%} CI {lo:.2f} to {hi:.2f}"


def _pct(v: float) -> str:
    return "—" if math.isnan(v) else f"{v:.0%}"


def _num(v: float) -> str:
    return "undefined" if math.isnan(v) else f"{v:.2f}"



