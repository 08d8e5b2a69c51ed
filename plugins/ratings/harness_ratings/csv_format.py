"""``csv``: a blinded rating sheet that annotators fill in a spreadsheet.

Export writes UTF-8 CSV (no byte order mark) with one row per item:

* absolute ratings: ``item_id, instruction, input, reference, response, rating, annotator, comment``;
* pairwise: ``item_id, instruction, input, reference, response_left, response_right, rating,
  annotator, comment``, where ``rating`` is ``left``, ``right`` or ``tie``.

Model and config never appear: the store maps each opaque ``item_id`` back. Annotators fill
``rating`` and ``annotator``; several annotators may add their own rows to one sheet or send
back separate copies. The sheet is written to a temporary file and moved into place, so a
destination is either untouched or complete.

Spreadsheets run a cell as a formula when it starts with ``=``, ``+``, ``-`` or ``@`` (tab and
carriage return also count, following OWASP's guidance on CSV injection). Model output can
start that way, so :func:`escape_cell` puts a single quote in front of such cells and
:func:`unescape_cell` takes it off again, only where one was added.

Reading checks the whole sheet and returns every rating, or raises one
:class:`~harness.errors.UserError` that lists every problem (unknown ids, values off the
scale, missing annotators, an item rated twice by one annotator, mixed scales).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO

from harness import hookimpl
from harness.api import PAIR_LEFT, PAIR_RIGHT, PAIR_TIE, Rating, RatingFormat, RatingItem, RatingScale, write_atomically
from harness.errors import UserError

from .messages import MAX_LISTED, listed, problem_message

#: columns of an exported sheet, in order
COLUMNS = ["item_id", "instruction", "input", "reference", "response", "rating", "annotator", "comment"]
PAIR_COLUMNS = ["item_id", "instruction", "input", "reference", "response_left", "response_right", "rating", "annotator", "comment"]
#: the columns a sheet must still have when it is read back
REQUIRED_COLUMNS = ("item_id", "rating", "annotator")
PAIR_WORDS = {"left": PAIR_LEFT, "l": PAIR_LEFT, "right": PAIR_RIGHT, "r": PAIR_RIGHT, "tie": PAIR_TIE, "t": PAIR_TIE}

_ALLOWED_TEXT = {
    "binary": "0 or 1 (binary)",
    "likert": "1-5 (Likert)",
    "pairwise": "left, right or tie (pairwise)",
    "auto": "0 or 1 (binary) or 1-5 (Likert)",
}
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


# --------------------------------------------------------------------------- cells


def escape_cell(text: str) -> str:
    """Put a ``'`` in front of a cell that a spreadsheet would run as a formula.

    Covers cells starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return, also
    behind single quotes already there (``'=x`` is written ``''=x``), so that
    :func:`unescape_cell` can always tell an added quote from one in the text.
    """
    if text.lstrip("'").startswith(_FORMULA_STARTS):
        return "'" + text
    return text


def unescape_cell(text: str) -> str:
    """Undo :func:`escape_cell`: remove one ``'`` where escape_cell would have added it."""
    if text.startswith("'") and text.lstrip("'").startswith(_FORMULA_STARTS):
        return text[1:]
    return text


# --------------------------------------------------------------------------- export


def write_sheet(path: str | Path, items: Sequence[RatingItem], scale: RatingScale) -> None:
    """Write the sheet for ``items`` to ``path`` atomically (see the module docstring)."""
    path = Path(path)
    seen: set[str] = set()
    for item in items:
        if item.item_id in seen:
            raise ValueError(f"item id {item.item_id!r} is used twice")
        seen.add(item.item_id)
        if len(item.outputs) != (2 if scale.pairwise else 1):
            raise ValueError(f"item {item.item_id!r} has {len(item.outputs)} outputs; the {scale.name} scale needs {2 if scale.pairwise else 1}")
    header = PAIR_COLUMNS if scale.pairwise else COLUMNS
    rows = ([item.item_id, item.instruction, item.input, item.reference, *item.outputs, "", "", ""] for item in items)
    _write_csv_atomically(path, header, rows)


def _write_csv_atomically(path: Path, header: list[str], rows: Iterable[list[str]]) -> None:
    def write(handle: IO[str]) -> None:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow([escape_cell(cell) for cell in row])

    try:
        write_atomically(path, write, newline="")
    except OSError as exc:
        raise UserError(f"cannot write the rating sheet: {exc.strerror or exc}", file=path) from exc


# --------------------------------------------------------------------------- import


def read_sheet(path: str | Path, items: Mapping[str, RatingItem], scale: RatingScale | None = None) -> tuple[list[Rating], RatingScale]:
    """Every rating of a filled-in sheet, in file order, and the sheet's scale.

    ``scale`` None infers it: a sheet of pairwise items is pairwise; otherwise ratings
    all 0/1 with a 0 are binary, whole numbers 1-5 with one above 1 are Likert, and a
    sheet of only 1s is an error (it fits both, and mistaking one for the other turns
    the worst score into the best).

    The header may have spaces around names, any case, a UTF-8 byte order mark and the
    columns in any order; other columns are ignored. The separator may be a comma, a
    semicolon or a tab. Rows with an empty ``rating`` are skipped (not rated yet). Row
    numbers in messages are spreadsheet rows with the header as row 1 (the file's line
    is added where a multi-line cell makes them differ).
    """
    path = Path(path)
    text = _read_text(path)
    if not text.strip():
        raise UserError("no ratings found: the file is empty", file=path)

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_guess_delimiter(text))
    try:
        header = next(reader)
    except csv.Error as exc:
        raise UserError(f"line 1: not a valid CSV header ({exc})", file=path) from exc
    names = [name.strip().lower() for name in header]
    column = _required_columns(names, path)
    if scale is None and "response_left" in names:
        scale = RatingScale("pairwise")  # a pairwise sheet says so in its header
    mode = scale.name if scale is not None else "auto"
    comment_col = names.index("comment") if "comment" in names else None

    problems = _Problems()
    found: list[tuple[str, str, float, str, int, str]] = []  # item, annotator, value, raw, row, where
    seen: dict[tuple[str, str], list[int]] = {}
    comments: dict[int, str] = {}
    row = 1
    next_line = reader.line_num + 1
    try:
        for record in reader:
            row += 1
            line, next_line = next_line, reader.line_num + 1
            if not any(cell.strip() for cell in record):
                continue
            raw = _cell(record, column["rating"])
            if not raw:
                continue  # not rated yet
            where = f"row {row}" if line == row else f"row {row} (line {line})"
            item_id, annotator = _cell(record, column["item_id"]), _cell(record, column["annotator"])
            value = _parse(raw, mode)
            if value is None:
                problems.add("number", f"{where}: rating {raw!r} is not {'one of left, right, tie' if mode == 'pairwise' else 'a number'}; allowed: {_ALLOWED_TEXT[mode]}", row)
            if not item_id:
                problems.add("item", f"{where}: rating {raw!r} has no item_id; fill in the 'item_id' column", row)
            elif item_id not in items:
                problems.unknown.append(f"row {row} {item_id!r}")
            elif mode != "pairwise" and items[item_id].pairwise:
                problems.add("item", f"{where}: item {item_id!r} is a pairwise item; rate it left, right or tie", row)
            elif mode == "pairwise" and not items[item_id].pairwise:
                problems.add("item", f"{where}: item {item_id!r} has one output, not a pair; rate it on its own scale", row)
            if not annotator:
                problems.add("annotator", f"{where}: rating {raw!r} has no annotator; fill in the 'annotator' column", row)
            if item_id and annotator:
                seen.setdefault((item_id, annotator), []).append(row)
            if value is not None:
                found.append((item_id, annotator, value, raw, row, where))
            if comment_col is not None:
                comments[row] = _cell(record, comment_col)
    except csv.Error as exc:
        raise UserError(f"line {reader.line_num}: not valid CSV ({exc})", file=path) from exc

    for (item_id, annotator), rows in seen.items():
        if len(rows) > 1:
            problems.add(
                "duplicate",
                f"item {item_id!r} is rated more than once by annotator {annotator!r} on {_join_rows(rows)}; keep one rating per annotator and item",
            )
    exported = {items[i].scale for i, *_ in found if i in items and items[i].scale}
    resolved = _resolve_scale(mode, found, problems, exported.pop() if len(exported) == 1 else None)
    if problems.count():
        raise UserError(problems.render(), file=path)
    ratings = [
        Rating(item_id, annotator, value, comment=comments.get(row, ""), where=where)
        for item_id, annotator, value, _, row, where in found
        if item_id in items and annotator
    ]
    if not ratings:
        raise UserError("no ratings found: every 'rating' cell is empty", file=path)
    return ratings, RatingScale(resolved)


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise UserError("file not found", file=path) from exc
    except OSError as exc:
        raise UserError(f"cannot read the file: {exc.strerror or exc}", file=path) from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"the file is not UTF-8 text (byte {exc.start}); save it from the spreadsheet as 'CSV UTF-8'", file=path) from exc


