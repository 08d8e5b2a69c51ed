"""`harness human export | import`: blinded items for annotators, and their ratings back, through rating-format plugins."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserError
from .common import handle_errors, open_store, registry_option, selection_options, store_option


@click.group("human")
def human_group() -> None:
    """Human ratings: export blinded items for annotators, import their ratings."""


@human_group.command("export")
@click.option("-o", "--output", default="human_sheet.csv", show_default=True, type=click.Path(), help="where to write (a file or a folder, as the format says)")
@click.option("--format", "fmt", default=None, help="a rating format plugin (see `harness plugins`) [default: the default format]")
@click.option("-n", "--n-per-cell", type=int, default=None, help="items per (model, config); default from [human] in the registry")
@click.option("--force", is_flag=True, help="overwrite files that already exist (a filled sheet holds ratings)")
@selection_options
@registry_option
@store_option
@handle_errors
def human_export(output: str, fmt: str | None, n_per_cell: int | None, force: bool, models, configs, metrics, registry: str, store_dir) -> None:
    """Export blinded items: N per (model, config), shuffled, model and config hidden."""
    import secrets

    from ..api import RatingItem, RatingScale
    from ..report import items as rating_items
    from ..report.results import Results

    store, plugins, _ = open_store(registry, store_dir)
    fmt = fmt or plugins.default("rating_format")
    fmt_plugin = plugins.info("rating_format", fmt, key="--format").cls({})
    results = Results.load(store, models=list(models) or None, configs=list(configs) or None, metrics=[])
    settings = results.experiment.human
    n = n_per_cell if n_per_cell is not None else int(settings.get("n_per_cell", 30))
    if n < 1:
        raise UserError("must be at least 1", key="--n-per-cell")
    existing = [t for t in fmt_plugin.targets(Path(output)) if t.exists()]
    if existing and not force:
        listed = ", ".join(str(t) for t in existing)
        raise UserError(f"already exists and may hold ratings: {listed}; pass --force to overwrite it, or choose another -o", file=output)
    candidates = rating_items.candidates(store, results)
    if not candidates:
        raise UserError(f"no generations to rate yet in {store.directory}; run `harness run --all` first")
    salt = store.get_meta("human_salt") or secrets.token_hex(8)
    sampled = rating_items.sample_items(candidates, n, int(settings.get("seed", 0)), salt=salt)
    scale = RatingScale("likert" if settings.get("scale") == "likert" else "binary")
    items = [RatingItem(i.item_id, c.instruction, c.input, c.reference, (c.response,)) for i, c in sampled]
    written = fmt_plugin.export(items, scale, Path(output))
    if store.get_meta("human_salt") is None:
        store.set_meta("human_salt", salt)
    store.save_human_items([(i.item_id, i.gen_key, i.model, i.config, i.example_id) for i, _ in sampled])
    where = ", ".join(str(w) for w in written)
    again = written[0] if len(written) == 1 else output
    click.echo(f"wrote {len(sampled)} items to {where}: rate them (0/1 or 1-5) with an annotator name, then `harness human import --format {fmt} {again}`")


@human_group.command("import")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", default=None, help="a rating format plugin (see `harness plugins`) [default: the default format]")
@click.option("--scale", type=click.Choice(["auto", "binary", "likert"]), default=None, help="default from [human] in the registry")
@click.option("--replace", is_flag=True, help="replace ratings an annotator already imported for the same items")
@registry_option
@store_option
@handle_errors
def human_import(path: str, fmt: str | None, scale: str | None, replace: bool, registry: str, store_dir) -> None:
    """Import ratings; a bad file imports nothing, and nothing already imported is replaced without --replace."""
    from ..api import RatingItem, RatingScale
    from ..report.results import _experiment

    store, plugins, _ = open_store(registry, store_dir)
    fmt = fmt or plugins.default("rating_format")
    fmt_plugin = plugins.info("rating_format", fmt, key="--format").cls({})
    known = store.human_item_ids()
    if not known:
        raise UserError(f"no exported items are known in {store.directory}; run `harness human export` first", file=path)
    scale = scale or _experiment(store.runs(), store).human.get("scale", "auto")
    items = {i: RatingItem(i, "", "", "", ("",)) for i in known}
    ratings, resolved = fmt_plugin.read(Path(path), items, None if scale == "auto" else RatingScale(scale))
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


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
