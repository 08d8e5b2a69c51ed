"""Fine-tuning: the settings the study ran with before issue 21 against the new defaults — same loss curve, more tokens/s.

For one adapter and one base model, the same training pairs (the Alpaca-length training split,
rendered with the Alpaca template) are trained for ``--steps`` optimizer steps with the same seed
under each variant, through the adapter's own ``train`` (what ``harness run`` calls):

* ``before``: what a study run did before this change — 2 examples a forward pass × 4
  accumulated (the unsloth notebook's batch), padded batches for the PEFT adapters (TRL's
  default), padding-free for the unsloth ones (unsloth turns it on by itself when TRL's
  ``padding_free`` is left unset, on a GPU it has not measured, such as Hopper), unsloth's
  offloaded gradient checkpointing (the unsloth adapters' option default then);
* ``new``: the defaults now — ``packing = "padding_free"``, ``auto_batch`` (8 examples a pass
  where they fit), gradient checkpointing only where memory needs it;
* ``padded``: ``new`` with padded batches (``packing = "none"``), to see what padding-free buys.

Every variant sees the same 8 examples a step in the same order, so the per-step losses must
agree (up to bf16 arithmetic on a GPU; ~1e-6 in float32 on a CPU). Reported per variant: the loss
of every step, tokens read (padding excluded), tokens/s over the whole ``train`` call and after
the first steps, peak GPU memory, the micro-batch plan; and the largest loss difference to
``before``.

    python bench/finetune_defaults.py --adapter unsloth-llama --base CKPT --data alpaca_lengths.json --steps 100 --out OUT.json
    python bench/finetune_defaults.py --smoke --out /tmp/finetune_defaults.json     # toy Llama on a CPU (peft-lora)
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in [ROOT, ROOT / "bench", *sorted(q for q in (ROOT / "plugins").iterdir() if q.is_dir())]:
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from harness.api import Example, FinetuneSpec, ModelSpec, NullProgress  # noqa: E402

ADAPTERS = {
    "peft-lora": ("harness_models.peft_lora", "PeftLoraAdapter"),
    "peft-phi2": ("harness_models.phi2", "PeftPhi2"),
    "unsloth-llama": ("harness_models.unsloth_adapters", "UnslothLlama"),
    "unsloth-mistral": ("harness_models.unsloth_adapters", "UnslothMistral"),
}
#: the study's LoRA settings (registries/alpaca-study.toml)
STUDY = dict(r=16, alpha=16, learning_rate=2e-4, batch_size=2, grad_accum=4, warmup_steps=5, weight_decay=0.01, max_seq_length=1024, seed=3407)
VARIANTS = ("before", "new", "padded")


def variant_settings(name: str, adapter: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(FinetuneSpec fields, adapter options) of a variant."""
    unsloth = adapter.startswith("unsloth")
    if name == "before":
        ft = dict(packing="padding_free" if unsloth else "none", auto_batch=False)
        return ft, ({"gradient_checkpointing": "unsloth"} if unsloth else {})
    if name == "new":
        return {}, {}
    if name == "padded":
        return dict(packing="none"), {}
    raise ValueError(name)


def study_pairs(data: Path, tokenizer: Any, n: int) -> list:
    """The first ``n`` training pairs of the study's split (test 100, seed 42) of ``data``, rendered as the run renders them."""
    from harness import data as hdata
    from harness_datasets.alpaca import read_json_records

    examples = hdata.to_examples(read_json_records(data), str(data))
    train, _ = hdata.split(examples, test_size=100, train_size=0, seed=42)
    return hdata.train_pairs(train[:n], "alpaca", tokenizer)


def toy_pairs(tokenizer: Any, n: int) -> list:
    import random

    from harness import data as hdata

    sys.path.insert(0, str(ROOT / "tests"))
    from study.toy import sentences

    rng = random.Random(0)
    pool = sentences(200)
    exs = [Example.make(f"Write about {rng.choice(pool)} number {i}.", "", " ".join(rng.sample(pool, rng.randint(1, 5)))) for i in range(n)]
    return hdata.train_pairs(exs, "alpaca", tokenizer)


def steady_rate(summary: dict, skip: int) -> float | None:
    """Tokens/s after the first ``skip`` steps (compilation, allocator warm-up), tokens spread evenly over steps."""
    hist = summary.get("loss_history") or []
    if len(hist) <= skip + 1:
        return None
    a, b = hist[skip - 1] if skip else {"step": 0, "t": 0.0}, hist[-1]
    steps = summary["steps"]
    if b["t"] <= a["t"] or not steps:
        return None
    return summary["tokens_seen"] * (b["step"] - a["step"]) / steps / (b["t"] - a["t"])


