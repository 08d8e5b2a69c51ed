"""Built-in report formats: ``table`` (rich, the terminal default), ``markdown``, ``csv``, ``json``.

Tables follow the reference study's layout, one per model: Config | BLEU | ROUGE-L |
BERTScore | Human, with n and the best value of each column marked. Every value shows
its 95% interval ``[lo, hi]`` when the context has one; a ``†`` marks a value that
differs significantly from the model's baseline config (paired test, Holm-corrected),
and the baseline's row is labelled. Markdown also carries the agreement, correlation,
findings, figure and provenance sections that ``harness report`` puts in the context.

The terminal table fits the width it is given (``context["width"]``, else the
terminal's): configs get short labels that say what differs from the sweep defaults
(``temp=0.0``, ``beams=5``; the full names in a legend under the tables), and the
intervals take the first layout whose tables fit — ``value [lo, hi]`` on one line, the
interval under the value, ``value ±half-width`` on one line, or the ``±`` under the
value (the Config column then wraps between parameters if it still must) — so no header
and no number is cut. Markdown, CSV and JSON keep the full config names.
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

from . import analysis_view
from .claims import PPI_CSV_FIELDS, PPI_LABEL, claims_lines, has_ppi, ppi_fields, ppi_info, ppi_lines, ppi_parts, ppi_text, settle_fields


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


def _judge_cell(context: dict[str, Any], model: str, config: str, metric: str) -> dict[str, Any] | None:
    return (((context.get("judges") or {}).get("cells") or {}).get(model) or {}).get(config, {}).get(metric)


def judge_lines(context: dict[str, Any]) -> list[str]:
    """What the report says about its LLM judges (computed by ``harness report``), one sentence a line."""
    return list((context.get("judges") or {}).get("lines") or [])


def _baseline_config(context: dict[str, Any]) -> str | None:
    return (context.get("baseline") or {}).get("config")


def _config_label(context: dict[str, Any], config: str) -> str:
    return f"{config} (baseline)" if config == _baseline_config(context) else config


def legend_lines(context: dict[str, Any], rows: Sequence[ReportRow], *, intervals: str = "[lo, hi]", where_full: str = "") -> list[str]:
    """The notes under the tables: intervals, significance marks, the baseline.

    ``intervals`` says how the tables show them: ``"[lo, hi]"``, or ``"±"`` (half the
    width) with ``where_full`` saying where the full ``[lo, hi]`` can be seen.
    """
    out = []
    st = context.get("statistics") or {}
    conf = st.get("confidence", 0.95)
    if any(r.ci_low is not None for r in rows):
        how = (
            f"bootstrap over examples ({st.get('resamples', 1000)} resamples, seed {st.get('seed', 0)}; "
            "BLEU recomputed at corpus level per resample), Wilson for a binary human rate."
        )
        if intervals == "±":
            out.append(f"±: half the width of the {conf:.0%} interval [lo, hi]{f' ({where_full})' if where_full else ''} — {how}")
        else:
            out.append(f"[lo, hi]: {conf:.0%} interval — {how}")
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


def pairwise_table(context: dict[str, Any], labels: dict[str, str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the human pairwise preferences: each config's win rate against the config it was compared with."""
    labels = labels or {}
    header = ["Model", "Config", "vs", "Win rate [95% CI]", "Examples", "Wins / ties / losses"]
    body = []
    for w in (context.get("pairwise") or {}).get("win_rates") or []:
        body.append(
            [
                w["model"],
                labels.get(w["config"], w["config"]),
                labels.get(w["baseline"], w["baseline"]),
                _ci(w.get("rate"), w.get("ci_low"), w.get("ci_high")),
                str(w["n_examples"]),
                f"{w['wins']} / {w['ties']} / {w['losses']}",
            ]
        )
    return header, body


