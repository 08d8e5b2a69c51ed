"""`harness runs`: the runs a store recorded, and the exact library versions of one of them."""

from __future__ import annotations

import time

import click

from ..errors import UserError
from .common import echo, handle_errors, open_store, registry_option, store_option


@click.command("runs")
@click.option("--requirements", "requirements", type=int, default=None, metavar="RUN", help="print RUN's installed distributions as pip requirements (name==version)")
@registry_option
@store_option
@handle_errors
def runs_cmd(requirements: int | None, registry: str, store_dir) -> None:
    """List the recorded runs (id, status, host, when, how long, command).

    A result's cache key holds the identities of the libraries that made it (the metric's
    library version, the engine's, the model's fingerprint). To continue a run on another
    machine without recomputing, install the versions it recorded there:
    ``harness runs --requirements N > requirements.txt; pip install -r requirements.txt``.
    """
    store, _, _ = open_store(registry, store_dir, readonly=True)
    runs = store.runs()
    if requirements is not None:
        run = next((r for r in runs if r["run_id"] == requirements), None)
        if run is None:
            raise UserError(f"no run {requirements}; recorded runs: {', '.join(str(r['run_id']) for r in runs) or 'none'}", key="--requirements")
        versions = (run.get("metadata") or {}).get("versions") or {}
        echo("".join(f"{name}=={version}\n" for name, version in versions.items() if name != "llm-decoding-harness"))
        return
    lines = []
    for r in runs:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started"]))
        took = f"{r['finished'] - r['started']:.0f} s" if r["finished"] else "—"
        merged = " (merged)" if (r.get("metadata") or {}).get("merged_from") else ""
        lines.append(f"{r['run_id']:>4}  {r['status']:<11} {r['host'] or '?':<16} {started}  {took:>8}  {r['command']}{merged}")
    echo("\n".join(lines) + ("\n" if lines else "no runs recorded\n"))
