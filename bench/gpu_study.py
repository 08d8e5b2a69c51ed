"""The reference study end to end on one GPU through ``harness run --all`` (issue 21): where the time goes.

On the GPU machine (nothing can be downloaded there; the harness is not installed, its plugins are
found through an entry-point file written here, as bench/gpu_ray.py does):

1. build the inputs (bench/gpu_study_inputs.py): random-weight checkpoints of Llama-2-7B,
   Mistral-7B and Phi-2 with tokenizers trained on the machine, roberta-large's shape for
   BERTScore, 52,002 Alpaca-length records;
2. write the GPU variant of the study's registry (bench/gpu_study.toml: the study's settings but
   for local inputs and ``max_steps``) and run ``harness run --all`` on it in a subprocess
   (bench/gpu_study_harness.py: each job — a model's fine-tune, a model's generation, a metric's
   scoring — timed, with its peak GPU memory);
3. read what the run recorded (the store, the adapters' summaries) into the stage table: fine-tune
   tokens/s and model FLOPs utilisation per model, peak memory per job, generation seconds per
   config kind (greedy, sampled, beams) per model, scoring seconds per metric;
4. optionally (``--compare``) train each named model for ``--compare-steps`` steps with the
   settings the study ran with before issue 21 and with the new defaults, same seed and examples
   (bench/finetune_defaults.py): loss curves and tokens/s side by side;
5. project the full study on that card: one epoch of the 51,902 training records per model at the
   measured steady tokens/s, the 13 configs × 100 examples × 256 tokens as measured (scaled when
   the run was smaller), the three metrics over 3,900 outputs, model loading as measured.

Everything goes into ``--out`` (a JSON, rewritten after every stage, so a call cut short keeps
what finished). ``--from-json A.json [B.json …]`` merges the JSONs of several calls and writes
the BENCHMARKS.md section and the stage table in docs/study.md.

**Model FLOPs utilisation**: 4N FLOPs a trained token (the forward pass 2N, the backward pass to
the activations 2N; LoRA computes no gradient for the frozen weights, so the usual 6N of full
training does not apply; recomputation under gradient checkpointing is not counted), N the
model's parameters less the input embedding (a lookup); against the card's dense bf16 peak
(989 TFLOP/s for an H100 SXM or an H200). Attention's own FLOPs (~1% at these lengths) are left out.

**Device calls** (estimates for one H100 from the GPU figures in BENCHMARKS.md: the fast loop at
~8.75 ms a step at the 7B shape, beams through ``generate`` at ~84 ms a step for 320 rows, QLoRA
at 6.7k tokens/s before the new defaults; random weights never stop before ``max_new_tokens``,
so every answer is 256 tokens):

* here, once: ``bash bench/gpu_study_prepare.sh`` writes ``.gpuwheels/study/study.tar.part-aa`` (one
  ~19 MiB part: unsloth, bitsandbytes, trl, datasets, torchao, rouge-score, bert-score, …).
* call 1, ~8.5 min — install 0.3; inputs ~2 (text, three tokenizers, data, the Phi-2, Mistral and
  roberta checkpoints); ``harness run --all`` ~6 (fine-tune 300 steps: Phi-2 ~0.5, Mistral ~1.2
  with unsloth's start; generation: Phi-2 ~2.3 — fast loop compile 0.5, 9 configs 0.3, 4 beam
  configs 1.5 —, Mistral ~2.3 through ``generate``: its sliding-window cache keeps it out of the
  fast loop; scoring ~0.5)::

      run(command="bash bench/gpu_study.sh --models phi-2 mistral-7b --out $OUT/study_1.json",
          carry=[".gpuwheels/study"], timeout_s=600)

* call 2 right after (within the 30 s the machine stays warm: /tmp/study and the store are
  reused), ~8.7 min — the Llama-2 checkpoint 0.5; the run over all three models ~5.5 (Phi-2
  and Mistral already done; Llama-2: fine-tune ~1.2, generation ~4 of which beams ~2.2, scoring
  of all); then before-vs-new fine-tuning, 100 steps each, for Llama-2 (~1.7) and Phi-2 (~1)::

      run(command="bash bench/gpu_study.sh --compare llama-2-7b phi-2 --out $OUT/study_2.json",
          carry=[".gpuwheels/study"], timeout_s=600)

  Carrying the part again lets the call run on a fresh machine too (it then rebuilds the inputs
  and redoes the other models' work: pass ``--models llama-2-7b`` there to keep it in time).
* vLLM (two more calls; ``bash scripts/gpu-vllm-wheels.sh .gpuwheels/vllm`` writes two ~58 MiB
  parts): call 3 with ``carry=[".gpuwheels/vllm/vllm.tar.part-aa"]`` runs ``mkdir -p /tmp/parts &&
  cp .gpuwheels/vllm/vllm.tar.part-* /tmp/parts/``; call 4 with ``carry=[".gpuwheels/vllm/vllm.tar.part-ab"]``
  runs the same copy then ``bash bench/gpu_study.sh --engine vllm --models mistral-7b --out
  $OUT/study_vllm.json``: the adapter trained in call 1, generated and scored through vLLM (engine
  start ~1 min, then the sweep; vLLM serves the LoRA on the 16-bit base weights, not on the
  de-quantised NF4 ones the transformers engine merges it into).
* here: ``python bench/gpu_study.py --from-json study_1.json study_2.json [study_vllm.json]``.

One call instead (~8.7 min; all three models, a smaller sweep, projection scaled):
``bash bench/gpu_study.sh --steps 100 --examples 32 --max-new-tokens 128 --compare-steps 0``. The
flags that trade time: ``--steps`` (fine-tuning), ``--examples`` (test records: beams cost in
proportion, greedy and sampled configs hardly), ``--max-new-tokens`` (every config in proportion),
``--models``, ``--compare``/``--compare-steps``, and ``--budget`` (seconds this script may take,
555 by default: the run is stopped as Ctrl-C would stop it, keeping what finished, early enough
to write the JSON within a 600 s call).

``--smoke``: the same code path on a CPU at toy size (a few minutes): toy checkpoints of the three
architectures, a small data set, 2 steps, 4 test examples, 8 new tokens, all 13 configs, the three
metrics. It needs unsloth (.venv-study): ``.venv-study/bin/python bench/gpu_study.py --smoke --out /tmp/s.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PATHS = [ROOT, *sorted(p for p in (ROOT / "plugins").iterdir() if p.is_dir())]
for _p in [BENCH, *PATHS]:
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import gpu_study_inputs as inputs  # noqa: E402

#: the full study: Alpaca's records less the 100 test ones, one epoch; 13 configs x 100 examples x 256 tokens
FULL = {"train_records": 51902, "test_examples": 100, "max_new_tokens": 256, "configs": 13, "metrics": 3}
#: dense bf16 peak FLOP/s by card name fragment (datasheets: H100 SXM and H200 989.4 TFLOP/s, H100 PCIe 756)
PEAK_BF16 = {"H100 PCIe": 756e12, "H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}
STUDY_MODELS = tuple(inputs.MODELS)


# --------------------------------------------------------------------------- environment


def install_entry_points(site: Path) -> dict[str, str]:
    """Every plugin of pyproject.toml as a ``harness.plugins`` entry point in ``site`` (the harness is not installed)."""
    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["harness.plugins"]
    info = site / "harness_study_plugins-0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-study-plugins\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[harness.plugins]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    return eps


def run_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    entries = [str(work / "site"), *map(str, PATHS)]
    env["PYTHONPATH"] = os.pathsep.join([*entries, *filter(None, [env.get("PYTHONPATH")])])
    env.update(HARNESS_CACHE=str(work / "cache"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               UNSLOTH_DISABLE_STATISTICS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


def write_registry(work: Path, models: list[str], *, steps: int, examples: int, max_new_tokens: int, engine: str, finetune: str = "") -> Path:
    """bench/gpu_study.toml with its fields filled and only ``models`` kept."""
    text = (BENCH / "gpu_study.toml").read_text()
    for key, value in {"@INPUTS@": str(work / "inputs"), "@TEST_SIZE@": str(examples), "@STEPS@": str(steps),
                       "@MAX_NEW_TOKENS@": str(max_new_tokens), "@ENGINE@": engine, "@FINETUNE@": finetune}.items():
        text = text.replace(key, value)
    blocks = re.split(r"(?m)^(?=\[\[models\]\]\n)", text)
    head, rest = blocks[0], blocks[1:]
    tail = ""
    if rest:  # the last model block runs until [sweep]
        last, _, tail = rest[-1].partition("\n[sweep]")
        rest[-1], tail = last + "\n", "[sweep]" + tail
    kept = [b for b in rest if re.search(r'(?m)^name = "([^"]+)"', b).group(1) in models]
    path = work / "registry.toml"
    path.write_text(head + "".join(kept) + tail)
    return path


# --------------------------------------------------------------------------- the run


def run_harness(work: Path, registry: Path, timeout: float, log: Any) -> dict[str, Any]:
    """``harness run --all`` on ``registry`` in a subprocess (jobs timed); stopped with SIGTERM at ``timeout``."""
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    jobs = work / "jobs.json"
    cmd = [sys.executable, str(BENCH / "gpu_study_harness.py"), str(jobs), "run", "--all", "-r", str(registry), "--yes"]
    started = time.time()
    with (logs / "run.out").open("w") as out, (logs / "run.err").open("w") as err:
        proc = subprocess.Popen(cmd, cwd=work, env=run_env(work), stdout=out, stderr=err, start_new_session=True)
        try:
            code = proc.wait(timeout=max(10.0, timeout))
            stopped = False
        except subprocess.TimeoutExpired:
            log(f"run: stopping after {timeout:.0f} s (SIGTERM: the harness keeps what finished)")
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
            stopped = True
    wall = time.time() - started
    err_tail = (logs / "run.err").read_text(errors="replace")[-4000:]
    return {"exit": code, "stopped_at_budget": stopped, "wall_seconds": round(wall, 1), "started": started,
            "jobs": json.loads(jobs.read_text()) if jobs.exists() else [], "stderr_tail": err_tail}


def config_kind(params: dict[str, Any]) -> str:
    if int(params.get("num_beams", 1) or 1) > 1:
        return "beams"
    return "greedy" if float(params.get("temperature", 1.0)) == 0.0 else "sampled"


def read_store(work: Path, since: float) -> dict[str, Any]:
    """What the run recorded: adapters, generations per cell, scores per metric, failures, the run's metadata."""
    db = sqlite3.connect(f"file:{work / 'out' / 'harness.sqlite'}?mode=ro", uri=True)
    run = db.execute("SELECT run_id, command, started, finished, status, metadata FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()
    meta = json.loads(run[5]) if run else {}
    adapters = {}
    for model, summary, created in db.execute("SELECT model, summary, created FROM adapters"):
        s = json.loads(summary)
        adapters[model] = {k: s.get(k) for k in ("steps", "seconds", "tokens_seen", "supervised_tokens", "tokens_per_second", "batches",
                                                   "first_loss", "final_loss", "packing", "device", "dtype", "load_in_4bit",
                                                   "gradient_checkpointing", "unsloth", "examples")}
        adapters[model]["loss_history"] = s.get("loss_history", [])
        adapters[model]["created"] = created
        adapters[model]["this_call"] = created >= since
    cells = {(m, c): json.loads(p) for m, c, p in db.execute("SELECT model, config, params FROM cells")}
    gens: dict[str, dict[str, Any]] = {}
    for model, config, n, secs, new, prompt, first, last in db.execute(
        "SELECT g.model, g.config, COUNT(*), SUM(g.seconds), SUM(g.new_tokens), AVG(g.prompt_tokens), MIN(g.created), MAX(g.created) "
        "FROM generations g GROUP BY g.model, g.config"
    ):
        params = cells.get((model, config), {})
        gens.setdefault(model, {})[config] = {"kind": config_kind(params), "n": n, "seconds": round(secs or 0.0, 3), "new_tokens": new,
                                              "prompt_tokens": round(prompt or 0, 1), "num_beams": int(params.get("num_beams", 1) or 1),
                                              "this_call": (first or 0) >= since}
    metrics = {}
    for metric, n, missing, here in db.execute(
        "SELECT metric, SUM(n), SUM(missing), SUM(CASE WHEN updated >= ? THEN n ELSE 0 END) FROM cell_metrics GROUP BY metric", (since,)
    ):
        metrics[metric] = {"scored": n, "missing": missing, "scored_this_call": here}
    failures = [dict(zip(("cell", "stage", "error"), r)) for r in db.execute("SELECT cell, stage, error FROM failures")]
    db.close()
    return {"run": {"status": run[4] if run else None, "seconds": meta.get("seconds"), "stats": meta.get("stats"),
                    "versions": {k: meta.get("versions", {}).get(k) for k in ("torch", "transformers", "peft", "trl", "unsloth", "unsloth_zoo",
                                                                              "bitsandbytes", "datasets", "vllm", "bert-score", "sacrebleu")},
                    "hardware": meta.get("hardware")},
            "adapters": adapters, "generations": gens, "metrics": metrics, "failures": failures}


# --------------------------------------------------------------------------- the stage table and the projection


def non_embedding_params(config_dir: Path) -> int | None:
    """Parameters less the input embedding, from the checkpoint's config (no weights read)."""
    try:
        import transformers

        config = transformers.AutoConfig.from_pretrained(config_dir)
        with __import__("torch").device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(config)
        total = sum(p.numel() for p in model.parameters())
        return total - model.get_input_embeddings().weight.numel()
    except Exception:
        return None


def peak_flops(gpu: str | None) -> float | None:
    for key, value in PEAK_BF16.items():
        if gpu and key in gpu:
            return value
    return None


def steady_tok_s(adapter: dict[str, Any]) -> float | None:
    """Tokens/s after the first steps (a tenth, at most 5): compilation and warm-up left out."""
    hist = adapter.get("loss_history") or []
    steps = adapter.get("steps") or 0
    if len(hist) < 4 or not adapter.get("tokens_seen"):
        return None
    skip = min(5, max(1, steps // 10))
    a, b = hist[skip - 1], hist[-1]
    if b["t"] <= a["t"]:
        return None
    return adapter["tokens_seen"] * (b["step"] - a["step"]) / steps / (b["t"] - a["t"])


def stage_table(result: dict[str, Any]) -> dict[str, Any]:
    """Per model and metric: what each stage took in this call, from the store and the timed jobs.

    Only work done in this call counts (a store carried over from an earlier call holds more):
    a model's train part is filled when its fine-tune ran here, its generate part when
    generations were made here; ``scale`` says how this call's sweep compares to the study's.
    """
    store, jobs = result["store"], result["harness"]["jobs"]
    cfg = result["config"]
    peak = peak_flops((result.get("machine") or {}).get("gpu"))
    scale = {"tokens": FULL["max_new_tokens"] / cfg["max_new_tokens"], "rows": FULL["test_examples"] / cfg["examples"]}
    models: dict[str, Any] = {}
    for model in result["models"]:
        ad = store["adapters"].get(model) or {}
        train_job = next((j for j in jobs if j["kind"] == "train" and j.get("model") == model and not j.get("error")), None)
        gen_job = next((j for j in jobs if j["kind"] == "generate" and j.get("model") == model and not j.get("error")), None)
        row: dict[str, Any] = {"engine": cfg["engine"], "train": None, "generate": None}
        if train_job and ad.get("this_call"):
            n_params = (result.get("params") or {}).get(model)
            steady = steady_tok_s(ad)
            batch = int(((ad.get("batches") or {}).get("micro_batch") or 0) * ((ad.get("batches") or {}).get("grad_accum") or 0)) or 8
            row["train"] = {
                "steps": ad.get("steps"), "tokens": ad.get("tokens_seen"), "train_seconds": ad.get("seconds"),
                "tok_s": ad.get("tokens_per_second"), "tok_s_steady": round(steady, 1) if steady else None,
                "mfu": round(4 * n_params * steady / peak, 3) if steady and n_params and peak else None,
                "job_seconds": train_job["seconds"],
                "load_seconds": round(train_job["seconds"] - ad["seconds"], 1) if ad.get("seconds") else None,
                "peak_gib": train_job.get("torch_peak_allocated_gib"), "device_peak_gib": train_job.get("device_peak_used_gib"),
                "batches": ad.get("batches"), "gradient_checkpointing": ad.get("gradient_checkpointing"),
                "tokens_per_example": round(ad["tokens_seen"] / (ad["steps"] * batch), 1) if ad.get("tokens_seen") and ad.get("steps") else None,
            }
        kinds: dict[str, dict[str, Any]] = {}
        for g in (store["generations"].get(model) or {}).values():
            if not g.get("this_call", True):
                continue
            k = kinds.setdefault(g["kind"], {"configs": 0, "seconds": 0.0, "new_tokens": 0, "rows": 0})
            k["configs"] += 1
            k["seconds"] += g["seconds"]
            k["new_tokens"] += g["new_tokens"] or 0
            k["rows"] += g["n"] * g["num_beams"]
        if gen_job and kinds:
            for k in kinds.values():
                k["seconds"] = round(k["seconds"], 2)
                k["tok_s"] = round(k["new_tokens"] / k["seconds"], 1) if k["seconds"] else None
            gen_seconds = sum(k["seconds"] for k in kinds.values())
            row["generate"] = {
                "kinds": kinds, "config_seconds": round(gen_seconds, 1), "job_seconds": gen_job["seconds"],
                "load_and_compile_seconds": round(gen_job["seconds"] - gen_seconds, 1),
                "peak_gib": gen_job.get("torch_peak_allocated_gib"), "device_peak_gib": gen_job.get("device_peak_used_gib"),
                "scale": scale,
            }
        models[model] = row
    scoring: dict[str, Any] = {}
    for j in jobs:
        if j["kind"] == "score" and not j.get("error"):
            name = j.get("metric") or j["job"]
            s = scoring.setdefault(name, {"seconds": 0.0, "jobs": 0, "peak_gib": None})
            s["seconds"] = round(s["seconds"] + j["seconds"], 2)
            s["jobs"] += 1
            s["peak_gib"] = max(filter(None, [s["peak_gib"], j.get("torch_peak_allocated_gib")]), default=None)
    for name, s in scoring.items():
        s["outputs"] = (store["metrics"].get(name) or {}).get("scored_this_call")
    accounted = sum(j["seconds"] for j in jobs)
    return {"models": models, "scoring": scoring, "run_seconds": result["harness"]["wall_seconds"],
            "outside_jobs_seconds": round(result["harness"]["wall_seconds"] - accounted, 1)}


def projection(table: dict[str, Any]) -> dict[str, Any]:
    """The full study on this card from a stage table's parts (see the module doc); None where a part was not measured."""
    out: dict[str, Any] = {"models": {}, "assumptions": {
        "train": f"one epoch of {FULL['train_records']} records at the steady tokens/s measured, tokens per record as measured",
        "generate": "per config kind as measured; a smaller sweep scaled: every kind by the new tokens, beams also by the rows "
                    "(greedy and sampled configs fit one batch either way)",
        "score": "per metric as measured, times the outputs of the full study over the outputs scored"}}
    total = 0.0
    for model, row in table["models"].items():
        t, g = row.get("train"), row.get("generate")
        train = gen = None
        if t and t["tok_s_steady"] and t["tokens_per_example"]:
            train = FULL["train_records"] * t["tokens_per_example"] / t["tok_s_steady"] + (t["load_seconds"] or 0)
        if g:
            sc = g.get("scale") or {"tokens": 1.0, "rows": 1.0}
            gen = sum(k["seconds"] * sc["tokens"] * (sc["rows"] if kind == "beams" else 1) for kind, k in g["kinds"].items())
            gen += g["load_and_compile_seconds"] or 0
        out["models"][model] = {"train_seconds": round(train) if train else None, "generate_seconds": round(gen) if gen is not None else None}
        total += (train or 0) + (gen or 0)
    outputs_full = FULL["test_examples"] * FULL["configs"] * len(STUDY_MODELS)
    score = sum(s["seconds"] * (outputs_full / s["outputs"] if s.get("outputs") else 1.0) for s in table["scoring"].values())
    out["score_seconds"] = round(score)
    total += score
    out["total_minutes"] = round(total / 60, 1)
    out["complete"] = (set(out["models"]) == set(STUDY_MODELS) and len(table["scoring"]) == FULL["metrics"]
                       and all(v["train_seconds"] and v["generate_seconds"] for v in out["models"].values()))
    return out


# --------------------------------------------------------------------------- main


class Clock:
    def __init__(self, budget: float):
        self.t0 = time.time()
        self.budget = budget

    def left(self) -> float:
        return self.budget - (time.time() - self.t0)


def machine() -> dict[str, Any]:
    import platform

    info: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    except ImportError:
        pass
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                                        text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/study"))
    ap.add_argument("--out", type=Path, help="the JSON to write (rewritten after every stage)")
    ap.add_argument("--models", nargs="+", default=list(STUDY_MODELS), choices=list(STUDY_MODELS))
    ap.add_argument("--steps", type=int, default=300, help="fine-tuning steps per model (the study trains one epoch)")
    ap.add_argument("--examples", type=int, default=100, help="test records (the study's 100)")
    ap.add_argument("--max-new-tokens", type=int, default=256, help="the study's 256")
    ap.add_argument("--engine", choices=("transformers", "vllm"), default="transformers")
    ap.add_argument("--compare", nargs="*", default=[], choices=list(STUDY_MODELS), help="models whose fine-tuning before/new is compared")
    ap.add_argument("--compare-steps", type=int, default=100)
    ap.add_argument("--budget", type=float, default=555.0, help="seconds this script may take (the run is stopped in time to write the JSON)")
    ap.add_argument("--smoke", action="store_true", help="toy shapes on a CPU: 2 steps, 4 examples, 8 new tokens")
    ap.add_argument("--from-json", nargs="+", type=Path, help="write BENCHMARKS.md and docs/study.md from these results instead")
    args = ap.parse_args()
    if args.from_json:
        return write_docs(args.from_json)
    if args.out is None:
        ap.error("--out is required")
    if args.smoke:
        args.steps, args.examples, args.max_new_tokens = min(args.steps, 2), min(args.examples, 4), min(args.max_new_tokens, 8)
        args.compare_steps = min(args.compare_steps, 3)
    clock = Clock(args.budget)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"issue": 21, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "models": args.models,
                              "config": {"steps": args.steps, "examples": args.examples, "max_new_tokens": args.max_new_tokens,
                                         "engine": args.engine, "smoke": args.smoke, "compare": args.compare,
                                         "compare_steps": args.compare_steps}}

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=str))

    def log(msg: str) -> None:
        print(f"[{time.time() - clock.t0:6.1f} s] {msg}", flush=True)

    install_entry_points(work / "site")
    t0 = time.time()
    result["inputs"] = inputs.build_all(work / "inputs", smoke=args.smoke, models=tuple(args.models), log=log)
    result["inputs"]["wall_seconds"] = round(time.time() - t0, 1)
    result["params"] = {m: non_embedding_params(work / "inputs" / inputs.MODELS[m][0]) for m in args.models}
    save()
    log(f"inputs built in {result['inputs']['wall_seconds']} s")

    registry = write_registry(work, args.models, steps=args.steps, examples=args.examples, max_new_tokens=args.max_new_tokens, engine=args.engine)
    # time kept for the comparison: per model two loads (~30 s each at the 7B shape) and 2 x steps (~0.15 s a step)
    compare_reserve = len(args.compare) * (70 + 0.3 * args.compare_steps) if args.compare_steps else 0
    call_started = time.time()
    result["harness"] = run_harness(work, registry, clock.left() - 20 - compare_reserve, log)
    log(f"harness run: exit {result['harness']['exit']} in {result['harness']['wall_seconds']} s")
    result["store"] = read_store(work, call_started)
    result["table"] = stage_table(result)
    result["projection"] = projection(result["table"])
    save()

    if args.compare and args.compare_steps:
        result["compare"] = {}
        for model in args.compare:
            if clock.left() < 60:
                log(f"compare {model}: skipped, {clock.left():.0f} s left")
                continue
            folder, arch, *_ = inputs.MODELS[model]
            adapter = {"llama": "unsloth-llama", "mistral": "unsloth-mistral", "phi": "peft-phi2"}[arch]
            t = time.time()
            cmd = [sys.executable, str(BENCH / "finetune_defaults.py"), "--adapter", adapter, "--base", str(work / "inputs" / folder),
                   "--data", str(work / "inputs" / inputs.DATA_FILE), "--steps", str(args.compare_steps), "--work", str(work / "compare"),
                   "--out", str(work / f"compare-{model}.json")] + (["--smoke"] if args.smoke else [])
            try:
                proc = subprocess.run(cmd, env=run_env(work), capture_output=True, text=True, timeout=max(30, clock.left() - 15))
                ok = proc.returncode == 0
                tail = proc.stderr[-2000:]
            except subprocess.TimeoutExpired:
                ok, tail = False, "timed out"
            result["compare"][model] = json.loads((work / f"compare-{model}.json").read_text()) if ok else {"error": tail}
            result["compare"][model]["wall_seconds"] = round(time.time() - t, 1)
            log(f"compare {model}: {'done' if ok else 'failed'} in {time.time() - t:.0f} s")
            save()
    result["wall_seconds"] = round(time.time() - clock.t0, 1)
    save()
    log(f"done in {result['wall_seconds']} s -> {args.out}")


