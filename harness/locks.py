"""Cross-process locks: one run per output folder, and safe writes to shared caches.

Both use ``fcntl.flock`` on a lock file, so a lock dies with the process that held it
(a killed run never leaves a stale lock behind). On systems without ``fcntl`` the locks
are no-ops.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


@contextmanager
def file_lock(path: Path, *, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) while the block runs.

    Waits for another holder (at most ``timeout`` seconds, then ``TimeoutError``). Plugins
    use it around writes to caches shared by concurrent runs, e.g. converting a model
    once: take the lock, check whether another process already did the work, do it if not.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline is not None else 0))
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{path} is held by another process") from None
                    time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def run_lock(directory: Path, command: str, *, shared: bool = False) -> Iterator[None]:
    """One run at a time per output folder: a second one exits 2 naming the process that holds it.

    ``shared``: a search worker (`harness tune`): any number of them hold the lock together, sharing the
    store and the study, and a run waits for none of them — it is refused while one holds it (and they while it runs).
    """
    directory = Path(directory)
    path = directory / ".harness.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise UserError(f"cannot create the run lock: {exc.strerror or exc}", file=path) from None
    try:
        if fcntl is not None:
            try:
                if shared:
                    _share(fd)
                else:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    os.ftruncate(fd, 0)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
                raise UserError(
                    f"another run is using this experiment's output folder ({holder}); wait for it to finish "
                    "(or stop it), then run again — it resumes from what is stored",
                    file=directory,
                ) from None
        line = f"pid {os.getpid()}: {command}"
        if shared:
            _append(path, line)
        else:
            os.pwrite(fd, line.encode(), 0)
        yield
    finally:
        if not shared:
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
        os.close(fd)


def _share(fd: int) -> None:
    """Take the lock shared. The first holder (it gets it exclusively for a moment) clears the names earlier holders
    wrote; a worker starting in that moment waits briefly rather than being refused."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
    except BlockingIOError:
        pass
    deadline = time.monotonic() + 3.0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _append(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(("; " if fh.tell() else "") + line)
