"""The blinded human-rating sheet: sample, export, read back, summarize.

Pure functions; the store (SQLite) calls them and keeps the bookkeeping.

1. :func:`sample_items` picks up to ``n_per_cell`` generations for every
   (model, config) cell. It picks the *same* examples in every cell where it can,
   so the ratings are paired, and shuffles the whole list so the order of the
   rows gives no hint about the model or config.
2. :func:`write_sheet` writes a CSV with the columns in :data:`COLUMNS`: an opaque
   ``item_id``, the prompt, the response and two empty columns, ``rating`` and
   ``annotator``. Model and config are left out; the store keeps each
   :class:`SheetItem` to map item ids back.
3. Annotators fill in ``rating`` and ``annotator``. Several annotators may add their
   own rows to one sheet or send back separate copies; the format is the same.
4. :func:`read_sheet` checks a filled-in sheet and returns its :class:`Rating` rows
   and the scale the sheet uses. It either returns everything or raises a single
   :class:`~harness.errors.UserError` that lists every problem found.
5. :func:`group_ratings` and :func:`summarize` turn the ratings into one human
   score per cell.

Two rating scales are accepted:

* ``binary``: 0 (not acceptable) or 1 (acceptable);
* ``likert``: whole numbers from 1 (worst) to 5 (best).

:func:`summarize` puts both scales on 0-1 with higher meaning better. Binary scores
stay as they are (the fraction of items rated acceptable). A Likert mean ``r`` is
mapped to ``(r - 1) / 4``, so 1 becomes 0, 3 becomes 0.5 and 5 becomes 1.
:func:`raw_means` and :func:`likert_mean` give the means on the original scale.

Spreadsheets run a cell as a formula when it starts with ``=``, ``+``, ``-`` or ``@``
(tab and carriage return also count, following OWASP's guidance on CSV injection).
Model output can start that way, so :func:`escape_cell` puts a single quote ``'`` in
front of such cells. :func:`unescape_cell` takes the quote off again, and only where
:func:`escape_cell` added one, so exporting a text and reading it back gives the
same text.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

__all__ = [
    "COLUMNS",
    "REQUIRED_COLUMNS",
    "SCALES",
    "SheetCandidate",
    "SheetItem",
    "Rating",
    "make_item_id",
    "sample_items",
    "escape_cell",
    "unescape_cell",
    "write_sheet",
    "read_sheet",
    "group_ratings",
    "raw_means",
    "likert_mean",
    "to_unit",
    "summarize",
]

#: the columns of an exported sheet, in order
COLUMNS = ["item_id", "instruction", "input", "response", "rating", "annotator"]
#: the columns a sheet must still have when it is read back
REQUIRED_COLUMNS = ("item_id", "rating", "annotator")
#: the rating scales, each with the values it allows
SCALES: dict[str, frozenset[float]] = {
    "binary": frozenset({0.0, 1.0}),
    "likert": frozenset({1.0, 2.0, 3.0, 4.0, 5.0}),
}

_ALLOWED_TEXT = {
    "binary": "0 or 1 (binary)",
    "likert": "1-5 (Likert)",
    "auto": "0 or 1 (binary) or 1-5 (Likert)",
}
# first characters that make a spreadsheet evaluate a cell (OWASP, CSV injection)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# how many offending rows or ids one message line lists before "and N more"
_MAX_LISTED = 10

Cell = tuple[str, str]


@dataclass(frozen=True)
class SheetCandidate:
    """One stored generation that may be picked for rating."""

    gen_key: str  # the store's key of the generation
    model: str
    config: str
    example_id: str
    instruction: str
    input: str
    response: str


@dataclass(frozen=True)
class SheetItem:
    """One exported row. The store keeps it to map ``item_id`` back to its cell."""

    item_id: str
    gen_key: str
    model: str
    config: str
    example_id: str


@dataclass(frozen=True)
class Rating:
    """One rating read back from a sheet.

    ``row`` is the row number a spreadsheet shows, with the header as row 1. It is
    the same as the file's line number unless a cell above the row holds a line
    break.
    """

    item_id: str
    annotator: str
    rating: float
    row: int


# --------------------------------------------------------------------------- sampling


def make_item_id(salt: str, gen_key: str) -> str:
    """The opaque id of a generation on a sheet: ``"h"`` + 10 hex digits of sha256(salt + gen_key).

    The id stays the same for the same salt and generation, and nothing about the
    model or config can be read from it. The leading letter stops spreadsheets from
    reading an id such as ``1e5`` as a number.
    """
    return "h" + hashlib.sha256((salt + gen_key).encode("utf-8")).hexdigest()[:10]


def sample_items(
    candidates: Iterable[SheetCandidate], n_per_cell: int, seed: int, *, salt: str
) -> list[tuple[SheetItem, SheetCandidate]]:
    """Pick up to ``n_per_cell`` generations per (model, config) cell, paired and shuffled.

    The examples are ranked once for all cells. First come the examples that the
    most cells have, so an example every cell has comes before one that some cells
    lack. Among examples that equally many cells have, the order is drawn from
    ``seed``. Each cell then takes its first ``n_per_cell`` examples in this ranking
    (all of them if it has fewer). When every cell has the same examples, every
    cell gets the same ones; when some are missing, the cells still share as many
    as they can. Finally the whole list is shuffled with the same random generator.

    The result depends only on the candidates, ``seed`` and ``salt``, not on the
    order in which the candidates are given.

    Raises ``ValueError`` when the same ``gen_key`` appears twice, when a cell has
    two generations for one example, or, with odds of about one in a trillion per
    pair, when two item ids collide (use another salt). Raises ``UserError`` when
    ``n_per_cell`` is below 1.
    """
    if n_per_cell < 1:
        raise UserError(f"the number of items per model and config must be at least 1, got {n_per_cell}")

    cells: dict[Cell, dict[str, SheetCandidate]] = {}
    seen_keys: set[str] = set()
    for cand in candidates:
        if cand.gen_key in seen_keys:
            raise ValueError(f"generation {cand.gen_key!r} is listed twice")
        seen_keys.add(cand.gen_key)
        by_example = cells.setdefault((cand.model, cand.config), {})
        if cand.example_id in by_example:
            raise ValueError(
                f"model {cand.model!r}, config {cand.config!r} has two generations for example "
                f"{cand.example_id!r} ({by_example[cand.example_id].gen_key!r} and {cand.gen_key!r})"
            )
        by_example[cand.example_id] = cand

    rng = random.Random(seed)
    coverage: dict[str, int] = {}
    for by_example in cells.values():
        for example_id in by_example:
            coverage[example_id] = coverage.get(example_id, 0) + 1
    ranking = sorted(coverage)
    rng.shuffle(ranking)
    ranking.sort(key=lambda example_id: -coverage[example_id])  # stable: keeps the drawn order within ties

    sampled: list[tuple[SheetItem, SheetCandidate]] = []
    owners: dict[str, str] = {}  # item_id -> gen_key
    for model, config in sorted(cells):
        by_example = cells[(model, config)]
        chosen = [example_id for example_id in ranking if example_id in by_example][:n_per_cell]
        for example_id in chosen:
            cand = by_example[example_id]
            item_id = make_item_id(salt, cand.gen_key)
            if item_id in owners:
                raise ValueError(
                    f"item id {item_id!r} is shared by {owners[item_id]!r} and {cand.gen_key!r}; use another salt"
                )
            owners[item_id] = cand.gen_key
            item = SheetItem(item_id, cand.gen_key, cand.model, cand.config, cand.example_id)
            sampled.append((item, cand))
    rng.shuffle(sampled)
    return sampled


# --------------------------------------------------------------------------- CSV cells


def escape_cell(text: str) -> str:
    """Put a ``'`` in front of a cell that a spreadsheet would run as a formula.

    This covers cells starting with ``=``, ``+``, ``-``, ``@``, tab or carriage
    return. It also covers such cells with single quotes already in front, so that
    :func:`unescape_cell` can always tell an added quote from one in the text:
    ``'=x`` is written as ``''=x``. A text like ``'tis`` is left as it is.
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


