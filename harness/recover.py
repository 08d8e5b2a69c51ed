"""Copying every row a damaged results store still holds into a fresh folder (``harness recover``).

SQLite's own answer to a damaged file is its shell's ``.recover``; Python's ``sqlite3`` module
does not offer it, so this reads the damaged file the way SQLite itself still can:

* the tables and indexes are created in the fresh store from the damaged store's own schema
  (``sqlite_master``: the store's first page), so the copy is of the same schema version and
  opens like the original would;
* each table is read row id by row id, from its first to its last. A scan over a range is
  faster but not safe: over a damaged page SQLite can end a range early without an error
  (measured: 86 of 192 rows, no error), while a lookup of one row id either finds its row or
  fails. Row ids that fail are counted as unreadable. Where the table's last row id cannot be
  read either, the lookups go on until 65,536 row ids in a row give nothing. About 4 µs a row
  id (1.2 s for 300,000 scores);
* a row whose text holds NUL characters is counted as unreadable, not copied: past the end of a
  truncated file SQLite reads zeros, and a row with an overflow page there comes back without
  an error but zero-filled;
* the indexes are built afresh (a damaged index loses nothing);
* adapter folders the copied records name (paths inside the output folder) are copied when
  their weights still match the recorded sha256.

The fresh store is written under a temporary name and renamed when complete, then opened as
any store is (the integrity check included), so a recovery that fails leaves no half store.
Nothing is written to the damaged folder. What could not be read is reported per table; the
next ``harness run`` in the fresh folder recomputes exactly what is missing, as it would after
an interrupted run.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .store import STORE_NAME, Store, sha256_file
from .store_health import quick_check

#: with the table's last row id unreadable: stop after this many row ids in a row that give no row
MISSES_TO_STOP = 1 << 16


@dataclass(frozen=True)
class TableRecovery:
    """What was copied of one table."""

    table: str
    copied: int
    #: row ids SQLite could not read (rows lost, at most: a row id may have held no row)
    unreadable: int
    #: the whole table was read (its last row id was readable and no row id failed)
    complete: bool
    #: the table's last row id could not be read: rows after the last one found may be lost too
    end_lost: bool = False

    def lost_text(self) -> str:
        parts = [f"{self.copied:,} rows copied"]
        if self.unreadable:
            parts.append(f"{self.unreadable:,} row ids unreadable")
        if self.end_lost:
            parts.append("its last rows unreachable")
        return ", ".join(parts)


@dataclass(frozen=True)
class RecoveryReport:
    tables: tuple[TableRecovery, ...]
    #: adapter folders copied, and those whose files were missing or did not match their sha256
    adapters_copied: tuple[str, ...]
    adapters_missing: tuple[str, ...]
    #: what SQLite's quick_check said of the source ("" when it passed: then nothing needed recovering)
    damage: str

    @property
    def complete(self) -> bool:
        return all(t.complete for t in self.tables)

    def describe(self) -> str:
        copied = sum(t.copied for t in self.tables)
        lost = [t for t in self.tables if not t.complete]
        text = f"copied {copied:,} rows from {len(self.tables)} tables"
        if lost:
            text += "; could not read all of " + ", ".join(f"{t.table} ({t.lost_text()})" for t in lost)
        else:
            text += "; every table was read in full"
        if self.adapters_copied:
            text += f"; adapter folders copied: {', '.join(self.adapters_copied)}"
        if self.adapters_missing:
            text += f"; adapters not copied (missing or damaged files, the next run trains them again): {', '.join(self.adapters_missing)}"
        return text


def recover(source_dir: Path, target_dir: Path, log: Callable[[str], None] | None = None) -> RecoveryReport:
    """Copy every row the store in ``source_dir`` still holds into a new store in ``target_dir`` (see the module docstring)."""
    source_dir, target_dir = Path(source_dir), Path(target_dir)
    source = source_dir / STORE_NAME
    if not source.is_file():
        raise UserError("no results store here (harness.sqlite); name the output folder of a run", file=source_dir)
    if target_dir.resolve() == source_dir.resolve():
        raise UserError("is the damaged folder itself; name a new folder with -o (nothing is written to the damaged one)", file=target_dir)
    if (target_dir / STORE_NAME).exists():
        raise UserError("already holds a results store; name a new or empty folder to recover into", file=target_dir)
    say = log or (lambda line: None)
    damage = quick_check(source) or ""
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder: {exc.strerror or exc}", file=target_dir) from None
    tmp = target_dir / f".{STORE_NAME}.recovering"
    tmp.unlink(missing_ok=True)
    src = _open_damaged(source)
    try:
        try:
            # (type = 'table' or 'index'), ordered so tables come first; SQLite's own entries (sqlite_*) left out
            schema = src.execute(
                "SELECT type = 'index', name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite^_%' ESCAPE '^' ORDER BY 1"
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise UserError(
                f"its table of contents (the first page) cannot be read ({exc}): nothing can be recovered; restore the folder from a copy",
                file=source,
            ) from None
        dst = sqlite3.connect(tmp, isolation_level=None)
        try:
            tables = [(name, sql) for is_index, name, sql in schema if not is_index]
            for _, sql in tables:
                dst.execute(sql)
            found = []
            for name, _ in tables:
                cols = [r[1] for r in dst.execute(f"PRAGMA table_info({_quote(name)})")]
                result = _copy_table(src, dst, name, cols)
                say(f"{name}: {result.lost_text()}")
                found.append(result)
            for is_index, _, sql in schema:
                if is_index:
                    dst.execute(sql)
        finally:
            dst.close()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    tmp.rename(target_dir / STORE_NAME)
    store = Store(target_dir, create=False)
    try:
        copied, missing = _adapters(store, source_dir)
    finally:
        store.close()
    return RecoveryReport(tuple(found), tuple(copied), tuple(missing), damage)


def _open_damaged(path: Path) -> sqlite3.Connection:
    """A read-only connection that writes nothing beside the file (no -wal/-shm unless a write-ahead log is there already)."""
    from urllib.parse import quote

    wal = Path(f"{path}-wal")
    mode = "mode=ro" if wal.exists() and wal.stat().st_size > 0 else "mode=ro&immutable=1"
    con = sqlite3.connect(f"file:{quote(str(path.resolve()))}?{mode}", uri=True)
    # lets SQLite read a file shorter than its header says (as its shell's .recover does); nothing is written
    con.execute("PRAGMA writable_schema=ON")
    return con


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _copy_table(src: sqlite3.Connection, dst: sqlite3.Connection, table: str, cols: list[str]) -> TableRecovery:
    """Copy every readable row of ``table``, fetching row id by row id (see the module docstring for why not by ranges)."""
    names = ", ".join(_quote(c) for c in cols)
    select = f"SELECT {names} FROM {_quote(table)} WHERE rowid=?"
    insert = f"INSERT OR IGNORE INTO {_quote(table)}({names}) VALUES({', '.join('?' * len(cols))})"
    try:
        top = src.execute(f"SELECT max(rowid) FROM {_quote(table)}").fetchone()[0]
        top_known = True
    except sqlite3.DatabaseError:
        top, top_known = None, False
    if top_known and top is None:
        return TableRecovery(table, 0, 0, True)
    try:
        low = src.execute(f"SELECT min(rowid) FROM {_quote(table)}").fetchone()[0]
    except sqlite3.DatabaseError:
        low = None
    rowid = 1 if low is None else min(low, 1)
    copied = unreadable = misses = 0
    unreadable_at_last_row = 0
    batch: list[tuple] = []
    cursor = src.cursor()

    def flush() -> int:
        before = dst.total_changes
        dst.executemany(insert, batch)
        batch.clear()
        return dst.total_changes - before

    dst.execute("BEGIN")
    try:
        while top is None or rowid <= top:
            try:
                row = cursor.execute(select, (rowid,)).fetchone()
            except sqlite3.DatabaseError:
                row = None
                unreadable += 1
            if row is not None and _zero_filled(row):  # its content lay past the end of a truncated file
                row = None
                unreadable += 1
            if row is None:
                misses += 1
                if top is None and misses >= MISSES_TO_STOP:
                    break
            else:
                misses = 0
                unreadable_at_last_row = unreadable
                batch.append(row)
                if len(batch) >= 1000:
                    copied += flush()
            rowid += 1
        copied += flush()
        dst.execute("COMMIT")
    except BaseException:
        dst.execute("ROLLBACK")
        raise
    if not top_known:
        unreadable = unreadable_at_last_row  # the misses after the last row found are the end of the table, not damage
    return TableRecovery(table, copied, unreadable, top_known and unreadable == 0, end_lost=not top_known)


def _zero_filled(row: tuple) -> bool:
    """A row whose text holds NUL characters: SQLite reads the pages past the end of a truncated file as zeros
    (an overflow page of a long row among them) and returns such a row without an error. The store's text
    never holds NUL (JSON, keys, generated text as decoded by a tokenizer)."""
    return any(isinstance(v, str) and "\x00" in v for v in row)


def _adapters(store: Store, source_dir: Path) -> tuple[list[str], list[str]]:
    """Copy the adapter folders (inside the output folder) the recovered records name, where their weights match."""
    copied: list[str] = []
    missing: list[str] = []
    for model, path, sha in store.db.execute("SELECT model, path, adapter_sha256 FROM adapters ORDER BY model, path"):
        if Path(path).is_absolute():
            continue  # kept where it was (an executor's shared storage): nothing to copy
        source, target = source_dir / path, store.directory / path
        weights = source / "adapter_model.safetensors"
        label = f"{model} ({sha[:12]})"
        if target.exists():
            continue
        if not weights.is_file() or sha256_file(weights) != sha:
            missing.append(label)
            continue
        shutil.copytree(source, target)
        copied.append(label)
    return copied, missing
