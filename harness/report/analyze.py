"""Which automatic metric tracks human judgment (``harness analyze``).

Input is the experiment's store (every metric of every (model, config) with imported
human ratings) or ``--results FILE.csv``, a table with columns ``model``, ``config``,
``human`` and one column per metric (results produced elsewhere, such as a paper's
tables). For every metric against ``human``, in every scope (``all`` and each model
alone): Pearson r, Spearman rho and Kendall tau-b with 95% percentile-bootstrap
intervals (seeded) and n. From the store, the same at the example level too, where the
bootstrap resamples examples. Then findings derived from those numbers.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from ..errors import UserError
from . import analysis
from .results import Results

FORMATS = ("table", "json", "markdown")
LEVELS = ("system", "example", "pairwise", "both")


def from_csv(path: str, metrics, seed: int, resamples: int, level: str):
    """Correlations of a results CSV (one row per model and config)."""
    if level == "example":
        raise UserError("a results CSV has one row per (model, config): only --level system applies", key="--level", file=path)
    rows = analysis.load_results_csv(path)
    found = analysis.analyze(rows, metrics=metrics, seed=seed, n_resamples=resamples, strict=True, source=path)
    return found, [], {"kind": "csv", "path": str(Path(path).resolve()), "rows": len(rows), "seed": seed, "resamples": resamples}


def from_results(results: Results, seed: int | None, resamples: int, level: str):
    """Correlations of every recorded metric with the recorded human ratings."""
    from . import data as report_data

    if not results.has_human:
        raise UserError(
            f"no human ratings in {results.store_path} for the selected models: export items with `harness human export`, "
            "rate them, `harness human import` the ratings, then run `harness analyze` again (or pass --results FILE.csv)",
        )
    seed = results.experiment.seed if seed is None else seed
    levels = ("system", "example", "pairwise") if level == "both" else (level,)
    rows = report_data._rows(results)
    found, notes = report_data.correlate(rows, results.metric_names, seed=seed, n_resamples=resamples, confidence=0.95, levels=levels, pairs=results.pairs)
    if not found:
        raise UserError(
            "too few rated points for any correlation: each needs at least 3 (model, config) cells with human ratings "
            "(system level) or 3 rated generations (example level)" + ("".join(f"\n  {n}" for n in notes)),
            file=results.store_path,
        )
    source = {"kind": "store", "path": results.store_path, "experiment": results.experiment.name, "seed": seed, "resamples": resamples}
    return found, notes, source, f"Metric-human agreement: {results.experiment.name}"


# --------------------------------------------------------------------------- rendering


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _ci(row, name: str) -> str:
    v = row.value(name)
    if math.isnan(v):
        return "—"
    lo, hi = row.interval(name)
    if math.isnan(lo) or math.isnan(hi):
        return f"{v:.3f}"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


HEADER = ["Level", "Scope", "Metric", "n", "Pearson r [95% CI]", "Spearman ρ [95% CI]", "Kendall τ-b [95% CI]"]
COEFFICIENTS = (("pearson", "Pearson r"), ("spearman", "Spearman ρ"), ("kendall", "Kendall τ-b"))
#: the terminal table's interval layouts, richest first: the first whose tables fit is used
LAYOUTS = ("interval", "interval-below", "pm", "pm-below")
LEVEL_TITLES = {
    "system": "System level: one point per (model, config)",
    "example": "Example level: one point per rated generation",
    "pairwise": "Pairwise: one point per judged pair (metric a − b vs human preference)",
}


def _body(rows) -> list[list[str]]:
    """The Markdown table's rows (one line each, full intervals)."""
    return [[r.level, r.scope, r.metric, str(r.n), *(_ci(r, c) for c in ("pearson", "spearman", "kendall"))] for r in rows]


def _cell(row, name: str, layout: str) -> str:
    """One coefficient for the terminal table: its line breaks are chosen by ``layout``, never by wrapping."""
    v = row.value(name)
    if math.isnan(v):
        return "—"
    lo, hi = row.interval(name)
    if math.isnan(lo) or math.isnan(hi):
        return f"{v:.3f}"
    interval = f"[{lo:.3f}, {hi:.3f}]" if layout.startswith("interval") else f"±{(hi - lo) / 2:.3f}"
    return f"{v:.3f}{chr(10) if layout.endswith('-below') else ' '}{interval}"