def write_sheet(path: str | Path, sampled: Sequence[tuple[SheetItem, SheetCandidate]]) -> None:
    """Write the rating sheet for ``sampled`` (as returned by :func:`sample_items`) to ``path``.

    The file is UTF-8 CSV (no byte order mark) with exactly the columns in
    :data:`COLUMNS`. ``rating`` and ``annotator`` are left empty, and cells that could
    run as formulas are escaped (see :func:`escape_cell`). The sheet is written to a
    temporary file in the same folder and moved into place with ``os.replace``, so
    ``path`` either keeps its old content or gets the whole new sheet. An existing
    file is replaced. The caller decides whether that is allowed, since a filled-in
    sheet holds ratings.

    Raises ``ValueError`` when an item does not match its candidate or an item id
    is used twice, and ``UserError`` when the file cannot be written.
    """
    path = Path(path)
    seen: set[str] = set()
    for item, cand in sampled:
        if item.gen_key != cand.gen_key:
            raise ValueError(f"item {item.item_id!r} is for {item.gen_key!r} but its candidate is {cand.gen_key!r}")
        if item.item_id in seen:
            raise ValueError(f"item id {item.item_id!r} is used twice")
        seen.add(item.item_id)

    rows = ([item.item_id, cand.instruction, cand.input, cand.response, "", ""] for item, cand in sampled)
    _write_csv_atomically(path, COLUMNS, rows)


