"""Which automatic metric tracks human judgment (``harness analyze``).

Input is the experiment's store (every metric of every (model, config) with imported
human ratings) or ``--results FILE.csv``, a table with columns ``model``, ``config``,
``human`` and one column per metric (results produced elsewhere, such as a paper's
tables). For every metric against ``human``, in every scope (``all`` and each model
alone): Pearson r, Spearman rho and Kendall tau-b with 95% percentile-bootstrap
intervals (seeded) and n. From the store, the same at the example level too, where the
bootstrap resamples examples. Then findings derived from those numbers.

The result reaches users through the reporter plugins, as ``harness report`` does: :func:`render`
hands a reporter no rows and a context whose ``view`` is ``"analysis"`` (``title``,
``correlations``, ``findings``, ``correlation_notes``, ``method``, ``source``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import UserError
from . import analysis
from .results import Results


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


# --------------------------------------------------------------------------- rendering (through a reporter plugin)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def context(rows, findings: list[str], notes: list[str], *, title: str, source: dict[str, Any], preferences=()) -> dict[str, Any]:
    """What a reporter receives to render an analysis (``context["view"] == "analysis"``): plain JSON-able values.

    ``preferences``: each metric's (or judge's) agreement with the annotators' pairwise preferences
    (:class:`harness.report.judges.PreferenceRow`), as ``context["preferences"]``."""
    method = (
        f"95% percentile bootstrap intervals, {source['resamples']} resamples, seed {source['seed']}: "
        "system level resamples (model, config) rows within the scope; example level resamples examples "
        "(all of an example's rated generations together)."
    )
    return {
        "view": "analysis",
        "title": title,
        "experiment": title,
        "correlations": [{k: _clean(v) for k, v in r.as_dict().items()} for r in rows],
        "preferences": [{k: _clean(v) for k, v in p.as_dict().items()} for p in preferences],
        "findings": list(findings),
        "correlation_notes": list(notes),
        "method": method,
        "source": dict(source),
    }


def render(rows, findings: list[str], notes: list[str], fmt: str, *, title: str, source: dict[str, Any], plugins: Any, color: bool = False, preferences=()) -> str:
    """The correlations and findings in reporter ``fmt``'s format (one that declares the ``analysis`` view)."""
    reporter_cls = plugins.info("reporter", fmt, key="--format").cls
    if "analysis" not in getattr(reporter_cls, "views", ("report",)):
        able = [n for n in plugins.names("reporter") if "analysis" in getattr(plugins.info("reporter", n).cls, "views", ("report",))]
        raise UserError(f"the reporter '{fmt}' cannot render an analysis; reporters that can: {', '.join(able) or 'none'}", key="--format")
    return reporter_cls({}).render([], {**context(rows, findings, notes, title=title, source=source, preferences=preferences), "color": color})
