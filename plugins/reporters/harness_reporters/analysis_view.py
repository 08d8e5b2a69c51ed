"""How the built-in reporters render ``harness analyze`` (a context whose ``view`` is ``"analysis"``).

The context holds ``title``, ``correlations`` (one dict per (level, scope, metric): n, Pearson r,
Spearman ρ, Kendall τ-b and their intervals), ``findings``, ``correlation_notes``, ``method`` and
``source``. ``preferences`` (each metric's or judge's agreement with the annotators' pairwise preferences:
with and without ties, Cohen's κ, each with its interval) is rendered as a table of its own where
present. ``table`` fits the terminal: one table per level, the intervals in the first layout
whose tables fit (``value [lo, hi]``, the interval under the value, ``value ±half-width``, or the
``±`` under the value), never cut; ``markdown`` one table with full intervals; ``json`` the rows;
``csv`` one line per row.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from typing import Any

HEADER = ["Level", "Scope", "Metric", "n", "Pearson r [95% CI]", "Spearman ρ [95% CI]", "Kendall τ-b [95% CI]"]
COEFFICIENTS = (("pearson", "Pearson r"), ("spearman", "Spearman ρ"), ("kendall", "Kendall τ-b"))
#: the terminal table's interval layouts, richest first: the first whose tables fit is used
LAYOUTS = ("interval", "interval-below", "pm", "pm-below")
LEVEL_TITLES = {
    "system": "System level: one point per (model, config)",
    "example": "Example level: one point per rated generation",
    "pairwise": "Pairwise: one point per judged pair (metric a − b vs human preference)",
}
CSV_FIELDS = ("level", "scope", "metric", "n", *(f"{c}{s}" for c, _ in COEFFICIENTS for s in ("", "_ci_low", "_ci_high")), "confidence")
PREFERENCE_HEADER = ["Scope", "Metric", "pairs", "agreement [95% CI]", "without ties [95% CI]", "Cohen's κ [95% CI]"]
PREFERENCE_TITLE = "Preferences: each metric's (or judge's) preference on the pairs the annotators judged, against theirs"
PREFERENCE_CSV_FIELDS = (
    "level", "scope", "metric", "n", "agreement", "agreement_ci_low", "agreement_ci_high", "n_no_ties", "agreement_no_ties",
    "agreement_no_ties_ci_low", "agreement_no_ties_ci_high", "kappa", "kappa_ci_low", "kappa_ci_high", "confidence",
)


def preference_rows(context: dict[str, Any]) -> list[list[str]]:
    """The preference-agreement table's rows (one line each, full intervals)."""
    def ci(row: dict[str, Any], name: str) -> str:
        v = row.get(name)
        if _missing(v):
            return "—"
        lo, hi = row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high")
        return f"{v:.3f}" if _missing(lo) or _missing(hi) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"

    return [
        [p["scope"], p["metric"], str(p["n"]), ci(p, "agreement"), f"{ci(p, 'agreement_no_ties')} (n={p['n_no_ties']})", ci(p, "kappa")]
        for p in context.get("preferences") or []
    ]


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _ci(row: dict[str, Any], name: str) -> str:
    """A coefficient and its interval on one line: ``0.412 [0.201, 0.598]``."""
    return _cell(row, name, "interval")


def _cell(row: dict[str, Any], name: str, layout: str) -> str:
    """One coefficient for the terminal table: its line breaks are chosen by ``layout``, never by wrapping."""
    v = row.get(name)
    if _missing(v):
        return "—"
    lo, hi = row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high")
    if _missing(lo) or _missing(hi):
        return f"{v:.3f}"
    interval = f"[{lo:.3f}, {hi:.3f}]" if layout.startswith("interval") else f"±{(hi - lo) / 2:.3f}"
    return f"{v:.3f}{chr(10) if layout.endswith('-below') else ' '}{interval}"