def ranking_lines(context: dict[str, Any], labels: dict[str, str] | None = None) -> list[str]:
    """One line per model: its configs ranked by Bradley-Terry strength."""
    labels = labels or {}
    by_model: dict[str, list[dict[str, Any]]] = {}
    for b in (context.get("pairwise") or {}).get("ranking") or []:
        by_model.setdefault(b["model"], []).append(b)
    out = []
    for model, scores in by_model.items():
        ranked = ", ".join(f"{b['rank']}. {labels.get(b['config'], b['config'])} ({b['strength']:+.2f})" for b in sorted(scores, key=lambda b: (b["rank"], b["config"])))
        out.append(f"Bradley-Terry ranking of {model} from the pairwise judgments: {ranked}")
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


# --------------------------------------------------------------------------- terminal table

#: shorter names of the standard decoder's parameters; any other parameter keeps its own name
ABBREVIATIONS = {"temperature": "temp", "num_beams": "beams", "beam_sampling": "beam_sample", "max_new_tokens": "max_tokens"}
#: appended to the baseline config's label in the terminal table
BASE_MARK = " (base)"
#: the terminal table's interval layouts, richest first: the first whose tables fit is used;
#: when none does, the last one with the Config column wrapped between parameters
LAYOUTS = ("interval", "interval-below", "pm", "pm-below")


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _short_names(context: dict[str, Any]) -> dict[str, str]:
    """Each swept parameter's display name: its abbreviation unless that would clash with another parameter's name."""
    sweep = context.get("sweep") or {}
    keys = list(dict.fromkeys([*(k for p in (sweep.get("config_params") or {}).values() for k in p), *(sweep.get("defaults") or {})]))
    wanted = {k: ABBREVIATIONS.get(k, k) for k in keys}
    taken = list(wanted.values())
    return {k: a if taken.count(a) == 1 else k for k, a in wanted.items()}


def config_labels(context: dict[str, Any], configs: Sequence[str]) -> dict[str, str]:
    """Short, unique labels for ``configs``: what each differs in from the sweep defaults.

    With the defaults known (``context["sweep"]["defaults"]``) a config is labelled by the
    parameters whose value differs from them (``temp=0.0``, ``temp=0.5 beams=2`` in a
    grid) and the defaults themselves by ``defaults``; without them, by the values of the
    parameters that vary between the configs. Parameter names are abbreviated for the
    standard decoder (``temp``, ``beams``) and kept as they are for any other. A config
    whose parameters are unknown, or whose label would not be unique, keeps its full name.
    """
    sweep = context.get("sweep") or {}
    params_of: dict[str, dict[str, Any]] = sweep.get("config_params") or {}
    defaults: dict[str, Any] = sweep.get("defaults") or {}
    known = [c for c in configs if c in params_of]
    keys = list(dict.fromkeys(k for c in known for k in params_of[c]))
    short = _short_names(context)
    varying = [k for k in keys if len({_param_text(params_of[c].get(k)) for c in known}) > 1]
    labels: dict[str, str] = {}
    for c in configs:
        p = params_of.get(c)
        if p is None:
            labels[c] = c
            continue
        if defaults:
            shown = [k for k in keys if k in p and (k not in defaults or _param_text(p[k]) != _param_text(defaults[k]))]
            labels[c] = " ".join(f"{short[k]}={_param_text(p[k])}" for k in shown) or "defaults"
        else:
            labels[c] = " ".join(f"{short[k]}={_param_text(p.get(k))}" for k in varying) or c
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    return {c: (label if counts[label] == 1 else c) for c, label in labels.items()}


