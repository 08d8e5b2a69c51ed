"""Progress of a run: rich bars in a terminal, plain lines in a log (and when output is not a terminal)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class RichProgress:
    """Progress bars on stderr for fine-tuning, generation and scoring; one plain line per finished task in ``log_path``."""

    def __init__(self, console: Console | None = None, log_path: Path | None = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = console or Console(stderr=True, highlight=False)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            TextColumn("{task.fields[cell]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
            disable=not self.console.is_terminal,
        )
        self._label = ""
        self._tasks: dict[str, Any] = {}
        self._log = None
        if log_path is not None:
            try:
                self._log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in __exit__
            except OSError:
                self._log = None

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def line(self, text: str) -> None:
        """One plain line: in the log always, on the console when it is not a terminal (no bars there)."""
        stamp = time.strftime("%H:%M:%S")
        if self._log is not None:
            self._log.write(f"{stamp} {text}\n")
            self._log.flush()
        if not self.console.is_terminal:
            print(f"{stamp} {text}", file=sys.stderr, flush=True)

    def note(self, label: str) -> None:
        self._label = label

    def task(self, description: str, total: int | None):
        """One bar per description, reused: each new task of the same kind restarts it."""
        label = self._label
        task_id = self._tasks.get(description)
        if task_id is None:
            task_id = self._progress.add_task(description, total=total, info="", cell=label)
            self._tasks[description] = task_id
        else:
            self._progress.reset(task_id, total=total, info="", cell=label)
        state = {"done": 0, "start": time.perf_counter()}

        def advance(n: int = 1, **fields: Any) -> None:
            info = "  ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
            self._progress.update(task_id, advance=n, info=info)
            state["done"] += n
            if total is not None and state["done"] >= total:
                self.line(f"{description} {label}: {state['done']}/{total} in {time.perf_counter() - state['start']:.1f} s {info}".rstrip())

        return advance
