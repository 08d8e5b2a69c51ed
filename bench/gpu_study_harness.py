"""Run the ``harness`` command in this process and record, per job, its wall time and peak GPU memory.

    python bench/gpu_study_harness.py JOBS.json run --all -r registry.toml --yes

The harness's own ``local`` executor runs the jobs (fine-tune per model, generation per model,
scoring per metric); the executor's sink is wrapped so that each job's start and end are timed
and, on a GPU, its peak memory read: PyTorch's peak allocated and reserved bytes (reset when the
job starts) and the device's used memory as NVML reports it, sampled every 0.2 s. The records go
to JOBS.json as each job ends. Nothing of the harness is changed: the wrapper sits between the
executor and the run's ``JobSink`` (``harness.api``), whose calls it passes on unchanged.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any


class GpuSampler:
    """The device's used memory (MiB) every ``every`` seconds, through NVML (nvidia-ml-py), in a thread."""

    def __init__(self, every: float = 0.2):
        self.samples: list[tuple[float, float]] = []
        self.every = every
        self._stop = threading.Event()
        self._handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no GPU, no NVML: nothing to sample
            return
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            info = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
            self.samples.append((time.time(), info.used / 2**20))
            self._stop.wait(self.every)

    def peak(self, start: float, end: float) -> float | None:
        used = [m for t, m in self.samples if start - self.every <= t <= end + self.every]
        return round(max(used) / 1024, 2) if used else None

    def stop(self) -> None:
        self._stop.set()


class TimingSink:
    """A ``JobSink`` that times the jobs it hears of and passes every call on to the run's sink."""

    def __init__(self, sink: Any, path: Path, sampler: GpuSampler):
        self._sink = sink
        self._path = path
        self._sampler = sampler
        self._open: dict[str, dict[str, Any]] = {}
        self.records: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sink, name)

    def started(self, job: Any, where: str) -> Any:
        cuda = _cuda()
        if cuda is not None:
            cuda.reset_peak_memory_stats()
        spec = getattr(job, "spec", None)
        self._open[job.id] = {
            "job": job.id, "kind": getattr(job, "kind", "?"), "model": getattr(spec, "name", None),
            "metric": getattr(job, "metric", None), "start": time.time(),
        }
        return self._sink.started(job, where)

    def accept(self, job: Any, out: Any) -> Any:
        return self._sink.accept(job, out)

    def done(self, job: Any) -> Any:
        self._close(job, None)
        return self._sink.done(job)

    def failed(self, job: Any, error: str, traceback: str) -> Any:
        self._close(job, error)
        return self._sink.failed(job, error, traceback)

    def _close(self, job: Any, error: str | None) -> None:
        rec = self._open.pop(job.id, None) or {"job": job.id, "kind": getattr(job, "kind", "?"), "start": time.time()}
        rec["end"] = time.time()
        rec["seconds"] = round(rec["end"] - rec["start"], 2)
        cuda = _cuda()
        if cuda is not None:
            rec["torch_peak_allocated_gib"] = round(cuda.max_memory_allocated() / 2**30, 2)
            rec["torch_peak_reserved_gib"] = round(cuda.max_memory_reserved() / 2**30, 2)
        rec["device_peak_used_gib"] = self._sampler.peak(rec["start"], rec["end"])
        if error:
            rec["error"] = error[:500]
        self.records.append(rec)
        self._path.write_text(json.dumps(self.records, indent=1))


def _cuda() -> Any:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda


def main(argv: list[str]) -> int:
    path, args = Path(argv[0]), argv[1:]
    path.write_text("[]")
    sampler = GpuSampler()
    from harness_executors.local import LocalExecutor

    original = LocalExecutor.run

    def run(self, jobs, sink, progress):
        return original(self, jobs, TimingSink(sink, path, sampler), progress)

    LocalExecutor.run = run
    from harness.cli import main as harness_main

    started = time.time()
    code = 0
    try:
        harness_main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sampler.stop()
        records = json.loads(path.read_text())
        path.write_text(json.dumps(records, indent=1))
        print(f"gpu_study_harness: exit {code} after {time.time() - started:.1f} s; {len(records)} jobs timed", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