def _write_csv_atomically(path: Path, header: list[str], rows: Iterable[list[str]]) -> None:
    """Write a CSV to a temporary file next to ``path``, then move it into place."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
        try:
            # os.open with mode 0o666 lets the umask apply, as for any new file;
            # tempfile.mkstemp would leave the finished sheet readable by its owner only
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"cannot write the rating sheet: {exc.strerror or exc}", file=path) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for row in rows:
                writer.writerow([escape_cell(cell) for cell in row])
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise UserError(f"cannot write the rating sheet: {exc.strerror or exc}", file=path) from exc
        raise


# --------------------------------------------------------------------------- import


def read_sheet(
    path: str | Path, known_item_ids: set[str] | frozenset[str], *, scale: str = "auto"
) -> tuple[list[Rating], str]:
    """Read a filled-in sheet. Returns its ratings, in file order, and its scale.

    ``scale`` is ``"binary"``, ``"likert"`` or ``"auto"``. With ``"auto"``, a sheet
    whose ratings are all 0 or 1 and include a 0 is binary. One whose ratings are all
    whole numbers from 1 to 5 and include one above 1 is Likert. A sheet that has
    only 1s fits both scales, and mistaking one for the other would turn the worst
    score into the best, so it is an error and the caller must name the scale.

    The header row may have spaces around the names, any upper or lower case and a
    UTF-8 byte order mark. The columns may come in any order. Other columns are
    ignored, so annotators can add notes. The separator may be a comma, a semicolon
    (as some spreadsheet locales save CSV) or a tab. Rows with an empty ``rating``
    are not rated yet and are skipped. An item may appear on several rows, once for
    each annotator.

    Nothing is returned unless the whole sheet is valid. Otherwise one ``UserError``
    (with ``file=path``) lists every problem: missing columns, unknown item ids,
    ratings that are not numbers or not allowed on the scale, ratings without an
    annotator or item id, and items rated twice by the same annotator. A sheet with
    no ratings at all is also an error. Row numbers are spreadsheet rows with the
    header as row 1; when a multi-line cell above a row makes the file's line number
    differ, the line number is given too.
    """
    if scale not in ("auto", *SCALES):
        raise UserError(f"unknown rating scale '{scale}'; allowed: 'auto', 'binary', 'likert'")
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

    problems = _Problems()
    ratings: list[Rating] = []
    seen: dict[tuple[str, str], list[int]] = {}
    values: list[tuple[int, str, str, float]] = []  # (row, where, raw text, value)
    row = 1
    next_line = reader.line_num + 1
    try:
        for record in reader:
            row += 1
            line, next_line = next_line, reader.line_num + 1
            if not any(text.strip() for text in record):
                continue
            raw = _cell(record, column["rating"])
            if not raw:
                continue  # not rated yet
            where = f"row {row}" if line == row else f"row {row} (line {line})"
            item_id, annotator = _cell(record, column["item_id"]), _cell(record, column["annotator"])
            value = _parse_number(raw)
            if value is None:
                allowed = _ALLOWED_TEXT[scale]
                problems.add("number", f"{where}: rating {raw!r} is not a number; allowed: {allowed}", row)
            else:
                values.append((row, where, raw, value))
            if not item_id:
                problems.add("item", f"{where}: rating {raw!r} has no item_id; fill in the 'item_id' column", row)
            elif item_id not in known_item_ids:
                problems.unknown.append(f"row {row} {item_id!r}")
            if not annotator:
                problems.add(
                    "annotator", f"{where}: rating {raw!r} has no annotator; fill in the 'annotator' column", row
                )
            if item_id and annotator:
                seen.setdefault((item_id, annotator), []).append(row)
            if value is not None and annotator and item_id in known_item_ids:
                ratings.append(Rating(item_id=item_id, annotator=annotator, rating=value, row=row))
    except csv.Error as exc:
        raise UserError(f"line {reader.line_num}: not valid CSV ({exc})", file=path) from exc

    for (item_id, annotator), rows in seen.items():
        if len(rows) > 1:
            problems.add(
                "duplicate",
                f"item {item_id!r} is rated more than once by annotator {annotator!r} on {_join_rows(rows)}; "
                "keep one rating per annotator and item",
            )
    resolved = _resolve_scale(scale, values, problems)

    if problems.count():
        raise UserError(problems.render(), file=path)
    if not ratings:
        raise UserError("no ratings found: every 'rating' cell is empty", file=path)
    return ratings, resolved


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
        raise UserError(
            f"the file is not UTF-8 text (byte {exc.start}); save it from the spreadsheet as 'CSV UTF-8'", file=path
        ) from exc


def _cell(record: list[str], index: int) -> str:
    """One cell of a row, unescaped and stripped; "" when the row is shorter."""
    return unescape_cell(record[index]).strip() if index < len(record) else ""


def _guess_delimiter(text: str) -> str:
    """The separator that splits the header line into a list with ``item_id`` in it (comma if none does)."""
    first_line = text.splitlines()[0] if text else ""
    for delimiter in (",", ";", "\t"):
        if "item_id" in (name.strip().lower() for name in first_line.split(delimiter)):
            return delimiter
    return ","


def _required_columns(names: list[str], path: Path) -> dict[str, int]:
    """Index of each required column in the header, or a UserError that names what was found."""
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


def _parse_number(raw: str) -> float | None:
    """The rating as a float, or None for anything that is not a finite number."""
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _resolve_scale(scale: str, values: list[tuple[int, str, str, float]], problems: _Problems) -> str:
    """The sheet's scale. Values the scale does not allow are added to ``problems``."""
    if scale != "auto":
        for row, where, raw, value in values:
            if value not in SCALES[scale]:
                why = _why_not(value, scale)
                problems.add("range", f"{where}: rating {raw!r} {why}; allowed: {_ALLOWED_TEXT[scale]}", row)
        return scale

    either = SCALES["binary"] | SCALES["likert"]
    fitting = []
    for row, where, raw, value in values:
        if value in either:
            fitting.append((row, value))
        else:
            why = _why_not(value, "auto")
            problems.add("range", f"{where}: rating {raw!r} {why}; allowed: {_ALLOWED_TEXT['auto']}", row)
    binary_only = [row for row, value in fitting if value not in SCALES["likert"]]
    likert_only = [row for row, value in fitting if value not in SCALES["binary"]]
    if binary_only and likert_only:
        problems.add(
            "mix",
            f"the ratings mix two scales: 0 (binary only) on {_join_rows(binary_only)} and 2-5 (Likert only) "
            f"on {_join_rows(likert_only)}; use one scale per sheet: {_ALLOWED_TEXT['auto']}",
        )
        return "binary"
    if binary_only:
        return "binary"
    if likert_only:
        return "likert"
    if fitting:
        problems.add(
            "mix",
            "every rating is 1, which fits both scales (1 = acceptable on the binary scale, but the worst score "
            "on the Likert scale); name the scale explicitly: 'binary' or 'likert'",
        )
    return "binary"


