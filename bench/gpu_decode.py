"""Decoding speed of the transformers engine on a GPU at the Llama-2-7B shape, against the bandwidth roofline.

Random bf16 weights built on the GPU (``from_config``: no checkpoint, no hub), a tiny byte-level
tokenizer, and the harness's own path: ``TransformersSession`` from the transformers engine,
constructed directly with the model and tokenizer. Greedy, batch 64, prompts of exactly 128
tokens, exactly 128 new tokens. Variants:

* ``raw generate``: ``model.generate`` on the same encoded batch (what the engine adds is the rest),
  measured before and again after the engine's eager run (the first variant also warms the GPU up);
* ``engine eager``: the default engine (dynamic cache, no compile);
* ``engine static``: ``cache = "static"`` without compile;
* ``engine static+compile``: ``cache = "static"``, ``compile = true`` (and ``raw static+compile``);
* ``engine eager, sample top-k 50``: a sampling config through ``generate`` (the engine's counter-based
  sampler as a logits processor; ``bench/gpu_engine.py`` times the new fast loop against the old engine);
* beam search, 2 / 5 / 10 beams, eager, ``--beam-batch`` prompts (10 beams x 64 prompts does not fit);
* ``batch_size`` unset (the engine sizes batches to free memory): greedy over 4 x ``--batch`` prompts and
  beam 10 over 2 x ``--batch`` prompts, with the batch sizes it chose and the peak memory.

Exactly 128 new tokens: the EOS row of ``lm_head`` is zeroed, so EOS's logit is exactly 0 while
the largest of the other 31,999 random logits is several standard deviations above 0; argmax (and
the top 2 x beams candidates of beam search) never pick it. The check ``all_full_length`` says so.

The roofline per step: (weight bytes read + KV-cache bytes read, averaged over the 128 steps) /
the card's measured bandwidth (a large device-to-device copy: bytes read + written / time, median of
10). Weights read = every parameter except the input embedding (a step gathers only 64 rows of it);
KV read at step s (s = 0 … 127) = batch x (prompt + s + 1) tokens x layers x 2 x kv_heads x head_dim x 2
bytes. ms/step = wall time of the call / 128 (prefill, tokenizing and decoding included), median of
``--runs`` timed calls after warm-up calls at the same shape. Token agreement between variants is
measured on the engine's own outputs (``TransformersSession``'s ``generate`` hook records them).
Random weights in bf16: different kernels (a static cache attends over masked slots, compiled
kernels fuse) round differently and can flip a near-tie argmax, after which a row diverges — the
report gives the share of identical rows and of matching tokens, next to what the batch size alone
does (the eager engine in batches of 32 vs one batch of 64); exact equality is tested on CPU in
float32 (tests/test_engine_speed.py). Rows are compared by prompt, not by the session's sorted order.

    python bench/gpu_decode.py --out $OUT/gpu_decode.json

Needs torch with CUDA, transformers (5.17), tokenizers; no trl/datasets. About 5-6 minutes on an H100
(``--smoke``: the same script on a CPU at a toy shape in seconds, to check it before spending GPU time).
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata as md
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in [ROOT, ROOT / "bench", *sorted((ROOT / "plugins").iterdir())]:
    sys.path.insert(0, str(p))

from gpu_adapters import SHAPES, build_tokenizer  # noqa: E402

from harness.api import Decoding, GenRequest, NullProgress  # noqa: E402


def measure_bandwidth(torch, device: str, gib: float = 4.0, reps: int = 10) -> dict:
    n = int(gib * 2**30)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    src.fill_(1)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - t)
    del src, dst
    if device == "cuda":
        torch.cuda.empty_cache()
    t = statistics.median(times)
    return {"bytes_per_copy": 2 * n, "median_s": t, "gb_s": round(2 * n / t / 1e9, 1), "all_gb_s": [round(2 * n / x / 1e9, 1) for x in times]}


#: --smoke: the same script on a CPU at a toy shape, to check it before spending GPU time
SMOKE_SHAPE = dict(cls="LlamaConfig", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=4, max_position_embeddings=512, vocab_size=32000, rms_norm_eps=1e-5)


def build_model(torch, eos_id: int, device: str, smoke: bool):
    import transformers

    shape = dict(SMOKE_SHAPE if smoke else SHAPES["llama"])
    cfg = getattr(transformers, shape.pop("cls"))(**shape, bos_token_id=1, eos_token_id=eos_id, pad_token_id=eos_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32 if smoke else torch.bfloat16)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # RMSNorm weights: 1, as trained models have them
                p.fill_(1.0)
            else:
                torch.nn.init.normal_(p, std=0.02)
        model.lm_head.weight[eos_id].zero_()  # EOS logit = 0 < the max of 31,999 random logits: never chosen
    return model.eval()


def exact_prompts(tok, words, n: int, length: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        text = " ".join(rng.choice(words) for _ in range(length))
        text = tok.decode(tok(text)["input_ids"][:length])
        if len(tok(text)["input_ids"]) == length:
            out.append(text)
    return out


class Recorder:
    """The session's ``generate`` hook: calls ``model.generate``, keeps the outputs and times of the calls of one ``session.generate``."""

    def __init__(self, sync, fn):
        self.sync, self.fn = sync, fn
        self.reset()

    def reset(self) -> None:
        self.outs, self.seconds = [], 0.0

    def __call__(self, **kwargs):
        t = time.perf_counter()
        out = self.fn(**kwargs)
        self.sync()
        self.seconds += time.perf_counter() - t
        self.outs.append(out)
        return out


