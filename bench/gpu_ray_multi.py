"""The ray executor on all the GPUs of one host against the local executor on one of them (issue 23).

The issue's experiment, through the whole harness (`harness run --all`, its runner, executors and store):
``--models`` (default 4) models at the Llama-2-7B shape over one random-weight bf16 checkpoint built on
the machine (no weights can be downloaded there), each LoRA-fine-tuned for ``--steps`` steps (cut short;
a different seed per model, so every model gets its own adapter), then the embedded default's 13
decoding configs over ``--examples`` (64) synthetic test prompts, scored by BLEU (and ROUGE-L with
``--metrics bleu,rouge_l`` where rouge-score is installed). Two runs, each cold in a fresh output folder:

* ``local``: ``[executor] name = "local"`` with ``CUDA_VISIBLE_DEVICES`` set to the first GPU;
* ``ray``: ``[executor] name = "ray"`` (a local Ray instance with every GPU of the host: one GPU per
  job, the runner splitting each model's configs over ``ceil(GPUs / models)`` jobs).

Recorded per run: wall time; per stage the summed job time (the store's ``stage_seconds``) and, under
ray, the wall window from the first job of the stage starting to the last ending (from the ``ray:``
lines of ``harness.log``) with every job's GPU and duration; GPU utilisation of every GPU over time
(NVML through ``nvidia-ml-py``, sampled every ``--sample-s`` in a thread of this process). Then the
speed-up (local wall / ray wall) against the number of GPUs (goal: ≥ 0.85 × N), and whether the two
reports (``harness report --format json``) and the stored texts are identical. Speed only: random
weights say nothing of quality.

    python bench/gpu_ray_multi.py --out $OUT/gpu_ray_multi.json            # on the GPU host (bench/gpu_ray_multi.sh)
    python bench/gpu_ray_multi.py --only local ... ; ... --only ray ...   # the two runs in two calls (same warm machine)
    python bench/gpu_ray_multi.py --from-json bench/results/gpu_ray_multi.json   # the table into BENCHMARKS.md
    .venv/bin/python bench/gpu_ray_multi.py --dry-cpu                       # toy models, no GPU: checks the script end to end

``--dry-cpu`` runs the same two runs on this machine's CPUs with tiny random Llamas (the ray run with
one CPU per job, ``RAY_AUTH_MODE=disabled`` so that no token is written into the home folder) and
measures nothing; it prints the table and writes BENCHMARKS.md only with ``--write``.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in [ROOT, ROOT / "bench", *sorted((ROOT / "plugins").iterdir())]:
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
from common import write_section  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "gpu_ray_multi.json"
MARKER = "ray-multi-gpu"
NEW_SECTION = """## The ray executor on several GPUs of one host (issue 23)

Script: `bench/gpu_ray_multi.py` (prepared by `bench/gpu_ray_multi_prepare.sh`, run by
`bench/gpu_ray_multi.sh` through the device tool). `harness run --all` of the issue's experiment — 7B-shape
models over one random-weight bf16 checkpoint, each LoRA-fine-tuned a few steps, the 13 default configs
over 64 synthetic prompts, BLEU — once with the `local` executor on one GPU and once with the `ray`
executor on every GPU of the host, each cold in a fresh output folder. Speed only: random weights say
nothing of quality. Raw numbers (with the GPU samples): `bench/results/gpu_ray_multi.json`.

