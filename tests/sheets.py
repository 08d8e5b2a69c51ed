"""Reading and filling CSV rating sheets in tests, as annotators would."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path


def read_rows(path: Path) -> list[dict[str, str]]:
    with Path(path).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def stand_in_rating(item_id: str, annotator: str) -> int:
    """A fixed 0/1 pattern per (item, annotator): stand-in annotators, not judgments."""
    return int(hashlib.sha256(f"{item_id}{annotator}".encode()).hexdigest(), 16) % 2


def fill(sheet: Path, annotators=("ann1", "ann2")) -> None:
    """Every annotator rates every row of ``sheet`` (binary, :func:`stand_in_rating`), rows appended per annotator."""
    rows = read_rows(sheet)
    write_rows(sheet, [r | {"rating": str(stand_in_rating(r["item_id"], a)), "annotator": a} for a in annotators for r in rows])