def _cell(record: list[str], index: int) -> str:
    return unescape_cell(record[index]).strip() if index < len(record) else ""


def _guess_delimiter(text: str) -> str:
    first_line = text.splitlines()[0] if text else ""
    for delimiter in (",", ";", "\t"):
        if "item_id" in (name.strip().lower() for name in first_line.split(delimiter)):
            return delimiter
    return ","


def _required_columns(names: list[str], path: Path) -> dict[str, int]:
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    doubled = [name for name in REQUIRED_COLUMNS if names.count(name) > 1]
    if missing:
        found = ", ".join(f"'{name}'" for name in names if name) or "none"
        listed = ", ".join(f"'{name}'" for name in missing)
        raise UserError(
            f"missing required column{'s' if len(missing) > 1 else ''} {listed}; found: {found}; "
            f"a rating sheet needs the columns {', '.join(repr(n) for n in REQUIRED_COLUMNS)}",
            file=path,
        )
    if doubled:
        listed = ", ".join(f"'{name}'" for name in doubled)
        raise UserError(f"the column{'s' if len(doubled) > 1 else ''} {listed} appear more than once", file=path)
    return {name: names.index(name) for name in REQUIRED_COLUMNS}


def _parse(raw: str, mode: str) -> float | None:
    if mode == "pairwise":
        return PAIR_WORDS.get(raw.strip().lower())
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _resolve_scale(mode: str, found: list[tuple[str, str, float, str, int, str]], problems: _Problems, exported: str | None = None) -> str:
    """The sheet's scale; values the scale does not allow are added to ``problems``.

    ``exported`` is the scale every rated item was exported for, when they agree: it decides
    a sheet whose values fit both scales (only 1s).
    """
    if mode == "pairwise":
        return mode
    if mode == "auto" and exported in ("binary", "likert"):
        mode = exported  # the items say which scale they were exported for
    if mode != "auto":
        allowed = RatingScale(mode).values
        for _, _, value, raw, row, where in found:
            if value not in allowed:
                problems.add("range", f"{where}: rating {raw!r} {_why_not(value, allowed)}; allowed: {_ALLOWED_TEXT[mode]}", row)
        return mode
    binary, likert = set(RatingScale("binary").values), set(RatingScale("likert").values)
    fitting = []
    for _, _, value, raw, row, where in found:
        if value in binary | likert:
            fitting.append((row, value))
        else:
            problems.add("range", f"{where}: rating {raw!r} {_why_not(value, binary | likert)}; allowed: {_ALLOWED_TEXT['auto']}", row)
    binary_only = [row for row, value in fitting if value not in likert]
    likert_only = [row for row, value in fitting if value not in binary]
    if binary_only and likert_only:
        problems.add(
            "mix",
            f"the ratings mix two scales: 0 (binary only) on {_join_rows(binary_only)} and 2-5 (Likert only) "
            f"on {_join_rows(likert_only)}; use one scale per sheet: {_ALLOWED_TEXT['auto']}",
        )
        return "binary"
    if likert_only:
        return "likert"
    if fitting and not binary_only:
        problems.add(
            "mix",
            "every rating is 1, which fits both scales (1 = acceptable on the binary scale, but the worst score "
            "on the Likert scale); name the scale explicitly: 'binary' or 'likert'",
        )
    return "binary"


