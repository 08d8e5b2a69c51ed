"""What every built-in reporter shows of ``context["ppi"]`` and ``context["claims"]``.

* the ``Human (PPI)`` column: a cell's prediction-powered human estimate with its interval and the
  effective number of ratings (``≈n``), ``†`` where its paired difference with the baseline is
  significant; the legend says how it was made, which predictor each model's cells used, and why
  a cell has none (or how to install ppi-python);
* the ``ppi_*`` fields of a ``human`` row in JSON and CSV;
* the claims: per model the smallest differences its test set detects, how many examples or
  ratings a non-significant comparison needs to be settled, and configs whose outputs are the
  same text as the baseline's.
"""

from __future__ import annotations

import math
from typing import Any

PPI_LABEL = "Human (PPI)"
SIGNIFICANT = "†"
#: the ``ppi_*`` fields every ``human`` row of the JSON report carries (None where there is no estimate)
PPI_FIELDS = (
    "ppi_value", "ppi_ci_low", "ppi_ci_high", "ppi_predictor", "ppi_n_rated", "ppi_n_total", "ppi_n_effective", "ppi_lambda",
    "ppi_calibration", "ppi_note", "ppi_diff", "ppi_diff_ci_low", "ppi_diff_ci_high", "ppi_diff_predictor", "ppi_diff_n_rated",
    "ppi_p_value", "ppi_p_holm", "ppi_significant", "ppi_diff_note",
)
#: the ``ppi_*`` fields of the CSV report (columns after the statistics)
PPI_CSV_FIELDS = ("ppi_value", "ppi_ci_low", "ppi_ci_high", "ppi_predictor", "ppi_n_rated", "ppi_n_total", "ppi_n_effective")


def ppi_info(context: dict[str, Any], model: str, config: str) -> dict[str, Any] | None:
    return ((context.get("ppi") or {}).get("cells") or {}).get(model, {}).get(config)


def has_ppi(context: dict[str, Any]) -> bool:
    """Whether the tables get a ``Human (PPI)`` column: some cell has ratings."""
    return bool((context.get("ppi") or {}).get("cells"))


def ppi_fields(context: dict[str, Any], model: str, config: str) -> dict[str, Any]:
    info = ppi_info(context, model, config) or {}
    return {f: info.get(f) for f in PPI_FIELDS}


