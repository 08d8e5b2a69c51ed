"""Child processes a run leaves behind (engines that spawn workers, such as vLLM's engine core).

A run stopped with Ctrl-C or SIGTERM closes its engine session, which should stop every
process the engine started; :func:`stop_descendants` is the safety net that makes sure
none outlives the run. It reads ``/proc`` (Linux); elsewhere it does nothing.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def descendants(pid: int | None = None) -> list[int]:
    """Every live process below ``pid`` (default: this one), children first."""
    root = os.getpid() if pid is None else pid
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    parent_of: dict[int, int] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may contain spaces: the ppid is the 2nd field after it
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1:
            parent_of[int(entry.name)] = int(fields[1])
    out: list[int] = []
    frontier = [root]
    while frontier:
        nxt = [child for child, parent in parent_of.items() if parent in frontier]
        out.extend(nxt)
        frontier = nxt
    return out


def stop_descendants(grace: float = 5.0) -> list[int]:
    """SIGTERM every descendant, then SIGKILL those still alive after ``grace`` seconds. Returns the pids signalled."""
    pids = descendants()
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    return pids


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap our own zombie children
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")
