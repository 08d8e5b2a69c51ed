"""Benchmark: the default `harness run --all` with the local executor vs the ray executor (one worker), side by side.

Each round runs the same experiment twice, cold, each in its own fresh output folder: once
with `[executor] name = "local"` and once with `[executor] name = "ray"` on a local Ray
instance that the executor starts (no address) with every job asking for all the machine's
CPUs, so one job runs at a time in one worker process, as locally, and torch gets the same
number of threads. The difference is the orchestration overhead: starting Ray, worker
processes importing the harness and torch, pickling jobs and results, the driver's polling.
Rounds alternate the order (local first, then ray first) against a drifting load. The
reports of the two runs must be equal (`harness report --format json`).

Writes a table into BENCHMARKS.md (section "ray-overhead-cpu", or "ray-overhead-cpu-part") and the raw
numbers into bench/results/ray_overhead.json (ray_overhead-part.json).

    .venv/bin/python bench/ray_overhead.py [--rounds 1] [--part] [--no-write] [--from-json FILE]

``--part`` runs a representative part of the default (4 of its 13 configs: greedy, two sampled,
beam 2; 20 fine-tuning steps) when the whole default does not fit the time at hand.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, add_output_args, load, machine, rerender, versions, write_section  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "ray_overhead.json"
NEW_SECTION = """## The ray executor's overhead (CPU; issue 10)

Script: `bench/ray_overhead.py`. The default experiment run cold twice in one round, each in a fresh
output folder: with the `local` executor, and with the `ray` executor on a local Ray instance that it
starts itself, every job asking for all the machine's CPUs (one job at a time in one worker process,
torch with the same number of threads). The reports of both runs are compared. Raw numbers:
`bench/results/ray_overhead.json`.

"""


def registry(folder: Path, executor: str, part: bool) -> Path:
    text = (ROOT / "registry.toml").read_text()
    text = text.replace('output_dir = "runs/default"', f'output_dir = "{folder / "out"}"')
    if part:
        text = re.sub(r"max_steps = \d+", "max_steps = 20", text)
        text = text.replace("include_defaults = true", "include_defaults = false")
        text = re.sub(r"\[sweep.vary\].*?\n\n", "[sweep.vary]\ntop_k = [10, 75]\nnum_beams = [2]\ntemperature = [0.0]\n\n", text, flags=re.S)
    text = text.replace("[human]", executor + "\n[human]")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "registry.toml"
    path.write_text(text)
    return path


def ray_section() -> str:
    cpus = os.cpu_count() or 1
    return "[executor]\nname = \"ray\"\n" + "".join(f"num_cpus_{k} = {cpus}\n" for k in ("train", "generate", "score"))


def run(path: Path) -> dict:
    harness = Path(sys.executable).parent / "harness"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    proc = subprocess.run([str(harness), "run", "--all", "-r", str(path)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"harness run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    db = sqlite3.connect(path.parent / "out" / "harness.sqlite")
    meta = json.loads(db.execute("SELECT metadata FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()[0])
    db.close()
    rep = subprocess.run([str(harness), "report", "--format", "json", "-r", str(path)], capture_output=True, text=True, check=True).stdout
    starts = re.findall(r"ray: (.*?): started on (.*)", proc.stderr)
    return {"wall_s": round(wall, 2), "stages": meta["stats"]["stage_seconds"], "stats": {k: meta["stats"][k] for k in ("trained", "generated", "scored")},
            "report": json.loads(rep), "placements": starts}


def render(data: dict) -> str:
    m = data["machine"]
    rows = []
    for i, r in enumerate(data["rounds"], 1):
        ratio = r["ray"]["wall_s"] / r["local"]["wall_s"]
        stage = lambda side, s: r[side]["stages"].get(s, 0.0)  # noqa: E731
        rows.append(
            f"| {i} ({r['order']}) | {r['local']['wall_s']:.1f} | {r['ray']['wall_s']:.1f} | {100 * (ratio - 1):+.1f}% | "
            + " | ".join(f"{stage('local', s):.1f} / {stage('ray', s):.1f}" for s in ("train", "generate", "score"))
            + f" | {'yes' if r['same_report'] else '**no**'} |"
        )
    overheads = [r["ray"]["wall_s"] / r["local"]["wall_s"] - 1 for r in data["rounds"]]
    worst = max(overheads)
    mean = sum(overheads) / len(overheads)
    lines = [
        f"Measured {data['date']} on {m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, Python {m['python']}, shared machine "
        f"(load average {data['load_start'][0]} at the start, {data['load_end'][0]} at the end); "
        + ", ".join(f"{k} {v}" for k, v in data["versions"].items())
        + f". Experiment: {data['experiment']}. Each figure is one run.",
        "",
        "| round (order) | local (s, wall) | ray (s, wall) | ray overhead | train local / ray (s) | generate local / ray (s) | score local / ray (s) | same report |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        f"Ray overhead on the whole command: mean **{100 * mean:+.1f}%**, worst {100 * worst:+.1f}% — goal ≤ 15%: "
        f"**{'met' if worst <= 0.15 else ('met on average, not in every round' if mean <= 0.15 else 'missed')}**. "
        "Stage times under ray run from a job's start on its worker to its end (worker start-up and imports included, "
        "the driver's submission and polling not).",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--part", action="store_true", help="a representative part of the default (4 configs, 20 training steps)")
    add_output_args(ap)
    args = ap.parse_args()
    suffix = "-part" if args.part or (args.from_json and "-part" in args.from_json) else ""
    results = RESULTS.with_name(f"ray_overhead{suffix}.json")
    write = lambda table: write_section(f"ray-overhead-cpu{suffix}", table, NEW_SECTION if not suffix else "**A part of the default** (`--part`):\n\n")  # noqa: E731
    if rerender(args, render, write):
        return
    experiment = ("the default registry.toml, all of it: 2 models (one LoRA fine-tune of 40 steps), 13 configs, 20 test examples, BLEU, ROUGE-L, BERTScore"
                  if not args.part else
                  "a part of the default registry.toml: 2 models (one LoRA fine-tune of 20 steps), 4 configs (greedy, top-k 10 and 75 sampling, beam 2), 20 test examples, BLEU, ROUGE-L, BERTScore")
    data = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "load_start": load(), "experiment": experiment,
            "versions": versions(Path(sys.executable), ["ray", "torch", "transformers", "peft"]), "rounds": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            order = ("local", "ray") if i % 2 == 0 else ("ray", "local")
            result = {"order": " then ".join(order)}
            for side in order:
                path = registry(Path(tmp) / f"round{i}-{side}", ray_section() if side == "ray" else "", args.part)
                result[side] = run(path)
                print(f"round {i + 1}: {side} {result[side]['wall_s']:.1f} s", flush=True)
            result["same_report"] = result["local"]["report"] == result["ray"]["report"]
            for side in order:  # the reports themselves are large: keep their hashes
                result[side]["report"] = hashlib.sha256(json.dumps(result[side]["report"], sort_keys=True).encode()).hexdigest()
            data["rounds"].append(result)
    data["load_end"] = load()
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(data, indent=1))
    table = render(data)
    print(table)
    if not args.no_write:
        write(table)


if __name__ == "__main__":
    main()
