"""`harness analyze`: which automatic metric tracks human judgment."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import UserError
from .common import echo, err, handle_errors, open_store, plugins, registry_option, store_option, write_atomic

LEVELS = ("system", "example", "pairwise", "both")


@click.command("analyze")
@click.option("--results", "results_path", type=click.Path(dir_okay=False), default=None, help="a CSV with model, config, human and one column per metric, instead of the store")
@click.option("--format", "fmt", default=None, help="a reporter plugin that renders analyses: table, markdown, json, csv, html, … [default: the default reporter]")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="write to this file instead of stdout")
@click.option("--level", type=click.Choice(LEVELS), default="both", show_default=True, help="system (one point per model x config), example (one per rated generation), pairwise (one per judged pair), or both: all that apply (store only)")
@click.option("--seed", type=int, default=None, help="bootstrap seed [default: the experiment seed, or 0 for --results]")
@click.option("--resamples", type=click.IntRange(min=1), default=1000, show_default=True, help="bootstrap resamples per interval")
@click.option("--metric", "metrics", multiple=True, help="only this metric (repeatable)")
@click.option("--model", "models", multiple=True, help="only this model (store only; repeatable)")
@registry_option
@store_option
@handle_errors
def analyze_cmd(results_path, fmt, output, level, seed, resamples, metrics, models, registry, store_dir) -> None:
    """Correlate every automatic metric with human ratings, with bootstrap intervals and findings."""
    from ..report import analysis
    from ..report.analyze import from_csv, from_results, render
    from ..report.results import Results

    if results_path is not None:
        if models:
            raise UserError("--model selects models in the store; with --results every row of the file is used", key="--model")
        found = plugins()
        fmt = fmt or found.default("reporter")
        found.info("reporter", fmt, key="--format")
        rows, notes, source = from_csv(results_path, list(metrics) or None, seed or 0, resamples, level)
        title = f"Metric-human agreement: {Path(results_path).name}"
    else:
        store, found, _ = open_store(registry, store_dir, readonly=True)
        fmt = fmt or found.default("reporter")
        found.info("reporter", fmt, key="--format")
        results = Results.load(store, models=list(models) or None, metrics=list(metrics) or None)
        rows, notes, source, title = from_results(results, seed, resamples, level)
    findings = analysis.findings(rows)
    preferences = []
    if results_path is None and results.pairs:
        from ..report import judges
        from ..report.data import _rows, pairwise_items, sign_agreement

        findings += sign_agreement(pairwise_items(_rows(results), results.metric_names, results.pairs), results.metric_names)
        if level in ("both", "pairwise"):
            # every metric's (and LLM judge's) preference against the annotators': agreement with and without ties, Cohen's kappa
            items = judges.preference_items(results, _rows(results), results.metric_names)
            preferences = judges.preference_agreement(items, results.metric_names, seed=source["seed"], n_resamples=resamples)
            findings += judges.preference_findings(preferences)
    text = render(rows, findings, notes, fmt, title=title, source=source, plugins=found, color=output is None and sys.stdout.isatty(), preferences=preferences)
    if output:
        write_atomic(Path(output), text)
        err.print(f"wrote {output}")
    else:
        echo(text)
