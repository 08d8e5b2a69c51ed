"""Which automatic metric tracks human judgment? Correlations on tabular data.

Input is plain rows, never the store: :func:`load_results_csv` reads a results sheet
(one row per (model, config), a ``human`` column and one column per automatic metric),
:func:`analyze` correlates every metric with ``human`` across systems, and
:func:`example_level` does the same per rated generation. Both return
:class:`CorrelationRow` values with bootstrap intervals from :mod:`harness.stats`;
:func:`findings` turns them into short sentences derived only from those numbers.

Scopes: ``all`` pools every row; each model is also analysed alone (its scope is the
model's name).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import stats
from ..errors import UserError, unknown_name

__all__ = [
    "HUMAN",
    "MIN_ROWS",
    "ALL",
    "CorrelationRow",
    "load_results_csv",
    "analyze",
    "example_level",
    "findings",
]

#: the column holding the human judgment every metric is compared with
HUMAN = "human"
#: the scope that pools all models
ALL = "all"
#: fewest complete (metric, human) pairs a correlation is computed from
MIN_ROWS = 3

_KEYS = ("model", "config")


@dataclass(frozen=True)
class CorrelationRow:
    """How one metric correlates with human judgment in one scope.

    ``scope`` is ``all`` or a model name; ``level`` is ``system`` (one point per
    (model, config)) or ``example`` (one point per rated generation); ``n`` counts the
    complete pairs. Intervals are percentile bootstrap intervals at ``confidence``.
    """

    metric: str
    scope: str
    n: int
    pearson: float
    spearman: float
    kendall: float
    pearson_ci_low: float
    pearson_ci_high: float
    spearman_ci_low: float
    spearman_ci_high: float
    kendall_ci_low: float
    kendall_ci_high: float
    level: str = "system"
    confidence: float = 0.95

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def value(self, name: str) -> float:
        """The point estimate of coefficient ``name`` (pearson, spearman, kendall)."""
        return float(getattr(self, name))

    def interval(self, name: str) -> tuple[float, float]:
        """The interval of coefficient ``name``."""
        return float(getattr(self, f"{name}_ci_low")), float(getattr(self, f"{name}_ci_high"))


# --------------------------------------------------------------------------- loading


def _number(cell: str, *, path: Path, line: int, column: str) -> float:
    """A finite float from a non-empty cell, or a UserError naming row, column and value."""
    try:
        value = float(cell)
    except ValueError:
        raise UserError(
            f"column '{column}' has '{cell}', which is not a number (leave the cell empty for a missing value)",
            file=path,
            key=f"row {line}",
        ) from None
    if not math.isfinite(value):
        raise UserError(
            f"column '{column}' has '{cell}', which is not a finite number (leave the cell empty for a missing value)",
            file=path,
            key=f"row {line}",
        )
    return value


def _rows_text(lines: Sequence[int]) -> str:
    """'row 4' or 'rows 4, 7 and 9'."""
    if len(lines) == 1:
        return f"row {lines[0]}"
    return "rows " + ", ".join(str(n) for n in lines[:-1]) + f" and {lines[-1]}"


def load_results_csv(path: str | Path) -> list[dict[str, Any]]:
    """Read a results sheet: columns ``model``, ``config``, ``human`` and one per metric.

    Returns one dict per data row with ``model`` and ``config`` (strings) and every
    other column as a float; an empty cell is a missing value (nan), left out of the
    correlations that need it. Rows are numbered as in a spreadsheet: the header is
    row 1. Raises :class:`UserError` naming the file and, where one is at fault, the
    row, for: a missing required column, no metric column, a duplicate column name, a
    row with the wrong number of cells, an empty model or config, a cell that is not a
    number, a (model, config) pair that appears twice, and fewer than 3 rows overall or
    for any model.
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            table = list(_read_csv(handle, path))
    except OSError as exc:
        raise UserError(f"cannot read the file: {exc.strerror or exc}", file=path) from None
    except UnicodeDecodeError:
        raise UserError("the file is not UTF-8 text", file=path) from None

    if not table:
        raise UserError(
            "the file is empty; expected a header row with model, config, human and one column per metric", file=path
        )
    _, header = table[0]
    columns = [name.strip() for name in header]
    _check_header(columns, path)
    metrics = [c for c in columns if c not in (*_KEYS, HUMAN)]

    rows: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], list[int]] = {}
    per_model: dict[str, list[int]] = {}
    for line, cells in table[1:]:
        if len(cells) != len(columns):
            raise UserError(
                f"the row has {len(cells)} cells but the header names {len(columns)} columns",
                file=path,
                key=f"row {line}",
            )
        record = dict(zip(columns, (cell.strip() for cell in cells)))
        for key in _KEYS:
            if not record[key]:
                raise UserError(f"the '{key}' cell is empty", file=path, key=f"row {line}")
        row: dict[str, Any] = {"model": record["model"], "config": record["config"]}
        for column in (HUMAN, *metrics):
            cell = record[column]
            row[column] = _number(cell, path=path, line=line, column=column) if cell else math.nan
        rows.append(row)
        seen.setdefault((row["model"], row["config"]), []).append(line)
        per_model.setdefault(row["model"], []).append(line)

    for (model, config), lines in seen.items():
        if len(lines) > 1:
            raise UserError(
                f"model '{model}' with config '{config}' appears in {_rows_text(lines)}; "
                "each (model, config) pair may appear only once",
                file=path,
            )
    if len(rows) < MIN_ROWS:
        raise UserError(
            f"only {len(rows)} data row{'s' if len(rows) != 1 else ''}; a correlation needs at least {MIN_ROWS}",
            file=path,
        )
    for model, lines in per_model.items():
        if len(lines) < MIN_ROWS:
            raise UserError(
                f"model '{model}' has only {len(lines)} row{'s' if len(lines) != 1 else ''} ({_rows_text(lines)}); "
                f"a correlation within a model needs at least {MIN_ROWS}",
                file=path,
            )
    return rows


