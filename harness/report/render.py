"""A report from recorded results: the numbers (:mod:`harness.report.data`), the prediction-powered human estimates
(:mod:`harness.report.ppi`) and what the numbers can claim (:mod:`harness.report.claims`), plots where the reporter
wants them, the reporter's text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..api import ReportRow
from ..errors import UserError
from . import claims, ppi
from . import data as report_data
from .results import Results


def render_report(
    results: Results,
    plugins: Any,
    fmt: str,
    *,
    output: str | Path | None = None,
    baseline: str | None = None,
    seed: int | None = None,
    resamples: int = 1000,
    color: bool = False,
    width: int | None = None,
    predictor: str | None = None,
) -> str:
    """The text of the ``fmt`` report of ``results``; plots go beside ``output`` for reporters that write them as files."""
    reporter_cls = plugins.info("reporter", fmt, key="--format").cls
    reporter = reporter_cls({})
    if baseline is not None:  # a bad name fails before anything is computed or written
        report_data.choose_baseline([(c.name, c.params) for c in results.configs], None, baseline, all_configs=[c.name for c in results.experiment.configs])
    if predictor is not None:  # a bad name fails before anything is computed
        ppi.check_predictor(predictor, list(results.experiment.metrics), selected=results.metric_names)
    data = report_data.from_results(results, plugins, baseline=baseline, seed=seed, n_resamples=resamples, with_correlations=reporter_cls.correlations)
    stats_of = {(c.model, c.config, c.metric): c for c in data.cells}
    rows = []
    for v in results.values:
        c = stats_of.get((v.model, v.config, v.metric))
        rows.append(ReportRow(v.model, v.config, v.metric, v.value, v.n, ci_low=c.ci_low if c else None, ci_high=c.ci_high if c else None, error=v.error, note=v.missing,
                              missing=v.n_missing, against=v.against))
    context: dict[str, Any] = {
        "experiment": results.experiment.name,
        "metrics": data.metrics,
        "failures": [{"cell": f.cell, "stage": f.stage, "model": f.model, "config": f.config, "metric": f.metric, "error": f.error} for f in results.failures],
        "provenance": {m.name: m.identity for m in results.metrics},
        "color": color,
        **data.context(),
    }
    base = data.baseline.get("config")
    confidence = float(data.statistics.get("confidence", 0.95))
    context["ppi"] = ppi.from_results(results, baseline=base, predictor=predictor, confidence=confidence).context()
    context["claims"] = claims.from_results(results, context["comparisons"], baseline=base, confidence=confidence).context()
    from . import tuning

    context["tuning"] = tuning.context(results)
    if width is not None:
        context["width"] = width
    from . import judges

    found = judges.summary(results, seed=results.experiment.seed if seed is None else seed)
    if found:  # LLM judges: reliability, length control, self-preference, what they said
        context["judges"] = {**found, "lines": judges.summary_lines({"judges": found})}
    if reporter_cls.figures == "embedded" or (reporter_cls.figures == "files" and output):
        from . import plots

        figures = plots.all_figures(context) + tuning.figures(context["tuning"], context["metrics"])
        if reporter_cls.figures == "embedded":
            context["figures"] = [{"id": f.id, "title": f.title, "caption": f.caption, "png": f.png} for f in figures]
        else:
            out = Path(output)  # type: ignore[arg-type]
            folder = out.parent / f"{out.stem}_files"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                context["figures"] = []
                for f in figures:
                    (folder / f.filename()).write_bytes(f.png)
                    context["figures"].append({"id": f.id, "title": f.title, "caption": f.caption, "path": f"{folder.name}/{f.filename()}"})
            except OSError as exc:
                raise UserError(f"cannot write the plots folder {folder}: {exc.strerror or exc}", file=output) from None
    return reporter.render(rows, context)