def config_legend(context: dict[str, Any], labels: dict[str, str], width: int) -> list[str]:
    """Lines naming every config by its full name, packed into columns that fit ``width``; none when the labels are the names."""
    entries = [(label, name) for name, label in labels.items() if label != name]
    if not entries:
        return []
    sweep = context.get("sweep") or {}
    defaults = sweep.get("defaults") or {}
    varied = list((sweep.get("params") or {}).keys())
    short = _short_names(context)
    if defaults:
        shown = ", ".join(f"{short[k]}={_param_text(defaults[k])}" for k in (varied or defaults) if k in defaults)
        head = f"Configs by what differs from the sweep defaults ({shown})"
    else:
        head = "Configs by their swept parameters"
    base = _baseline_config(context)
    if base in labels:
        head += f"; {BASE_MARK.strip()} marks the baseline"
    renamed = [f"{a} = {k}" for k, a in short.items() if a != k and any(f"{a}=" in label for label in labels.values())]
    if renamed:
        head += f"; {', '.join(renamed)}"
    out = [head + ". Full names:"]
    lw = max(len(label) for label, _ in entries)
    cells = [f"{label.ljust(lw)}  {name}" for label, name in entries]
    cw = max(len(c) for c in cells)
    per_line = max(1, (width - 2 + 4) // (cw + 4))
    n_lines = -(-len(cells) // per_line)
    for i in range(n_lines):
        row = [cells[j] for j in range(i, len(cells), n_lines)]
        out.append("  " + "    ".join(c.ljust(cw) for c in row).rstrip())
    return out


def _num(v: float | None) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _table_cell(r: ReportRow | None, *, best: bool, significant: bool, human: bool, layout: str):
    """One cell of the terminal table as rich Text, its line breaks chosen by ``layout`` (never by wrapping)."""
    from rich.text import Text

    if r is None:
        return Text("—")
    if r.error and r.value is None:
        return Text("failed", style="red")
    value = _fmt(r.value)
    if significant and _num(r.value):
        value += SIGNIFICANT
    interval = None
    if _num(r.value) and _num(r.ci_low) and _num(r.ci_high):
        interval = f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]" if layout.startswith("interval") else f"±{_fmt((r.ci_high - r.ci_low) / 2)}"
    n_text = f"(n={r.n})" if human and _num(r.value) else None
    below = layout.endswith("-below")
    first = " ".join(t for t in (value, None if below else interval, n_text) if t)
    text = Text()
    text.append(first + (" *" if best else ""), style="bold green" if best else "")
    if below and interval:
        text.append("\n" + interval)
    return text


def _ppi_cell(info: dict[str, Any] | None, layout: str):
    """A ``Human (PPI)`` cell of the terminal table, laid out like the others."""
    from rich.text import Text

    value, interval, n_eff = ppi_parts(info, pm=layout.startswith("pm"))
    below = layout.endswith("-below")
    text = Text(" ".join(t for t in (value, None if below else interval, n_eff) if t))
    if below and interval:
        text.append("\n" + interval)
    return text


def _n_of(cells: dict[str, ReportRow]) -> int:
    return max((r.n for m, r in cells.items() if m != "human"), default=0)


def _natural_width(console: Any, renderable: Any) -> int:
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(1_000_000), renderable).maximum


