"""`harness merge`: results from several machines into one store."""

from __future__ import annotations

import shutil
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
    from ..merge import apply, plan
    from ..store import Store

    target_dir = Path(output or store_dir) if (output or store_dir) else load(registry)[0].output_dir
    sources = []
    for other in others:
        src = Store.open_existing(Path(other), readonly=True)
        if src is None:
            raise UserError("no results store here (harness.sqlite); name the output folder of a run", file=other)
        sources.append(src)
    target = Store.open_existing(target_dir)
    if target is not None:
        with run_lock(target_dir, "harness merge"):
            report = apply(target, plan(target, sources))
    else:
        # a new folder: nothing is created until the merge is known to go through
        merge_plan = plan(target_dir, sources)
        created = [p for p in (target_dir, *target_dir.parents) if not p.exists()]  # deepest first
        there = set(target_dir.iterdir()) if target_dir.is_dir() else set()
        try:
            target = Store(target_dir)
            with run_lock(target_dir, "harness merge"):
                report = apply(target, merge_plan)
        except BaseException:  # a full disk, say: remove what this command made, and nothing else
            if target is not None:
                target.close()
            if created:
                shutil.rmtree(created[-1], ignore_errors=True)
            else:
                for path in set(target_dir.iterdir()) - there:
                    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            raise
    err.print(f"merged {len(sources)} store(s) into {target.directory}: {report.describe()}", soft_wrap=True)
