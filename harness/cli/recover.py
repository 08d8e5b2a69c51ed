"""`harness recover`: every row a damaged results store still holds, copied into a fresh folder."""

from __future__ import annotations

from pathlib import Path

import click

from .common import err, handle_errors


@click.command("recover")
@click.argument("damaged", type=click.Path(file_okay=False))
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="a new folder for the recovered store (nothing is written to DAMAGED)")
@handle_errors
def recover_cmd(damaged: str, output: str) -> None:
    """Copy every row the damaged store in DAMAGED (an output folder) can still give into a fresh store in OUTPUT.

    Point the experiment's output_dir at OUTPUT (or move OUTPUT in place of DAMAGED) and run
    `harness run --all` there: it recomputes only what could not be read.
    """
    from ..recover import recover

    report = recover(Path(damaged), Path(output), log=lambda line: err.print(f"  {line}", markup=False, highlight=False, soft_wrap=True))
    if not report.damage:
        err.print(f"{damaged}: SQLite finds no damage in this store; copied it anyway", markup=False, soft_wrap=True)
    err.print(f"recovered into {output}: {report.describe()}", markup=False, soft_wrap=True)
    err.print(
        f"next: point the experiment's output_dir at {output} (or move it in place of {damaged}) and run `harness run --all`: "
        "it recomputes only what was lost",
        markup=False,
        soft_wrap=True,
    )
