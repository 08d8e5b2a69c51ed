"""GPU benchmark of the ray executor: two generation jobs as two fractional Ray workers on one GPU vs the local executor.

Two models (two entries over one random-weight bf16 checkpoint at the Llama-2-7B shape; no
weights can be downloaded on the GPU machine) each get one :class:`harness.pipeline.jobs.GenerateJob`
over the same test prompts and two decoding configs (greedy, seeded top-k sampling) — the
jobs the runner makes, run by the executors themselves:

* ``local``: the ``local`` executor runs the two jobs one after another in this process;
* ``ray``: the ``ray`` executor starts a local Ray instance and runs both jobs at once, each
  asking for half the GPU (``num_gpus_generate = 0.5``), in two worker processes.

Workers build their plugins from entry points, as in a real run: the harness is not installed
on the GPU machine, so this script writes a ``harness.plugins`` entry-point file for the
plugins it uses into a folder on ``PYTHONPATH``. Speed only: random weights say nothing of quality.

    python bench/gpu_ray.py --out $OUT/gpu_ray.json            # on the GPU machine
    python bench/gpu_ray.py --smoke --out /tmp/gpu_ray.json    # a toy shape on CPU, to check the script
    python bench/gpu_ray.py --from-json bench/results/gpu_ray.json   # write the table into BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATHS = [ROOT, *sorted(p for p in (ROOT / "plugins").iterdir() if p.is_dir())]
ENTRY_POINTS = {
    "peft_lora": "harness_models.peft_lora",
    "transformers": "harness_engines.transformers_engine",
    "standard": "harness_decoders.standard",
    "local_executor": "harness_executors.local",
    "ray_executor": "harness_executors.ray_executor",
}


def install_entry_points(site: Path) -> None:
    info = site / "harness_bench_plugins-0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-bench-plugins\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[harness.plugins]\n" + "".join(f"{k} = {v}\n" for k, v in ENTRY_POINTS.items()))
    entries = [str(site), *map(str, PATHS)]
    os.environ["PYTHONPATH"] = os.pathsep.join([*entries, *filter(None, [os.environ.get("PYTHONPATH")])])  # Ray's workers inherit it
    for p in reversed(entries):
        if p not in sys.path:
            sys.path.insert(0, p)


def build_smoke_checkpoint(out: Path, tok_dir: Path) -> None:
    import shutil

    import torch
    import transformers

    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                   vocab_size=4096, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    shutil.copytree(tok_dir, out, dirs_exist_ok=True)


class Sink:
    """Counts what the jobs yield (the runner's sink would store it)."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}
        self.tokens = 0
        self.failed: list[str] = []
        self.where: dict[str, str] = {}
        self.started_at: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def started(self, job, where):
        self.where[job.id] = where
        self.started_at[job.id] = time.perf_counter()

    def accept(self, job, out):
        from harness.pipeline.jobs import GenBatch

        if isinstance(out, GenBatch):
            for r in out.results:
                self.texts[f"{out.model}/{r.key}"] = r.text
                self.tokens += r.new_tokens

    def done(self, job):
        self.seconds[job.id] = round(time.perf_counter() - self.started_at.get(job.id, time.perf_counter()), 2)
        return []

    def failed(self, job, error, tb):
        self.failed.append(f"{job.id}: {error}\n{tb[-2000:]}")
        return []


def make_jobs(ckpt: Path, n_examples: int, new_tokens: int, batch: int, device: str) -> list:
    from harness import data
    from harness.api import Example, ModelSpec
    from harness.pipeline.jobs import GenerateJob
    from harness.registry import SweepConfig
    from harness_decoders.standard import StandardDecoder

    records = [json.loads(line) for line in (ROOT / "plugins/datasets/harness_datasets/data/synthetic_alpaca.jsonl").read_text().splitlines()]
    examples = tuple(Example.make(r["instruction"], r.get("input", ""), r["output"]) for r in records[:n_examples])
    decoder = StandardDecoder()
    configs = tuple(
        SweepConfig(name, params, decoder.resolve(params, new_tokens))
        for name, params in [("greedy", {"top_k": 50, "num_beams": 1, "temperature": 0.0}), ("top_k_50_temp_0.8", {"top_k": 50, "num_beams": 1, "temperature": 0.8})]
    )
    jobs = []
    for name in ("model-a", "model-b"):
        spec = ModelSpec(name=name, adapter="peft-lora", base_model=str(ckpt), finetune=None, options={"dtype": "bfloat16" if device == "cuda" else "float32", "device": device})
        jobs.append(GenerateJob(
            id=f"generate/{name}", spec=spec, identity={"bench": name, "checkpoint": ckpt.name}, template_id=data.template_identity("alpaca", None),
            engine="transformers", engine_settings={"batch_size": batch}, engine_identity={"engine": "transformers", "bench": True},
            configs=configs, examples=examples, sweep_seed=0,
        ))
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu_ray.json")
    ap.add_argument("--work", default="/tmp/gpu-ray-bench")
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--gpu-share", type=float, default=0.5, help="num_gpus_generate for the ray run")
    ap.add_argument("--smoke", action="store_true", help="a toy shape on CPU")
    ap.add_argument("--from-json", default=None)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.from_json:
        table = render(json.loads(Path(args.from_json).read_text()))
        print(table)
        if not args.no_write:
            sys.path.insert(0, str(ROOT / "bench"))
            from common import write_section

            write_section("ray-gpu", table, NEW_SECTION)
        return

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    install_entry_points(work / "site")
    t_all = time.perf_counter()
    import torch

    from harness.pipeline import jobs as jobs_mod
    from harness.plugins import build_plugins

    device = "cpu" if args.smoke else "cuda"
    sys.path.insert(0, str(ROOT / "bench"))
    from gpu_adapters import build_checkpoint, build_tokenizer

    tok_dir = work / "tok"
    build_tokenizer(tok_dir)
    ckpt = work / ("ckpt-smoke" if args.smoke else "ckpt-llama")
    t0 = time.perf_counter()
    if not (ckpt / "config.json").exists():
        build_smoke_checkpoint(ckpt, tok_dir) if args.smoke else build_checkpoint("llama", ckpt, tok_dir)
    build_s = time.perf_counter() - t0
    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (smoke)",
                    "torch": torch.__version__, "examples": args.examples, "new_tokens": args.new_tokens, "batch": args.batch,
                    "configs": ["greedy", "top-k 50, temperature 0.8 (seeded per example)"], "checkpoint_build_s": round(build_s, 1)}
    import importlib.metadata as md

    for pkg in ("ray", "transformers", "peft"):
        try:
            report[f"{pkg}_version"] = md.version(pkg)
        except md.PackageNotFoundError:
            report[f"{pkg}_version"] = None
    plugins = build_plugins()
    jobs_mod.use_plugins(plugins)
    jobs = make_jobs(ckpt, args.examples, args.new_tokens, args.batch, device)
    from harness.api import NullProgress

    # local: the two jobs one after another in this process
    sink = Sink()
    t0 = time.perf_counter()
    plugins.create("executor", "local").run(jobs, sink, NullProgress())
    local_s = time.perf_counter() - t0
    report["local"] = {"wall_s": round(local_s, 2), "tokens": sink.tokens, "jobs_s": sink.seconds, "failed": sink.failed}
    local_texts = sink.texts
    Path(args.out).write_text(json.dumps(report, indent=1))  # kept if the ray part runs out of time
    print(f"local: {local_s:.1f} s, {sink.tokens} tokens, {sink.seconds}", flush=True)
    if device == "cuda":
        torch.cuda.empty_cache()

    # ray: both jobs at once, each with a share of the GPU
    settings = {"num_gpus_generate": args.gpu_share if device == "cuda" else 0.0, "num_cpus_generate": 1.0, "poll_seconds": 0.2}
    executor = plugins.create("executor", "ray", settings)
    t0 = time.perf_counter()
    executor.connect()
    connect_s = time.perf_counter() - t0
    sink = Sink()
    t1 = time.perf_counter()
    try:
        executor.run(jobs, sink, NullProgress())
    finally:
        executor.close()
    run_s = time.perf_counter() - t1
    report["ray"] = {"wall_s": round(connect_s + run_s, 2), "start_s": round(connect_s, 2), "run_s": round(run_s, 2), "tokens": sink.tokens,
                     "jobs_s": sink.seconds, "where": sink.where, "failed": sink.failed, "settings": settings}
    same = sum(1 for k, t in sink.texts.items() if local_texts.get(k) == t)
    report["same_text"] = f"{same}/{len(local_texts)}"
    report["total_s"] = round(time.perf_counter() - t_all, 1)
    print(f"ray: start {connect_s:.1f} s + run {run_s:.1f} s, {sink.tokens} tokens, {sink.seconds}, same text {report['same_text']}", flush=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(render(report))


NEW_SECTION = """## The ray executor on one GPU (issue 10)

Script: `bench/gpu_ray.py`, run through the device tool. Two generation jobs (two models over one
random-weight bf16 checkpoint at the Llama-2-7B shape, the same test prompts, a greedy and a seeded
top-k sampling config) run by the `local` executor one after another, and by the `ray` executor at
once as two workers with half the GPU each (`num_gpus_generate = 0.5`) on a Ray instance it starts.
Speed only: random weights say nothing of quality. Raw numbers: `bench/results/gpu_ray.json`.

"""


def render(r: dict) -> str:
    loc, ray_ = r["local"], r["ray"]
    speed = loc["wall_s"] / ray_["wall_s"] if ray_["wall_s"] else float("nan")
    lines = [
        f"Measured {r['date']} on one {r['device']} (torch {r['torch']}, transformers {r['transformers_version']}, ray {r['ray_version']}); "
        f"{r['examples']} prompts × 2 configs × 2 models, {r['new_tokens']} new tokens at most, engine batch {r['batch']}. One run each.",
        "",
        "| executor | wall (s) | of which Ray start (s) | job model-a (s) | job model-b (s) | new tokens | tok/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| local (one after another) | {loc['wall_s']:.1f} | – | {loc['jobs_s'].get('generate/model-a', 0):.1f} | {loc['jobs_s'].get('generate/model-b', 0):.1f} | {loc['tokens']:,} | {loc['tokens'] / loc['wall_s']:,.0f} |",
        f"| ray, 2 workers × 0.5 GPU (at once) | {ray_['wall_s']:.1f} | {ray_['start_s']:.1f} | {ray_['jobs_s'].get('generate/model-a', 0):.1f} | {ray_['jobs_s'].get('generate/model-b', 0):.1f} | {ray_['tokens']:,} | {ray_['tokens'] / ray_['wall_s']:,.0f} |",
        "",
        f"Ray vs local, whole wall time: **{speed:.2f}×**. Same text as the local run: {r['same_text']} generations. "
        "Multi-GPU scaling is not yet measured (only the one-GPU kind was lent).",
    ]
    if loc["failed"] or ray_["failed"]:
        lines.append(f"Failed jobs: local {loc['failed']}, ray {ray_['failed']}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
