"""A damaged results store and a full disk: found before anything is written, said in one line.

**A damaged store** (a disk error, a half-copied folder, bytes overwritten) is refused by
every command that opens it, before a byte is written: :func:`check_store` raises
:class:`StoreDamaged`, which names the file, says it is damaged and what to do (restore a
copy, or ``harness recover`` what it still holds into a fresh folder). The check, cheapest
first:

1. **The header and the size** (microseconds): SQLite's 16-byte magic string, a valid page
   size, a file of whole pages, and no fewer pages than the header lists (a file cut short:
   copied or synced halfway, truncated). The size check is skipped while a write-ahead log
   with content sits beside the file, since a checkpoint that was interrupted can leave the
   file shorter than its header until SQLite replays the log.
2. **``PRAGMA quick_check``** (every page of every table and index read and its structure
   verified) whenever the file changed since the last check that passed. Measured on a store
   of 100,000 generations (about 250 MiB; ``bench/store_check.py``, BENCHMARKS.md) on the
   project's 2-core machine: 0.2 s with the file in the page cache and 0.8 s from disk when
   the machine was quiet, 1.1 s and 2.0 s under a load of 15; it grows with the store (60
   times as much for the reference study's 6 million generations). That is too slow to pay on
   every ``harness report`` or ``harness runs``, so a check that passed leaves a stamp beside
   the store (``.harness.checked``: size, modification time, inode and device of the file and
   of its write-ahead log), and an open whose file still matches the stamp does step 1 only
   (about 0.1 ms).

   What the stamp gives up, and why that is acceptable: overwriting bytes in place
   (``dd conv=notrunc``, a tool or a person editing the file) and truncating both change the
   modification time, and a copy or a restore is another inode, so the issue's cases (16 KiB of
   random bytes over the middle, a file truncated to half) are always re-checked. Damage that
   leaves size and time alone (a failing disk) is found when SQLite reads the damaged page:
   :class:`GuardedConnection` turns that error into the same :class:`StoreDamaged` message.

**A full disk** at any write becomes :class:`DiskFull` (one line: the folder, the free space
and how much to free), and the transaction in flight is rolled back, so the store holds
everything committed before it. A run keeps a small reserve file beside the store
(:class:`SpaceReserve`) and gives it back when the disk fills, so that the run can still be
recorded as interrupted.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import weakref
from pathlib import Path
from typing import Any

from .errors import UserError

#: the stamp of the last check that passed, beside the store
STAMP_NAME = ".harness.checked"
#: what a run keeps free beside the store, given back when the disk fills
RESERVE_NAME = ".harness.reserve"
RESERVE_BYTES = 256 << 10
#: what a message asks to free beyond the work still to write: room for SQLite's write-ahead log (it grows to about
#: 4 MiB between checkpoints) and the copy a checkpoint makes of it
MIN_FREE = 8 << 20

_MAGIC = b"SQLite format 3\x00"
_SQLITE_FULL = 13
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_SQLITE_IOERR = 10


class StoreDamaged(UserError):
    """The store's file is damaged: nothing is written to it; restore a copy or recover what it holds."""

    def __init__(self, path: Path, problem: str):
        self.path = Path(path)
        directory = self.path.parent
        super().__init__(
            f"the results store is damaged ({problem}); nothing was written to it. Restore the folder from a copy, "
            f"or copy every row it still holds into a fresh folder with `harness recover {directory} -o {directory}-recovered` "
            "and point the experiment's output_dir there: the next run recomputes only what was lost",
            file=self.path,
        )


