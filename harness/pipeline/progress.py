"""Progress of a run: bars in a terminal, plain lines everywhere else, and a plain log file.

:class:`RichProgress` implements :class:`harness.api.Progress` (``task(description,
total)`` returning ``advance(n=1, **fields)``) plus ``note(label)``, with which the
runner names the cell ("model · config") that the next task works on.

* **In a terminal** one rich bar per task description ("fine-tuning", "generating",
  "BLEU", …), restarted for each cell: stage, cell, bar, done/total, elapsed, ETA and the
  plugin's fields, rounded (``loss=0.1235``, ``tok/s=123``). When that line does not
  fit the terminal, the stage and cell go on a line of their own above the bar. When a
  stage ends, its bar gives way to one line that stays (``generating: 26 cells, …``).
* **Not a terminal** (CI, ``nohup``, output redirected to a file): nothing is redrawn.
  One plain line per finished cell (``generating tuned · top_k_50_num_beams_1_temp_0.0:
  20/20 in 5.2 s, tok/s=311``), a line with the ETA every ``every`` seconds while a long cell runs, and
  one line per finished stage (``generating: 26 cells, 520/520 in 2 min 10 s``).
* **The log file** (``log_path``, if given) receives those plain lines in either case,
  each with a timestamp, appended, so a run's folder keeps what happened.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column, Table
from rich.text import Text

__all__ = ["RichProgress", "format_fields", "format_seconds"]


def format_fields(fields: Mapping[str, Any]) -> str:
    """A plugin's progress fields for display: ``loss=0.1235  tok/s=123``.

    Floats keep 4 significant digits; a field named ``*_s`` is a rate per second, shown
    as ``*/s`` and as a whole number from 10 on (2 significant digits below). Any float
    of 1000 or more is whole. Anything else is shown with ``str``.
    """
    parts = []
    for name, value in fields.items():
        rate = name.endswith("_s")
        shown = name[:-2] + "/s" if rate else name
        parts.append(f"{shown}={_round(value, whole=rate)}")
    return "  ".join(parts)


def _round(value: Any, *, whole: bool) -> str:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    if abs(v) >= 1000 or (whole and abs(v) >= 10):
        return str(round(v))
    return f"{v:.2g}" if whole else f"{v:.4g}"


def format_seconds(seconds: float) -> str:
    """``5.2 s``, ``2 min 05 s``, ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    s = round(seconds)
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


@dataclass
class _Task:
    description: str
    label: str
    total: int | None
    started: float
    done: int = 0
    fields: str = ""
    last_line: float = 0.0
    reported: bool = False
    rich_id: Any = None

    def name(self) -> str:
        return f"{self.description} {self.label}" if self.label else self.description

    def count(self) -> str:
        return f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"


@dataclass
class _Stage:
    description: str
    started: float
    cells: int = 0
    done: int = 0
    tasks: list[_Task] = field(default_factory=list)


class _Bars(Progress):
    """rich's Progress with one line per task when it fits the terminal, else two (stage and cell above the bar)."""

    def __init__(self, head: list[ProgressColumn], body: list[ProgressColumn], **kwargs: Any) -> None:
        self._head, self._body = head, body
        super().__init__(*head, *body, **kwargs)

    def _table(self, columns: list[ProgressColumn], tasks: Iterable[Task]) -> Table:
        table = Table.grid(*(c.get_table_column().copy() for c in columns), padding=(0, 1))
        for task in tasks:
            if task.visible:
                table.add_row(*(c(task) for c in columns))
        return table

    def get_renderables(self) -> Iterable[RenderableType]:
        one_line = self._table(self._head + self._body, self.tasks)
        if not self.tasks:  # also while Progress.__init__ renders, before self.console exists
            yield one_line
            return
        natural = Measurement.get(self.console, self.console.options.update_width(1_000_000), one_line).maximum
        if natural <= self.console.width:
            yield one_line
            return
        for task in self.tasks:
            if task.visible:
                yield Text.assemble((task.description, "bold"), " ", task.fields.get("cell", ""))
                indented = Table.grid(Column(width=1), Column(), padding=(0, 1))
                indented.add_row("", self._table(self._body, [task]))
                yield indented


