"""``ray``: the run's jobs as Ray tasks, spread over the GPUs (or CPUs) of a node or a cluster.

What it does, in the terms of :class:`harness.api.Executor`:

* **Where.** ``address`` unset starts a local Ray instance that uses every GPU and CPU of
  this machine (shut down again by :meth:`RayExecutor.close`); ``"auto"`` joins the cluster
  that ``ray start`` made on this machine; ``"host:port"`` or ``"ray://host:port"`` joins a
  remote one. Every node must have the same Python environment with the harness and its
  plugins installed: a worker builds the plugins from the installed entry points. A cluster
  it cannot join is one :class:`~harness.errors.UserError` naming the address and the likely
  cause — nothing listening, no token or the wrong one, other Ray or Python versions
  (:mod:`harness_executors.ray_join`) — rather than Ray's traceback.
* **Each job is one Ray task**, named after the job's id (``train/<model>``,
  ``generate/<model>/<part>``, ``score/<metric>``) and asking for the resources of its kind
  (``num_gpus_*``, ``num_cpus_*``). All jobs are submitted at once; a job that ``needs``
  another gets that task's result as an argument, so Ray itself starts generation when its
  model's fine-tune is done, wherever it finished.
* **Exactly once.** A task returns everything its job yielded, in order, when the job is
  over; the driver then hands each output to the sink (which alone writes the store) and
  calls ``done``. A worker that dies (killed, out of memory, node lost) makes Ray run the
  task again, up to ``max_retries`` times; only the attempt that finished is ever accepted,
  so a retry can neither lose nor duplicate a row. The price: a job's outputs are committed
  when the job ends, not batch by batch (the runner splits a model's configs over
  :meth:`capacity` jobs, which keeps jobs short where many GPUs are free).
* **Failures.** A job that raises is reported with its traceback through ``sink.failed``;
  the jobs that need it are failed too, and the rest goes on (the CLI exits 1), as with the
  ``local`` executor. :class:`harness.errors.UserError` raised in a job, and
  ``KeyboardInterrupt``/SIGTERM in the driver, cancel every outstanding task and stop the
  run; what was committed stays, and the next run resumes from the store.
* **Progress.** Workers report their tasks' progress and where they run (node, GPU) to a
  small actor that the driver polls; the driver shows a "ray jobs" bar with how many jobs
  are queued, running and done, what runs on each node and GPU, and one line per job that
  starts, ends or fails.
* **Adapters.** With ``storage`` (a folder every node mounts) fine-tunes write their
  adapters there; on a local instance they go straight into the output folder; otherwise
  their files travel back to the driver with the job's output.
"""

from __future__ import annotations

import importlib.util
import os
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import hookimpl
from harness.api import Executor, Job, JobSink, Option, Progress
from harness.errors import MissingDependency, UserError

KINDS = ("train", "generate", "score")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependency("ray", "ray", purpose="the ray executor") from None
    return ray


# --------------------------------------------------------------------------- what travels back


@dataclass(frozen=True)
class Attempt:
    """What one task (one attempt at a job) sends back to the driver.

    ``outputs`` is everything the job yielded, in order, when it ran to the end. ``error``
    is ``(kind, message, traceback)`` when it did not: ``"error"`` (the job raised),
    ``"user"`` (a :class:`~harness.errors.UserError`: stop the run), ``"interrupt"`` or
    ``"needs"`` (a job it needs failed; ``message`` is that job's id).
    """

    job_id: str
    where: str
    outputs: tuple[Any, ...] = ()
    error: tuple[str, str, str] | None = None
    seconds: float = 0.0


def where_am_i() -> str:
    """The node and the devices this task was given, for progress displays: ``10.0.0.5 node 1a2b3c4d · GPU 0,1``."""
    import ray

    ctx = ray.get_runtime_context()
    node_id = ctx.get_node_id()
    try:
        gpus = [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])]
    except Exception:  # pragma: no cover - older Ray
        gpus = [str(g) for g in ray.get_gpu_ids()]
    device = f"GPU {','.join(gpus)}" if gpus else "CPU"
    address = next((n.get("NodeManagerAddress", "") for n in _nodes(ray) if n.get("NodeID") == node_id), "")
    return f"{address or '?'} node {node_id[:8]} · {device}"


_NODES: list[dict[str, Any]] = []


