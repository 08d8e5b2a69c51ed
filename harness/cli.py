"""The ``harness`` command line.

Exit codes: 0 everything succeeded, 1 some cell failed (stored, shown in the report),
2 bad input (one message, nothing written), 130 interrupted (everything finished so
far is kept; run again to continue).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from . import __version__
from .errors import UserError
from .plugins import Plugins, build_plugins
from .progress import RichProgress

err = Console(stderr=True, highlight=False)
DEFAULT_REGISTRY = "registry.toml"


def handle_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            # escape: messages quote keys like [[models]]; soft_wrap: keep paths whole when piped
            err.print(f"[bold red]error:[/] {escape(exc.render())}", markup=True, soft_wrap=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            err.print("\n[yellow]interrupted[/]: everything finished so far is saved; run the same command again to continue.", markup=True)
            sys.exit(130)

    return wrapper


registry_option = click.option(
    "-r", "--registry", "registry", default=DEFAULT_REGISTRY, show_default=True, type=click.Path(dir_okay=False), help="experiment file"
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="harness")
def main() -> None:
    """Fine-tune, sweep decoding settings, score and report — through plugins."""


# ---------------------------------------------------------------------- plugins / check


@main.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
@handle_errors
def plugins_cmd(as_json: bool) -> None:
    """List every plugin: name, kind, package, version — and any that failed to load."""
    plugins = build_plugins()
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in plugins.all()] + [f.as_dict() for f in plugins.failures], indent=2))
        return
    from rich.table import Table

    table = Table(title="harness plugins")
    for col in ("name", "kind", "package", "version", "description"):
        table.add_column(col)
    for i in plugins.all():
        table.add_row(i.name, i.kind, i.package, i.version, i.cls.description)
    Console().print(table)
    for f in plugins.failures:
        err.print(f"[red]failed to load[/] {escape(f.name)} ({escape(f.package or 'unknown package')}): {escape(f.error)}", markup=True, soft_wrap=True)


@main.command("check")
@click.argument("path", default=DEFAULT_REGISTRY, type=click.Path(dir_okay=False))
@handle_errors
def check_cmd(path: str) -> None:
    """Validate an experiment file without running anything."""
    exp, _ = _load(path)
    n_ft = sum(1 for m in exp.models if m.finetune)
    click.echo(
        f"{path}: ok — {len(exp.models)} models ({n_ft} fine-tuned), {len(exp.configs)} decoding configs, "
        f"metrics {', '.join(exp.metrics)}, engine {exp.engine}, test split {exp.dataset.test_size}"
    )


# ---------------------------------------------------------------------- stages


def _selection_options(fn: Callable) -> Callable:
    fn = click.option("--metric", "metrics", multiple=True, help="only this metric (repeatable)")(fn)
    fn = click.option("--config", "configs", multiple=True, help="only this decoding config (repeatable)")(fn)
    fn = click.option("--model", "models", multiple=True, help="only this model (repeatable)")(fn)
    return fn


@main.command("run")
@click.option("--all", "run_all", is_flag=True, help="every model × decoding config × metric")
@_selection_options
@registry_option
@handle_errors
def run_cmd(run_all: bool, models, configs, metrics, registry: str) -> None:
    """Split, fine-tune, generate, score and report."""
    if not run_all and not (models or configs or metrics):
        raise UserError("say what to run: --all, or select with --model/--config/--metric")
    _stages(registry, ("split", "train", "generate", "score"), models, configs, metrics, report=True)


def _stage_command(stage: str, help_text: str) -> None:
    @main.command(stage, help=help_text)
    @_selection_options
    @registry_option
    @handle_errors
    def cmd(models, configs, metrics, registry: str) -> None:
        _stages(registry, (stage,), models, configs, metrics, report=False)


_stage_command("split", "Load the dataset and save the deterministic train/test split.")
_stage_command("train", "Fine-tune the models that ask for it (reusing unchanged adapters).")
_stage_command("generate", "Generate answers for every selected model × decoding config.")
_stage_command("score", "Score stored generations with every selected metric.")


def _stages(registry: str, stages: tuple[str, ...], models, configs, metrics, *, report: bool) -> None:
    from .runner import Runner, Selection, compute_split, run_metadata
    from .store import Store

    exp, plugins = _load(registry)
    selection = Selection(list(models) or None, list(configs) or None, list(metrics) or None)
    selection.validate(exp)
    if Store.open_existing(exp.output_dir) is None:
        compute_split(exp, plugins)  # bad data or sizes fail here, before the experiment folder exists
    store = Store(exp.output_dir)
    command = " ".join(["harness", *sys.argv[1:]])
    run_id = store.start_run(command, run_metadata(exp, command))
    progress = RichProgress()
    runner = Runner(exp, plugins, store, progress, selection)
    status = "interrupted"
    started = time.perf_counter()
    try:
        with progress:
            for stage in stages:
                getattr(runner, stage)()
        status = "failed" if runner.stats.failed_cells else "ok"
    finally:
        meta = run_metadata(exp, command) | {"stats": runner.stats.__dict__, "seconds": round(time.perf_counter() - started, 2)}
        store.finish_run(run_id, status, meta)
    s = runner.stats
    err.print(
        f"done in {time.perf_counter() - started:.1f}s: trained {s.trained} (reused {s.reused_adapters}), "
        f"generated {s.generated} (cached {s.cached_generations}), scored {s.scored} (cached {s.cached_scores})",
        soft_wrap=True,
    )
    if report:
        _report(runner, "table", None)
    if s.failed_cells:
        err.print(f"[red]{len(s.failed_cells)} cell(s) failed[/]: " + ", ".join(s.failed_cells[:8]), markup=True)
        sys.exit(1)


# ---------------------------------------------------------------------- report


@main.command("report")
@click.option("--format", "fmt", default="table", show_default=True, help="table, markdown, csv, json, html (or a reporter plugin)")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="write to this file instead of stdout (markdown: plots go beside it)")
@click.option("--baseline", "baseline", default=None, metavar="CONFIG", help="compare every config with this one [default: the sweep's defaults if they are a config, else the first config]")
@click.option("--seed", type=int, default=None, help="seed of the bootstrap resampling [default: the experiment seed]")
@click.option("--resamples", type=click.IntRange(min=1), default=1000, show_default=True, help="bootstrap resamples per interval and test")
@_selection_options
@registry_option
@handle_errors
def report_cmd(fmt: str, output: str | None, baseline: str | None, seed: int | None, resamples: int, models, configs, metrics, registry: str) -> None:
    """Show results from the store with 95% intervals and paired tests against a baseline (computes no scores)."""
    from .runner import Runner, Selection
    from .store import Store

    exp, plugins = _load(registry)
    plugins.info("reporter", fmt, key="--format")
    store = Store.open_existing(exp.output_dir)
    if store is None:
        raise UserError(f"no results yet in {exp.output_dir}; run `harness run --all` first", file=exp.path)
    runner = Runner(exp, plugins, store, None, Selection(list(models) or None, list(configs) or None, list(metrics) or None))
    _report(runner, fmt, output, baseline=baseline, seed=seed, resamples=resamples)


def _report(runner, fmt: str, output: str | None, *, baseline: str | None = None, seed: int | None = None, resamples: int = 1000) -> None:
    from . import report_data
    from .api import ReportRow

    reporter = runner.plugins.create("reporter", fmt)
    if baseline is not None:  # a bad name fails before anything is read or written
        report_data.choose_baseline([(c.name, c.params) for c in runner.configs()], None, baseline, all_configs=[c.name for c in runner.exp.configs])
    rows = runner.results()
    runner.save_aggregates(rows)
    exp = runner.exp
    # the metric-human correlations are shown by the document formats (and any plugin reporter), not the quick ones
    full = fmt not in ("table", "csv", "json")
    data = report_data.from_runner(runner, rows, baseline=baseline, seed=seed, n_resamples=resamples, with_correlations=full)
    stats_of = {(c.model, c.config, c.metric): c for c in data.cells}
    report_rows = []
    for r in rows:
        c = stats_of.get((r["model"], r["config"], r["metric"]))
        report_rows.append(
            ReportRow(r["model"], r["config"], r["metric"], r["value"], r["n"], ci_low=c.ci_low if c else None, ci_high=c.ci_high if c else None, error=r["error"])
        )
    context = {
        "experiment": exp.name,
        "metrics": data.metrics,
        "failures": [f for f in runner.store.failures() if f["model"] in {m.name for m in runner.models()}],
        "provenance": {name: runner.metric(name).identity() for name in runner.metric_names()},
        "color": output is None and sys.stdout.isatty(),
        **data.context(),
    }
    if getattr(reporter, "embeds_figures", False) or (fmt == "markdown" and output):
        from . import plots

        figures = plots.all_figures(context)
        if getattr(reporter, "embeds_figures", False):
            context["figures"] = [{"id": f.id, "title": f.title, "caption": f.caption, "png": f.png} for f in figures]
        else:
            out = Path(output)
            folder = out.parent / f"{out.stem}_files"
            folder.mkdir(parents=True, exist_ok=True)
            context["figures"] = []
            for f in figures:
                (folder / f.filename()).write_bytes(f.png)
                context["figures"].append({"id": f.id, "title": f.title, "caption": f.caption, "path": f"{folder.name}/{f.filename()}"})
    text = reporter.render(report_rows, context)
    if output:
        _write_atomic(Path(output), text)
        err.print(f"wrote {output}")
    else:
        click.echo(text, nl=False)


# ---------------------------------------------------------------------- human ratings


@main.group("human")
def human_group() -> None:
    """Blinded human-rating sheets: export for annotators, import their ratings."""


@human_group.command("export")
@click.option("-o", "--output", default="human_sheet.csv", show_default=True, type=click.Path(), help="where to write (a file or a folder, as the format says)")
@click.option("--format", "fmt", default="csv", show_default=True, help="a rating format plugin (see `harness plugins`)")
@click.option("-n", "--n-per-cell", type=int, default=None, help="items per (model, config); default from [human] in the registry")
@click.option("--force", is_flag=True, help="overwrite files that already exist (a filled sheet holds ratings)")
@_selection_options
@registry_option
@handle_errors
def human_export(output: str, fmt: str, n_per_cell: int | None, force: bool, models, configs, metrics, registry: str) -> None:
    """Export blinded items: N per (model, config), shuffled, model and config hidden."""
    import secrets

    from . import human
    from .api import RatingItem, RatingScale
    from .runner import Runner, Selection
    from .store import Store

    exp, plugins = _load(registry)
    fmt_plugin = plugins.info("rating_format", fmt, key="--format").cls({})
    n = n_per_cell if n_per_cell is not None else exp.human["n_per_cell"]
    if n < 1:
        raise UserError("must be at least 1", key="--n-per-cell")
    existing = [t for t in fmt_plugin.targets(Path(output)) if t.exists()]
    if existing and not force:
        listed = ", ".join(str(t) for t in existing)
        raise UserError(f"already exists and may hold ratings: {listed}; pass --force to overwrite it, or choose another -o", file=output)
    store = Store.open_existing(exp.output_dir)
    if store is None:
        raise UserError(f"no generations yet in {exp.output_dir}; run `harness run --all` first", file=exp.path)
    runner = Runner(exp, plugins, store, None, Selection(list(models) or None, list(configs) or None, None))
    runner._resolve_adapters_readonly()
    eid = runner.engine().identity()
    candidates = []
    for spec in runner.models():
        state = runner.model_state(spec)
        if not state.ready:
            continue
        for config in runner.configs():
            keys = runner.cell_keys(state, config, eid)
            gens = store.generations([k for _, k in keys])
            for e, k in keys:
                if k in gens:
                    candidates.append(human.SheetCandidate(k, spec.name, config.name, e.id, e.instruction, e.input, gens[k]["text"], e.output))
    if not candidates:
        raise UserError("no generations to rate yet; run `harness run --all` first", file=exp.path)
    salt = store.get_meta("human_salt") or secrets.token_hex(8)
    sampled = human.sample_items(candidates, n, exp.human["seed"], salt=salt)
    scale = RatingScale("likert" if exp.human["scale"] == "likert" else "binary")
    items = [RatingItem(i.item_id, c.instruction, c.input, c.reference, (c.response,)) for i, c in sampled]
    written = fmt_plugin.export(items, scale, Path(output))
    if store.get_meta("human_salt") is None:
        store.set_meta("human_salt", salt)
    store.save_human_items([(i.item_id, i.gen_key, i.model, i.config, i.example_id) for i, _ in sampled])
    where = ", ".join(str(w) for w in written)
    click.echo(f"wrote {len(sampled)} items to {where}: rate them (0/1 or 1-5) with an annotator name, then `harness human import --format {fmt} {written[0] if len(written) == 1 else output}`")


@human_group.command("import")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", default="csv", show_default=True, help="a rating format plugin (see `harness plugins`)")
@click.option("--scale", type=click.Choice(["auto", "binary", "likert"]), default=None, help="default from [human] in the registry")
@click.option("--replace", is_flag=True, help="replace ratings an annotator already imported for the same items")
@registry_option
@handle_errors
def human_import(path: str, fmt: str, scale: str | None, replace: bool, registry: str) -> None:
    """Import ratings; a bad file imports nothing, and nothing already imported is replaced without --replace."""
    from .api import RatingItem, RatingScale
    from .store import Store

    exp, plugins = _load(registry)
    fmt_plugin = plugins.info("rating_format", fmt, key="--format").cls({})
    store = Store.open_existing(exp.output_dir)
    known = store.human_item_ids() if store else set()
    if not known:
        raise UserError(f"no exported items are known in {exp.output_dir}; run `harness human export` first", file=path)
    scale = scale or exp.human["scale"]
    items = {i: RatingItem(i, "", "", "", ("",)) for i in known}
    ratings, resolved = fmt_plugin.read(Path(path), items, None if scale == "auto" else RatingScale(scale))
    previous = store.existing_ratings([(r.item_id, r.annotator) for r in ratings])
    changed = [r for r in ratings if (r.item_id, r.annotator) in previous and previous[(r.item_id, r.annotator)] != r.value]
    if changed and not replace:
        shown = "; ".join(f"{r.where or r.item_id}: {r.annotator} rated {r.item_id!r} {_num(previous[(r.item_id, r.annotator)])} before, {_num(r.value)} now" for r in changed[:10])
        more = f" and {len(changed) - 10} more" if len(changed) > 10 else ""
        raise UserError(
            f"{len(changed)} rating(s) would replace ratings already imported: {shown}{more}; nothing was imported. "
            "Pass --replace to replace them, or fix the annotator names",
            file=path,
        )
    new = [r for r in ratings if (r.item_id, r.annotator) not in previous]
    store.save_ratings([(r.item_id, r.annotator, r.value) for r in [*new, *changed]], resolved.name, str(Path(path).resolve()))
    annotators = sorted({r.annotator for r in ratings})
    same = len(ratings) - len(new) - len(changed)
    parts = [f"imported {len(new)} new {resolved.name} rating(s) from {len(annotators)} annotator(s): {', '.join(annotators)}"]
    if changed:
        parts.append(f"replaced {len(changed)} changed rating(s)")
    if same:
        parts.append(f"{same} already imported with the same value (unchanged)")
    click.echo("; ".join(parts))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# ---------------------------------------------------------------------- helpers


def _load(path: str):
    from .registry import load_experiment

    plugins: Plugins = build_plugins()
    return load_experiment(path, plugins), plugins


def _write_atomic(path: Path, text: str) -> None:
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a report is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _register_analyze() -> None:
    from .analyze_cmd import analyze_cmd

    main.add_command(analyze_cmd)


_register_analyze()

if __name__ == "__main__":  # pragma: no cover
    main()
