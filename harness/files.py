"""Files written whole or not at all.

A report, a rating sheet or an export is written into a new hidden file beside its target,
flushed to disk, and only then moved into place with ``os.replace``: a reader (or a crash,
or a full disk) sees the old file or the new one, never half of one. Plugins reach this
through :func:`harness.api.temporary_beside` and :func:`harness.api.write_atomically`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO


def temporary_beside(path: Path, write: Callable[[IO[str]], object], *, newline: str | None = None) -> Path:
    """A new hidden file in ``path``'s folder holding what ``write(handle)`` wrote, on disk.

    The file is made with mode 0o666 less the umask, as any new file; the caller moves it
    into place with ``os.replace`` (several of them once all are written, for an export of
    several files). If writing fails, the file is removed and the error raised as it came
    (``OSError`` for a full disk or a folder that cannot be written).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_atomically(path: Path, write: Callable[[IO[str]], object], *, newline: str | None = None) -> None:
    """Write ``path`` through :func:`temporary_beside`: the file is either whole or untouched."""
    tmp = temporary_beside(path, write, newline=newline)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
