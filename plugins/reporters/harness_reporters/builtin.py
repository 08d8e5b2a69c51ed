"""Built-in report formats: ``table`` (rich, the terminal default), ``markdown``, ``csv``, ``json``.

Tables follow the reference study's layout, one per model: Config | BLEU | ROUGE-L |
BERTScore | Human, with n and the best value of each column marked. Every value shows
its 95% interval ``[lo, hi]`` when the context has one; a ``†`` marks a value that
differs significantly from the model's baseline config (paired test, Holm-corrected),
and the baseline's row is labelled. Markdown also carries the agreement, correlation,
findings, figure and provenance sections that ``harness report`` puts in the context.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from collections.abc import Sequence
from typing import Any

from harness import hookimpl
from harness.api import Reporter, ReportRow


def _fmt(v: float | None) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _grid(rows: Sequence[ReportRow], context: dict[str, Any]):
    """model -> config -> metric -> row, in the experiment's order, plus the best value per (model, metric)."""
    grid: dict[str, dict[str, dict[str, ReportRow]]] = {}
    for r in rows:
        grid.setdefault(r.model, {}).setdefault(r.config, {})[r.metric] = r
    higher = {m["name"]: m.get("higher_is_better", True) for m in context.get("metrics", [])}
    best: dict[tuple[str, str], float] = {}
    for model, configs in grid.items():
        for cells in configs.values():
            for metric, r in cells.items():
                if r.value is None or math.isnan(r.value):
                    continue
                k = (model, metric)
                if k not in best or (r.value > best[k] if higher.get(metric, True) else r.value < best[k]):
                    best[k] = r.value
    return grid, best


def _columns(context: dict[str, Any], rows: Sequence[ReportRow]) -> list[tuple[str, str]]:
    cols = [(m["name"], m.get("label") or m["name"]) for m in context.get("metrics", [])]
    if not cols:
        seen: list[str] = []
        for r in rows:
            if r.metric not in seen:
                seen.append(r.metric)
        cols = [(m, m) for m in seen]
    return cols


SIGNIFICANT = "†"


def _cell_text(r: ReportRow | None, is_best: bool, *, human: bool, mark: tuple[str, str], info: dict[str, Any] | None = None, sep: str = " ") -> str:
    if r is None:
        return "—"
    if r.error and r.value is None:
        return "failed"
    text = _fmt(r.value)
    if info and info.get("significant") and r.value is not None:
        text += SIGNIFICANT
    if r.value is not None and r.ci_low is not None and r.ci_high is not None:
        text += f"{sep}[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]"
    if human and r.value is not None:
        text += f" (n={r.n})"
    if is_best:
        text = f"{mark[0]}{text}{mark[1]}"
    return text


def _info(context: dict[str, Any], model: str, config: str, metric: str) -> dict[str, Any] | None:
    return (context.get("cells") or {}).get(model, {}).get(config, {}).get(metric)


def _baseline_config(context: dict[str, Any]) -> str | None:
    return (context.get("baseline") or {}).get("config")


def _config_label(context: dict[str, Any], config: str) -> str:
    return f"{config} (baseline)" if config == _baseline_config(context) else config


def legend_lines(context: dict[str, Any], rows: Sequence[ReportRow]) -> list[str]:
    """The notes under the tables: intervals, significance marks, the baseline."""
    out = []
    st = context.get("statistics") or {}
    conf = st.get("confidence", 0.95)
    if any(r.ci_low is not None for r in rows):
        out.append(
            f"[lo, hi]: {conf:.0%} interval — bootstrap over examples ({st.get('resamples', 1000)} resamples, seed {st.get('seed', 0)}; "
            "BLEU recomputed at corpus level per resample), Wilson for a binary human rate."
        )
    base = context.get("baseline") or {}
    if base.get("config"):
        alpha = st.get("significance_level", 1 - conf)
        out.append(
            f"{SIGNIFICANT} differs from the baseline config of the same model at p < {alpha:.2g} "
            f"(paired bootstrap over shared examples, Holm-corrected within each model and metric)."
        )
        out.append(f"Baseline: {base['config']} — {base.get('reason', '')}.")
    return out


def agreement_lines(context: dict[str, Any]) -> list[str]:
    out = []
    for a in context.get("agreement") or []:
        where = "all models" if a["scope"] == "all" else f"model '{a['scope']}'"
        alpha = "undefined" if a.get("alpha") is None else f"{a['alpha']:.3f}"
        out.append(
            f"Krippendorff's alpha ({a['level']}, {a['scale']} ratings), {where}: {alpha} "
            f"over {a['n_items']} items rated by 2+ of {a['n_annotators']} annotators ({a['n_ratings']} ratings)."
        )
    return out