def _tables(rows: list[dict[str, Any]], layout: str):
    """One rich table per level (Scope | Metric | n | Pearson r | Spearman ρ | Kendall τ-b)."""
    from rich.table import Table

    out = []
    for level in dict.fromkeys(r.get("level", "system") for r in rows):
        table = Table(title=LEVEL_TITLES.get(level, f"{level} level"), title_justify="left")
        table.add_column("Scope", no_wrap=True)
        table.add_column("Metric", no_wrap=True)
        table.add_column("n", justify="right", no_wrap=True)
        for _, label in COEFFICIENTS:
            table.add_column(label, justify="right", no_wrap=True)
        for r in rows:
            if r.get("level", "system") == level:
                table.add_row(r["scope"], r["metric"], str(r["n"]), *(_cell(r, c, layout) for c, _ in COEFFICIENTS))
        out.append(table)
    return out


def table(context: dict[str, Any]) -> str:
    from rich.console import Console
    from rich.measure import Measurement

    rows = context.get("correlations") or []
    method = context.get("method", "")
    buf = io.StringIO()
    width = max(int(context.get("width") or shutil.get_terminal_size((120, 24)).columns), 40)
    console = Console(file=buf, force_terminal=context.get("color", False), width=width)

    def natural(t) -> int:
        return Measurement.get(console, console.options.update_width(1_000_000), t).maximum

    needed = {layout: max((natural(t) for t in _tables(rows, layout)), default=0) for layout in LAYOUTS}
    layout = next((lay for lay in LAYOUTS if needed[lay] <= width), LAYOUTS[-1])
    console.print(context.get("title", ""), style="bold", highlight=False, markup=False)
    for t in _tables(rows, layout):
        console.print(t)
    if context.get("preferences"):
        from rich.table import Table

        pt = Table(title=PREFERENCE_TITLE, title_justify="left")
        for i, h in enumerate(PREFERENCE_HEADER):
            pt.add_column(h, justify="left" if i < 2 else "right")
        for row in preference_rows(context):
            pt.add_row(*row)
        console.print(pt)
    if layout.startswith("pm"):
        wider = min(needed["interval"], needed["interval-below"])
        method = f"±: half the width of the 95% interval [lo, hi] (shown in full from {wider} columns on, and by --format markdown or json). " + method
    console.print(method, style="dim", highlight=False, markup=False)
    for n in context.get("correlation_notes") or []:
        console.print(n, style="yellow", highlight=False, markup=False)
    console.print("\nFindings", style="bold")
    for f in context.get("findings") or []:
        console.print(f"• {f}", highlight=False, markup=False)
    return buf.getvalue()


def markdown(context: dict[str, Any]) -> str:
    rows = context.get("correlations") or []
    out = [f"# {context.get('title', '')}", ""]
    out.append("| " + " | ".join(HEADER) + " |")
    out.append("|---" * len(HEADER) + "|")
    for r in rows:
        cells = [r.get("level", "system"), r["scope"], r["metric"], str(r["n"]), *(_ci(r, c) for c, _ in COEFFICIENTS)]
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    out += ["", context.get("method", ""), ""]
    if context.get("preferences"):
        out += [f"## {PREFERENCE_TITLE}", "", "| " + " | ".join(PREFERENCE_HEADER) + " |", "|---" * len(PREFERENCE_HEADER) + "|"]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in preference_rows(context)] + [""]
    notes = context.get("correlation_notes") or []
    if notes:
        out += [f"- {n}" for n in notes] + [""]
    out += ["## Findings", ""] + [f"- {f}" for f in context.get("findings") or []] + [""]
    return "\n".join(out)


def json_text(context: dict[str, Any]) -> str:
    """The correlation rows, then the preference rows (``level`` "preference")."""
    return json.dumps(list(context.get("correlations") or []) + list(context.get("preferences") or []), indent=2) + "\n"


def csv_text(context: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for r in context.get("correlations") or []:
        w.writerow(["" if _missing(r.get(f)) else r.get(f) for f in CSV_FIELDS])
    if context.get("preferences"):
        w.writerow([])
        w.writerow(PREFERENCE_CSV_FIELDS)
        for r in context["preferences"]:
            w.writerow(["" if _missing(r.get(f)) else r.get(f) for f in PREFERENCE_CSV_FIELDS])
    return buf.getvalue()