def _why_not(value: float, scale: str) -> str:
    allowed = SCALES["binary"] | SCALES["likert"] if scale == "auto" else SCALES[scale]
    if min(allowed) <= value <= max(allowed):
        return "is not a whole number"
    return "is out of range"


def _join_rows(rows: Sequence[int]) -> str:
    """``row 3`` or ``rows 3, 5, 8``, listing at most ten then ``and N more``."""
    shown = ", ".join(str(row) for row in rows[:_MAX_LISTED])
    more = f" and {len(rows) - _MAX_LISTED} more" if len(rows) > _MAX_LISTED else ""
    return f"{'row' if len(rows) == 1 else 'rows'} {shown}{more}"


class _Problems:
    """The problems found in one sheet, rendered as one message.

    Problems of one row (``add`` with ``row``) are listed first, by row number, at
    most ten of each kind. Then come the unknown item ids, all on one line, then the
    problems that span rows (duplicates, mixed scales).
    """

    _MORE = {
        "item": "rows without an item_id",
        "number": "ratings that are not numbers",
        "range": "ratings that are not allowed",
        "annotator": "rows without an annotator",
        "duplicate": "items rated more than once by one annotator",
        "mix": "problems",
    }

    def __init__(self) -> None:
        self.by_kind: dict[str, list[tuple[int, str]]] = {kind: [] for kind in self._MORE}
        self.unknown: list[str] = []  # "row N 'id'" for each row with an unknown item id

    def add(self, kind: str, line: str, row: int = 0) -> None:
        self.by_kind[kind].append((row, line))

    def count(self) -> int:
        return sum(len(lines) for lines in self.by_kind.values()) + (1 if self.unknown else 0)

    def render(self) -> str:
        per_row = [
            entry for kind in ("item", "number", "range", "annotator") for entry in self.by_kind[kind][:_MAX_LISTED]
        ]
        lines = [line for _, line in sorted(per_row, key=lambda entry: entry[0])]
        if self.unknown:
            shown = ", ".join(self.unknown[:_MAX_LISTED])
            more = f" and {len(self.unknown) - _MAX_LISTED} more" if len(self.unknown) > _MAX_LISTED else ""
            lines.append(f"unknown item ids (not on any exported sheet): {shown}{more}")
        for kind in ("duplicate", "mix"):
            lines.extend(line for _, line in self.by_kind[kind][:_MAX_LISTED])
        for kind, found in self.by_kind.items():
            if len(found) > _MAX_LISTED:
                lines.append(f"... and {len(found) - _MAX_LISTED} more {self._MORE[kind]}")
        count = self.count()
        head = f"{count} problem{'s' if count != 1 else ''} in the rating sheet; nothing was imported:"
        return "\n".join([head, *(f"  {line}" for line in lines)])


