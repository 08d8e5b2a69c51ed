"""Benchmark (issue 22, part a): does a pruned search find the best decoding config with a fraction of the generations?

No model: per-example scores come from a known function of the parameters plus each example's
difficulty and noise, so the true best config is known. The search runs through the real driver
(:class:`harness.pipeline.tune.Search`: Optuna's samplers and WilcoxonPruner, trials built by the
standard decoder, scored chunk by chunk) with a simulated evaluator in place of the store.

The objective, over temperature T and top_p P (both on a grid: T in 0.0..1.5 step 0.25, P in 0.5..1.0
step 0.1, 42 configs):

    true mean  q(T, P) = 0.55 - 0.35 (T - 0.75)^2 - 0.4 (P - 0.9)^2 - 0.08 [T = 0]        (best: T = 0.75, P = 0.9)
    score(config, example) = clip(q + d_e + n_(config, e), 0, 1),  d_e ~ N(0, 0.15),  n ~ N(0, 0.10)

d_e (the example's difficulty) is shared by every config — what paired tests exploit — and the noise
n is seeded by (seed, config, example), as the harness's seeded sampling makes a config's output on an
example the same in every trial. A generation is counted once per (config, example), as the store does.
"Chosen" is the search's pick, the completed trial with the best mean on the search examples; it counts
as the best when it is the true best, and as "within tolerance" when its true mean is within 0.01 of it.

Methods, each over the same 40 search examples in chunks of 5 (pruning from 5 examples, p_threshold 0.1):
full grid (every config, every example), grid + WilcoxonPruner (the 42 configs in grid order, the
defaults T = 0.8 rounded to the grid's 0.75, P = 1.0 first), TPE + WilcoxonPruner (12 trials, the defaults
first).

    .venv/bin/python bench/tune_simulated.py [--seeds 20] [--no-write] [--from-json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, add_output_args, load, machine, rerender, versions, write_section  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "tune_simulated.json"
NEW_SECTION = """## Pruned search on a simulated objective (issue 22, part a)

