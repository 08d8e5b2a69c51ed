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
    console = Console()
    infos = list(found.all())
    if _table_fits(infos, console.width):
        from rich.table import Table

        table = Table(title="harness plugins")
        for col in ("name", "kind", "package", "version"):
            table.add_column(col, no_wrap=True)
        table.add_column("description")
        for i in infos:
            table.add_row(_name(i), i.kind, i.package, i.version, i.cls.description)
        console.print(table)
    else:
        click.echo(plugins_list(infos, console.width), nl=False)
    for f in found.failures:
        err.print(f"[red]failed to load[/] {escape(f.name)} ({escape(f.package or 'unknown package')}): {escape(f.error)}", markup=True, soft_wrap=True)


#: the narrowest description column the table is shown with; below it, a list by kind
MIN_DESCRIPTION = 40


def _name(info) -> str:
    return info.name + (" (default)" if info.cls.is_default else "")


def _table_fits(infos, width: int) -> bool:
    """Whether the table shows every name, kind, package and version whole and leaves the descriptions room."""
    if not infos:
        return True
    fixed = sum(max(len(h), *(len(v(i)) for i in infos)) for h, v in (
        ("name", _name), ("kind", lambda i: i.kind), ("package", lambda i: i.package), ("version", lambda i: i.version)))
    return width - fixed - 16 >= MIN_DESCRIPTION  # 16: rich's borders and padding for five columns


def plugins_list(infos, width: int) -> str:
    """The plugins grouped by kind for a narrow terminal: ``name  package version`` on one line, the description
    wrapped under it; every name and package whole, no line wider than ``width`` (but a name longer than it)."""
    import textwrap

    lines = ["harness plugins"]
    for kind in dict.fromkeys(i.kind for i in infos):
        lines += ["", f"{kind}:"]
        members = [i for i in infos if i.kind == kind]
        pad = max(len(_name(i)) for i in members)
        for i in members:
            lines.append(f"  {_name(i):<{pad}}  {i.package} {i.version}".rstrip())
            lines += textwrap.wrap(i.cls.description, width=max(width - 6, 20), initial_indent="      ", subsequent_indent="      ",
                               break_on_hyphens=False, break_long_words=False)
    return "\n".join(lines) + "\n"


@click.command("check")
@click.argument("path", default=DEFAULT_REGISTRY, type=click.Path(dir_okay=False))
@handle_errors
def check_cmd(path: str) -> None:
    """Validate an experiment file, its output folder and its data without running anything; say how big the run is.

    The data is loaded (from the Hub, for a hub source), no model is. When the data cannot be
    reached, everything else is checked first and the message says so (exit 2).
    """
    from ..errors import DataUnavailable, UserError
    from ..pipeline.runner import compute_split, plan_size, preflight
    from ..store import STORE_NAME
    from ..store_health import check_store, probe_folder

    exp, found = load(path)
    # the output folder, as `harness split` will make it (nothing is left behind), and a store already there
    why = probe_folder(exp.output_dir)
    if why:
        raise UserError(f"cannot create the results store in {exp.output_dir}: {why}", file=path, key="experiment.output_dir")
    check_store(exp.output_dir / STORE_NAME)
    preflight(exp, found)
    n_ft = sum(1 for m in exp.models if m.finetune)
    summary = (
        f"{len(exp.models)} models ({n_ft} fine-tuned), {len(exp.configs)} decoding configs, "
        f"metrics {', '.join(exp.metrics)}, engine {exp.engine}, executor {exp.executor}"
    )
    try:
        train, test, n_records = compute_split(exp, found)
    except DataUnavailable as exc:
        raise UserError(f"the experiment file is valid ({summary}); the data could not be checked: {exc.render()}", file=path) from None
    size = plan_size(exp, len(test))
    click.echo(
        f"{path}: ok — {summary}\n"
        f"data: {n_records} unique records ({exp.dataset.source}) → {len(train)} train / {len(test)} test examples (seed {exp.dataset.seed})\n"
        f"run: {size.describe()}"
    )
    if exp.tune is not None and exp.tune.space:
        from .tune import check_space

        check_space(exp, found)
        t = exp.tune
        click.echo(f"tune: {t.trials} trials ({t.sampler}, pruner {t.pruner}) over {', '.join(p.name for p in t.space)}; metric {t.metric}; "
                   f"{t.holdout:.0%} of the test split held out, {t.finalists} finalists")