def train_variant(adapter_name: str, base: str, pairs: list, steps: int, variant: str, work: Path, *, smoke: bool) -> dict[str, Any]:
    module, cls_name = ADAPTERS[adapter_name]
    cls = getattr(importlib.import_module(module), cls_name)
    ft_fields, opts = variant_settings(variant, adapter_name)
    options = {k: o.default for k, o in cls.options.items()} | opts
    if smoke and "device" in options:
        options.update(device="cpu", dtype="float32")
    if "load_in_4bit" in options and adapter_name.startswith("unsloth"):
        options["load_in_4bit"] = not smoke or options["load_in_4bit"]
    ft = FinetuneSpec(**(STUDY | {"max_steps": steps, "max_seq_length": 256 if smoke else STUDY["max_seq_length"]} | ft_fields))
    spec = ModelSpec(f"{adapter_name}-{variant}", adapter_name, base, ft, options=options, base_dir=work)
    out = work / f"adapter-{adapter_name}-{variant}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    summary = cls(options).train(spec, pairs, out, NullProgress())
    wall = time.perf_counter() - t0
    peak = round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None
    shutil.rmtree(out, ignore_errors=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    skip = min(5, max(1, steps // 10))
    steady = steady_rate(summary, skip)
    return {
        "variant": variant, "finetune": ft_fields, "options": opts, "steps": summary["steps"],
        "losses": [h["loss"] for h in summary.get("loss_history", [])],
        "train_seconds": summary["seconds"], "call_seconds": round(wall, 1), "load_seconds": round(wall - summary["seconds"], 1),
        "tokens": summary.get("tokens_seen"), "supervised_tokens": summary.get("supervised_tokens"),
        "tok_s": summary.get("tokens_per_second"), "tok_s_steady": round(steady, 1) if steady else None, "steady_after_steps": skip,
        "peak_gib": peak, "batches": summary.get("batches"), "gradient_checkpointing": summary.get("gradient_checkpointing"),
    }


def compare(results: list[dict[str, Any]]) -> dict[str, Any]:
    base = next((r for r in results if r["variant"] == "before"), results[0])
    out = {}
    for r in results:
        diffs = [abs(a - b) for a, b in zip(r["losses"], base["losses"], strict=False)]
        rel = [abs(a - b) / max(abs(b), 1e-9) for a, b in zip(r["losses"], base["losses"], strict=False)]
        out[r["variant"]] = {
            "max_abs_loss_diff": max(diffs) if diffs else None, "max_rel_loss_diff": max(rel) if rel else None,
            "mean_loss": statistics.fmean(r["losses"]) if r["losses"] else None,
            "speedup_steady": round(r["tok_s_steady"] / base["tok_s_steady"], 2) if r["tok_s_steady"] and base["tok_s_steady"] else None,
            "speedup_call": round(r["tok_s"] / base["tok_s"], 2) if r["tok_s"] and base["tok_s"] else None,
        }
    return out


def run(adapter: str, base: str, data: Path | None, steps: int, variants: list[str], work: Path, *, smoke: bool = False) -> dict[str, Any]:
    """Train every variant of ``adapter`` on ``base`` for ``steps`` steps; returns the per-variant records and the comparison."""
    from harness_models.loading import resolve

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve(base, work))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    n = steps * STUDY["batch_size"] * STUDY["grad_accum"]
    pairs = toy_pairs(tok, n) if data is None else study_pairs(data, tok, n)
    results = [train_variant(adapter, base, pairs, steps, v, work, smoke=smoke) for v in variants]
    return {"adapter": adapter, "base": str(base), "steps": steps, "pairs": len(pairs), "variants": results, "comparison": compare(results)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--adapter", choices=list(ADAPTERS), default="peft-lora")
    ap.add_argument("--base", help="checkpoint folder (default with --smoke: a toy Llama built here)")
    ap.add_argument("--data", type=Path, help="Alpaca-format JSON (bench/gpu_study_inputs.py); default with --smoke: toy pairs")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--variants", nargs="+", default=["before", "new"], choices=VARIANTS)
    ap.add_argument("--work", type=Path, default=Path("/tmp/finetune-defaults"))
    ap.add_argument("--smoke", action="store_true", help="toy size on a CPU")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    base = args.base
    if base is None:
        if not args.smoke:
            ap.error("--base is required without --smoke")
        sys.path.insert(0, str(ROOT / "tests"))
        from study.toy import build_checkpoint

        arch = {"peft-phi2": "phi", "unsloth-mistral": "mistral"}.get(args.adapter, "llama")
        base = str(build_checkpoint(arch, args.work / f"toy-{arch}"))
    result = run(args.adapter, base, args.data, args.steps, args.variants, args.work, smoke=args.smoke)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "variants"} | {"variants": [{k: v for k, v in r.items() if k != "losses"} for r in result["variants"]]}, indent=1))


if __name__ == "__main__":
    main()