`bench/tune_simulated.py`: the real search driver (Optuna 5 samplers, WilcoxonPruner, the standard decoder's configs,
scores reported per example in chunks of 5) on a simulated objective with a known best config (42 configs:
temperature 0–1.5 step 0.25 × top_p 0.5–1.0 step 0.1; per-example score = a known function of the parameters +
the example's difficulty + seeded noise; 40 search examples). "Best" = the search's pick is the true best;
"within 0.01" = its true mean is within 0.01 of the best's. Generations are counted once per (config, example).

"""

REGISTRY = """
[experiment]
name = "simulated"
output_dir = "{out}"
[dataset]
source = "synthetic"
test_size = 60
[[models]]
name = "m"
adapter = "peft-lora"
base_model = "HuggingFaceTB/SmolLM2-135M-Instruct"
[sweep]
mode = "grid"
include_defaults = false
max_new_tokens = 16
[sweep.defaults]
temperature = 0.75
top_p = 1.0
[sweep.vary]
temperature = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
top_p = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
[metrics]
names = ["rouge_l"]
[tune]
metric = "rouge_l"
trials = {trials}
sampler = "{sampler}"
pruner = "{pruner}"
chunk = 5
min_examples = 5
p_threshold = 0.1
holdout = 0.2
seed = {seed}
[tune.space]
temperature = {{low = 0.0, high = 1.5, step = 0.25}}
top_p = {{low = 0.5, high = 1.0, step = 0.1}}
"""

N_SEARCH = 40
TOLERANCE = 0.01


def true_mean(params: dict) -> float:
    t, p = float(params["temperature"]), float(params["top_p"])
    return 0.55 - 0.35 * (t - 0.75) ** 2 - 0.4 * (p - 0.9) ** 2 - (0.08 if t == 0.0 else 0.0)


def _normal(*parts: object) -> float:
    """A standard normal drawn from a hash of ``parts`` (the same draw in every trial and process)."""
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).digest()
    u1 = (int.from_bytes(digest[:8], "big") + 0.5) / 2**64
    u2 = (int.from_bytes(digest[8:16], "big") + 0.5) / 2**64
    return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)


class SimulatedEvaluator:
    """Scores a config on examples from the known objective; counts generations once per (config, example)."""

    def __init__(self, seed: int, difficulty_sd: float = 0.15, noise_sd: float = 0.10):
        self.seed = seed
        self.difficulty_sd = difficulty_sd
        self.noise_sd = noise_sd
        self.seen: set[tuple[str, str]] = set()

    @property
    def generations(self) -> int:
        return len(self.seen)

    def score(self, params: dict, example: str) -> float:
        # greedy (T = 0) ignores top_p, as the decoder makes it: the noise follows the effective decoding
        key = ("greedy",) if float(params["temperature"]) == 0.0 else (params["temperature"], params["top_p"])
        d = self.difficulty_sd * _normal("difficulty", self.seed, example)
        n = self.noise_sd * _normal("noise", self.seed, key, example)
        return min(1.0, max(0.0, true_mean(params) + d + n))

    def evaluate(self, config, example_ids: Sequence[str]) -> list[float]:
        from harness.api import stable_hash
        from harness.pipeline.keys import decoding_key

        decoding = stable_hash(decoding_key(config.decoding))  # configs that decode alike share generations, as in the store
        for e in example_ids:
            self.seen.add((decoding, e))
        return [self.score(config.params, e) for e in example_ids]


def experiment(folder: Path, sampler: str, pruner: str, trials: int, seed: int):
    from harness.plugins import build_plugins
    from harness.registry import load_experiment

    path = folder / f"{sampler}-{pruner}-{seed}.toml"
    path.write_text(REGISTRY.format(out=folder / "out", sampler=sampler, pruner=pruner, trials=trials, seed=seed))
    plugins = build_plugins()
    return load_experiment(path, plugins), plugins


def search(method: str, seed: int, folder: Path) -> dict:
    """One search on the simulated objective; what it chose and what it cost."""
    import optuna

    from harness.pipeline import tune as tp

    sampler, pruner, mode, trials = {
        "full grid": ("grid", "none", "sweep", 42),
        "grid + pruner": ("grid", "wilcoxon", "sweep", 42),
        "TPE + pruner": ("tpe", "wilcoxon", "tune", 12),
    }[method]
    exp, plugins = experiment(folder, sampler, pruner, trials, seed)
    ids = [f"ex{i:03d}" for i in range(N_SEARCH + 10)]
    plan = tp.make_plan(exp, "m", mode, ids, True, exp.configs if mode == "sweep" else None)
    plan = dataclasses.replace(plan, search=tuple(ids[:N_SEARCH]), heldout=tuple(ids[N_SEARCH:]))
    evaluator = SimulatedEvaluator(seed)
    decoder = plugins.create("decoder", exp.decoder, {})
    s = tp.Search(exp, plan, evaluator, decoder, storage=optuna.storages.InMemoryStorage(), lock_path=folder / ".lock")
    t0 = time.perf_counter()
    record = s.run()
    seconds = time.perf_counter() - t0
    done = [t for t in record.trials if t.state == "complete"]
    best_trial = max(done, key=lambda t: (t.value, -t.number))
    grid = [{"temperature": t, "top_p": p} for t in np.arange(0, 1.51, 0.25) for p in np.round(np.arange(0.5, 1.01, 0.1), 1)]
    best_true = max(true_mean(g) for g in grid)
    chosen_true = true_mean(best_trial.params)
    return {
        "method": method, "seed": seed, "generations": evaluator.generations, "trials": len(record.trials),
        "pruned": sum(1 for t in record.trials if t.state == "pruned"), "chosen": {k: best_trial.params[k] for k in ("temperature", "top_p")},
        "regret": round(best_true - chosen_true, 5), "best": abs(best_true - chosen_true) < 1e-12, "within": best_true - chosen_true <= TOLERANCE + 1e-12,
        "seconds": round(seconds, 2),
    }


METHODS = ("full grid", "grid + pruner", "TPE + pruner")


def render(data: dict) -> str:
    rows = data["rows"]
    full = [r for r in rows if r["method"] == "full grid"]
    full_gen = sum(r["generations"] for r in full) / len(full)
    lines = [
        f"Machine: {data['machine']['cpu']}, {data['machine']['cores']} cores (load {data['load']}); optuna {data['versions'].get('optuna', '?')}, "
        f"scipy {data['versions'].get('scipy', '?')}; {data['seeds']} seeds, {data['date']}.",
        "",
        "| method | generations (mean) | share of the full grid | trials (pruned) | picks the true best | within 0.01 of it | mean regret |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in METHODS:
        mine = [r for r in rows if r["method"] == m]
        if not mine:
            continue
        gen = sum(r["generations"] for r in mine) / len(mine)
        lines.append(
            f"| {m} | {gen:.0f} | {gen / full_gen:.0%} | {sum(r['trials'] for r in mine) / len(mine):.1f} "
            f"({sum(r['pruned'] for r in mine) / len(mine):.1f}) | {sum(r['best'] for r in mine)}/{len(mine)} | "
            f"{sum(r['within'] for r in mine)}/{len(mine)} | {sum(r['regret'] for r in mine) / len(mine):.4f} |"
        )
    tpe = [r for r in rows if r["method"] == "TPE + pruner"]
    if tpe and full:
        share = sum(r["generations"] for r in tpe) / len(tpe) / full_gen
        hits = (sum(r["within"] for r in tpe), sum(r["within"] for r in full))
        exact = (sum(r["best"] for r in tpe), sum(r["best"] for r in full))
        met = share <= 0.30 and hits[0] >= hits[1]
        lines += ["", f"Goal (the pruned search finds the best as often as the full grid with at most 30% of its generations): TPE + pruner "
                      f"spends {share:.0%} and picks a config within 0.01 of the best in {hits[0]}/{len(tpe)} seeds against the full grid's "
                      f"{hits[1]}/{len(full)} (the exact best: {exact[0]} against {exact[1]}) — {'met' if met else 'not met'} on the stated tolerance."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    add_output_args(ap)
    args = ap.parse_args()
    write = lambda table: write_section("tune-simulated", table, NEW_SECTION)  # noqa: E731
    if rerender(args, render, write):
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for method in METHODS:
                row = search(method, seed, Path(tmp))
                rows.append(row)
                print(json.dumps(row), flush=True)
    data = {"machine": machine(), "load": load(), "versions": versions(Path(sys.executable), ["optuna", "scipy", "numpy"]), "seeds": args.seeds,
            "date": time.strftime("%Y-%m-%d"), "rows": rows}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=1))
    table = render(data)
    print(table)
    if not args.no_write:
        write(table)


if __name__ == "__main__":
    main()