class DiskFull(UserError):
    """The disk holding the store is full: the write in flight was rolled back, everything before it is kept."""

    def __init__(self, directory: Path, needed: int | None = None):
        self.directory = Path(directory)
        self.free = _free(self.directory)
        #: what to free: the caller's estimate of what is still to be written, plus room for SQLite's write-ahead log
        self.needed = MIN_FREE + max(needed or 0, 0)
        super().__init__(self._text(), file=self.directory)

    def with_needed(self, needed: int) -> DiskFull:
        """The same error with an estimate of the bytes still to be written (a run knows how much it has left)."""
        return DiskFull(self.directory, needed)

    def _text(self) -> str:
        return (
            f"the disk is full ({size_text(self.free)} free): the results being written were not stored, everything stored "
            f"before them is kept; free at least {size_text(self.needed)} on this disk and run the same command again to continue"
        )


# --------------------------------------------------------------------------- the check


def check_store(path: Path) -> None:
    """Raise :class:`StoreDamaged` when the store at ``path`` is damaged (see the module docstring); a missing or empty file passes."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        return  # nothing there yet (or unreadable: opening it says why)
    if size == 0:
        return
    problem = header_problem(path, size)
    if problem:
        raise StoreDamaged(path, problem)
    stamp = _stamp(path)
    if stamp is not None and stamp == _read_stamp(path):
        return
    problem = quick_check(path)
    if problem:
        raise StoreDamaged(path, problem)
    if stamp is not None:
        _write_stamp(path, stamp)


def header_problem(path: Path, size: int) -> str | None:
    """What is wrong with the file's SQLite header or size, or None."""
    try:
        with path.open("rb") as fh:
            header = fh.read(100)
    except OSError as exc:
        return f"it cannot be read: {exc.strerror or exc}"
    if len(header) < 100 or not header.startswith(_MAGIC):
        return "it is not an SQLite database: its first bytes are not SQLite's header"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"its header names an impossible page size ({page_size})"
    if _wal_has_content(path):
        return None  # pages may still be in the write-ahead log (see the module docstring)
    if size % page_size:
        return f"its size ({size:,} bytes) is not a whole number of {page_size:,}-byte pages: the file was cut short"
    pages = int.from_bytes(header[28:32], "big")
    change_counter, valid_for = header[24:28], header[92:96]
    if pages and change_counter == valid_for and size < pages * page_size:
        return f"it holds {size // page_size:,} of the {pages:,} pages its header lists: the file was cut short"
    return None


def quick_check(path: Path) -> str | None:
    """``PRAGMA quick_check`` on a read-only connection: None when it passes, else what it found (one line).

    Without a write-ahead log the file is opened ``immutable`` (SQLite then creates no ``-wal``
    or ``-shm`` file beside it: checking a store leaves its folder as it was).
    """
    from urllib.parse import quote

    mode = "mode=ro" if _wal_has_content(path) else "mode=ro&immutable=1"
    try:
        con = sqlite3.connect(f"file:{quote(str(Path(path).resolve()))}?{mode}", uri=True, timeout=60)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        rows = [r[0] for r in con.execute("PRAGMA quick_check(3)").fetchall()]
    except sqlite3.DatabaseError as exc:
        return f"SQLite cannot read it: {exc}"
    finally:
        con.close()
    if rows == ["ok"]:
        return None
    found = [line.strip() for row in rows for line in row.splitlines() if line.strip() and not line.startswith("***")]
    more = f" and {len(found) - 2} more" if len(found) > 2 else ""
    return "SQLite's quick_check: " + "; ".join(found[:2]) + more


def _wal_has_content(path: Path) -> bool:
    try:
        return Path(f"{path}-wal").stat().st_size > 0
    except OSError:
        return False


def _stamp(path: Path) -> dict[str, Any] | None:
    def of(p: Path) -> list[int] | None:
        try:
            st = p.stat()
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]

    db = of(path)
    return None if db is None else {"db": db, "wal": of(Path(f"{path}-wal"))}