# --------------------------------------------------------------------------- BENCHMARKS.md and docs/study.md


def merge_results(paths: list[Path]) -> dict[str, Any]:
    """Several calls' JSONs as one: each model's fine-tune and generation, and each metric, from the last call that ran it."""
    results = [json.loads(p.read_text()) for p in paths]
    merged: dict[str, Any] = {"calls": [], "models": {}, "scoring": {}, "compare": {}}
    for r in results:
        if "table" not in r:
            continue
        merged["calls"].append({k: r.get(k) for k in ("date", "machine", "config", "wall_seconds")} | {
            "inputs_seconds": r["inputs"].get("wall_seconds"), "run_seconds": r["harness"]["wall_seconds"], "exit": r["harness"]["exit"],
            "models": r["models"], "failures": r["store"]["failures"], "versions": r["store"]["run"]["versions"]})
        for model, row in r["table"]["models"].items():
            target = merged["models"].setdefault(model, {"engine": row["engine"], "train": None, "generate": None})
            for part in ("train", "generate"):
                if row.get(part):
                    target[part] = row[part]
                    target["engine"] = row["engine"] if part == "generate" else target["engine"]
        merged["scoring"].update(r["table"]["scoring"])
        merged["compare"].update(r.get("compare") or {})
    merged["projection"] = projection({"models": merged["models"], "scoring": merged["scoring"]})
    return merged


