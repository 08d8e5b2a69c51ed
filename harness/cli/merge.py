"""`harness merge`: results from several machines into one store."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserError
from .common import err, handle_errors, load, registry_option


@click.command("merge")
@click.argument("others", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("-o", "--output", "output", default=None, type=click.Path(file_okay=False), help="the output folder to merge into (created if missing) [default: the experiment file's output folder]")
@registry_option
@click.option("--store", "store_dir", default=None, type=click.Path(file_okay=False), help="merge into this output folder (same as -o)")
@handle_errors
def merge_cmd(others, output, registry: str, store_dir) -> None:
    """Merge the results stores in OTHERS (output folders of runs on other machines) into one.

    Content-keyed and idempotent: rows the target lacks are copied, equal rows are left
    alone, and a key holding different values in two stores is reported with nothing
    written. Adapters are matched by sha256 and their files copied.
    """
    from ..locks import run_lock
    from ..merge import merge
    from ..store import Store

    target_dir = output or store_dir
    if target_dir is None:
        exp, _ = load(registry)
        target_dir = exp.output_dir
    sources = []
    for other in others:
        src = Store.open_existing(Path(other), readonly=True)
        if src is None:
            raise UserError("no results store here (harness.sqlite); name the output folder of a run", file=other)
        sources.append(src)
    target = Store(Path(target_dir))
    with run_lock(Path(target_dir), "harness merge"):
        report = merge(target, sources)
    err.print(f"merged {len(sources)} store(s) into {target.directory}: {report.describe()}", soft_wrap=True)