class TableReporter(Reporter):
    name = "table"
    is_default = True
    correlations = False
    description = "rich terminal tables, one per model, fitted to the terminal's width"

    views = ("report", "analysis")

    def render(self, rows: Sequence[ReportRow], context: dict[str, Any]) -> str:
        if context.get("view") == "analysis":
            return analysis_view.table(context)
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
        from rich.text import Text

        grid, best = _grid(rows, context)
        cols = _columns(context, rows)
        width = max(int(context.get("width") or shutil.get_terminal_size((120, 24)).columns), 40)
        buf = io.StringIO()
        console = Console(file=buf, force_terminal=context.get("color", False), width=width)
        configs = list(dict.fromkeys(c for cs in grid.values() for c in cs))
        labels = config_labels(context, configs)
        base = _baseline_config(context)
        ppi_on = has_ppi(context) and any(m == "human" for m, _ in cols)

        def tables(layout: str, wrap_config: bool = False) -> list[Table]:
            out = []
            for model, model_configs in grid.items():
                table = Table(title=Text(model), title_justify="left", caption=context.get("caption_of", {}).get(model))
                table.add_column("Config", no_wrap=not wrap_config)
                for metric, label in cols:
                    table.add_column(label, justify="right", no_wrap=True)
                    if metric == "human" and ppi_on:
                        table.add_column(PPI_LABEL, justify="right", no_wrap=True)
                table.add_column("n", justify="right", no_wrap=True)
                for config, cells in model_configs.items():
                    texts = []
                    for metric, _ in cols:
                        r = cells.get(metric)
                        info = _info(context, model, config, metric) or {}
                        is_best = r is not None and _num(r.value) and best.get((model, metric)) == r.value
                        texts.append(_table_cell(r, best=is_best, significant=bool(info.get("significant")), human=metric == "human", layout=layout))
                        if metric == "human" and ppi_on:
                            texts.append(_ppi_cell(ppi_info(context, model, config), layout))
                    label = Text(labels[config] + (BASE_MARK if config == base else ""))
                    table.add_row(label, *texts, str(_n_of(cells)))
                out.append(table)
            return out

        needed = {layout: max((_natural_width(console, t) for t in tables(layout)), default=0) for layout in LAYOUTS}
        layout = next((lay for lay in LAYOUTS if needed[lay] <= width), LAYOUTS[-1])
        for table in tables(layout, wrap_config=needed[layout] > width):
            console.print(table)
        for f in context.get("failures", []):
            console.print(f"[red]failed[/] {escape(f['cell'])}: {escape(f['error'])}", markup=True, highlight=False)
        if grid:
            console.print("* best value in the column for that model", style="dim", highlight=False)
            for line in config_legend(context, labels, width):
                console.print(line, style="dim", markup=False, highlight=False)
            wider = min(needed["interval"], needed["interval-below"])
            where = f"shown in full from {wider} columns on, and by the markdown, csv and json formats"
            for line in legend_lines(context, rows, intervals="[lo, hi]" if layout.startswith("interval") else "±", where_full=where):
                console.print(line, style="dim", markup=False, highlight=False)
            for line in ppi_lines(context):
                console.print(line, style="dim", markup=False, highlight=False)
            claims = claims_lines(context, labels)
            if claims:
                console.print("What these numbers can claim", style="bold")
                for line in claims:
                    console.print(f"• {line}", markup=False, highlight=False)
        for line in agreement_lines(context):
            console.print(line, markup=False, highlight=False)
        for line in judge_lines(context):
            console.print(line, markup=False, highlight=False)
        header, body = pairwise_table(context, labels)
        if body:
            pt = Table(title="Pairwise preferences (human)", title_justify="left")
            for i, h in enumerate(header):
                pt.add_column(h, justify="left" if i < 3 else "right", overflow="fold")
            for row in body:
                pt.add_row(*row)
            console.print(pt)
            for line in ranking_lines(context, labels):
                console.print(line, markup=False, highlight=False)
        return buf.getvalue()


class MarkdownReporter(Reporter):
    name = "markdown"
    figures = "files"
    description = "Markdown tables, one per model, with intervals, tests, correlations and provenance"

    views = ("report", "analysis")

    def render(self, rows: Sequence[ReportRow], context: dict[str, Any]) -> str:
        if context.get("view") == "analysis":
            return analysis_view.markdown(context)
        grid, best = _grid(rows, context)
        cols = _columns(context, rows)
        out = [f"# {_md_inline(context.get('experiment') or 'Results')}", ""]
        ppi_on = has_ppi(context) and any(m == "human" for m, _ in cols)
        heads = [h for m, l in cols for h in ([l, PPI_LABEL] if m == "human" and ppi_on else [l])]
        for model, configs in grid.items():
            out += [f"## {_md_inline(model)}", "", "| Config | " + " | ".join(heads) + " | n |", "|---" * (len(heads) + 2) + "|"]
            for config, cells in configs.items():
                texts = []
                for metric, _ in cols:
                    r = cells.get(metric)
                    is_best = r is not None and r.value is not None and best.get((model, metric)) == r.value
                    texts.append(_cell_text(r, is_best, human=metric == "human", mark=("**", "**"), info=_info(context, model, config, metric)))
                    if metric == "human" and ppi_on:
                        texts.append(ppi_text(ppi_info(context, model, config)))
                out.append(f"| {_md(_config_label(context, config))} | " + " | ".join(texts) + f" | {_n_of(cells)} |")
            out.append("")
        if grid:
            out.append("Bold: best value in the column for that model.  ")
            for line in legend_lines(context, rows) + ppi_lines(context):
                out.append(f"{_md(line)}  ")
            out.append("")
        for f in context.get("failures", []):
            out.append(f"- failed: `{f['cell']}`: {f['error']}")
        if "comparisons" in context:
            out += _md_section("Paired comparisons with the baseline", *comparison_table(context), empty="No comparisons (a single config, or no values).")
        claims = claims_lines(context)
        if claims:
            out += ["## What the numbers can claim", ""] + [f"- {_md(line)}" for line in claims] + [""]
        if (context.get("pairwise") or {}).get("win_rates"):
            out += _md_section("Pairwise preferences (human)", *pairwise_table(context), empty="")
            out += [f"- {_md(line)}" for line in ranking_lines(context)]
            out += ["", _md((context.get("pairwise") or {}).get("method", "")), ""]
        if judge_lines(context):
            out += ["## LLM judges", ""] + [f"- {_md(line)}" for line in judge_lines(context)] + [""]
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


