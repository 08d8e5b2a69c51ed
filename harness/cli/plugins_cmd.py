"""`harness plugins` and `harness check`."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.markup import escape

from .common import DEFAULT_REGISTRY, err, handle_errors, load, plugins


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
@handle_errors
def plugins_cmd(as_json: bool) -> None:
    """List every plugin: name, kind, package, version — and any that failed to load."""
    found = plugins()
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in found.all()] + [f.as_dict() for f in found.failures], indent=2))
        return
    from rich.table import Table

    table = Table(title="harness plugins")
    for col in ("name", "kind", "package", "version", "description"):
        table.add_column(col)
    for i in found.all():
        table.add_row(i.name + (" (default)" if i.cls.is_default else ""), i.kind, i.package, i.version, i.cls.description)
    Console().print(table)
    for f in found.failures:
        err.print(f"[red]failed to load[/] {escape(f.name)} ({escape(f.package or 'unknown package')}): {escape(f.error)}", markup=True, soft_wrap=True)


@click.command("check")
@click.argument("path", default=DEFAULT_REGISTRY, type=click.Path(dir_okay=False))
@handle_errors
def check_cmd(path: str) -> None:
    """Validate an experiment file and its data without running anything; say how big the run is."""
    from ..pipeline.runner import compute_split, plan_size, preflight

    exp, found = load(path)
    preflight(exp, found)
    train, test, n_records = compute_split(exp, found)
    size = plan_size(exp, len(test))
    n_ft = sum(1 for m in exp.models if m.finetune)
    click.echo(
        f"{path}: ok — {len(exp.models)} models ({n_ft} fine-tuned), {len(exp.configs)} decoding configs, "
        f"metrics {', '.join(exp.metrics)}, engine {exp.engine}, executor {exp.executor}\n"
        f"data: {n_records} unique records ({exp.dataset.source}) → {len(train)} train / {len(test)} test examples (seed {exp.dataset.seed})\n"
        f"run: {size.describe()}"
    )
    if exp.tune is not None and exp.tune.space:
        from .tune import check_space

        check_space(exp, found)
        t = exp.tune
        click.echo(f"tune: {t.trials} trials ({t.sampler}, pruner {t.pruner}) over {', '.join(p.name for p in t.space)}; metric {t.metric}; "
                   f"{t.holdout:.0%} of the test split held out, {t.finalists} finalists")