def _tables(rows, layout: str):
    """One rich table per level (Scope | Metric | n | Pearson r | Spearman ρ | Kendall τ-b)."""
    from rich.table import Table

    out = []
    for level in dict.fromkeys(r.level for r in rows):
        table = Table(title=LEVEL_TITLES.get(level, f"{level} level"), title_justify="left")
        table.add_column("Scope", no_wrap=True)
        table.add_column("Metric", no_wrap=True)
        table.add_column("n", justify="right", no_wrap=True)
        for _, label in COEFFICIENTS:
            table.add_column(label, justify="right", no_wrap=True)
        for r in rows:
            if r.level == level:
                table.add_row(r.scope, r.metric, str(r.n), *(_cell(r, c, layout) for c, _ in COEFFICIENTS))
        out.append(table)
    return out


def _preference_body(preferences) -> list[list[str]]:
    """Rows of the preference-agreement table (metric or judge vs the annotators' pairwise preferences)."""
    def ci(v: float, lo: float, hi: float) -> str:
        if math.isnan(v):
            return "—"
        return f"{v:.3f}" if math.isnan(lo) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"

    return [[p.scope, p.metric, str(p.n), ci(p.agreement, p.agreement_ci_low, p.agreement_ci_high),
             f"{ci(p.agreement_no_ties, p.agreement_no_ties_ci_low, p.agreement_no_ties_ci_high)} (n={p.n_no_ties})",
             ci(p.kappa, p.kappa_ci_low, p.kappa_ci_high)] for p in preferences]


PREFERENCE_HEADER = ["Scope", "Metric", "pairs", "agreement [95% CI]", "without ties [95% CI]", "Cohen's κ [95% CI]"]
PREFERENCE_TITLE = "Preferences: each metric's (or judge's) preference on the pairs the annotators judged, against theirs"


def render(rows, findings: list[str], notes: list[str], fmt: str, *, title: str, source: dict[str, Any], preferences=()) -> str:
    """The correlation table and findings as ``table``, ``json`` or ``markdown`` (``preferences``: agreement with pairwise ratings)."""
    if fmt == "json":
        items = [{k: _clean(v) for k, v in r.as_dict().items()} for r in rows]
        items += [{k: _clean(v) for k, v in p.as_dict().items()} for p in preferences]
        return json.dumps(items, indent=2) + "\n"
    method = (
        f"95% percentile bootstrap intervals, {source['resamples']} resamples, seed {source['seed']}: "
        "system level resamples (model, config) rows within the scope; example level resamples examples "
        "(all of an example's rated generations together)."
    )
    if fmt == "markdown":
        out = [f"# {title}", ""]
        out.append("| " + " | ".join(HEADER) + " |")
        out.append("|---" * len(HEADER) + "|")
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in _body(rows)]
        out += ["", method, ""]
        if preferences:
            out += [f"## {PREFERENCE_TITLE}", "", "| " + " | ".join(PREFERENCE_HEADER) + " |", "|---" * len(PREFERENCE_HEADER) + "|"]
            out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in _preference_body(preferences)] + [""]
        if notes:
            out += [f"- {n}" for n in notes] + [""]
        out += ["## Findings", ""] + [f"- {f}" for f in findings] + [""]
        return "\n".join(out)
    import io

    from rich.console import Console
    from rich.measure import Measurement

    buf = io.StringIO()
    width = max(_width(), 40)
    console = Console(file=buf, force_terminal=sys.stdout.isatty(), width=width)

    def natural(table) -> int:
        return Measurement.get(console, console.options.update_width(1_000_000), table).maximum

    needed = {layout: max((natural(t) for t in _tables(rows, layout)), default=0) for layout in LAYOUTS}
    layout = next((lay for lay in LAYOUTS if needed[lay] <= width), LAYOUTS[-1])
    console.print(title, style="bold", highlight=False, markup=False)
    for table in _tables(rows, layout):
        console.print(table)
    if preferences:
        from rich.table import Table

        pt = Table(title=PREFERENCE_TITLE, title_justify="left")
        for i, h in enumerate(PREFERENCE_HEADER):
            pt.add_column(h, justify="left" if i < 2 else "right")
        for row in _preference_body(preferences):
            pt.add_row(*row)
        console.print(pt)
    if layout.startswith("pm"):
        wider = min(needed["interval"], needed["interval-below"])
        method = f"±: half the width of the 95% interval [lo, hi] (shown in full from {wider} columns on, and by --format markdown or json). " + method
    console.print(method, style="dim", highlight=False, markup=False)
    for n in notes:
        console.print(n, style="yellow", highlight=False, markup=False)
    console.print("\nFindings", style="bold")
    for f in findings:
        console.print(f"• {f}", highlight=False, markup=False)
    return buf.getvalue()


def _width() -> int:
    """The terminal's width (``COLUMNS`` when set; 120 when the output is not a terminal)."""
    import shutil

    return shutil.get_terminal_size((120, 24)).columns