#: characters that Markdown reads as formatting in running text (headings, emphasis, links, code, tables)
_MD_SPECIAL = set("\\`*_[]|~#!")


def _md_inline(text: str) -> str:
    """``text`` shown as written in Markdown (as the HTML report escapes it): formatting characters backslash-escaped,
    HTML's ``<``, ``>`` and ``&`` as entities (renderers pass raw HTML through), line breaks as spaces."""
    out = []
    for ch in " ".join(str(text).splitlines()):
        if ch in _MD_SPECIAL:
            out.append("\\" + ch)
        else:
            out.append({"<": "&lt;", ">": "&gt;", "&": "&amp;"}.get(ch, ch))
    return "".join(out)


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

    views = ("report", "analysis")

    def render(self, rows: Sequence[ReportRow], context: dict[str, Any]) -> str:
        if context.get("view") == "analysis":
            return analysis_view.csv_text(context)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(_FIELDS + _STAT_FIELDS + PPI_CSV_FIELDS)
        for r in rows:
            info = _info(context, r.model, r.config, r.metric) or {}
            ppi = ppi_fields(context, r.model, r.config) if r.metric == "human" else {}
            values = [getattr(r, f) for f in _FIELDS] + [info.get(f) for f in _STAT_FIELDS] + [ppi.get(f) for f in PPI_CSV_FIELDS]
            w.writerow(["" if v is None else v for v in values])
        return buf.getvalue()


class JsonReporter(Reporter):
    name = "json"
    correlations = False
    description = "a JSON list of {model, config, metric, value, n, …}"

    views = ("report", "analysis")

    def render(self, rows: Sequence[ReportRow], context: dict[str, Any]) -> str:
        if context.get("view") == "analysis":
            return analysis_view.json_text(context)
        items = []
        for r in rows:
            d = {f: getattr(r, f) for f in _FIELDS}
            d["value"] = None if r.value is None or math.isnan(r.value) else r.value
            info = _info(context, r.model, r.config, r.metric) or {}
            for f in _STAT_FIELDS:
                d[f] = info.get(f)
            d["n_missing"] = r.missing
            d["against"] = r.against
            d.update(settle_fields(context, r.model, r.config, r.metric))
            if r.metric == "human":
                d.update(ppi_fields(context, r.model, r.config))
            if "provenance" in context and r.metric in context["provenance"]:
                d["metric_identity"] = context["provenance"][r.metric]
            judge = _judge_cell(context, r.model, r.config, r.metric)
            if judge is not None:  # an LLM judge: consistency, position bias, missing reasons, length-controlled win rate
                d["judge"] = judge
            items.append(d)
        return json.dumps(items, indent=2) + "\n"


@hookimpl
def harness_register_reporters(register):
    for cls in (TableReporter, MarkdownReporter, CsvReporter, JsonReporter):
        register(cls)