def _read_stamp(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path.parent / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_stamp(path: Path, stamp: dict[str, Any]) -> None:
    target = path.parent / STAMP_NAME
    tmp = target.with_name(f"{STAMP_NAME}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(stamp), encoding="utf-8")
        os.replace(tmp, target)
    except OSError:  # a read-only folder, a full disk: the next open checks again
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- errors where they happen


#: the stores this process opened (for an error met while reading a cursor, outside any statement call)
_OPEN: weakref.WeakSet[GuardedConnection] = weakref.WeakSet()


def explain(exc: BaseException) -> UserError | None:
    """The user's error for an sqlite3 error that escaped a statement call (met while fetching rows), naming the store."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return None
    paths = sorted({str(con.path) for con in list(_OPEN) if getattr(con, "path", None) is not None})
    if not paths:
        return None
    found = translate(exc, Path(paths[0]))
    if isinstance(found, StoreDamaged) and len(paths) > 1:
        return UserError(
            f"one of the results stores this command read is damaged ({exc}): {', '.join(paths)}; nothing more was written. "
            "Restore it from a copy, or copy what it still holds into a fresh folder with `harness recover`"
        )
    return found if isinstance(found, UserError) else None


class GuardedConnection(sqlite3.Connection):
    """The store's connection: a full disk or a damaged page met by any statement becomes :class:`DiskFull` or :class:`StoreDamaged`.

    ``reserve`` (set by the store) is given back the moment the disk fills, so the writes that
    record what happened (a run marked interrupted) find room.
    """

    path: Path
    reserve: SpaceReserve | None = None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        _OPEN.add(self)

    def execute(self, *args: Any) -> sqlite3.Cursor:
        try:
            return super().execute(*args)
        except sqlite3.DatabaseError as exc:
            raise self.translate(exc) from None

    def executemany(self, *args: Any) -> sqlite3.Cursor:
        try:
            return super().executemany(*args)
        except sqlite3.DatabaseError as exc:
            raise self.translate(exc) from None

    def executescript(self, *args: Any) -> sqlite3.Cursor:
        try:
            return super().executescript(*args)
        except sqlite3.DatabaseError as exc:
            raise self.translate(exc) from None

    def translate(self, exc: sqlite3.DatabaseError) -> Exception:
        """The user's error for ``exc`` (the exception itself when it is neither a full disk nor damage)."""
        found = translate(exc, self.path)
        if isinstance(found, DiskFull) and self.reserve is not None:
            self.reserve.release()
        return found


def translate(exc: BaseException, path: Path) -> BaseException:
    """:class:`DiskFull` or :class:`StoreDamaged` for an sqlite3 error of the store at ``path``; otherwise ``exc``."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return exc
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc).lower()
    if primary == _SQLITE_FULL or "database or disk is full" in text:
        return DiskFull(Path(path).parent)
    if primary == _SQLITE_IOERR and _free(Path(path).parent) < MIN_FREE:
        return DiskFull(Path(path).parent)
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "malformed" in text or "not a database" in text:
        return StoreDamaged(Path(path), str(exc))
    return exc


class SpaceReserve:
    """A file of :data:`RESERVE_BYTES` beside the store, kept while a run writes and given back when the disk fills."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / RESERVE_NAME

    def keep(self) -> None:
        """Write the reserve (a full disk already: :class:`DiskFull`)."""
        try:
            with self.path.open("wb") as fh:
                fh.write(b"\0" * RESERVE_BYTES)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            self.path.unlink(missing_ok=True)
            if exc.errno in (28, 122):  # ENOSPC, EDQUOT
                raise DiskFull(self.path.parent) from None
            raise

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- a folder a store can be made in


def probe_folder(directory: Path) -> str | None:
    """Why no results store can be made in ``directory``, or None; tried the way a run makes one (the folders, then a
    file in them) and undone: nothing is left behind."""
    directory = Path(directory)
    created = [p for p in (directory, *directory.parents) if not p.exists()]  # deepest first
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".harness-probe-", dir=directory)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break
    return None


# --------------------------------------------------------------------------- sizes


def _free(directory: Path) -> int:
    for p in (Path(directory), *Path(directory).parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return 0


def size_text(n: float) -> str:
    """``512 KiB``, ``3.2 MiB``, ``1.5 GiB``."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit in ("bytes", "KiB") else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