def _read_csv(handle: Iterable[str], path: Path) -> Iterable[tuple[int, list[str]]]:
    """(row number, cells) of every non-blank row; the row number is the file's line number."""
    reader = csv.reader(handle)
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                yield reader.line_num, cells
    except csv.Error as exc:
        raise UserError(f"malformed CSV: {exc}", file=path, key=f"row {reader.line_num}") from None


def _check_header(columns: list[str], path: Path) -> None:
    existing = ", ".join(f"'{c}'" for c in columns)
    for position, name in enumerate(columns, start=1):
        if not name:
            raise UserError(
                f"column {position} of the header has no name; the columns are: {existing}", file=path, key="row 1"
            )
    for name in columns:
        if columns.count(name) > 1:
            places = [str(i) for i, c in enumerate(columns, start=1) if c == name]
            raise UserError(
                f"column '{name}' appears {len(places)} times in the header (columns {', '.join(places)})",
                file=path,
                key="row 1",
            )
    missing = [name for name in (*_KEYS, HUMAN) if name not in columns]
    if missing:
        what = ", ".join(f"'{name}'" for name in missing)
        note = f" ('{HUMAN}' holds the human ratings)" if HUMAN in missing else ""
        raise UserError(
            f"missing column{'s' if len(missing) > 1 else ''} {what}{note}; the columns are: {existing}",
            file=path,
            key="row 1",
        )
    if not [c for c in columns if c not in (*_KEYS, HUMAN)]:
        raise UserError(
            f"no metric columns: besides 'model', 'config' and '{HUMAN}' add one column per automatic metric",
            file=path,
            key="row 1",
        )


# --------------------------------------------------------------------------- analysis


def _as_float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _choose_metrics(available: list[str], metrics: Sequence[str] | None) -> list[str]:
    if metrics is None:
        return available
    for name in metrics:
        if name not in available:
            raise UserError(unknown_name("metric", name, available))
    return list(metrics)


