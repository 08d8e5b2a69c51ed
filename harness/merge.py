"""Bringing results produced on several machines into one store (``harness merge``).

Everything in a store is keyed by content, so merging is a union: a row whose key the
target lacks is copied, a row present in both with the same value is left alone (merging
twice changes nothing), and a key present in both with *different* values is a conflict.
Conflicts are all reported at once (with whole keys) and nothing is written: :func:`plan`
finds everything a merge writes before :func:`apply` writes it, so a refused merge into a new
folder creates nothing there. Trained adapters are matched by
the sha256 of their weights and their files are copied into the target's output folder.

What counts as "the same value": a generation's text; a score's value (within 1e-6
relative, the rounding two machines may differ by) and statistics; a cell's recorded
generation keys and definition; a metric's identity; a rating. Timings and creation
times may differ.
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .store import Store, sha256_file

_MAX_LISTED = 12


@dataclass
class MergeReport:
    """What a merge copied, per table, and what it found already present."""

    copied: dict[str, int] = field(default_factory=dict)
    present: dict[str, int] = field(default_factory=dict)
    adapters_copied: list[str] = field(default_factory=list)

    def add(self, table: str, copied: int, present: int) -> None:
        self.copied[table] = self.copied.get(table, 0) + copied
        self.present[table] = self.present.get(table, 0) + present

    @property
    def changed(self) -> bool:
        return any(self.copied.values()) or bool(self.adapters_copied)

    def describe(self) -> str:
        parts = [_count(n, t) for t, n in self.copied.items() if n]
        same = sum(self.present.values())
        text = "copied " + (", ".join(parts) if parts else "nothing new")
        if self.adapters_copied:
            text += f"; adapter files: {', '.join(self.adapters_copied)}"
        return text + f" ({same} rows already present and equal)"


# table -> (key columns, compared columns); rows equal on the compared columns are "the same value"
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "splits": (("split_key",), ("info",)),
    "examples": (("split_key", "split", "position"), ("id", "instruction", "input", "output")),
    "generations": (("gen_key",), ("text",)),
    "metric_ids": (("metric_key",), ("metric", "identity")),
    "scores": (("gen_key", "metric_key", "ref_sha"), ("value", "stats")),
    "cells": (("model", "config"), ("split_key", "model_key", "params", "decoding", "engine")),
    "cell_examples": (("model", "config", "position"), ("example_id", "gen_key")),
    "cell_metrics": (("model", "config", "metric"), ("metric_key", "split_key", "value", "n")),
    "human_items": (("item_id",), ("gen_key", "gen_key_b")),
    "human_ratings": (("item_id", "annotator"), ("rating", "scale")),
}


def _count(n: int, table: str) -> str:
    """``3 generations``; run and failure records by what they are (``1 run record``)."""
    if table in ("runs", "failures"):
        return f"{n} {table[:-1]} record{'s' if n != 1 else ''}"
    return f"{n} {table}"


@dataclass(frozen=True)
class MergePlan:
    """Everything a merge will write, known before anything is written (:func:`plan`)."""

    target_dir: Path
    #: per source: its store, the rows to insert per table, adapter folders to copy, adapter rows, run records to copy
    steps: list[tuple[Store, dict[str, list[tuple]], list[tuple[str, Path, Path]], list[tuple], list[dict]]]
    report: MergeReport


def merge(target: Store, sources: list[Store]) -> MergeReport:
    """Merge every store of ``sources`` into ``target``: all of it, or nothing when a key conflicts."""
    return apply(target, plan(target, sources))


def plan(target: Store | Path, sources: list[Store]) -> MergePlan:
    """What merging ``sources`` into ``target`` writes; raises :class:`UserError` listing every conflicting key.

    ``target`` is the store merged into, or the folder of one that does not exist yet (then it
    is compared as empty, and nothing is created: a refused merge leaves no trace).
    """
    target_dir = target.directory if isinstance(target, Store) else Path(target)
    target_db = target.db if isinstance(target, Store) else None
    for src in sources:
        if Path(src.directory).resolve() == Path(target_dir).resolve():
            raise UserError("is the store being merged into; name other stores to merge", file=src.directory)
    conflicts: list[str] = []
    steps: list[tuple[Store, dict[str, list[tuple]], list[tuple[str, Path, Path]], list[tuple], list[dict]]] = []
    report = MergeReport()
    # rows already taken from an earlier source count as present for the later ones
    staged: dict[str, dict[tuple, tuple]] = {t: {} for t in TABLES}
    seen_runs = {_run_identity(r) for r in target.runs()} if isinstance(target, Store) else set()
    for src in sources:
        new_rows: dict[str, list[tuple]] = {}
        for table, (key_cols, value_cols) in TABLES.items():
            cols = _columns(src.db, table)
            mine = _rows(target_db, table, cols) if target_db is not None else {}
            theirs = _rows(src.db, table, cols)
            copied = present = 0
            rows: list[tuple] = []
            for key, row in theirs.items():
                have = mine.get(key) or staged[table].get(key)
                if have is None:
                    rows.append(row)
                    staged[table][key] = row
                    copied += 1
                elif _same(table, cols, value_cols, have, row):
                    present += 1
                else:
                    conflicts.append(_conflict(table, key_cols, cols, key, have, row, src))
            new_rows[table] = rows
            report.add(table, copied, present)
        adapters, adapter_rows = _adapters(target_db, target_dir, src, conflicts)
        report.add("adapters", len(adapter_rows), 0)
        runs = [r for r in src.runs() if _run_identity(r) not in seen_runs]
        seen_runs.update(_run_identity(r) for r in runs)
        report.add("runs", len(runs), 0)
        steps.append((src, new_rows, adapters, adapter_rows, runs))
    if conflicts:
        shown = "\n  ".join(conflicts[:_MAX_LISTED])
        more = f"\n  … and {len(conflicts) - _MAX_LISTED} more" if len(conflicts) > _MAX_LISTED else ""
        raise UserError(
            f"{len(conflicts)} key(s) hold different values in the stores; nothing was merged:\n  {shown}{more}", file=target_dir
        )
    return MergePlan(Path(target_dir), steps, report)


def apply(target: Store, merge_plan: MergePlan) -> MergeReport:
    """Write what :func:`plan` found: adapter files first (into a temporary folder, then moved), then every row in one transaction."""
    report = merge_plan.report
    moved: list[Path] = []
    try:
        for _, _, adapters, _, _ in merge_plan.steps:
            for name, source_dir, target_dir in adapters:
                if target_dir.exists():
                    continue
                tmp = Path(tempfile.mkdtemp(prefix=".merge-", dir=_ensure(target_dir.parent)))
                for f in source_dir.iterdir():
                    if f.is_file():
                        shutil.copy2(f, tmp / f.name)
                tmp.rename(target_dir)
                moved.append(target_dir)
                report.adapters_copied.append(name)
        with target.transaction():
            for src, new_rows, _, adapter_rows, runs in merge_plan.steps:
                for table, rows in new_rows.items():
                    if rows:
                        cols = _columns(src.db, table)
                        target.db.executemany(f"INSERT INTO {table}({', '.join(cols)}) VALUES({', '.join('?' * len(cols))})", rows)
                target.db.executemany("INSERT INTO adapters VALUES(?,?,?,?,?,?)", adapter_rows)
                _runs(target, src, runs)
                report.add("failures", _failures_and_meta(target, src), 0)
    except BaseException:
        for d in moved:
            shutil.rmtree(d, ignore_errors=True)
        raise
    return report


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in db.execute(f"PRAGMA table_info({table})")]


def _rows(db: sqlite3.Connection, table: str, cols: list[str]) -> dict[tuple, tuple]:
    key_cols = TABLES[table][0]
    idx = [cols.index(k) for k in key_cols]
    out = {}
    for row in db.execute(f"SELECT {', '.join(cols)} FROM {table}"):
        out[tuple(row[i] for i in idx)] = tuple(row)
    return out


def _same(table: str, cols: list[str], value_cols: tuple[str, ...], a: tuple, b: tuple) -> bool:
    for c in value_cols:
        x, y = a[cols.index(c)], b[cols.index(c)]
        if isinstance(x, float) and isinstance(y, float):
            if not math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-12):
                return False
        elif c in ("stats", "info", "identity", "params", "decoding", "engine") and isinstance(x, str) and isinstance(y, str):
            if not _json_close(x, y):
                return False
        elif x != y:
            return False
    return True


def _json_close(x: str, y: str) -> bool:
    try:
        a, b = json.loads(x), json.loads(y)
    except ValueError:
        return x == y
    return _close(a, b)


def _close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return a == b


def _conflict(table: str, key_cols: tuple[str, ...], cols: list[str], key: tuple, have: tuple, row: tuple, src: Store) -> str:
    where = ", ".join(f"{c}={v}" for c, v in zip(key_cols, key))  # whole keys: two conflicts never read the same
    diff = [c for c in TABLES[table][1] if have[cols.index(c)] != row[cols.index(c)]]
    shown = "; ".join(f"{c}: {_short(have[cols.index(c)])} here, {_short(row[cols.index(c)])} in {src.directory}" for c in diff[:2])
    return f"{table} ({where}): {shown}"


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "…"


def _adapters(target_db: sqlite3.Connection | None, target_directory: Path, src: Store, conflicts: list[str]) -> tuple[list[tuple[str, Path, Path]], list[tuple]]:
    """Adapters to copy: (name, source folder, target folder) and their rows (paths relative to the target)."""
    files: list[tuple[str, Path, Path]] = []
    rows: list[tuple] = []
    query = "SELECT train_key, model, path, adapter_sha256, summary, created FROM adapters"
    mine = {r[0]: r for r in target_db.execute(query)} if target_db is not None else {}
    by_sha = {r[3]: r for r in mine.values()}
    for train_key, model, path, sha, summary, created in src.db.execute("SELECT train_key, model, path, adapter_sha256, summary, created FROM adapters"):
        have = mine.get(train_key)
        if have is not None:
            if have[3] != sha:
                conflicts.append(f"adapters (train_key={train_key}): sha256 {have[3]} here, {sha} in {src.directory}")
            continue
        source_dir = src.resolve(path)
        if sha in by_sha:  # the same weights are already here under another key: reference them
            rows.append((train_key, model, by_sha[sha][2], sha, summary, created))
            continue
        weights = source_dir / "adapter_model.safetensors"
        if not weights.exists():
            conflicts.append(f"adapters (train_key={train_key}): the adapter files of {model} are missing at {source_dir}")
            continue
        if sha256_file(weights) != sha:
            conflicts.append(f"adapters (train_key={train_key}): {weights} does not match its recorded sha256")
            continue
        inside = not Path(path).is_absolute()
        target_dir = Path(target_directory) / path if inside else source_dir
        if inside:
            files.append((f"{model} ({sha[:12]})", source_dir, target_dir))
        rows.append((train_key, model, path, sha, summary, created))
    return files, rows


def _run_identity(run: dict) -> tuple:
    """A run is known by when, where and how it started (each is copied once)."""
    return (run["started"], run["pid"], run["host"], run["command"])


def _runs(target: Store, src: Store, runs: list[dict]) -> None:
    """Copy the source's run records that :func:`plan` found missing."""
    for r in runs:
        meta = dict(r["metadata"]) | {"merged_from": str(src.directory)}
        target.db.execute(
            "INSERT INTO runs(command, started, finished, status, pid, host, metadata) VALUES(?,?,?,?,?,?,?)",
            (r["command"], r["started"], r["finished"], r["status"], r["pid"], r["host"], json.dumps(meta)),
        )


def _failures_and_meta(target: Store, src: Store) -> int:
    """Failures the target does not know (never a conflict: a later run clears them), and the rating salt if it has none.
    Returns how many failures were copied."""
    known = {r[0] for r in target.db.execute("SELECT cell FROM failures")}
    rows = [r for r in src.db.execute("SELECT * FROM failures") if r[0] not in known]
    target.db.executemany("INSERT INTO failures VALUES(?,?,?,?,?,?,?,?)", rows)
    salt = src.get_meta("human_salt")
    if salt is not None and target.get_meta("human_salt") is None:
        target.set_meta("human_salt", salt)
    return len(rows)


def _ensure(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p
