"""The ``html`` report: one self-contained file (styles inline, plots embedded as PNG data URIs).

Sections, each a ``<section>`` with a stable id: ``results`` (per-model tables with 95%
intervals, significance marks and the baseline, and the Human (PPI) column), ``comparisons``
(per model, a compact config × metric matrix of the differences from the baseline: Δ, † where
significant, the interval below and p on hover; what has no value is left out and counted once),
``claims`` (the smallest differences each test set detects, what would settle a non-significant
comparison, outputs identical to the baseline's), ``agreement`` (Krippendorff's alpha), ``correlations`` (every
metric against human ratings), ``findings``, ``plots`` and ``provenance`` (library
versions, metric signatures and models, seeds, hardware, effective decoding).

A short script at the end checks that every section and image is there and sets
``data-render="ok"`` on ``<body>`` (``"error: ..."`` otherwise), so a headless browser
can confirm the page renders cleanly. Nothing is loaded from the network.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from typing import Any

from harness import hookimpl
from harness.api import Reporter, ReportRow

from .builtin import (
    SIGNIFICANT, _columns, _grid, _info, agreement_lines, config_labels, correlation_table, judge_lines, legend_lines, pairwise_table, ranking_lines,
)
from .claims import PPI_LABEL, claims_lines, has_ppi, ppi_info, ppi_lines, ppi_parts

SECTIONS = ("results", "comparisons", "claims", "pairwise", "judges", "agreement", "correlations", "findings", "plots", "provenance")

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:80rem;padding:0 1rem;color:#1b1f24;line-height:1.45}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2rem;margin-top:2.2rem}
nav a{margin-right:1rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:right;vertical-align:top}
th{background:#f6f8fa}td.l,th.l{text-align:left}
tr.baseline td{background:#fff8c5}
table.matrix td{white-space:nowrap}table.matrix .ci{display:block}
.best{font-weight:700;color:#116329}.sig{color:#cf222e;font-weight:700}
.ci{color:#57606a;font-size:.85em;white-space:nowrap}
.muted{color:#57606a}.failed{color:#cf222e}
figure{display:inline-block;margin:.5rem 1rem 1rem 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #d0d7de}
figcaption{font-size:.85rem;color:#57606a;max-width:60rem}
pre{background:#f6f8fa;padding:.6rem;overflow:auto;font-size:.8rem}
details{margin:.5rem 0}
"""