def _f(x: Any, digits: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def render(merged: dict[str, Any]) -> tuple[str, str]:
    """(BENCHMARKS.md section body, docs/study.md stage table)."""
    calls = merged["calls"]
    m0 = calls[0]["machine"] if calls else {}
    versions = ", ".join(f"{k} {v}" for k, v in (calls[0]["versions"] if calls else {}).items() if v)
    head = [f"Measured {', '.join(c['date'] for c in calls)} on **one {m0.get('gpu', 'GPU')}** (driver {m0.get('driver')}), "
            f"Python {m0.get('python')}, {versions}. {len(calls)} device call(s): " + "; ".join(
                f"{'/'.join(c['models'])}: {c['config']['steps']} steps, {c['config']['examples']} examples × {c['config']['max_new_tokens']} "
                f"new tokens, {c['config']['engine']} engine; inputs built in {c['inputs_seconds']} s, `harness run --all` {c['run_seconds']} s "
                f"(exit {c['exit']}{', ' + str(len(c['failures'])) + ' failed cells' if c['failures'] else ''})" for c in calls)
            + ". Random weights at the real shapes: speed and memory only, never quality; every answer runs to max_new_tokens "
              "(random weights never pick EOS), so generation is the study's worst case."]
    stage = ["| model | fine-tune tok/s, steady | MFU (4N) | examples a pass × passes | checkpointing | train peak GiB | "
             "gen load + compile s | greedy s | 8 sampled s | 4 beams s | gen peak GiB |",
             "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for model, row in merged["models"].items():
        t, g = row.get("train") or {}, row.get("generate") or {}
        b = t.get("batches") or {}
        k = g.get("kinds") or {}
        mfu = f"{t['mfu'] * 100:.1f}%" if t.get("mfu") else "–"
        stage.append(f"| {model} ({row['engine']}) | {_f(t.get('tok_s_steady'), 0)} | {mfu} | {b.get('micro_batch', '–')} × {b.get('grad_accum', '–')} | "
                     f"{t.get('gradient_checkpointing') or b.get('gradient_checkpointing', '–')} | {_f(t.get('peak_gib'), 2)} | "
                     f"{_f(g.get('load_and_compile_seconds'))} | {_f((k.get('greedy') or {}).get('seconds'))} | "
                     f"{_f((k.get('sampled') or {}).get('seconds'))} | {_f((k.get('beams') or {}).get('seconds'))} | {_f(g.get('peak_gib'), 2)} |")
    stage += ["", "| metric | outputs | seconds | peak GiB |", "|---|---:|---:|---:|"]
    for name, sc in merged["scoring"].items():
        stage.append(f"| {name} | {_f(sc.get('outputs'))} | {_f(sc['seconds'])} | {_f(sc.get('peak_gib'), 2)} |")
    p = merged["projection"]
    parts = "; ".join(f"{m}: fine-tune {_f((v['train_seconds'] or 0) / 60)} min, generation {_f((v['generate_seconds'] or 0) / 60)} min"
                      for m, v in p["models"].items())
    verdict = ("**met**" if p["total_minutes"] <= 75 else "**missed**") if p["complete"] else "not complete: some part was not measured"
    stage += ["", f"Projection of the full study on this card (one epoch of 51,902 records per model, 13 configs × 100 examples × 256 new "
              f"tokens, 3 metrics): {parts}; scoring {_f(p['score_seconds'] / 60)} min; **total {p['total_minutes']} min** "
              f"(goal ≤ 75 min on one H100: {verdict})."]
    comp: list[str] = []
    if merged["compare"]:
        comp = ["", "Fine-tuning, the settings the study ran with before against the new defaults (bench/finetune_defaults.py; same seed, "
                "same 8 examples a step):", "",
                "| model | variant | examples a pass × passes | tok/s, steady | vs before | peak GiB | max abs loss difference to before |",
                "|---|---|---|---:|---:|---:|---:|"]
        for model, c in merged["compare"].items():
            if "variants" not in c:
                comp.append(f"| {model} | failed: {c.get('error', '')[-120:]!r} | | | | | |")
                continue
            for v in c["variants"]:
                b = v.get("batches") or {}
                cv = c["comparison"][v["variant"]]
                diff = f"{cv['max_abs_loss_diff']:.1e}" if cv.get("max_abs_loss_diff") is not None else "–"
                comp.append(f"| {model} | {v['variant']} | {b.get('micro_batch')} × {b.get('grad_accum')} | {_f(v.get('tok_s_steady'), 0)} | "
                            f"{_f(cv.get('speedup_steady'), 2)}× | {_f(v.get('peak_gib'), 2)} | {diff} over {len(v['losses'])} steps |")
    return "\n".join(head + [""] + stage + comp), "\n".join(stage + comp)


def write_docs(paths: list[Path]) -> None:
    merged = merge_results(paths)
    bench, table = render(merged)
    from common import write_section

    write_section("gpu-study", bench, "## The reference study on one GPU (issue 21)\n\n")
    write_section("gpu-study-table", table, "### Where the time goes on one GPU\n\n", path=ROOT / "docs" / "study.md")
    print(bench)


if __name__ == "__main__":
    main()