def _nodes(ray: Any) -> list[dict[str, Any]]:
    """``ray.nodes()``, asked once per worker process."""
    if not _NODES:
        try:
            _NODES.extend(ray.nodes())
        except Exception:
            pass
    return _NODES


class WorkerProgress:
    """The :class:`harness.api.Progress` a job gets on a worker: forwards notes and task counts to the driver's mailbox.

    Updates are sent at most once a second per task (and when a task completes), fire and
    forget: progress never slows a job down, and a lost update only delays the display.
    """

    def __init__(self, mailbox: Any, job_id: str, attempt: str, *, every: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.mailbox = mailbox
        self.job_id = job_id
        self.attempt = attempt
        self.every = every
        self.clock = clock
        self.label = ""
        self.sent = 0.0

    def note(self, label: str, cells: int = 1) -> None:
        self.label = label

    def task(self, description: str, total: int | None) -> Callable[..., None]:
        state = {"done": 0, "fields": {}}
        label = self.label

        def advance(n: int = 1, **fields: Any) -> None:
            state["done"] += n
            if fields:
                state["fields"] = fields
            now = self.clock()
            finished = total is not None and state["done"] >= total
            if finished or now - self.sent >= self.every:
                self.sent = now
                self._send(description, label, state["done"], total, state["fields"])

        self._send(description, label, 0, total, {})
        return advance

    def _send(self, description: str, label: str, done: int, total: int | None, fields: dict[str, Any]) -> None:
        if self.mailbox is None:
            return
        try:
            self.mailbox.update.remote(self.job_id, self.attempt, description, label, done, total, dict(fields))
        except Exception:  # the display is best effort
            pass


class Mailbox:
    """A tiny actor between workers and the driver: which attempt of which job started where, and its progress."""

    def __init__(self) -> None:
        self.started: list[tuple[str, str, str, int]] = []
        self.progress: dict[str, tuple[str, str, str, int, int | None, dict[str, Any]]] = {}

    def start(self, job_id: str, attempt: str, where: str, pid: int) -> bool:
        self.started.append((job_id, attempt, where, pid))
        return True

    def update(self, job_id: str, attempt: str, description: str, label: str, done: int, total: int | None, fields: dict[str, Any]) -> None:
        self.progress[job_id] = (attempt, description, label, done, total, fields)

    def drain(self) -> tuple[list[tuple[str, str, str, int]], dict[str, tuple[Any, ...]]]:
        started, self.started = self.started, []
        progress, self.progress = self.progress, {}
        return started, progress


def run_job(job: Job, mailbox: Any, need_ids: Sequence[str], *need_results: Attempt) -> Attempt:
    """The body of every task: run ``job`` with the outputs of the jobs it needs, and return what it yielded."""
    where = where_am_i()
    needs: dict[str, Sequence[Any]] = {}
    for need_id, result in zip(need_ids, need_results):
        if result.error is not None:  # not run: the driver fails it, naming the need
            return Attempt(job.id, where, error=("needs", need_id, ""))
        needs[need_id] = result.outputs
    attempt = uuid.uuid4().hex[:8]
    if mailbox is not None:
        import ray

        try:  # waited for, so that a retry's start reaches the driver before its end
            ray.get(mailbox.start.remote(job.id, attempt, where, os.getpid()), timeout=30)
        except Exception:
            pass
    started = time.perf_counter()
    progress = WorkerProgress(mailbox, job.id, attempt)
    try:
        outputs = tuple(job.execute(needs, progress))
    except UserError as exc:
        return Attempt(job.id, where, error=("user", exc.render(), traceback.format_exc()), seconds=time.perf_counter() - started)
    except KeyboardInterrupt:
        return Attempt(job.id, where, error=("interrupt", "interrupted", traceback.format_exc()), seconds=time.perf_counter() - started)
    except Exception as exc:
        return Attempt(job.id, where, error=("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()), seconds=time.perf_counter() - started)
    return Attempt(job.id, where, outputs, None, time.perf_counter() - started)


# --------------------------------------------------------------------------- the driver's view of the jobs


@dataclass
class _Slot:
    job: Job
    ref: Any
    where: str = ""
    started: bool = False
    attempts: set[str] = field(default_factory=set)
    progress: str = ""


class Board:
    """Jobs queued, running and done, per node and GPU, shown through the run's progress display.

    Uses only what the display offers: ``task``/``advance`` (a "ray jobs" bar whose fields
    say what runs where) and, when present, ``line`` (one line per job that starts, ends or
    fails).
    """

    def __init__(self, progress: Progress):
        self.progress = progress
        self.total = 0
        self.finished = 0
        self.advance: Callable[..., None] | None = None
        self.running: dict[str, tuple[str, str]] = {}  # job id -> (where, label)
        self.done_at: dict[str, int] = {}  # where -> jobs finished there
        self.queued = 0
        self.detail: dict[str, str] = {}

    def add(self, n: int) -> None:
        """``n`` more jobs were submitted: a new bar counts every job not finished yet."""
        if n <= 0:
            return
        self.queued += n
        self.total = self.total - self.finished + n
        self.finished = 0
        self.advance = self.progress.task("ray jobs", self.total)
        self._show(0)

    def started(self, job: Job, where: str, *, retry: bool = False) -> None:
        if job.id not in self.running:
            self.queued -= 1
        self.running[job.id] = (where, job.label)
        self._line(f"{job.label}: {'retried' if retry else 'started'} on {where}")
        self._show(0)

    def progressed(self, job_id: str, text: str) -> None:
        self.detail[job_id] = text
        self._show(0)

    def ended(self, job: Job, where: str, how: str) -> None:
        if job.id in self.running:
            self.running.pop(job.id)
        else:
            self.queued -= 1
        self.detail.pop(job.id, None)
        self.done_at[where] = self.done_at.get(where, 0) + 1
        self._line(f"{job.label}: {how}" + (f" on {where}" if where else ""))
        self.finished += 1
        self._show(1)

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"queued": max(self.queued, 0), "running": len(self.running), "done": sum(self.done_at.values())}
        places = sorted({w for w, _ in self.running.values()} | {w for w in self.done_at if w})
        for place in places:
            here = [(j, label) for j, (w, label) in self.running.items() if w == place]
            parts = [f"{label}" + (f" {self.detail[j]}" if self.detail.get(j) else "") for j, label in here]
            parts.append(f"{self.done_at.get(place, 0)} done")
            out[place] = ", ".join(parts)
        return out

    def _show(self, n: int) -> None:
        if self.advance is not None:
            self.advance(n, **self.fields())

    def _line(self, text: str) -> None:
        line = getattr(self.progress, "line", None)
        if line is not None:
            line(f"ray: {text}", console=True)


def _progress_text(description: str, label: str, done: int, total: int | None, fields: dict[str, Any]) -> str:
    text = f"{description} {done}/{total}" if total is not None else f"{description} {done}"
    if label:
        text = f"{label}: {text}"
    shown = [f"{k}={round(v, 4) if isinstance(v, float) else v}" for k, v in fields.items()]
    return text + (f" ({', '.join(shown)})" if shown else "")


# --------------------------------------------------------------------------- the executor


class RayExecutor(Executor):
    name = "ray"
    version = "1"
    description = "runs jobs as Ray tasks over the GPUs (or CPUs) of a node or a cluster; `pip install 'llm-decoding-harness[ray]'`"
    options = {
        "address": Option(
            str, default=None, nullable=True,
            help='unset: start a local Ray instance with every GPU and CPU of this machine; "auto": the cluster `ray start` made here; "host:port" or "ray://host:port": a remote cluster (one with token authentication needs RAY_AUTH_MODE=token and its token here)',
        ),
        **{
            f"num_gpus_{kind}": Option(
                float, default=None, nullable=True, minimum=0.0,
                help=f"GPUs per {kind} job, fractions allowed (unset: 1 when the cluster has GPUs, else 0)",
            )
            for kind in KINDS
        },
        **{f"num_cpus_{kind}": Option(float, default=1.0, minimum=0.0, help=f"CPUs per {kind} job, fractions allowed") for kind in KINDS},
        "max_retries": Option(int, default=3, minimum=0, help="times Ray runs a job again whose worker died (a job that raises is not retried)"),
        "storage": Option(
            str, default=None, nullable=True,
            help="a folder every node mounts: adapters are written there (unset: the output folder on a local instance, else their files travel back to the driver)",
        ),
        "forward_env": Option(
            list, default=[], items=str,
            help="names of environment variables passed from the driver to every job (those set), e.g. HF_TOKEN or HARNESS_CACHE; Ray shows them in its dashboard",
        ),
        "log_to_driver": Option(bool, default=False, help="print the workers' stdout and stderr in the driver (they are always in Ray's session logs)"),
        "poll_seconds": Option(float, default=0.5, minimum=0.01, maximum=60.0, help="how often the driver looks for finished jobs and progress"),
    }

    def __init__(self, settings: dict[str, Any] | None = None):
        super().__init__(settings)
        if importlib.util.find_spec("ray") is None:
            raise MissingDependency("ray", "ray", purpose="the ray executor")
        address = self.settings.get("address")
        if address is not None and address != "auto" and not _looks_like_address(address):
            raise UserError(f"'{address}' is not a Ray address; allowed: \"auto\", \"host:port\", \"ray://host:port\", or leave it unset for a local instance", key="executor.address")
        secret = [name for name in self.settings["forward_env"] if name.upper().startswith("RAY_AUTH")]
        if secret:
            raise UserError(
                f"{secret[0]} is not forwarded: Ray shows forwarded variables in its dashboard, and every node needs the "
                "cluster's token itself to join (docs/distributed.md, \"By hand, with Ray's token\")", key="executor.forward_env",
            )
        self._ray: Any = None
        self._owns = False  # this executor called ray.init (and so shuts it down)
        self._local = False  # ... and started a local instance
        self._has_gpus: bool | None = None

    # ------------------------------------------------------------------ the cluster

    def connect(self) -> Any:
        """The ``ray`` module, connected (started on first use)."""
        if self._ray is not None:
            return self._ray
        ray = _import_ray()
        if not ray.is_initialized():
            import logging

            import signal
            import threading

            address = self.settings.get("address")
            kwargs: dict[str, Any] = {"log_to_driver": bool(self.settings["log_to_driver"]), "logging_level": logging.WARNING}
            env = {name: os.environ[name] for name in self.settings["forward_env"] if name in os.environ}
            if env:
                kwargs["runtime_env"] = {"env_vars": env}
            main = threading.current_thread() is threading.main_thread()
            sigterm = signal.getsignal(signal.SIGTERM) if main else None
            try:
                if address is None:
                    # Ray announces that the instance it starts here uses token authentication: not news to the user
                    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
                    # Ray runs workers at nice 15 by default: on a machine shared with other work they would get the
                    # leftovers, where the local executor's jobs run at normal priority
                    ray.init(address="local", include_dashboard=False, _system_config={"worker_niceness": 0}, **kwargs)
                    self._local = True
                else:
                    self._join(ray, address, kwargs)
            finally:
                if main and sigterm is not None:  # ray.init replaces it with a plain exit: keep the run's own (SIGTERM = Ctrl-C)
                    signal.signal(signal.SIGTERM, sigterm)
            self._owns = True
        self._ray = ray
        return ray

    @staticmethod
    def _join(ray: Any, address: str, kwargs: dict[str, Any]) -> None:
        """``ray.init`` on a cluster that runs already; one :class:`UserError` naming the address and the likely cause if it fails."""
        from . import ray_join

        def cannot(why: str) -> UserError:
            return UserError(f"cannot join the Ray cluster at '{address}': {why}", key="executor.address")

        why = (ray_join.check_listening(address) if address != "auto" else None) or ray_join.check_token_file()
        if why:
            raise cannot(why)
        try:
            ray.init(address=address, **kwargs)
        except Exception as exc:
            try:  # a version mismatch is found once connected
                ray.shutdown()
            except Exception:
                pass
            raise cannot(ray_join.explain(exc)) from None

    def resources(self, kind: str) -> dict[str, float]:
        """What one job of ``kind`` asks Ray for: ``{"num_cpus": …, "num_gpus": …}``."""
        gpus = self.settings.get(f"num_gpus_{kind}")
        if gpus is None:
            if self._has_gpus is None:
                self._has_gpus = self.connect().cluster_resources().get("GPU", 0) > 0
            gpus = 1.0 if self._has_gpus else 0.0
        return {"num_cpus": float(self.settings[f"num_cpus_{kind}"]), "num_gpus": float(gpus)}

    def capacity(self, kind: str) -> int:
        """How many jobs of ``kind`` fit on the cluster at once (by GPUs when they ask for GPUs, else by CPUs)."""
        want = self.resources(kind)
        total = self.connect().cluster_resources()
        fits = []
        if want["num_gpus"] > 0:
            fits.append(int(total.get("GPU", 0) / want["num_gpus"] + 1e-9))
        if want["num_cpus"] > 0:
            fits.append(int(total.get("CPU", 0) / want["num_cpus"] + 1e-9))
        return max(1, min(fits)) if fits else 1

    def adapter_storage(self, output_dir: Path) -> Path | None:
        storage = self.settings.get("storage")
        if storage:
            path = Path(storage).expanduser()
            path.mkdir(parents=True, exist_ok=True)
            return path.resolve()
        self.connect()
        return output_dir if self._local else None

    def check_feasible(self, kinds: set[str]) -> None:
        """A job asking for more than any node has would wait forever: say so before submitting anything."""
        nodes = [n.get("Resources", {}) for n in self.connect().nodes() if n.get("Alive")]
        for kind in sorted(kinds):
            want = self.resources(kind)
            if not any(want["num_cpus"] <= r.get("CPU", 0) + 1e-9 and want["num_gpus"] <= r.get("GPU", 0) + 1e-9 for r in nodes):
                biggest = ", ".join(f"{r.get('CPU', 0):g} CPU / {r.get('GPU', 0):g} GPU" for r in nodes) or "no live node"
                raise UserError(
                    f"a {kind} job asks for {want['num_cpus']:g} CPU and {want['num_gpus']:g} GPU, more than any node of the cluster has ({biggest}); "
                    f"lower num_cpus_{kind} / num_gpus_{kind}",
                    key="executor",
                )

    def close(self) -> None:
        if self._ray is not None and self._owns:
            self._ray.shutdown()
        self._ray = None
        self._owns = self._local = False
        self._has_gpus = None

    # ------------------------------------------------------------------ running

    def run(self, jobs: Sequence[Job], sink: JobSink, progress: Progress) -> None:
        with signal_exceptions_kept():
            self._run(jobs, sink, progress)

    def _run(self, jobs: Sequence[Job], sink: JobSink, progress: Progress) -> None:
        ray = self.connect()
        self.check_feasible({j.kind for j in jobs})
        task = ray.remote(run_job)
        mailbox = ray.remote(Mailbox).options(num_cpus=0).remote()
        board = Board(progress)
        queue: deque[Job] = deque(jobs)
        inflight: dict[str, _Slot] = {}  # submitted, not yet handed to the sink (in submission order)
        kept: dict[str, Any] = {}  # finished jobs' results that a job not yet finished may need
        failed: dict[str, str] = {}
        checked = {j.kind for j in jobs}
        try:
            while queue or inflight:
                submitted = 0
                while queue:
                    job = queue.popleft()
                    if job.kind not in checked:
                        self.check_feasible({job.kind})
                        checked.add(job.kind)
                    broken = [n for n in job.needs if n in failed]
                    if broken:
                        why = f"needs {broken[0]}, which failed: {failed[broken[0]]}"
                        failed[job.id] = f"needs {broken[0]}"
                        queue.extend(sink.failed(job, why, ""))
                        continue
                    missing = [n for n in job.needs if n not in inflight and n not in kept]
                    if missing:
                        raise RuntimeError(f"{job.id} needs {', '.join(missing)}, which did not run before it")
                    refs = [inflight[n].ref if n in inflight else kept[n] for n in job.needs]
                    ref = task.options(name=job.id, max_retries=int(self.settings["max_retries"]), retry_exceptions=False, **self.resources(job.kind)).remote(
                        job, mailbox, tuple(job.needs), *refs
                    )
                    inflight[job.id] = _Slot(job, ref)
                    submitted += 1
                board.add(submitted)
                if not inflight:
                    continue  # every queued job needed one that failed
                ready, _ = ray.wait([s.ref for s in inflight.values()], num_returns=len(inflight), timeout=float(self.settings["poll_seconds"]), fetch_local=False)
                finished = {r.hex() for r in ready}
                for job_id in list(inflight):
                    slot = inflight[job_id]
                    if slot.ref.hex() not in finished or any(n in inflight for n in slot.job.needs):
                        continue  # still running, or a job it needs is not handed to the sink yet
                    del inflight[job_id]
                    follow = self._finish(ray, slot, sink, board, failed)
                    queue.extend(follow)
                    if any(job_id in j.needs for j in [*queue, *(s.job for s in inflight.values())]):
                        kept[job_id] = slot.ref
                self._drain(ray, mailbox, inflight, sink, board)  # after the finished ones: lines in the order things happened
                waiting = [*queue, *(s.job for s in inflight.values())]
                for job_id in [i for i in kept if not any(i in j.needs for j in waiting)]:
                    del kept[job_id]
        except BaseException:
            for slot in inflight.values():
                try:
                    ray.cancel(slot.ref, force=True)
                except Exception:
                    pass
            raise
        finally:
            try:
                ray.kill(mailbox)
            except Exception:
                pass

    def _drain(self, ray: Any, mailbox: Any, inflight: dict[str, _Slot], sink: JobSink, board: Board) -> None:
        try:
            started, progress = ray.get(mailbox.drain.remote(), timeout=30)
        except Exception:  # the display is best effort
            return
        for job_id, attempt, where, _pid in started:
            slot = inflight.get(job_id)
            if slot is None or attempt in slot.attempts:
                continue
            retry = bool(slot.attempts)
            slot.attempts.add(attempt)
            slot.where = where
            if not slot.started:
                slot.started = True
                sink.started(slot.job, where)
            board.started(slot.job, where, retry=retry)
        for job_id, (attempt, description, label, done, total, fields) in progress.items():
            if job_id in inflight:
                board.progressed(job_id, _progress_text(description, label, done, total, fields))

    @staticmethod
    def _started_late(slot: _Slot, where: str, sink: JobSink, board: Board) -> None:
        """A job that ended before the driver read that it started (both within one poll)."""
        if not slot.started:
            slot.started = True
            sink.started(slot.job, where)
            board.started(slot.job, where)

    def _finish(self, ray: Any, slot: _Slot, sink: JobSink, board: Board, failed: dict[str, str]) -> Sequence[Job]:
        """Hand one finished task's result to the sink; returns the follow-up jobs."""
        job = slot.job
        try:
            result: Attempt = ray.get(slot.ref)
        except (KeyboardInterrupt, UserError):
            raise
        except Exception as exc:  # the task itself failed: its worker died more often than max_retries, or a need's did
            broken = [n for n in job.needs if n in failed]
            why = f"needs {broken[0]}, which failed: {failed[broken[0]]}" if broken else _short(exc)
            failed[job.id] = why if not broken else f"needs {broken[0]}"
            board.ended(job, slot.where, f"failed: {why}")
            return sink.failed(job, why, "" if broken else str(exc))
        if result.error is not None:
            kind, message, tb = result.error
            if kind == "user":
                raise UserError(message)
            if kind == "interrupt":
                raise KeyboardInterrupt
            if kind == "needs":
                why = f"needs {message}, which failed: {failed.get(message, 'unknown error')}"
                failed[job.id] = f"needs {message}"
                board.ended(job, "", f"not run: {why}")
                return sink.failed(job, why, "")
            self._started_late(slot, result.where, sink, board)
            failed[job.id] = message
            board.ended(job, result.where, f"failed after {result.seconds:.1f} s: {message}")
            return sink.failed(job, message, tb)
        self._started_late(slot, result.where, sink, board)
        try:
            for out in result.outputs:
                sink.accept(job, out)
        except (KeyboardInterrupt, UserError):
            raise
        except Exception as exc:  # as in the local executor: storing an output that fails fails the job
            failed[job.id] = f"{type(exc).__name__}: {exc}"
            board.ended(job, result.where, f"failed: {failed[job.id]}")
            return sink.failed(job, failed[job.id], traceback.format_exc())
        board.ended(job, result.where, f"done in {result.seconds:.1f} s ({len(result.outputs)} output{'s' if len(result.outputs) != 1 else ''})")
        return sink.done(job)


@contextmanager
def signal_exceptions_kept() -> Iterator[None]:
    """Re-raise what the SIGTERM handler raised, which Ray's blocking calls turn into a bare ``KeyboardInterrupt``.

    The CLI handles SIGTERM by raising its own ``KeyboardInterrupt`` subclass (exit 143, "stopped
    (SIGTERM)"); inside ``ray.wait``/``ray.get`` Ray replaces it with a plain one (exit 130).
    """
    import signal
    import threading

    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return
    raised: list[BaseException] = []

    def handler(signum: int, frame: Any) -> None:
        try:
            previous(signum, frame)
        except BaseException as exc:
            raised.append(exc)
            raise

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except KeyboardInterrupt as exc:
        if raised and raised[0] is not exc:
            raise raised[0] from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _looks_like_address(address: str) -> bool:
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = rest.rpartition(":")
    return bool(host) and port.isdigit()


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = next((line for line in text if line.strip()), "")
    return f"{type(exc).__name__}: {first}"[:500]


@hookimpl
def harness_register_executors(register):
    register(RayExecutor)