def _correlate(
    models: np.ndarray,
    values: Mapping[str, np.ndarray],
    human: np.ndarray,
    *,
    groups: np.ndarray | None,
    level: str,
    strict: bool,
    source: str | Path | None,
    seed: int,
    n_resamples: int,
    confidence: float,
) -> list[CorrelationRow]:
    """Correlate every metric in ``values`` with ``human``, overall and per model."""
    out: list[CorrelationRow] = []
    scopes = [ALL, *dict.fromkeys(models.tolist())]
    for scope in scopes:
        selected = np.ones(models.size, dtype=bool) if scope == ALL else models == scope
        for metric, x in values.items():
            complete = selected & ~np.isnan(x) & ~np.isnan(human)
            n = int(complete.sum())
            if n < MIN_ROWS:
                if not strict:
                    continue
                where = "overall" if scope == ALL else f"model '{scope}'"
                raise UserError(
                    f"{where}: only {n} {'row has' if n == 1 else 'rows have'} both '{metric}' and '{HUMAN}' "
                    f"({level} level); a correlation needs at least {MIN_ROWS}",
                    file=source,
                )
            result = stats.correlation_cis(
                x[complete],
                human[complete],
                n_resamples=n_resamples,
                seed=seed,
                confidence=confidence,
                groups=None if groups is None else groups[complete],
            )
            out.append(
                CorrelationRow(
                    metric=metric,
                    scope=scope,
                    n=n,
                    **{name: result[name] for name in stats.CORRELATIONS},
                    **{
                        f"{name}_ci_{end}": result[f"{name}_ci_{end}"]
                        for name in stats.CORRELATIONS
                        for end in ("low", "high")
                    },
                    level=level,
                    confidence=confidence,
                )
            )
    return out


def analyze(
    rows: Sequence[Mapping[str, Any]],
    *,
    metrics: Sequence[str] | None = None,
    seed: int = 0,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    strict: bool = False,
    source: str | Path | None = None,
) -> list[CorrelationRow]:
    """System-level correlations of every automatic metric with ``human``.

    ``rows`` hold one (model, config) each, as :func:`load_results_csv` returns them
    (None or nan = missing). ``metrics`` defaults to every column other than model,
    config and human. Scopes: ``all`` and each model alone, in order of appearance. A
    scope with fewer than 3 complete pairs for a metric is skipped, or with ``strict``
    (use it for a user's sheet) raises :class:`UserError`, naming ``source`` as the file.
    """
    available = list(dict.fromkeys(k for row in rows for k in row if k not in (*_KEYS, HUMAN)))
    chosen = _choose_metrics(available, metrics)
    models = np.array([str(row["model"]) for row in rows], dtype=object)
    human = np.array([_as_float(row.get(HUMAN)) for row in rows], dtype=float)
    values = {m: np.array([_as_float(row.get(m)) for row in rows], dtype=float) for m in chosen}
    return _correlate(
        models,
        values,
        human,
        groups=None,
        level="system",
        strict=strict,
        source=source,
        seed=seed,
        n_resamples=n_resamples,
        confidence=confidence,
    )


def example_level(
    ratings: Iterable[tuple[str, str, str, Mapping[str, Any], Any]],
    *,
    metrics: Sequence[str] | None = None,
    seed: int = 0,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    strict: bool = False,
    source: str | Path | None = None,
    level: str = "example",
) -> list[CorrelationRow]:
    """Example-level correlations: one point per rated generation (or, ``level="pairwise"``, per judged pair).

    ``ratings`` are ``(model, config, example_id, metric_values, human)`` tuples, where
    ``metric_values`` maps metric name to that generation's score (None = missing).
    The same example under several models or configs is not an independent point, so
    the bootstrap resamples example ids and keeps all of an example's generations
    together. Scopes and ``strict`` as in :func:`analyze`; rows have ``level="example"``.
    """
    items = list(ratings)
    available = list(dict.fromkeys(k for item in items for k in item[3]))
    chosen = _choose_metrics(available, metrics)
    models = np.array([str(item[0]) for item in items], dtype=object)
    examples = np.array([str(item[2]) for item in items])
    human = np.array([_as_float(item[4]) for item in items], dtype=float)
    values = {m: np.array([_as_float(item[3].get(m)) for item in items], dtype=float) for m in chosen}
    return _correlate(
        models,
        values,
        human,
        groups=examples,
        level=level,
        strict=strict,
        source=source,
        seed=seed,
        n_resamples=n_resamples,
        confidence=confidence,
    )


# --------------------------------------------------------------------------- findings


