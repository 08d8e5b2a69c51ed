"""`harness human export | import | serve`: blinded items for annotators and their ratings back (rating-format plugins), or a rating page."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserError
from .common import Terminated, handle_errors, open_store, registry_option, selection_options, store_option


@click.group("human")
def human_group() -> None:
    """Human ratings: export blinded items for annotators, import their ratings, or rate in the browser."""


def _pairwise_options(fn):
    fn = click.option("--against", default=None, metavar="CONFIG", help="with --pairwise: compare every config with this one [default: the report's baseline]")(fn)
    fn = click.option("--pairwise", is_flag=True, help="rate pairs (a config's output and the baseline's for the same example): left / right / tie")(fn)
    return fn


@human_group.command("export")
@click.option("-o", "--output", default="human_sheet.csv", show_default=True, type=click.Path(), help="where to write (a file or a folder, as the format says)")
@click.option("--format", "fmt", default=None, help="a rating format plugin (see `harness plugins`) [default: the default format]")
@click.option("-n", "--n-per-cell", type=int, default=None, help="items per (model, config); default from [human] in the registry")
@click.option("--scale", type=click.Choice(["binary", "likert"]), default=None, help="the rating scale [default: [human] scale, binary when auto]")
@_pairwise_options
@click.option("--force", is_flag=True, help="overwrite files that already exist (a filled sheet holds ratings)")
@selection_options
@registry_option
@store_option
@handle_errors
def human_export(output, fmt, n_per_cell, scale, pairwise, against, force, models, configs, metrics, registry, store_dir) -> None:
    """Export blinded items: N per (model, config), shuffled, model and config hidden."""
    from ..report.items import prepare_items
    from ..report.results import Results

    store, plugins, _ = open_store(registry, store_dir)
    fmt = fmt or plugins.default("rating_format")
    fmt_plugin = plugins.info("rating_format", fmt, key="--format").cls({})
    existing = [t for t in fmt_plugin.targets(Path(output)) if t.exists()]
    if existing and not force:
        listed = ", ".join(str(t) for t in existing)
        raise UserError(f"already exists and may hold ratings: {listed}; pass --force to overwrite it, or choose another -o", file=output)
    results = Results.load(store, models=list(models) or None, configs=list(configs) or None, metrics=[])
    n = _n(n_per_cell, results)
    destination = Path(output)
    created = [p for p in (destination, *destination.parents) if not p.exists()]  # deepest first
    written: list[Path] = []
    try:
        # the items are recorded only once the sheet is written: one transaction, rolled back if writing fails
        with store.transaction():
            items, rated_on = prepare_items(store, results, n_per_cell=n, pairwise=pairwise, against=against, scale=scale)
            written = fmt_plugin.export(items, rated_on, destination)
    except BaseException:
        # the store does not know these items (the commit failed): a sheet of them could never be imported
        for path in written:
            path.unlink(missing_ok=True)
        for folder in created:  # and the folders the export made, where empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    where = ", ".join(str(w) for w in written)
    again = written[0] if len(written) == 1 else output
    how = "left, right or tie" if rated_on.pairwise else ("0/1" if rated_on.name == "binary" else "1-5")
    click.echo(f"wrote {len(items)} items to {where}: rate them ({how}) with an annotator name, then `harness human import --format {fmt} {again}`")
    _say_rounds(store, items, rated_on)


@human_group.command("serve")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="the port on 127.0.0.1 (0: any free one)")
@click.option("--annotator", default=None, help="the one annotator of this page [default: each types a name on the page]")
@click.option("-n", "--n-per-cell", type=int, default=None, help="items per (model, config); default from [human] in the registry")
@click.option("--scale", type=click.Choice(["binary", "likert"]), default=None, help="the rating scale [default: [human] scale, binary when auto]")
@_pairwise_options
@selection_options
@registry_option
@store_option
@handle_errors
def human_serve(port, annotator, n_per_cell, scale, pairwise, against, models, configs, metrics, registry, store_dir) -> None:
    """Rate in the browser: a page on 127.0.0.1 that stores every rating as it is given (Ctrl-C stops it)."""
    from ..report.items import prepare_items
    from ..report.rating_page import check_annotator, serve
    from ..report.rating_store import StoreBackend
    from ..report.results import Results
    from ..store import Store

    store, _, _ = open_store(registry, store_dir)
    store.close()
    store = Store.open_existing(Path(store.directory), threads=True)
    if annotator is not None:
        annotator = check_annotator(annotator)
    results = Results.load(store, models=list(models) or None, configs=list(configs) or None, metrics=[])
    items, rated_on = prepare_items(store, results, n_per_cell=_n(n_per_cell, results), pairwise=pairwise, against=against, scale=scale)
    _say_rounds(store, items, rated_on)
    backend = StoreBackend(store, items, rated_on)
    server = serve(backend, port=port, annotator=annotator, announce=lambda line: click.echo(line))
    click.echo(f"{len(items)} {rated_on.name} items; every rating is saved in {store.path} as it is given. Ctrl-C stops the page.")
    stopped: KeyboardInterrupt | None = None
    try:
        server.serve_forever()
    except KeyboardInterrupt as exc:  # Ctrl-C is how the page is stopped (exit 0); SIGTERM exits 143, as every command
        stopped = exc
    finally:
        server.stop()
    click.echo(f"stopped: {backend.stored} rating(s) saved by this page")
    if isinstance(stopped, Terminated):
        raise stopped


def _say_rounds(store, items, rated_on) -> None:
    """Say so when these items rate outputs that were exported before on another scale (a second round)."""
    from ..report.items import earlier_rounds

    for other, count in sorted(earlier_rounds(store, [i.item_id for i in items]).items()):
        click.echo(
            f"a second round on the {rated_on.name} scale: these are new items; the {count} {other} items exported before "
            f"for the same outputs keep their scale and their ratings (both rounds count in the Human column, each on its own scale)"
        )


def _n(n_per_cell: int | None, results) -> int:
    n = n_per_cell if n_per_cell is not None else int(results.experiment.human.get("n_per_cell", 30))
    if n < 1:
        raise UserError("must be at least 1", key="--n-per-cell")
    return n


@human_group.command("import")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", default=None, help="a rating format plugin (see `harness plugins`) [default: the default format]")
@click.option("--scale", type=click.Choice(["auto", "binary", "likert", "pairwise"]), default=None, help="the scale, where neither the file nor the exported items say (a sheet of only 1s)")
@click.option("--replace", is_flag=True, help="replace ratings an annotator already imported for the same items")
@registry_option
@store_option
@handle_errors
def human_import(path: str, fmt: str | None, scale: str | None, replace: bool, registry: str, store_dir) -> None:
    """Import ratings; a bad file imports nothing, and nothing already imported is replaced without --replace."""
    from ..api import RatingScale
    from ..report.items import rating_items
    store, plugins, _ = open_store(registry, store_dir)
    fmt = fmt or plugins.default("rating_format")
    fmt_plugin = plugins.info("rating_format", fmt, key="--format").cls({})
    items = rating_items(store)
    if not items:
        raise UserError(f"no exported items are known in {store.directory}; run `harness human export` first", file=path)
    # the file and the items' recorded scale decide; --scale only when they cannot
    ratings, resolved = fmt_plugin.read(Path(path), items, None if scale in (None, "auto") else RatingScale(scale))
    _check_item_scales(ratings, resolved, items, path)
    previous = store.existing_ratings([(r.item_id, r.annotator) for r in ratings])
    changed = [r for r in ratings if (r.item_id, r.annotator) in previous and previous[(r.item_id, r.annotator)] != r.value]
    if changed and not replace:
        shown = "; ".join(
            f"{r.where or r.item_id}: {r.annotator} rated {r.item_id!r} {_num(previous[(r.item_id, r.annotator)])} before, {_num(r.value)} now" for r in changed[:10]
        )
        more = f" and {len(changed) - 10} more" if len(changed) > 10 else ""
        raise UserError(
            f"{len(changed)} rating(s) would replace ratings already imported: {shown}{more}; nothing was imported. "
            "Pass --replace to replace them, or fix the annotator names",
            file=path,
        )
    new = [r for r in ratings if (r.item_id, r.annotator) not in previous]
    chosen = [*new, *changed]
    store.save_ratings([(r.item_id, r.annotator, r.value) for r in chosen], resolved.name, str(Path(path).resolve()), [r.comment for r in chosen])
    annotators = sorted({r.annotator for r in ratings})
    same = len(ratings) - len(new) - len(changed)
    parts = [f"imported {len(new)} new {resolved.name} rating(s) from {len(annotators)} annotator(s): {', '.join(annotators)}"]
    if changed:
        parts.append(f"replaced {len(changed)} changed rating(s)")
    if same:
        parts.append(f"{same} already imported with the same value (unchanged)")
    click.echo("; ".join(parts))


def _check_item_scales(ratings, resolved, items, path) -> None:
    """Every rating must be on the scale its item was exported for: a rating never changes meaning."""
    wrong = [r for r in ratings if items[r.item_id].scale and items[r.item_id].scale != resolved.name]
    if not wrong:
        return
    shown = "; ".join(f"{r.where or r.item_id}: item {r.item_id!r} was exported for the {items[r.item_id].scale} scale" for r in wrong[:10])
    more = f" and {len(wrong) - 10} more" if len(wrong) > 10 else ""
    raise UserError(
        f"{len(wrong)} rating(s) read as {resolved.name} are for items exported on another scale: {shown}{more}; nothing was imported. "
        "An item keeps the scale it was exported for: import without --scale (the items say their scale), "
        f"or export a {resolved.name} round (`harness human export --scale {resolved.name}`: new items) and rate those",
        file=path,
    )


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