"""


# --------------------------------------------------------------------------- GPU (or CPU) utilisation over time


class Sampler:
    """Utilisation of every GPU (NVML) every ``every`` seconds in a thread; with no GPU, the machine's CPU busy share (/proc/stat)."""

    def __init__(self, every: float = 0.5):
        self.every = every
        self.samples: list[tuple[float, list[float]]] = []  # (seconds since start, one % per device)
        self.devices: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._cpu_last: tuple[int, int] | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self.devices = [f"GPU {i}" for i in range(len(self._handles))]
        except Exception:
            self._nvml = None
        if not self._handles:
            self.devices = ["CPU (all cores)"]

    def _read(self) -> list[float]:
        if self._handles:
            return [float(self._nvml.nvmlDeviceGetUtilizationRates(h).gpu) for h in self._handles]
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle, total = fields[3] + fields[4], sum(fields)
        last, self._cpu_last = self._cpu_last, (idle, total)
        if last is None or total == last[1]:
            return [0.0]
        return [round(100.0 * (1 - (idle - last[0]) / (total - last[1])), 1)]

    def __enter__(self) -> Sampler:
        self.t0 = time.perf_counter()
        self._read()

        def loop() -> None:
            while not self._stop.wait(self.every):
                try:
                    self.samples.append((round(time.perf_counter() - self.t0, 2), self._read()))
                except Exception:  # a sample missed is no reason to stop measuring
                    pass

        self._thread = threading.Thread(target=loop, name="utilisation-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self) -> dict[str, Any]:
        """Per device: mean utilisation and the share of samples at ≥ 50% (busy)."""
        out = {}
        for i, name in enumerate(self.devices):
            values = [s[1][i] for s in self.samples if i < len(s[1])]
            if values:
                out[name] = {"mean_pct": round(sum(values) / len(values), 1), "busy_share": round(sum(v >= 50 for v in values) / len(values), 3)}
        return out


def sparkline(samples: list[tuple[float, list[float]]], device: int, wall: float, width: int = 40) -> str:
    """A device's utilisation over the run as ``width`` characters (mean per time slice, ▁ to █; space for no sample)."""
    bars = " ▁▂▃▄▅▆▇█"
    slices: list[list[float]] = [[] for _ in range(width)]
    for t, values in samples:
        if device < len(values) and wall > 0:
            slices[min(width - 1, int(t / wall * width))].append(values[device])
    return "".join(bars[1 + min(7, int(sum(s) / len(s) / 100 * 8))] if s else " " for s in slices)


# --------------------------------------------------------------------------- the experiment


def build_models(work: Path, dry: bool) -> Path:
    """The tokenizer and the one random-weight checkpoint every model entry uses (built once per machine)."""
    from gpu_adapters import build_checkpoint, build_tokenizer
    from gpu_ray import build_smoke_checkpoint

    ckpt = work / ("ckpt-toy" if dry else "ckpt-llama-7b")
    if not (ckpt / "config.json").exists():
        tok = work / "tokenizer"
        build_tokenizer(tok)
        tmp = ckpt.with_name(ckpt.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        build_smoke_checkpoint(tmp, tok) if dry else build_checkpoint("llama", tmp, tok)
        tmp.rename(ckpt)
    return ckpt


def registry_text(side: str, out_dir: Path, ckpt: Path, args: argparse.Namespace, executor: str) -> str:
    options = 'dtype = "float32"\ndevice = "cpu"\n' if args.dry_cpu else 'dtype = "bfloat16"\ndevice = "cuda"\n'
    models = "".join(
        f'''
[[models]]
name = "m{i}"
adapter = "peft-lora"
base_model = "{ckpt}"
template = "alpaca"
{options}
[models.finetune]
r = 16
alpha = 32
max_steps = {args.steps}
batch_size = {args.train_batch}
learning_rate = 2e-4
max_seq_length = {args.seq}
seed = {i}
'''
        for i in range(args.models)
    )
    metrics = ", ".join(f'"{m}"' for m in args.metrics.split(","))
    return f'''# bench/gpu_ray_multi.py: the {side} run
[experiment]
name = "ray-multi-{side}"
output_dir = "{out_dir}"
seed = 0

[dataset]
source = "synthetic"
test_size = {args.examples}
train_size = {args.steps * args.train_batch}
seed = 42

[engine]
name = "transformers"
batch_size = {args.batch}
{models}
[sweep]
decoder = "standard"
mode = "one-at-a-time"
include_defaults = true
max_new_tokens = {args.new_tokens}
seed = 0

[sweep.defaults]
top_k = 50
num_beams = 1
temperature = 0.8

[sweep.vary]
top_k = [10, 25, 40, 75]
num_beams = [2, 3, 5, 10]
temperature = [0.0, 0.25, 0.5, 1.0]

[metrics]
names = [{metrics}]

[executor]
{executor}
'''


JOB_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ray: (\w+) (\S+): (?:started on (.+)|done in ([\d.]+) s \(.*?\) on (.+))$")


def ray_jobs(log: Path, since: float) -> list[dict[str, Any]]:
    """Every job of the ray run from its ``harness.log`` lines: kind, model, where, start and end (s after ``since``)."""
    open_: dict[tuple[str, str, str], list[float]] = {}
    jobs = []
    for line in log.read_text().splitlines():
        m = JOB_LINE.match(line)
        if not m:
            continue
        t = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S").timestamp() - since
        if m[4] is not None:
            open_.setdefault((m[2], m[3], m[4]), []).append(t)
        else:
            starts = open_.get((m[2], m[3], m[6])) or [t - float(m[5])]
            start = starts.pop(0)
            jobs.append({"kind": m[2], "name": m[3], "where": m[6], "start_s": round(start, 1), "end_s": round(t, 1), "seconds": float(m[5])})
    return jobs


def harness_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from harness.cli import main; main()", *args]


def run_once(name: str, folder: Path, ckpt: Path, args: argparse.Namespace, env: dict[str, str], executor: str, sample_s: float) -> dict[str, Any]:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    registry = folder / "registry.toml"
    registry.write_text(registry_text(name, folder / "out", ckpt, args, executor))
    print(f"[{name}] harness run --all ({executor.splitlines()[0]})", flush=True)
    t_start = time.time()
    with Sampler(sample_s) as sampler:
        t0 = time.perf_counter()
        proc = subprocess.run(harness_cmd("run", "--all", "-r", str(registry)), env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    (folder / "run.err").write_text(proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"[{name}] harness run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    db = sqlite3.connect(folder / "out" / "harness.sqlite")
    meta = json.loads(db.execute("SELECT metadata FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()[0])
    texts = db.execute("SELECT model, config, example_id, text FROM generations ORDER BY 1, 2, 3").fetchall()
    db.close()
    rep = subprocess.run(harness_cmd("report", "--format", "json", "-r", str(registry)), env=env, capture_output=True, text=True)
    if rep.returncode != 0:
        sys.exit(f"[{name}] harness report failed:\n{rep.stderr[-2000:]}")
    (folder / "report.json").write_text(rep.stdout)
    (folder / "texts.json").write_text(json.dumps(texts))
    stats = meta["stats"]
    result = {
        "wall_s": round(wall, 2),
        "stage_job_seconds": {k: round(v, 2) for k, v in stats["stage_seconds"].items()},
        "counts": {k: stats[k] for k in ("trained", "generated", "scored")},
        "failed": stats["failed_cells"],
        "utilisation": sampler.summary(),
        "devices": sampler.devices,
        "samples": sampler.samples,
    }
    if "ray" in executor:
        jobs = ray_jobs(folder / "out" / "harness.log", t_start)
        result["jobs"] = jobs
        result["stage_windows"] = {
            kind: {"start_s": min(j["start_s"] for j in js), "end_s": max(j["end_s"] for j in js)}
            for kind in ("train", "generate", "score") if (js := [j for j in jobs if j["kind"] == kind])
        }
    print(f"[{name}] {wall:.1f} s; stages (summed job seconds) {result['stage_job_seconds']}; utilisation {result['utilisation']}", flush=True)
    return result


def compare(work: Path) -> dict[str, Any]:
    reports = {side: json.loads((work / side / "report.json").read_text()) for side in ("local", "ray")}
    texts = {side: {tuple(r[:3]): r[3] for r in json.loads((work / side / "texts.json").read_text())} for side in ("local", "ray")}
    same = sum(1 for k, t in texts["local"].items() if texts["ray"].get(k) == t)
    return {"same_report": reports["local"] == reports["ray"], "same_texts": f"{same}/{len(texts['local'])}"}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for pkg in ("ray", "torch", "transformers", "peft", "trl", "nvidia-ml-py"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def machine(dry: bool) -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    if dry:
        return info | {"gpus": 0, "gpu": "none (--dry-cpu)"}
    import torch

    n = torch.cuda.device_count()
    info |= {"gpus": n, "gpu": torch.cuda.get_device_name(0) if n else "none"}
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True).stdout.split()[0]
    except Exception:
        pass
    return info


def check_installed() -> None:
    eps = {ep.name for ep in md.entry_points(group="harness.plugins")}
    missing = [n for n in ("ray_executor", "local_executor", "peft_lora", "transformers", "synthetic", "bleu") if n not in eps]
    if missing:
        sys.exit(f"the harness is not installed with its entry points (missing: {', '.join(missing)}); "
                 "install it (pip install --no-deps --target DIR . and DIR on PYTHONPATH, as bench/gpu_ray_multi.sh does)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="where the raw numbers go (default: bench/results/gpu_ray_multi.json; --dry-cpu: WORK/gpu_ray_multi.json)")
    ap.add_argument("--work", default=None, help="working folder (default /tmp/gpu-ray-multi, or /tmp/gpu-ray-multi-dry)")
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64, help="the engine's batch_size")
    ap.add_argument("--steps", type=int, default=10, help="fine-tuning steps per model (cut short)")
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512, help="max_seq_length of the fine-tunes")
    ap.add_argument("--metrics", default="bleu")
    ap.add_argument("--sample-s", type=float, default=0.5)
    ap.add_argument("--only", choices=("local", "ray"), default=None, help="one of the two runs (the other one's results stay in WORK)")
    ap.add_argument("--prepare-only", action="store_true", help="build the checkpoint and hash it, run nothing (a call of its own on the GPU machine)")
    ap.add_argument("--dry-cpu", action="store_true", help="tiny toy models on the CPU, no GPU: checks the script, measures nothing")
    ap.add_argument("--write", action="store_true", help="with --dry-cpu: write BENCHMARKS.md all the same")
    ap.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    ap.add_argument("--from-json", default=None, help="only render this results file (and write it into BENCHMARKS.md)")
    args = ap.parse_args()
    if args.from_json:
        data = json.loads(Path(args.from_json).read_text())
        table = render(data)
        print(table)
        if not args.no_write and not data.get("dry"):
            write_section(MARKER, table, NEW_SECTION)
        return
    if args.dry_cpu:
        defaults = ap.parse_args([])
        for key, value in {"examples": 4, "new_tokens": 6, "batch": 4, "steps": 2, "train_batch": 2, "seq": 256}.items():
            if getattr(args, key) == getattr(defaults, key):
                setattr(args, key, value)
    check_installed()
    work = Path(args.work or ("/tmp/gpu-ray-multi-dry" if args.dry_cpu else "/tmp/gpu-ray-multi"))
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else (work / "gpu_ray_multi.json" if args.dry_cpu else RESULTS)
    partial = work / "partial.json"
    data: dict[str, Any] = json.loads(partial.read_text()) if args.only and partial.exists() else {}
    experiment = {k: getattr(args, k) for k in ("models", "examples", "new_tokens", "batch", "steps", "train_batch", "seq", "metrics")} | {"configs": 13}
    if data and data.get("experiment") != experiment:
        sys.exit(f"{partial} holds a run of another experiment ({data.get('experiment')}): run both again without --only, or remove it")

    t0 = time.perf_counter()
    ckpt = build_models(work, args.dry_cpu)
    build_s = time.perf_counter() - t0
    from harness_models import loading

    loading.fingerprint(str(ckpt), work)  # hashing the 13 GB checkpoint once, before either run is timed
    data |= {
        "date": time.strftime("%Y-%m-%d %H:%M"), "dry": args.dry_cpu, "machine": machine(args.dry_cpu), "versions": versions(),
        "experiment": experiment,
        "prepare_s": round(time.perf_counter() - t0, 1), "checkpoint_build_s": round(build_s, 1),
    }
    if args.prepare_only:
        print(f"prepared {ckpt} in {data['prepare_s']} s", flush=True)
        return
    n_gpus = data["machine"]["gpus"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    if args.dry_cpu:
        env |= {"CUDA_VISIBLE_DEVICES": "", "RAY_AUTH_MODE": "disabled"}  # no ~/.ray/auth_token written on a shared machine
    sides = [args.only] if args.only else ["local", "ray"]
    for side in sides:
        if side == "local":
            side_env = env if args.dry_cpu else env | {"CUDA_VISIBLE_DEVICES": "0"}
            data["local"] = run_once("local", work / "local", ckpt, args, side_env, 'name = "local"', args.sample_s)
        else:
            executor = 'name = "ray"\npoll_seconds = 0.2\n'
            data["ray"] = run_once("ray", work / "ray", ckpt, args, env, executor, args.sample_s)
            data["ray"]["gpus_used"] = n_gpus
        partial.write_text(json.dumps(data))
    if "local" in data and "ray" in data and (work / "local" / "report.json").exists() and (work / "ray" / "report.json").exists():
        data |= compare(work)
        data["speedup"] = round(data["local"]["wall_s"] / data["ray"]["wall_s"], 3)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    print(f"raw numbers: {out}", flush=True)
    if "speedup" in data:
        table = render(data)
        print(table)
        if not args.no_write and (not args.dry_cpu or args.write):
            write_section(MARKER, table, NEW_SECTION)


def render(d: dict[str, Any]) -> str:
    m, v, e = d["machine"], d["versions"], d["experiment"]
    loc, ray_ = d["local"], d["ray"]
    n = max(1, m["gpus"])
    speed = d["speedup"]
    header = (f"Measured {d['date']} on {'one host with ' + str(m['gpus']) + ' × ' + m['gpu'] if m['gpus'] else 'the CPUs only (--dry-cpu: toy models, measures nothing)'}"
              f"{', driver ' + m['driver'] if m.get('driver') else ''}, {m['cpus']} CPU cores, Python {m['python']}; "
              + ", ".join(f"{k} {x}" for k, x in v.items() if x) + ". "
              f"{e['models']} models × {e['configs']} configs × {e['examples']} prompts, {e['new_tokens']} new tokens at most, engine batch {e['batch']}; "
              f"fine-tunes of {e['steps']} steps × {e['train_batch']} × ≤ {e['seq']} tokens; metrics {e['metrics']}. One run each, cold.")
    stage = lambda r, k: r["stage_job_seconds"].get(k, 0.0)  # noqa: E731
    win = lambda k: ray_.get("stage_windows", {}).get(k)  # noqa: E731
    span = lambda k: f"{win(k)['end_s'] - win(k)['start_s']:.0f} ({win(k)['start_s']:.0f}–{win(k)['end_s']:.0f})" if win(k) else "–"  # noqa: E731
    lines = [
        header, "",
        "| run | wall (s) | train (s) | generate (s) | score (s) | GPUs | mean utilisation per GPU |",
        "|---|---:|---:|---:|---:|---:|---|",
        f"| local, one GPU | {loc['wall_s']:.1f} | {stage(loc, 'train'):.1f} | {stage(loc, 'generate'):.1f} | {stage(loc, 'score'):.1f} | 1 | "
        + ", ".join(f"{k} {x['mean_pct']:.0f}%" for k, x in loc["utilisation"].items()) + " |",
        f"| ray, all GPUs: summed job time | {ray_['wall_s']:.1f} | {stage(ray_, 'train'):.1f} | {stage(ray_, 'generate'):.1f} | {stage(ray_, 'score'):.1f} | {m['gpus']} | "
        + ", ".join(f"{k} {x['mean_pct']:.0f}%" for k, x in ray_["utilisation"].items()) + " |",
        f"| ray: stage wall window, s after start | | {span('train')} | {span('generate')} | {span('score')} | | |",
        "",
        (f"Speed-up (local wall / ray wall): {speed:.2f}× — a dry run on toy models and the CPUs, not a measurement. " if d.get("dry") else
         f"Speed-up (local wall / ray wall): **{speed:.2f}×** on {m['gpus']} GPU{'s' if m['gpus'] != 1 else ''} = {speed / n:.2f} × N "
         f"(goal ≥ 0.85 × N = {0.85 * n:.2f}×: **{'met' if speed >= 0.85 * n else 'missed'}**). ")
        + 
        f"Reports identical: **{'yes' if d['same_report'] else 'no'}**; stored texts identical: {d['same_texts']}. "
        f"Preparing (checkpoint, fingerprint): {d['prepare_s']:.0f} s, not counted.",
        "",
        "Utilisation over the ray run (each character a slice of its wall time, ▁ idle to █ busy):",
        "",
        "```",
        *[f"{name:>15} |{sparkline(ray_['samples'], i, ray_['wall_s'])}|" for i, name in enumerate(ray_["devices"])],
        "```",
    ]
    if ray_.get("jobs"):
        lines += ["", "Jobs of the ray run (s after its start): " + "; ".join(
            f"{j['kind']} {j['name']} on {j['where'].split('·')[-1].strip()} {j['start_s']:.0f}–{j['end_s']:.0f}" for j in sorted(ray_["jobs"], key=lambda j: j["start_s"]))]
    if loc["failed"] or ray_["failed"]:
        lines.append(f"Failed cells: local {loc['failed']}, ray {ray_['failed']}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