def _num(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def ppi_parts(info: dict[str, Any] | None, *, pm: bool = False) -> tuple[str, str | None, str | None]:
    """(value with ``†``, interval, ``≈n``) of a ``Human (PPI)`` cell; value "—" (or "needs ppi-python") when there is none."""
    if not info or not _num(info.get("ppi_value")):
        note = (info or {}).get("ppi_note") or ""
        return ("needs ppi-python" if note.startswith("needs ppi-python") else "—"), None, None
    value = f"{info['ppi_value']:.3f}" + (SIGNIFICANT if info.get("ppi_significant") else "")
    lo, hi = info.get("ppi_ci_low"), info.get("ppi_ci_high")
    interval = None
    if _num(lo) and _num(hi):
        interval = f"±{(hi - lo) / 2:.3f}" if pm else f"[{lo:.3f}, {hi:.3f}]"
    n_eff = info.get("ppi_n_effective")
    return value, interval, (f"(≈{n_eff:.0f})" if _num(n_eff) else None)


def ppi_text(info: dict[str, Any] | None) -> str:
    """One line: ``0.612† [0.55, 0.67] (≈23)``."""
    return " ".join(p for p in ppi_parts(info) if p)


def ppi_lines(context: dict[str, Any]) -> list[str]:
    """The legend of the ``Human (PPI)`` column: method, predictors, effective n, and why cells have no estimate."""
    ppi = context.get("ppi") or {}
    if not ppi.get("cells"):
        return []
    out = []
    if not ppi.get("available", True):
        out.append(f"{PPI_LABEL}: needs the package ppi-python; install it with: {ppi.get('install')}")
        return out
    out.append(f"{PPI_LABEL}: {ppi.get('method', '')} (≈n): the effective number of ratings (plain ratings whose interval would be as narrow). "
               f"{SIGNIFICANT}: its paired difference with the baseline (PPI on per-example differences, Holm within each model) is significant.")
    predictors = ppi.get("predictors") or {}
    if predictors:
        parts = [f"{model}: " + ", ".join(f"{p} ({n} cell{'s' if n != 1 else ''})" for p, n in counts.items()) for model, counts in predictors.items()]
        out.append(f"{PPI_LABEL} predictor{' (named)' if ppi.get('choice') == 'named' else ''}: " + "; ".join(parts) + ".")
    notes: dict[str, int] = {}
    for configs in (ppi.get("cells") or {}).values():
        for info in configs.values():
            if info.get("ppi_value") is None and info.get("ppi_note"):
                notes[info["ppi_note"]] = notes.get(info["ppi_note"], 0) + 1
    for note, n in notes.items():
        out.append(f"{PPI_LABEL} left out for {n} cell{'s' if n != 1 else ''}: {note}.")
    return out


def claims_lines(context: dict[str, Any], labels: dict[str, str] | None = None) -> list[str]:
    """The claims as sentences: detectable differences, what would settle a non-significant comparison, identical outputs."""
    claims = context.get("claims") or {}
    labels = labels or {}
    mlabel = {m["name"]: m.get("label") or m["name"] for m in context.get("metrics", [])}
    out = []
    power, alpha = claims.get("power", 0.8), claims.get("alpha", 0.05)
    by_model: dict[str, list[dict[str, Any]]] = {}
    for d in claims.get("detectable") or []:
        by_model.setdefault(d["model"], []).append(d)
    for model, ds in by_model.items():
        parts = [
            f"{mlabel.get(d['metric'], d['metric'])} {d['median']:.3f} ({d['smallest']:.3f}–{d['largest']:.3f}, "
            f"n={d['n']}{' rated' if d['unit'] == 'ratings' else ''})"
            for d in ds
        ]
        out.append(f"{model}: the smallest differences from the baseline this test set detects ({power:.0%} power at α {alpha:.2g}; "
                   "median over configs, range): " + ", ".join(parts) + ".")
    settle: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in claims.get("settle") or []:
        settle.setdefault((s["model"], s["metric"]), []).append(s)
    for (model, metric), ss in settle.items():
        unit = "rated examples per cell" if ss[0]["unit"] == "ratings" else "test examples"
        ss = sorted(ss, key=lambda s: s["n_needed"])
        shown = ", ".join(f"{labels.get(s['config'], s['config'])} (Δ {s['diff']:+.3f}) {s['n_needed']:,}" for s in ss[:4])
        more = f", … {len(ss) - 4} more (up to {ss[-1]['n_needed']:,})" if len(ss) > 4 else ""
        out.append(f"{model}, {mlabel.get(metric, metric)}: {len(ss)} difference{'s' if len(ss) != 1 else ''} not significant; "
                   f"detecting {'them' if len(ss) != 1 else 'it'} at the observed size with {power:.0%} power needs {unit}: {shown}{more}.")
    ident: dict[str, list[dict[str, Any]]] = {}
    for i in claims.get("identical") or []:
        ident.setdefault(i["model"], []).append(i)
    for model, items in ident.items():
        base = items[0]["baseline"]
        shown = ", ".join(f"{labels.get(i['config'], i['config'])} {i['share']:.0%}" for i in sorted(items, key=lambda i: -i["share"]))
        out.append(f"{model}: outputs that are the same text as the baseline's ({labels.get(base, base)}), share of the examples: {shown}.")
    if any(i["sampled"] for items in ident.values() for i in items):
        out.append("The engines' seeded sampler gives every sampled config the same random draws for an example, so sampled configs that "
                   "differ only where the draw does not reach (top_k 40 vs 75) often write the same text: identical columns are expected, not a bug.")
    return out


def settle_fields(context: dict[str, Any], model: str, config: str, metric: str) -> dict[str, Any]:
    """``n_to_settle`` and ``settle_unit`` of a row (None unless its comparison is not significant)."""
    found = ((context.get("claims") or {}).get("cells") or {}).get(model, {}).get(config, {}).get(metric) or {}
    return {"n_to_settle": found.get("n_to_settle"), "settle_unit": found.get("settle_unit")}