def _ci(value: Any, low: Any, high: Any) -> str:
    if value is None:
        return "—"
    text = f"{value:.3f}"
    if low is not None and high is not None:
        text += f" [{low:.3f}, {high:.3f}]"
    return text


def correlation_table(context: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the metric-human correlation table."""
    labels = {m["name"]: m.get("label") or m["name"] for m in context.get("metrics", [])}
    header = ["Level", "Scope", "Metric", "n", "Pearson r", "Spearman ρ", "Kendall τ-b"]
    body = []
    for c in context.get("correlations") or []:
        body.append(
            [
                c.get("level", "system"),
                c["scope"],
                labels.get(c["metric"], c["metric"]),
                str(c["n"]),
                *(_ci(c.get(k), c.get(f"{k}_ci_low"), c.get(f"{k}_ci_high")) for k in ("pearson", "spearman", "kendall")),
            ]
        )
    return header, body


def comparison_table(context: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    labels = {m["name"]: m.get("label") or m["name"] for m in context.get("metrics", [])}
    header = ["Model", "Metric", "Config", "Δ vs baseline [95% CI]", "n", "p", "p (Holm)", "Significant"]
    body = []
    for c in context.get("comparisons") or []:
        sig = "—" if c.get("significant") is None else ("yes " + SIGNIFICANT if c["significant"] else "no")
        body.append(
            [
                c["model"],
                labels.get(c["metric"], c["metric"]),
                c["config"],
                _ci(c.get("diff"), c.get("ci_low"), c.get("ci_high")) if c.get("diff") is not None else (c.get("note") or "—"),
                str(c.get("n") or "—"),
                "—" if c.get("p_value") is None else f"{c['p_value']:.3g}",
                "—" if c.get("p_holm") is None else f"{c['p_holm']:.3g}",
                sig,
            ]
        )
    return header, body


def _n_of(cells: dict[str, ReportRow]) -> int:
    return max((r.n for m, r in cells.items() if m != "human"), default=0)


class TableReporter(Reporter):
    name = "table"
    is_default = True
    correlations = False
    description = "rich terminal tables, one per model"

    def render(self, rows: Sequence[ReportRow], context: dict[str, Any]) -> str:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        grid, best = _grid(rows, context)
        cols = _columns(context, rows)
        width = context.get("width") or shutil.get_terminal_size((120, 24)).columns
        buf = io.StringIO()
        console = Console(file=buf, force_terminal=context.get("color", False), width=max(width, 80))
        # intervals go under their value when the table would not fit on one line per row
        texts_all = [_cell_text(r, False, human=r.metric == "human", mark=("", "")) for r in rows]
        config_w = max((len(c) + 11 for cs in grid.values() for c in cs), default=10)
        cell_w = max((len(t) for t in texts_all), default=5) + 2
        sep = " " if config_w + len(cols) * (cell_w + 3) + 10 <= max(width, 80) else "\n"
        for model, configs in grid.items():
            table = Table(title=f"{model}", title_justify="left", caption=context.get("caption_of", {}).get(model))
            table.add_column("Config", no_wrap=True)
            for _, label in cols:
                table.add_column(label, justify="right")
            table.add_column("n", justify="right")
            for config, cells in configs.items():
                texts = []
                for metric, _ in cols:
                    r = cells.get(metric)
                    is_best = r is not None and r.value is not None and best.get((model, metric)) == r.value
                    texts.append(
                        _cell_text(r, is_best, human=metric == "human", mark=("[bold green]", " *[/]"), info=_info(context, model, config, metric), sep=sep)
                    )
                table.add_row(_config_label(context, config), *texts, str(_n_of(cells)))
            console.print(table)
        for f in context.get("failures", []):
            console.print(f"[red]failed[/] {escape(f['cell'])}: {escape(f['error'])}", markup=True, highlight=False)
        if grid:
            console.print("* best value in the column for that model", style="dim", highlight=False)
            for line in legend_lines(context, rows):
                console.print(line, style="dim", markup=False, highlight=False)
        for line in agreement_lines(context):
            console.print(line, markup=False, highlight=False)
        return buf.getvalue()


class MarkdownReporter(Reporter):
    name = "markdown"
    figures = "files"
    description = "Markdown tables, one per model, with intervals, tests, correlations and provenance"

    def render(self, rows: Sequence[ReportRow], context: dict[str, Any]) -> str:
        grid, best = _grid(rows, context)
        cols = _columns(context, rows)
        out = [f"# {context.get('experiment', 'Results')}", ""]
        for model, configs in grid.items():
            out += [f"## {model}", "", "| Config | " + " | ".join(l for _, l in cols) + " | n |", "|---" * (len(cols) + 2) + "|"]
            for config, cells in configs.items():
                texts = []
                for metric, _ in cols:
                    r = cells.get(metric)
                    is_best = r is not None and r.value is not None and best.get((model, metric)) == r.value
                    texts.append(_cell_text(r, is_best, human=metric == "human", mark=("**", "**"), info=_info(context, model, config, metric)))
                out.append(f"| {_md(_config_label(context, config))} | " + " | ".join(texts) + f" | {_n_of(cells)} |")
            out.append("")
        if grid:
            out.append("Bold: best value in the column for that model.  ")
            for line in legend_lines(context, rows):
                out.append(f"{_md(line)}  ")
            out.append("")
        for f in context.get("failures", []):
            out.append(f"- failed: `{f['cell']}`: {f['error']}")
        if "comparisons" in context:
            out += _md_section("Paired comparisons with the baseline", *comparison_table(context), empty="No comparisons (a single config, or no values).")
        if "agreement" in context:
            out += ["## Inter-annotator agreement", ""]
            lines = agreement_lines(context)
            out += [f"- {_md(line)}" for line in lines] or ["No item has ratings from two or more annotators, so agreement cannot be measured."]
            out.append("")
        if "correlations" in context:
            out += _md_section(
                "Agreement of metrics with human judgment",
                *correlation_table(context),
                empty="No correlations: import human ratings (`harness human export`, then `harness human import`).",
            )
            for note in context.get("correlation_notes") or []:
                out.append(f"- {_md(note)}")
            if context.get("correlation_notes"):
                out.append("")
            out += ["## Findings", ""]
            out += [f"- {_md(line)}" for line in context.get("findings") or []] or ["No findings without human ratings."]
            out.append("")
        figures = context.get("figures")
        if figures is not None:
            out += ["## Plots", ""]
            for f in figures:
                out += [f"### {f['title']}", "", f"![{f['title']}]({f['path']})" if f.get("path") else "", "", _md(f["caption"]), ""]
            if not figures:
                out += ["No plots (nothing swept or no values).", ""]
        elif "cells" in context and "run_provenance" in context:
            out += ["## Plots", "", "Plots are written beside the report when it goes to a file (`-o report.md`).", ""]
        prov = context.get("run_provenance")
        if prov:
            import json as _json

            out += ["## Provenance", "", "Library versions, metric signatures and models, seeds, hardware and the effective decoding of every config.", ""]
            out += ["```json", _json.dumps(prov, indent=2, sort_keys=True, default=str), "```", ""]
        return "\n".join(out) + "\n"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


def _md_section(title: str, header: list[str], body: list[list[str]], *, empty: str) -> list[str]:
    out = [f"## {title}", ""]
    if not body:
        return out + [empty, ""]
    out.append("| " + " | ".join(header) + " |")
    out.append("|---" * len(header) + "|")
    for row in body:
        out.append("| " + " | ".join(_md(c) for c in row) + " |")
    return out + [""]


_FIELDS = ("model", "config", "metric", "value", "n", "ci_low", "ci_high", "error", "note")
#: what each row also carries from the report's statistics (``context["cells"]``)
_STAT_FIELDS = ("interval", "baseline", "diff", "p_value", "p_holm", "significant")


class CsvReporter(Reporter):
    name = "csv"
    correlations = False
    description = "one row per (model, config, metric)"

    def render(self, rows: Sequence[ReportRow], context: dict[str, Any]) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(_FIELDS + _STAT_FIELDS)
        for r in rows:
            info = _info(context, r.model, r.config, r.metric) or {}
            values = [getattr(r, f) for f in _FIELDS] + [info.get(f) for f in _STAT_FIELDS]
            w.writerow(["" if v is None else v for v in values])
        return buf.getvalue()


class JsonReporter(Reporter):
    name = "json"
    correlations = False
    description = "a JSON list of {model, config, metric, value, n, …}"

    def render(self, rows: Sequence[ReportRow], context: dict[str, Any]) -> str:
        items = []
        for r in rows:
            d = {f: getattr(r, f) for f in _FIELDS}
            d["value"] = None if r.value is None or math.isnan(r.value) else r.value
            info = _info(context, r.model, r.config, r.metric) or {}
            for f in _STAT_FIELDS:
                d[f] = info.get(f)
            if "provenance" in context and r.metric in context["provenance"]:
                d["metric_identity"] = context["provenance"][r.metric]
            items.append(d)
        return json.dumps(items, indent=2) + "\n"


@hookimpl
def harness_register_reporters(register):
    for cls in (TableReporter, MarkdownReporter, CsvReporter, JsonReporter):
        register(cls)
