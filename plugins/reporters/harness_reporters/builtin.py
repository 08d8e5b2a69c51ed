"""Built-in report formats: ``table`` (rich, the terminal default), ``markdown``, ``csv``, ``json``.

Tables follow the reference study's layout, one per model: Config | BLEU | ROUGE-L |
BERTScore | Human, with n and the best value of each column marked.
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


def _cell_text(r: ReportRow | None, is_best: bool, *, human: bool, mark: tuple[str, str]) -> str:
    if r is None:
        return "—"
    if r.error and r.value is None:
        return "failed"
    text = _fmt(r.value)
    if r.value is not None and r.ci_low is not None and r.ci_high is not None:
        text += f" [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]"
    if human and r.value is not None:
        text += f" (n={r.n})"
    if is_best:
        text = f"{mark[0]}{text}{mark[1]}"
    return text


def _n_of(cells: dict[str, ReportRow]) -> int:
    return max((r.n for m, r in cells.items() if m != "human"), default=0)


class TableReporter(Reporter):
    name = "table"
    description = "rich terminal tables, one per model"

    def render(self, rows: Sequence[ReportRow], context: dict[str, Any]) -> str:
        from rich.console import Console
        from rich.table import Table

        grid, best = _grid(rows, context)
        cols = _columns(context, rows)
        width = context.get("width") or shutil.get_terminal_size((120, 24)).columns
        buf = io.StringIO()
        console = Console(file=buf, force_terminal=context.get("color", False), width=max(width, 80))
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
                    texts.append(_cell_text(r, is_best, human=metric == "human", mark=("[bold green]", " *[/]")))
                table.add_row(config, *texts, str(_n_of(cells)))
            console.print(table)
        for f in context.get("failures", []):
            console.print(f"[red]failed[/] {f['cell']}: {f['error']}", markup=True, highlight=False)
        if grid:
            console.print("* best value in the column for that model", style="dim")
        return buf.getvalue()


class MarkdownReporter(Reporter):
    name = "markdown"
    description = "Markdown tables, one per model"

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
                    texts.append(_cell_text(r, is_best, human=metric == "human", mark=("**", "**")))
                out.append(f"| {config} | " + " | ".join(texts) + f" | {_n_of(cells)} |")
            out.append("")
        if grid:
            out.append("Bold: best value in the column for that model.")
        for f in context.get("failures", []):
            out.append(f"- failed: `{f['cell']}`: {f['error']}")
        return "\n".join(out) + "\n"


_FIELDS = ("model", "config", "metric", "value", "n", "ci_low", "ci_high", "error")


class CsvReporter(Reporter):
    name = "csv"
    description = "one row per (model, config, metric)"

    def render(self, rows: Sequence[ReportRow], context: dict[str, Any]) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(_FIELDS)
        for r in rows:
            w.writerow(["" if getattr(r, f) is None else getattr(r, f) for f in _FIELDS])
        return buf.getvalue()


class JsonReporter(Reporter):
    name = "json"
    description = "a JSON list of {model, config, metric, value, n, …}"

    def render(self, rows: Sequence[ReportRow], context: dict[str, Any]) -> str:
        items = []
        for r in rows:
            d = {f: getattr(r, f) for f in _FIELDS}
            d["value"] = None if r.value is None or math.isnan(r.value) else r.value
            if "provenance" in context and r.metric in context["provenance"]:
                d["metric_identity"] = context["provenance"][r.metric]
            items.append(d)
        return json.dumps(items, indent=2) + "\n"


@hookimpl
def harness_register_reporters(register):
    for cls in (TableReporter, MarkdownReporter, CsvReporter, JsonReporter):
        register(cls)