def _num(value: float) -> str:
    """Two decimals; a small non-zero value keeps its sign (-0.004, not 0.00)."""
    if value == 0:
        return "0.00"
    if abs(value) < 0.005:
        return f"{value:.3f}" if abs(value) >= 0.0005 else f"{value:.1e}"
    return f"{value:.2f}"


def _with_interval(row: CorrelationRow, name: str, label: str | None = None) -> str:
    low, high = row.interval(name)
    head = f"{label} {_num(row.value(name))}" if label else _num(row.value(name))
    if math.isnan(low) or math.isnan(high):
        return f"{head}, no interval"
    return f"{head}, {row.confidence:.0%} CI {_num(low)} to {_num(high)}"


def _place(row: CorrelationRow) -> str:
    where = "overall" if row.scope == ALL else f"within model '{row.scope}'"
    return f"{row.level.capitalize()} level, {where}"


def _best_sentence(ranked: list[CorrelationRow]) -> str:
    """Which metric has the highest Spearman in one scope, and by how much."""
    best = ranked[0]
    head = f"{_place(best)}: {best.metric}"
    if len(ranked) == 1:
        return (
            f"{head} is the only metric with a defined correlation "
            f"(Spearman {_with_interval(best, 'spearman')}, n={best.n})."
        )
    second = ranked[1]
    gap = best.spearman - second.spearman
    lead = f"level with {second.metric}" if gap == 0 else f"{_num(gap)} ahead of {second.metric}"
    sentence = (
        f"{head} agrees best with human judgment (Spearman {_with_interval(best, 'spearman')}, n={best.n}), "
        f"{lead} ({_with_interval(second, 'spearman')})"
    )
    (l1, h1), (l2, h2) = best.interval("spearman"), second.interval("spearman")
    if any(math.isnan(v) for v in (l1, h1, l2, h2)):
        return sentence + "."
    if l1 <= h2 and l2 <= h1:
        return sentence + "; the intervals do not separate them."
    return sentence + "; the intervals do not overlap."


def findings(rows: Sequence[CorrelationRow]) -> list[str]:
    """Short sentences derived only from ``rows``.

    Per level (system, then example): the metric that agrees best with human judgment
    overall and within each model (by Spearman; how far ahead of the next and whether
    their intervals overlap); metrics whose correlation is negative with an interval
    that excludes 0; correlations whose interval includes 0; undefined correlations.
    """
    out: list[str] = []
    levels = list(dict.fromkeys(row.level for row in rows))
    for level in sorted(levels, key=lambda lv: (lv != "system", lv != "example", lv != "pairwise", lv)):
        at_level = [row for row in rows if row.level == level]
        scopes = list(dict.fromkeys(row.scope for row in at_level))
        scopes.sort(key=lambda s: s != ALL)  # stable: overall first, models in order
        for scope in scopes:
            defined = [r for r in at_level if r.scope == scope and not math.isnan(r.spearman)]
            if defined:
                out.append(_best_sentence(sorted(defined, key=lambda r: (-r.spearman, r.metric))))
        for row in at_level:
            out.extend(_row_findings(row))
    return out


def _row_findings(row: CorrelationRow) -> list[str]:
    """Sign and support of one metric's correlations in one scope."""
    names = {"pearson": "Pearson", "spearman": "Spearman", "kendall": "Kendall"}
    if all(math.isnan(row.value(name)) for name in names):
        return [
            f"{_place(row)}: the correlation of {row.metric} with human judgment is undefined "
            f"(one of them is constant over the n={row.n} rows)."
        ]
    negative, unsupported = [], []
    for name, label in names.items():
        low, high = row.interval(name)
        if math.isnan(low) or math.isnan(high) or math.isnan(row.value(name)):
            continue
        if high < 0:
            negative.append(_with_interval(row, name, label))
        elif low <= 0:
            unsupported.append(_with_interval(row, name, label))
    out = []
    if negative:
        out.append(f"{_place(row)}: {row.metric} moves against human judgment ({'; '.join(negative)}, n={row.n}).")
    if unsupported:
        out.append(
            f"{_place(row)}: the correlation of {row.metric} with human judgment is not supported by the data: "
            f"the {row.confidence:.0%} interval includes 0 ({'; '.join(unsupported)}, n={row.n})."
        )
    return out
