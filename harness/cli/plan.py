"""`harness plan`: how many test examples and human ratings a claim needs, from a pilot run or stated assumptions."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import UserError
from .common import echo, err, handle_errors, open_store, registry_option, selection_options, store_option, write_atomic

#: a plan's own formats (it is not a report of results, so not a reporter plugin's)
FORMATS = ("table", "json")


@click.command("plan")
@click.option("--delta", type=float, default=0.05, show_default=True, help="the paired difference to detect, on the metric's scale")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="the test's level (intervals are 1 - alpha)")
@click.option("--power", "power_", type=float, default=0.8, show_default=True, help="the chance of detecting --delta")
@click.option("--half-width", type=float, default=0.05, show_default=True, help="the human-score interval's half-width to reach (0-1 scale)")
@click.option("--corr-half-width", type=float, default=0.1, show_default=True, help="the metric-human correlation's half-width to reach")
@click.option("--prediction-cost", type=float, default=0.01, show_default=True, help="one prediction's cost in human ratings (ppi_py's power analysis)")
@click.option("--sd", type=float, default=None, help="assume this SD of per-example differences (instead of, or without, a pilot)")
@click.option("--rho", type=float, default=None, help="assume this predictor-human correlation (instead of, or without, a pilot)")
@click.option("--rating-sd", type=float, default=0.5, show_default=True, help="without a pilot: the SD of one rating on the 0-1 scale")
@click.option("--predictor", default=None, metavar="METRIC", help="the metric that predicts the ratings [default: [human] predictor, else the one that tracks them best]")
@click.option("--baseline", default=None, metavar="CONFIG", help="compare every config with this one [default: as the report]")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="write to this file instead of stdout")
@selection_options
@registry_option
@store_option
@handle_errors
def plan_cmd(delta, alpha, power_, half_width, corr_half_width, prediction_cost, sd, rho, rating_sd, predictor, baseline, fmt, output,
             models, configs, metrics, registry, store_dir) -> None:
    """Test examples for a paired difference, human ratings (with and without PPI) and the registry values to set."""
    from ..report import plan as planning
    from ..report.data import choose_baseline
    from ..report.ppi import check_predictor
    from ..report.results import Results

    targets = planning.Targets(alpha, power_, delta, half_width, corr_half_width, prediction_cost)
    if sd is not None and sd < 0:
        raise UserError(f"must be at least 0, got {sd:g}", key="--sd")
    if rho is not None and not -1 < rho < 1:
        raise UserError(f"must be between -1 and 1 (exclusive), got {rho:g}", key="--rho")
    if not 0 < rating_sd <= 0.5:
        raise UserError(f"must be above 0 and at most 0.5 (a 0-1 score), got {rating_sd:g}", key="--rating-sd")
    store = exp = None
    if store_dir is not None or Path(registry).is_file():
        from ..store import Store

        if store_dir is not None:
            store, _, _ = open_store(registry, store_dir, readonly=True)
        else:
            from .common import load

            exp, _ = load(registry)
            store = Store.open_existing(exp.output_dir, readonly=True)
    if store is None:
        if exp is not None:
            check_predictor(predictor, exp.metrics)
        elif predictor is not None:
            raise UserError("names a metric of an experiment: pass the experiment file with -r, or leave it out", key="--predictor")
        result = planning.assumed(targets, sd=sd, rho=rho, rating_sd=rating_sd, test_size=exp.dataset.test_size if exp else None,
                                  predictor=predictor or (exp.human.get("predictor") if exp else None))
    else:
        results = Results.load(store, models=list(models) or None, configs=list(configs) or None, metrics=list(metrics) or None)
        check_predictor(predictor, list(results.experiment.metrics), selected=results.metric_names)
        predictor = predictor or (results.experiment.human or {}).get("predictor")
        if predictor not in results.metric_names:
            predictor = None
        base = choose_baseline([(c.name, c.params) for c in results.configs], results.experiment.sweep_defaults or None, baseline,
                               all_configs=[c.name for c in results.experiment.configs])
        result = planning.from_results(results, targets, baseline=base["config"], predictor=predictor, sd=sd, rho=rho)
    text = planning.render(result, fmt, color=output is None and sys.stdout.isatty())
    if output:
        write_atomic(Path(output), text)
        err.print(f"wrote {output}")
    else:
        echo(text)
