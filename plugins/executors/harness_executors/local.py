"""``local``: every job in this process, one after another (the default executor).

Jobs run in the order given, each after the jobs it needs; follow-up jobs the driver adds
(scoring once generation is over) run after them. Outputs go to the driver as each job
yields them, so a batch of generations is stored before the next one starts and an
interrupted run loses at most the batch in flight. A job's outputs are kept only while a
queued job still needs them.
"""

from __future__ import annotations

import traceback
from collections import deque
from collections.abc import Sequence
from typing import Any

from harness import hookimpl
from harness.api import Executor, Job, JobSink, Progress
from harness.errors import UserError


class LocalExecutor(Executor):
    name = "local"
    version = "1"
    is_default = True
    description = "runs every job in this process, one after another"

    def run(self, jobs: Sequence[Job], sink: JobSink, progress: Progress) -> None:
        queue: deque[Job] = deque(jobs)
        outputs: dict[str, list[Any]] = {}
        failed: dict[str, str] = {}
        while queue:
            job = queue.popleft()
            broken = [n for n in job.needs if n in failed]
            if broken:
                queue.extend(sink.failed(job, f"needs {broken[0]}, which failed: {failed[broken[0]]}", ""))
                failed[job.id] = f"needs {broken[0]}"
                continue
            missing = [n for n in job.needs if n not in outputs]
            if missing:
                raise RuntimeError(f"{job.id} needs {', '.join(missing)}, which did not run before it")
            sink.started(job, "local")
            produced: list[Any] = []
            try:
                for out in job.execute({n: outputs[n] for n in job.needs}, progress):
                    sink.accept(job, out)
                    produced.append(out)
            except (KeyboardInterrupt, UserError):
                raise
            except Exception as exc:
                failed[job.id] = f"{type(exc).__name__}: {exc}"
                queue.extend(sink.failed(job, failed[job.id], traceback.format_exc()))
                continue
            queue.extend(sink.done(job))
            if any(job.id in q.needs for q in queue):
                outputs[job.id] = produced
            for done_id in [i for i in outputs if not any(i in q.needs for q in queue)]:
                del outputs[done_id]


@hookimpl
def harness_register_executors(register):
    register(LocalExecutor)