def agreement(a, b, prompt_len: int) -> dict:
    a, b = a[:, prompt_len:].cpu(), b[:, prompt_len:].cpu()
    n = min(a.shape[1], b.shape[1])
    a, b = a[:, :n], b[:, :n]
    same = a == b
    first_diff = [int((~row).nonzero()[0]) if (~row).any() else n for row in same]
    return {
        "rows_identical": int(same.all(dim=1).sum()),
        "rows": int(a.shape[0]),
        "tokens_matching": round(float(same.float().mean()), 4),
        "median_first_divergence": statistics.median(first_diff),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu_decode.json")
    ap.add_argument("--work", default="/tmp/harness-gpu-decode")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--beams", type=int, nargs="*", default=[2, 5, 10])
    ap.add_argument("--beam-batch", type=int, default=32, help="prompts per beam-search batch (rows = prompts x beams)")
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--only-auto", action="store_true", help="only the batch_size-unset variants (after the bandwidth and roofline)")
    ap.add_argument("--only-compile", action="store_true", help="only the eager engine and the static+compile variants (after the bandwidth and roofline)")
    ap.add_argument("--smoke", action="store_true", help="CPU, toy shape, tiny sizes: checks the script, measures nothing")
    args = ap.parse_args()
    if args.smoke:
        args.batch, args.prompt, args.new, args.runs, args.beams, args.beam_batch = 4, 16, 8, 1, [2], 2

    import torch
    import transformers
    from torch._dynamo.utils import counters

    from harness_engines.transformers_engine import TransformersSession, bucket

    device = "cpu" if args.smoke else "cuda"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def peak_gib():
        return round(torch.cuda.max_memory_allocated() / 2**30, 1) if device == "cuda" else None

    def reset_peak():
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()

    out_path = Path(args.out)
    env = {"gpu": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (smoke)", "torch": torch.__version__, "transformers": transformers.__version__}
    for pkg in ("peft", "accelerate"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = None
    report: dict = {"env": env, "args": vars(args), "variants": [], "agreement": {}}

    def save() -> None:
        out_path.write_text(json.dumps(report, indent=2))

    print(json.dumps(env), flush=True)
    report["bandwidth"] = bw = measure_bandwidth(torch, device, gib=0.25 if args.smoke else 4.0)
    print(f"bandwidth: {bw['gb_s']} GB/s (device-to-device copy, read + write, median of 10)", flush=True)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tok, words = build_tokenizer(work / "tokenizer")
    eos = tok.eos_token_id
    t0 = time.perf_counter()
    model = build_model(torch, eos, device, args.smoke)
    cfg = model.config
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params, built in {time.perf_counter() - t0:.0f} s", flush=True)

    B, P, N = args.batch, args.prompt, args.new
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    kv_per_token = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * head_dim * 2
    weight_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "embed_tokens" not in n)
    kv_avg = B * kv_per_token * sum(P + s + 1 for s in range(N)) / N
    roofline_s = (weight_bytes + kv_avg) / (bw["gb_s"] * 1e9)
    static_len = bucket(P) + N
    report["roofline"] = {
        "weight_bytes": weight_bytes,
        "kv_bytes_per_step_avg": round(kv_avg),
        "ms_per_step": round(roofline_s * 1e3, 3),
        "tok_s": round(B / roofline_s, 1),
        "note": (
            f"a static cache attends over all {static_len} slots (masked) every step: "
            f"{B * kv_per_token * static_len / 1e9:.2f} GB of KV per step instead of {kv_avg / 1e9:.2f} GB on average; "
            f"a dynamic cache also copies the whole cache every step (torch.cat): about 2 x {kv_avg / 1e9:.2f} GB more traffic"
        ),
    }
    print(f"roofline: {roofline_s * 1e3:.2f} ms/step ({weight_bytes / 1e9:.2f} GB weights + {kv_avg / 1e9:.2f} GB KV avg)", flush=True)
    save()

    prompts = exact_prompts(tok, words, B, P)
    greedy = Decoding("greedy", N)
    outputs: dict[str, torch.Tensor] = {}

    def timed(name: str, call, rows: int, prompts_n: int, beams: int = 1, warmup: int = 1, extra: dict | None = None, runs: int | None = None) -> dict:
        first = None
        walls, inner = [], []
        for i in range(warmup + (runs or args.runs)):
            sync()
            t = time.perf_counter()
            made, inner_s = call()
            sync()
            wall = time.perf_counter() - t
            if i == 0:
                first = wall
            if i >= warmup:
                walls.append(wall)
                inner.append(inner_s)
        wall = statistics.median(walls)
        r = {
            "variant": name,
            "prompts": prompts_n,
            "beams": beams,
            "rows": rows,
            "ms_per_step": round(wall / N * 1e3, 2),
            "tok_s": round(prompts_n * N / wall, 1),
            "generate_ms_per_step": round(statistics.median(inner) / N * 1e3, 2) if inner[0] is not None else None,
            "first_call_s": round(first, 1),
            "runs_s": [round(x, 3) for x in walls],
            "all_full_length": made == prompts_n * N,
            "peak_gib": peak_gib(),
            **(extra or {}),
        }
        if beams == 1 and prompts_n == B:
            r["pct_roofline"] = round(100 * roofline_s * 1e3 / r["ms_per_step"], 1)
        report["variants"].append(r)
        save()
        print(json.dumps(r), flush=True)
        return r

    def engine(name: str, decoding: Decoding, ps: list[str], *, cache: str = "dynamic", compile_: bool = False, warmup: int = 1, beams: int = 1,
               batch: int | None = None, time_it: bool = True):
        rec = Recorder(sync, model.generate)
        session = TransformersSession(model, tok, batch or len(ps), rec, cache=cache, compile=compile_)
        reqs = [GenRequest(f"{name}{i:04d}", p, decoding, i) for i, p in enumerate(ps)]
        # the session sorts requests by (prompt length, prompt, key): row j of its outputs is prompt order[j]
        order = sorted(range(len(ps)), key=lambda i: (len(tok(ps[i])["input_ids"]), ps[i], reqs[i].key))

        def call():
            rec.reset()
            made = sum(r.new_tokens for batch in session.generate(reqs, NullProgress()) for r in batch)
            return made, rec.seconds

        before = counters["stats"]["unique_graphs"]
        if time_it:
            r = timed(name, call, len(ps) * beams, len(ps), beams, warmup)
        else:
            call()
            r = {}
        if compile_:
            r["compiled_graphs"] = counters["stats"]["unique_graphs"] - before
            save()
        if beams == 1:
            rows = torch.cat(rec.outs)  # every batch has the same prompt length here (exact-length prompts)
            aligned = torch.empty_like(rows)
            aligned[torch.tensor(order)] = rows
            outputs[name] = aligned
        return r

    def raw(name: str, **kwargs):
        TransformersSession(model, tok, B)  # the engine's neutral generation config and left padding, as the engine runs
        enc = tok(prompts, return_tensors="pt", padding=True).to(device)
        holder = {}

        def call():
            out = model.generate(**enc, max_new_tokens=N, do_sample=False, **kwargs)  # as a user calls it (generate runs under no_grad)
            holder["out"] = out
            return int((out[:, P:] != eos).sum()), None

        r = timed(name, call, B, B, 1, warmup=2 if "compile" in name else 1)
        outputs[name] = holder["out"]
        return r

    def fixed_batch_variants() -> None:
        reset_peak()
        raw("raw generate (eager, dynamic cache)")
        engine("engine eager (dynamic cache)", greedy, prompts)
        raw("raw generate (eager, dynamic cache), again")  # the first variant also warms the GPU up: measured twice
        # what the batch size alone does to bf16 greedy tokens (the engine's identity leaves batch_size out too)
        engine("engine eager, half batches", greedy, prompts, batch=B // 2, time_it=False)
        report["agreement"][f"engine eager: batch {B} vs batches of {B // 2}"] = agreement(outputs["engine eager (dynamic cache)"], outputs["engine eager, half batches"], P)
        engine("engine static cache", greedy, prompts, cache="static")
        sample = Decoding("sample", N, temperature=0.8, top_k=50)
        engine("engine eager, sample top-k 50", sample, prompts)
        report["agreement"]["raw vs engine eager"] = agreement(outputs["raw generate (eager, dynamic cache)"], outputs["engine eager (dynamic cache)"], P)
        report["agreement"]["engine eager vs static"] = agreement(outputs["engine eager (dynamic cache)"], outputs["engine static cache"], P)
        save()

        for beams in args.beams:
            decoding = Decoding("beam", N, num_beams=beams)
            try:
                engine(f"engine eager, beam {beams}", decoding, prompts[: args.beam_batch], beams=beams)
            except torch.OutOfMemoryError as exc:
                report["variants"].append({"variant": f"engine eager, beam {beams}", "error": f"OOM: {exc}"[:300]})
                save()
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()

    if args.only_compile:
        reset_peak()
        engine("engine eager (dynamic cache)", greedy, prompts)
    elif not args.only_auto:
        fixed_batch_variants()

    # batch_size unset: the engine sizes each batch to free memory (at most 256 prompts), halving on out-of-memory
    def auto(name: str, decoding: Decoding, ps: list[str], beams: int, runs: int) -> None:
        rec = Recorder(sync, model.generate)
        session = TransformersSession(model, tok, None, rec)
        reqs = [GenRequest(f"{name}{i:04d}", p, decoding, i) for i, p in enumerate(ps)]

        def call():
            rec.reset()
            made = sum(r.new_tokens for batch in session.generate(reqs, NullProgress()) for r in batch)
            return made, rec.seconds

        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        reset_peak()
        free = torch.cuda.mem_get_info()[0] if device == "cuda" else None
        try:
            timed(name, call, len(ps) * beams, len(ps), beams, warmup=0, runs=runs,
                  extra={"free_gib_before": round(free / 2**30, 1) if free else None})
        except torch.OutOfMemoryError as exc:
            report["variants"].append({"variant": name, "error": f"OOM: {exc}"[:300]})
            save()
        report["variants"][-1]["batches"] = [int(o.shape[0]) for o in rec.outs]
        report["variants"][-1]["row_cap_after_oom"] = session._row_cap
        save()

    if not args.only_compile:
        many = exact_prompts(tok, words, 4 * B, P, seed=2)
        auto("engine eager, batch_size unset, greedy", greedy, many, 1, args.runs)
        auto("engine eager, batch_size unset, beam 10", Decoding("beam", N, num_beams=10), many[: 2 * B], 10, 1)

    if not args.skip_compile and not args.only_auto:
        reset_peak()
        for name, run in (
            ("engine static+compile", lambda: engine("engine static+compile", greedy, prompts, cache="static", compile_=True, warmup=2)),
            ("raw generate static+compile", lambda: raw("raw generate static+compile", cache_implementation="static")),  # transformers compiles by itself on a GPU
        ):
            try:
                run()
            except Exception as exc:  # record why, keep the other numbers
                import traceback

                traceback.print_exc()
                report["variants"].append({"variant": name, "error": f"{type(exc).__name__}: {exc}"[:500]})
                save()
        if "engine static+compile" in outputs:
            report["agreement"]["engine eager vs static+compile"] = agreement(outputs["engine eager (dynamic cache)"], outputs["engine static+compile"], P)
        if "engine static+compile" in outputs and "raw generate static+compile" in outputs:
            report["agreement"]["raw static+compile vs engine static+compile"] = agreement(outputs["raw generate static+compile"], outputs["engine static+compile"], P)
        save()

    print()
    print(f"{env['gpu']}; bandwidth {bw['gb_s']} GB/s; roofline {roofline_s * 1e3:.2f} ms/step ({B / roofline_s:,.0f} tok/s) at batch {B}, prompt {P}, {N} new")
    print(f"{'variant':44s} {'prompts':>7s} {'rows':>5s} {'ms/step':>8s} {'gen ms':>7s} {'tok/s':>8s} {'%roof':>6s} {'first s':>7s} {'full':>5s}")
    for r in report["variants"]:
        if "error" in r:
            print(f"{r['variant']:44s} {r['error'][:60]}")
            continue
        print(
            f"{r['variant']:44s} {r['prompts']:7d} {r['rows']:5d} {r['ms_per_step']:8.2f} {r['generate_ms_per_step'] or float('nan'):7.2f} "
            f"{r['tok_s']:8.0f} {r.get('pct_roofline', float('nan')):6.1f} {r['first_call_s']:7.1f} {str(r['all_full_length']):>5s}"
        )
    for k, v in report["agreement"].items():
        print(f"agreement {k}: {v['rows_identical']}/{v['rows']} rows identical, {100 * v['tokens_matching']:.1f}% tokens, median first divergence {v['median_first_divergence']}")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