# --------------------------------------------------------------------------- summary


def group_ratings(ratings: Iterable[Rating], items: Mapping[str, SheetItem]) -> dict[Cell, dict[str, list[float]]]:
    """Ratings by cell, then by item: ``{(model, config): {item_id: [rating, ...]}}``.

    ``items`` maps each item id to its exported :class:`SheetItem`. The result can be
    passed straight to :func:`summarize`. Raises ``ValueError`` for a rating whose
    item is not in ``items``; :func:`read_sheet` has already rejected those when it
    was given the same ids.
    """
    grouped: dict[Cell, dict[str, list[float]]] = {}
    for rating in ratings:
        item = items.get(rating.item_id)
        if item is None:
            raise ValueError(f"rating for unknown item {rating.item_id!r} (row {rating.row})")
        grouped.setdefault((item.model, item.config), {}).setdefault(rating.item_id, []).append(rating.rating)
    return grouped


def raw_means(
    ratings_by_cell: Mapping[Cell, Sequence[float] | Mapping[str, Sequence[float]]], scale: str
) -> dict[Cell, tuple[float, int]]:
    """``(mean, n)`` per cell on the sheet's own scale (0-1 binary, 1-5 Likert).

    Each cell's value is either a mapping ``item_id -> ratings`` or a plain list with
    one rating per item. When there is a mapping, the ratings of each item are
    averaged first (one item may have several annotators), then the item averages
    are averaged, so every item counts once. ``n`` is the number of items. A cell
    with no items gets ``(nan, 0)``.

    Raises ``ValueError`` for an unknown scale or a value the scale does not allow.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown rating scale {scale!r}; allowed: {', '.join(repr(s) for s in SCALES)}")
    allowed = SCALES[scale]
    result: dict[Cell, tuple[float, int]] = {}
    for cell, values in ratings_by_cell.items():
        per_item = list(values.values()) if isinstance(values, Mapping) else [[value] for value in values]
        item_means = []
        for item_ratings in per_item:
            if not item_ratings:
                continue  # an item nobody rated does not count
            for value in item_ratings:
                if value not in allowed:
                    raise ValueError(f"rating {value!r} for {cell} is not allowed on the {scale} scale")
            item_means.append(sum(item_ratings) / len(item_ratings))
        n = len(item_means)
        result[cell] = (sum(item_means) / n if n else math.nan, n)
    return result


def likert_mean(
    ratings_by_cell: Mapping[Cell, Sequence[float] | Mapping[str, Sequence[float]]],
) -> dict[Cell, tuple[float, int]]:
    """``(mean rating on 1-5, n)`` per cell of a Likert sheet; see :func:`raw_means`."""
    return raw_means(ratings_by_cell, "likert")


def to_unit(value: float, scale: str) -> float:
    """Map a mean on ``scale`` to 0-1, higher is better: binary unchanged, Likert ``(r - 1) / 4``."""
    if scale == "binary":
        return value
    if scale == "likert":
        return (value - 1.0) / 4.0
    raise ValueError(f"unknown rating scale {scale!r}; allowed: {', '.join(repr(s) for s in SCALES)}")


def summarize(
    ratings_by_cell: Mapping[Cell, Sequence[float] | Mapping[str, Sequence[float]]], scale: str
) -> dict[Cell, tuple[float, int]]:
    """The human metric per (model, config): ``(score on 0-1, n items)``, higher is better.

    For a binary sheet the score is the fraction of items rated acceptable. For a
    Likert sheet it is the mean rating ``r`` mapped by ``(r - 1) / 4`` (1 -> 0,
    3 -> 0.5, 5 -> 1), so both scales read the same way; :func:`likert_mean` gives
    the mean on 1-5. Items rated by several annotators are averaged per item first,
    as in :func:`raw_means`. A cell with no items gets ``(nan, 0)``.
    """
    means = raw_means(ratings_by_cell, scale)
    return {cell: (to_unit(mean, scale) if n else math.nan, n) for cell, (mean, n) in means.items()}