_SCRIPT = """
(function () {
  var problems = [];
  window.addEventListener('error', function (e) { problems.push('script error: ' + e.message); });
  function check() {
    var need = %s;
    need.forEach(function (id) { if (!document.getElementById(id)) problems.push('missing section ' + id); });
    Array.prototype.forEach.call(document.images, function (img) {
      if (!img.complete || img.naturalWidth === 0) problems.push('image not rendered: ' + img.alt);
    });
    document.body.setAttribute('data-render', problems.length ? 'error: ' + problems.join('; ') : 'ok');
  }
  if (document.readyState === 'complete') check(); else window.addEventListener('load', check);
})();
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{digits}f}"


def _table(header: Sequence[str], body: Sequence[Sequence[str]], *, left: int = 1, raw: bool = False) -> str:
    out = ["<table><thead><tr>"]
    out += [f'<th class="l">{_e(h)}</th>' if i < left else f"<th>{_e(h)}</th>" for i, h in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for row in body:
        out.append("<tr>" + "".join(f'<td class="l">{c if raw else _e(c)}</td>' if i < left else f"<td>{c if raw else _e(c)}</td>" for i, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


class HtmlReporter(Reporter):
    name = "html"
    version = "1"
    description = "one self-contained HTML file: tables with intervals, tests, agreement, correlations, plots, provenance"
    #: ask ``harness report`` for the figures as PNG bytes to embed
    figures = "embedded"
    views = ("report", "analysis")

    def render(self, rows: Sequence[ReportRow], context: dict[str, Any]) -> str:
        if context.get("view") == "analysis":
            return self._analysis(context)
        title = context.get("experiment") or "Results"
        prov = context.get("run_provenance") or {}
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)} — harness report</title><style>{_CSS}</style></head>",
            '<body data-render="pending">',
            f"<header><h1>{_e(title)}</h1>",
            f'<p class="muted">harness {_e(prov.get("harness", ""))} · generated {_e(prov.get("generated", ""))}'
            f' · experiment file {_e(prov.get("experiment_file", ""))}</p></header>',
            "<nav>" + "".join(f'<a href="#{s}">{s.capitalize()}</a>' for s in SECTIONS) + "</nav>",
            self._results(rows, context),
            self._comparisons(context),
            self._claims(context),
            self._pairwise(context),
            self._judges(context),
            self._agreement(context),
            self._correlations(context),
            self._findings(context),
            self._plots(context),
            self._provenance(context),
            f"<script>{_SCRIPT % json.dumps(list(SECTIONS))}</script>",
            "</body></html>",
        ]
        return "\n".join(parts) + "\n"

    def _analysis(self, context: dict[str, Any]) -> str:
        """``harness analyze --format html``: the correlations and the findings, one self-contained page."""
        title = context.get("title") or "Metric-human agreement"
        sections = ("correlations", "findings")
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)} — harness analyze</title><style>{_CSS}</style></head>",
            '<body data-render="pending">',
            f"<header><h1>{_e(title)}</h1></header>",
            self._correlations({**context, "statistics": {"correlations": context.get("method", "").rstrip(".")}}),
            self._preferences(context),
            self._findings(context),
            f"<script>{_SCRIPT % json.dumps(list(sections))}</script>",
            "</body></html>",
        ]
        return "\n".join(parts) + "\n"

    # -- sections

    def _preferences(self, context: dict[str, Any]) -> str:
        """``harness analyze``: each metric's (or judge's) agreement with the annotators' pairwise preferences."""
        from .analysis_view import PREFERENCE_HEADER, PREFERENCE_TITLE, preference_rows

        rows = preference_rows(context)
        if not rows:
            return ""
        head = "".join(f'<th class="{"l" if i < 2 else ""}">{_e(h)}</th>' for i, h in enumerate(PREFERENCE_HEADER))
        body = "".join("<tr>" + "".join(f'<td class="{"l" if i < 2 else ""}">{_e(c)}</td>' for i, c in enumerate(r)) + "</tr>" for r in rows)
        return f'<section id="preferences"><h2>{_e(PREFERENCE_TITLE)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>'

    def _results(self, rows: Sequence[ReportRow], context: dict[str, Any]) -> str:
        grid, best = _grid(rows, context)
        cols = _columns(context, rows)
        base = (context.get("baseline") or {}).get("config")
        ppi_on = has_ppi(context) and any(m == "human" for m, _ in cols)
        out = ['<section id="results"><h2>Results</h2>']
        if not grid:
            out.append("<p>No results in the store yet.</p>")
        for model, configs in grid.items():
            out.append(f"<h3>{_e(model)}</h3><table><thead><tr><th class=\"l\">Config</th>")
            for metric, label in cols:
                out.append(f"<th>{_e(label)}</th>" + (f"<th>{_e(PPI_LABEL)}</th>" if metric == "human" and ppi_on else ""))
            out.append("<th>n</th></tr></thead><tbody>")
            for config, cells in configs.items():
                is_base = config == base
                row_class = ' class="baseline"' if is_base else ""
                mark = " <em>(baseline)</em>" if is_base else ""
                out.append(f'<tr{row_class}><td class="l">{_e(config)}{mark}</td>')
                for metric, _ in cols:
                    r = cells.get(metric)
                    out.append(f"<td>{self._cell(r, best.get((model, metric)), _info(context, model, config, metric), metric == 'human')}</td>")
                    if metric == "human" and ppi_on:
                        out.append(f"<td>{self._ppi_cell(ppi_info(context, model, config))}</td>")
                n = max((r.n for m, r in cells.items() if m != "human"), default=0)
                out.append(f"<td>{n}</td></tr>")
            out.append("</tbody></table>")
        if grid:
            out.append('<p class="muted"><span class="best">Bold</span>: best value in the column for that model.<br>')
            out.append("<br>".join(_e(line) for line in legend_lines(context, rows) + ppi_lines(context)) + "</p>")
        for f in context.get("failures", []):
            out.append(f'<p class="failed">failed {_e(f["cell"])}: {_e(f["error"])}</p>')
        out.append("</section>")
        return "".join(out)

    @staticmethod
    def _cell(r: ReportRow | None, best: float | None, info: dict[str, Any] | None, human: bool) -> str:
        if r is None:
            return "—"
        if r.value is None:
            return '<span class="failed">failed</span>' if r.error else "—"
        text = _num(r.value)
        if best is not None and r.value == best:
            text = f'<span class="best">{text}</span>'
        if info and info.get("significant"):
            p = info.get("p_holm")
            text += f'<span class="sig" title="differs from the baseline, Holm-corrected p = {_num(p, 4)}">{SIGNIFICANT}</span>'
        if r.ci_low is not None and r.ci_high is not None:
            text += f' <span class="ci">[{_num(r.ci_low)}, {_num(r.ci_high)}]</span>'
        if human:
            text += f' <span class="muted">(n={r.n})</span>'
        return text

    @staticmethod
    def _ppi_cell(info: dict[str, Any] | None) -> str:
        value, interval, n_eff = ppi_parts(info)
        if value.endswith(SIGNIFICANT):
            p = (info or {}).get("ppi_p_holm")
            value = f'{_e(value[:-1])}<span class="sig" title="differs from the baseline (PPI), Holm-corrected p = {_num(p, 4)}">{SIGNIFICANT}</span>'
        else:
            value = _e(value)
        title = f' title="predictor {_e((info or {}).get("ppi_predictor"))}"' if (info or {}).get("ppi_predictor") else ""
        return (f"<span{title}>{value}</span>" + (f' <span class="ci">{_e(interval)}</span>' if interval else "")
                + (f' <span class="muted">{_e(n_eff)}</span>' if n_eff else ""))

    def _comparisons(self, context: dict[str, Any]) -> str:
        """Per model, a config x metric matrix of the differences from the baseline: Δ, † where significant, the interval
        below (and p, n on hover); configs and metrics without a single difference are left out, and why is said once."""
        base = context.get("baseline") or {}
        labels = {m["name"]: m.get("label") or m["name"] for m in context.get("metrics", [])}
        comps = context.get("comparisons") or []
        out = ['<section id="comparisons"><h2>Paired comparisons with the baseline</h2>']
        if base.get("config"):
            out.append(f"<p>Baseline: <code>{_e(base['config'])}</code> — {_e(base.get('reason', ''))}.</p>")
        st = context.get("statistics") or {}
        out.append(f'<p class="muted">{_e(st.get("test", ""))}; {_e(st.get("correction", ""))}; significant at p &lt; {_num(st.get("significance_level", 0.05), 2)} '
                   f"after correction ({SIGNIFICANT}). Each cell: the difference from the baseline, its {_pct(st.get('confidence', 0.95))} interval below; "
                   "p-values and n on hover.</p>")
        short = config_labels(context, list(dict.fromkeys(c["config"] for c in comps)))
        valued = [c for c in comps if c.get("diff") is not None]
        for model in dict.fromkeys(c["model"] for c in comps):
            mine = [c for c in valued if c["model"] == model]
            ppi_diffs = {cfg: info for cfg, info in ((context.get("ppi") or {}).get("cells") or {}).get(model, {}).items() if info.get("ppi_diff") is not None}
            if not mine and not ppi_diffs:
                continue
            metrics = [m for m in dict.fromkeys(c["metric"] for c in comps) if any(c["metric"] == m for c in mine)]
            configs = [cfg for cfg in dict.fromkeys(c["config"] for c in comps if c["model"] == model) if any(c["config"] == cfg for c in mine) or cfg in ppi_diffs]
            by = {(c["config"], c["metric"]): c for c in mine}
            n_sig = sum(1 for c in mine if c.get("significant")) + sum(1 for i in ppi_diffs.values() if i.get("ppi_significant"))
            out.append(f"<h3>{_e(model)} <span class=\"muted\">({len(mine) + len(ppi_diffs)} differences, {n_sig} significant)</span></h3>")
            out.append('<table class="matrix"><thead><tr><th class="l">Config</th>' + "".join(f"<th>{_e(labels.get(m, m))}</th>" for m in metrics)
                       + (f"<th>{_e(PPI_LABEL)}</th>" if ppi_diffs else "") + "</tr></thead><tbody>")
            for cfg in configs:
                cells = []
                for m in metrics:
                    c = by.get((cfg, m))
                    cells.append("<td></td>" if c is None else _matrix_cell(c["diff"], c.get("ci_low"), c.get("ci_high"), c.get("significant"),
                                                                          f"p = {_num(c.get('p_value'), 4)}, Holm p = {_num(c.get('p_holm'), 4)}, n = {c.get('n')}"))
                if ppi_diffs:
                    i = ppi_diffs.get(cfg)
                    cells.append("<td></td>" if i is None else _matrix_cell(i["ppi_diff"], i.get("ppi_diff_ci_low"), i.get("ppi_diff_ci_high"), i.get("ppi_significant"),
                                                                          f"PPI with {i.get('ppi_diff_predictor')}: p = {_num(i.get('ppi_p_value'), 4)}, Holm p = {_num(i.get('ppi_p_holm'), 4)}, "
                                                                          f"{i.get('ppi_diff_n_rated')} rated pairs"))
                out.append(f'<tr><td class="l" title="{_e(cfg)}">{_e(short.get(cfg, cfg))}</td>{"".join(cells)}</tr>')
            out.append("</tbody></table>")
        if not valued and not any(i.get("ppi_diff") is not None for cfgs in ((context.get("ppi") or {}).get("cells") or {}).values() for i in cfgs.values()):
            out.append("<p>No comparisons (a single config, or no values).</p>")
        left: dict[tuple[str, str], int] = {}
        for c in comps:
            if c.get("diff") is None:
                key = (labels.get(c["metric"], c["metric"]), c.get("note") or "no value")
                left[key] = left.get(key, 0) + 1
        if left:
            out.append('<p class="muted">Left out: ' + "; ".join(f"{_e(m)} for {n} config{'s' if n != 1 else ''} ({_e(note)})" for (m, note), n in left.items()) + ".</p>")
        out.append("</section>")
        return "".join(out)

    def _claims(self, context: dict[str, Any]) -> str:
        out = ['<section id="claims"><h2>What the numbers can claim</h2>']
        lines = claims_lines(context, config_labels(context, list((context.get("sweep") or {}).get("config_params") or {})))
        if lines:
            out.append("<ul>" + "".join(f"<li>{_e(x)}</li>" for x in lines) + "</ul>")
        else:
            out.append("<p>Nothing to add: no paired comparisons.</p>")
        out.append("</section>")
        return "".join(out)

    def _pairwise(self, context: dict[str, Any]) -> str:
        out = ['<section id="pairwise"><h2>Pairwise preferences (human)</h2>']
        header, body = pairwise_table(context)
        if body:
            out.append(_table(header, body, left=3))
            lines = ranking_lines(context)
            if lines:
                out.append("<p>" + "<br>".join(_e(x) for x in lines) + "</p>")
            out.append(f'<p class="muted">{_e((context.get("pairwise") or {}).get("method", ""))}</p>')
        else:
            out.append("<p>No pairwise judgments (rate pairs with <code>harness human serve --pairwise</code> or <code>harness human export --pairwise</code>).</p>")
        out.append("</section>")
        return "".join(out)

    def _judges(self, context: dict[str, Any]) -> str:
        """LLM judges: their reliability and length control, and for a few sampled examples what each judge said and why."""
        out = ['<section id="judges"><h2>LLM judges</h2>']
        lines = judge_lines(context)
        if not lines:
            out.append("<p>No LLM judge among the metrics (<code>judge</code>, <code>judge-pairwise</code>: see the README).</p></section>")
            return "".join(out)
        out.append("<ul>" + "".join(f"<li>{_e(x)}</li>" for x in lines) + "</ul>")
        samples = (context.get("judges") or {}).get("samples") or []
        if samples:
            out.append("<h3>What the judges said (sampled examples)</h3>")
        for s in samples:
            out.append(f'<details open><summary>{_e(s["model"])} · {_e(s["config"])} · example {_e(s["example"])}</summary>')
            for j in s["judges"]:
                value = "missing" if j.get("value") is None else _num(j["value"])
                head = f'<p><strong>{_e(j["metric"])}</strong>: {value}'
                if j.get("outcome"):
                    head += f" ({_e(j['outcome'])})"
                if j.get("expected_grade") is not None:
                    head += f" · expected grade {_num(j['expected_grade'], 2)}"
                if j.get("identical"):
                    head += " · identical outputs: a tie, the judge was not asked"
                if j.get("why"):
                    head += f' · <span class="failed">{_e(j["why"])}</span>'
                out.append(head + "</p>")
                for r in j.get("replies") or []:
                    where = f"output shown as {r['output_as']}; " if r.get("output_as") else ""
                    out.append(f'<p class="muted">{_e(where)}verdict {_e(r.get("verdict"))} (read from {_e(r.get("source") or "nothing")})</p>'
                               f"<pre>{_e(r.get('reply') or '(empty reply)')}</pre>")
            out.append("</details>")
        out.append("</section>")
        return "".join(out)

    def _agreement(self, context: dict[str, Any]) -> str:
        out = ['<section id="agreement"><h2>Inter-annotator agreement</h2>']
        rows = context.get("agreement") or []
        if rows:
            body = [
                ["all models" if a["scope"] == "all" else a["scope"], a["scale"], a["level"], _num(a.get("alpha")), str(a["n_items"]), str(a["n_annotators"]), str(a["n_ratings"])]
                for a in rows
            ]
            out.append(_table(["Scope", "Scale", "Level", "Krippendorff's α", "Items (2+ raters)", "Annotators", "Ratings"], body, left=3))
            out.append("<p class=\"muted\">" + "<br>".join(_e(x) for x in agreement_lines(context)) + "</p>")
        else:
            out.append("<p>No item has ratings from two or more annotators, so agreement cannot be measured.</p>")
        out.append("</section>")
        return "".join(out)

    def _correlations(self, context: dict[str, Any]) -> str:
        header, body = correlation_table(context)
        out = ['<section id="correlations"><h2>Agreement of metrics with human judgment</h2>']
        if body:
            out.append(_table(header, body, left=3))
            st = context.get("statistics") or {}
            out.append(f'<p class="muted">{_e(st.get("correlations", ""))}.</p>')
        else:
            out.append("<p>No correlations: no human ratings have been imported (<code>harness human export</code>, then <code>harness human import</code>).</p>")
        notes = context.get("correlation_notes") or []
        if notes:
            out.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
        out.append("</section>")
        return "".join(out)

    def _findings(self, context: dict[str, Any]) -> str:
        lines = context.get("findings") or []
        out = ['<section id="findings"><h2>Findings</h2>']
        if lines:
            out.append("<ul>" + "".join(f"<li>{_e(x)}</li>" for x in lines) + "</ul>")
            out.append('<p class="muted">Written from the correlation table above: the best metric by Spearman ρ, negative correlations whose interval excludes 0, and correlations whose interval includes 0.</p>')
        else:
            out.append("<p>No findings without human ratings.</p>")
        out.append("</section>")
        return "".join(out)

    def _plots(self, context: dict[str, Any]) -> str:
        figures = context.get("figures") or []
        out = ['<section id="plots"><h2>Plots</h2>']
        if not figures:
            out.append("<p>No plots (nothing swept, or no values yet).</p>")
        for f in figures:
            data = base64.b64encode(f["png"]).decode("ascii")
            out.append(
                f'<figure id="fig-{_e(f["id"])}"><img src="data:image/png;base64,{data}" alt="{_e(f["title"])}">'
                f"<figcaption><strong>{_e(f['title'])}.</strong> {_e(f['caption'])}</figcaption></figure>"
            )
        out.append("</section>")
        return "".join(out)

    def _provenance(self, context: dict[str, Any]) -> str:
        prov = context.get("run_provenance") or {}
        out = ['<section id="provenance"><h2>Provenance</h2>']
        if not prov:
            out.append("<p>No provenance recorded.</p></section>")
            return "".join(out)
        out.append(f"<p>Store: <code>{_e(prov.get('store', ''))}</code></p>")
        kv = lambda d: _table(["Key", "Value"], [[k, _short(v)] for k, v in (d or {}).items()], left=2)  # noqa: E731
        out.append("<h3>Library versions</h3>" + kv(prov.get("versions")))
        out.append("<h3>Hardware (this report)</h3>" + kv(prov.get("hardware")))
        last = prov.get("last_run")
        if last:
            out.append("<h3>Last run</h3>" + kv({k: v for k, v in last.items() if k not in ("versions",)}))
        out.append("<h3>Seeds</h3>" + kv(prov.get("seeds")))
        out.append("<h3>Statistics</h3>" + kv({**(prov.get("statistics") or {}), **(context.get("statistics") or {})}))
        metrics = prov.get("metrics") or {}
        if metrics:
            out.append("<h3>Metrics (signatures and models)</h3>")
            out.append(_table(["Metric", "Identity"], [[m, f"<pre>{_e(json.dumps(i, indent=1, sort_keys=True, default=str))}</pre>"] for m, i in metrics.items()], left=2, raw=True))
        models = prov.get("models") or {}
        if models:
            out.append("<h3>Models</h3>")
            out.append(_table(["Model", "Details"], [[_e(m), f"<pre>{_e(json.dumps(i, indent=1, sort_keys=True, default=str))}</pre>"] for m, i in models.items()], left=2, raw=True))
        out.append("<h3>Engine and dataset</h3>" + kv({"engine": prov.get("engine"), "dataset": prov.get("dataset")}))
        decoding = prov.get("decoding") or {}
        if decoding:
            keys = ["strategy", "temperature", "top_k", "top_p", "num_beams", "max_new_tokens", "do_sample", "unused"]
            body = []
            for name, d in decoding.items():
                eff = d.get("effective") or {}
                body.append([name, *(_short(eff.get(k)) for k in keys)])
            out.append("<h3>Effective decoding parameters</h3>" + _table(["Config", *keys], body, left=1))
        out.append("<details><summary>Everything, as JSON</summary><pre>" + _e(json.dumps(prov, indent=2, sort_keys=True, default=str)) + "</pre></details>")
        out.append("</section>")
        return "".join(out)


def _pct(v: Any) -> str:
    return f"{float(v):.0%}" if isinstance(v, (int, float)) else "95%"


def _matrix_cell(diff: float, low: Any, high: Any, significant: Any, title: str) -> str:
    """One cell of the comparisons matrix: ``+0.012†`` with the interval below, details on hover."""
    mark = f'<span class="sig">{SIGNIFICANT}</span>' if significant else ""
    interval = f'<span class="ci">[{_num(low)}, {_num(high)}]</span>' if low is not None and high is not None else ""
    return f'<td title="{_e(title)}">{diff:+.3f}{mark}{interval}</td>'


def _short(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, default=str)
    if v is None:
        return "—"
    return str(v)


@hookimpl
def harness_register_reporters(register):
    register(HtmlReporter)