def _why_not(value: float, allowed: Iterable[float]) -> str:
    allowed = list(allowed)
    if min(allowed) <= value <= max(allowed):
        return "is not a whole number"
    return "is out of range"


def _join_rows(rows: Sequence[int]) -> str:
    return f"{'row' if len(rows) == 1 else 'rows'} {listed(rows)}"


class _Problems:
    """The problems of one sheet, rendered as one message (per-row problems by row, then the rest)."""

    _MORE = {
        "item": "rows without a usable item_id",
        "number": "ratings that cannot be read",
        "range": "ratings that are not allowed",
        "annotator": "rows without an annotator",
        "duplicate": "items rated more than once by one annotator",
        "mix": "problems",
    }

    def __init__(self) -> None:
        self.by_kind: dict[str, list[tuple[int, str]]] = {kind: [] for kind in self._MORE}
        self.unknown: list[str] = []

    def add(self, kind: str, line: str, row: int = 0) -> None:
        self.by_kind[kind].append((row, line))

    def count(self) -> int:
        return sum(len(lines) for lines in self.by_kind.values()) + (1 if self.unknown else 0)

    def render(self) -> str:
        per_row = [entry for kind in ("item", "number", "range", "annotator") for entry in self.by_kind[kind][:MAX_LISTED]]
        lines = [line for _, line in sorted(per_row, key=lambda entry: entry[0])]
        if self.unknown:
            lines.append(f"unknown item ids (not on any exported sheet): {listed(self.unknown)}")
        for kind in ("duplicate", "mix"):
            lines.extend(line for _, line in self.by_kind[kind][:MAX_LISTED])
        for kind, found in self.by_kind.items():
            if len(found) > MAX_LISTED:
                lines.append(f"... and {len(found) - MAX_LISTED} more {self._MORE[kind]}")
        return problem_message(self.count(), "rating sheet", lines)


# --------------------------------------------------------------------------- the plugin


class CsvRatingFormat(RatingFormat):
    name = "csv"
    version = "2"
    is_default = True
    description = "a blinded CSV sheet filled in a spreadsheet (rating, annotator, optional comment)"
    destination = "file"

    def export(self, items: Sequence[RatingItem], scale: RatingScale, destination: Path) -> list[Path]:
        write_sheet(destination, items, scale)
        return [Path(destination)]

    def read(self, path: Path, items: Mapping[str, RatingItem], scale: RatingScale | None) -> tuple[list[Rating], RatingScale]:
        return read_sheet(path, items, scale)


@hookimpl
def harness_register_rating_formats(register):
    register(CsvRatingFormat)