class RichProgress:
    """Progress of a run on stderr (bars in a terminal, plain lines otherwise), and plain lines in ``log_path``.

    ``console`` defaults to stderr; ``live`` (default: whether the console is a
    terminal) chooses bars over plain lines; ``every`` is how often, in seconds, a
    running cell gets a plain line; ``clock`` measures elapsed time (injectable for tests).
    """

    def __init__(
        self,
        console: Console | None = None,
        *,
        log_path: str | Path | None = None,
        live: bool | None = None,
        every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self.live = (self.console.is_terminal and not self.console.is_dumb_terminal) if live is None else live
        self.log_path = Path(log_path) if log_path is not None else None
        self.every = every
        self._clock = clock
        self._log: IO[str] | None = None
        self._label = ""
        self._label_cells = 1
        self._label_owner: str | None = None
        self._current: dict[str, _Task] = {}
        self._stage: _Stage | None = None
        self._bars: _Bars | None = None
        if self.live:
            self._bars = _Bars(
                [TextColumn("{task.description}", style="bold", markup=False), TextColumn("{task.fields[cell]}", markup=False)],
                [
                    BarColumn(bar_width=24),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    TextColumn("eta", style="dim"),
                    TimeRemainingColumn(),
                    TextColumn("{task.fields[info]}", markup=False),
                ],
                console=self.console,
                transient=False,
            )
        self._rich_ids: dict[str, Any] = {}

    # ------------------------------------------------------------------ context

    def __enter__(self) -> RichProgress:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("a", encoding="utf-8")
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._end_stage()
        finally:
            if self._bars is not None:
                self._bars.stop()
            if self._log is not None:
                try:
                    self._log.close()
                except OSError:  # its last lines could not be written (a full disk)
                    pass
                self._log = None

    # ------------------------------------------------------------------ the Progress API

    def line(self, text: str, *, console: bool = False) -> None:
        """One plain line in the log (and on the console when ``console``): the run's start, its end."""
        self._plain(text, console=console)

    def note(self, label: str, cells: int = 1) -> None:
        """Name the cell the next task works on (the runner's "model · config"); ``cells``: how many cells that task
        covers (a model's generation decodes all its configs in one task: "model · 12 configs")."""
        self._label = label
        self._label_owner = None
        self._label_cells = max(1, int(cells))

    def task(self, description: str, total: int | None) -> Callable[..., None]:
        """Start a task; a previous task with the same description is over (reported if it was not)."""
        now = self._clock()
        previous = self._current.pop(description, None)
        if previous is not None:
            self._finish(previous, now)
        if self._stage is None or self._stage.description != description:
            self._end_stage(now)
            self._stage = _Stage(description, now)
        # a note names the cell of the next task's description only, so a plugin's other tasks show no stale cell
        if self._label_owner is None:
            self._label_owner = description
        label = self._label if self._label_owner == description else ""
        t = _Task(description, label, total, now, last_line=now)
        self._current[description] = t
        cells = self._label_cells if label else 1
        self._label_cells = 1  # the note's cells count once, for its first task
        self._stage.cells += cells
        self._stage.tasks.append(t)
        if self._bars is not None:
            rich_id = self._rich_ids.get(description)
            if rich_id is None:
                rich_id = self._rich_ids[description] = self._bars.add_task(description, total=total, info="", cell=label)
            else:
                self._bars.reset(rich_id, total=total, info="", cell=label, visible=True)
            t.rich_id = rich_id
        stage = self._stage

        def advance(n: int = 1, **fields: Any) -> None:
            t.done += n
            stage.done += n
            if fields:
                t.fields = format_fields(fields)
            if self._bars is not None:
                self._bars.update(t.rich_id, advance=n, info=t.fields)
            at = self._clock()
            if t.total is not None and t.done >= t.total:
                self._finish(t, at)
            elif at - t.last_line >= self.every:
                t.last_line = at
                self._plain(self._running_line(t, at), console=not self.live)

        return advance

    # ------------------------------------------------------------------ lines

    def _running_line(self, t: _Task, now: float) -> str:
        elapsed = now - t.started
        line = f"{t.name()}: {t.count()} after {format_seconds(elapsed)}"
        if t.total and t.done:
            line += f", eta {format_seconds(elapsed / t.done * max(t.total - t.done, 0))}"
        return line + (f", {t.fields.replace('  ', ', ')}" if t.fields else "")

    def _finish(self, t: _Task, now: float) -> None:
        if t.reported:
            return
        t.reported = True
        complete = t.total is None or t.done >= t.total
        how = "in" if complete else "stopped after"
        line = f"{t.name()}: {t.count()} {how} {format_seconds(now - t.started)}"
        self._plain(line + (f", {t.fields.replace('  ', ', ')}" if t.fields else ""), console=not self.live)

    def _end_stage(self, now: float | None = None) -> None:
        stage, self._stage = self._stage, None
        if stage is None:
            return
        now = self._clock() if now is None else now
        for t in stage.tasks:
            self._finish(t, now)
            self._current.pop(t.description, None)
        unfinished = sum(1 for t in stage.tasks if t.total is not None and t.done < t.total)
        cells = f"{stage.cells} cell{'s' if stage.cells != 1 else ''}"
        totals = [t.total for t in stage.tasks]
        count = f"{stage.done}/{sum(totals)}" if None not in totals else f"{stage.done}"  # type: ignore[arg-type]
        line = f"{stage.description}: {cells}, {count} in {format_seconds(now - stage.started)}"
        if unfinished:
            line += f" ({unfinished} stopped before the end)"
        self._plain(line, console=True)
        if self._bars is not None and stage.description in self._rich_ids:
            self._bars.update(self._rich_ids[stage.description], visible=False)  # the line above replaces its bar

    def _plain(self, line: str, *, console: bool) -> None:
        if console:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        if self._log is not None:
            try:
                self._log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
                self._log.flush()
            except OSError as exc:  # a full disk: the log stops, the run goes on (the store says if it cannot)
                log, self._log = self._log, None
                try:
                    log.close()
                except OSError:
                    pass
                self.console.print(f"cannot write {self.log_path} any more ({exc.strerror or exc}): progress goes to the terminal only",
                                   markup=False, highlight=False, soft_wrap=True)
