"""`harness report`: the recorded results with intervals and paired tests, in any reporter's format."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import echo, err, handle_errors, open_store, registry_option, selection_options, store_option, write_atomic


@click.command("report")
@click.option("--format", "fmt", default=None, help="a reporter plugin: table, markdown, csv, json, html, … [default: the default reporter]")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="write to this file instead of stdout (markdown: plots go beside it)")
@click.option("--baseline", "baseline", default=None, metavar="CONFIG", help="compare every config with this one [default: the sweep's defaults if they are a config, else the first config]")
@click.option("--seed", type=int, default=None, help="seed of the bootstrap resampling [default: the experiment seed]")
@click.option("--resamples", type=click.IntRange(min=1), default=1000, show_default=True, help="bootstrap resamples per interval and test")
@click.option("--predictor", default=None, metavar="METRIC", help="the metric that predicts the ratings in Human (PPI) [default: [human] predictor, else chosen per cell by cross-fitting]")
@selection_options
@registry_option
@store_option
@handle_errors
def report_cmd(fmt, output, baseline, seed, resamples, predictor, models, configs, metrics, registry, store_dir) -> None:
    """Show what the run recorded, with 95% intervals and paired tests against a baseline (computes no scores, writes no results)."""
    from ..report.render import render_report
    from ..report.results import Results

    store, plugins, _ = open_store(registry, store_dir, readonly=True)
    fmt = fmt or plugins.default("reporter")
    plugins.info("reporter", fmt, key="--format")
    results = Results.load(store, models=list(models) or None, configs=list(configs) or None, metrics=list(metrics) or None)
    text = render_report(results, plugins, fmt, output=output, baseline=baseline, seed=seed, resamples=resamples, predictor=predictor, color=output is None and sys.stdout.isatty())
    if output:
        write_atomic(Path(output), text)
        err.print(f"wrote {output}")
    else:
        echo(text)
