"""GPU benchmark of the study adapters at their real shapes, with random weights.

For each adapter (peft-phi2 at the Phi-2 shape, unsloth-llama at Llama-2-7B, unsloth-mistral
at Mistral-7B): build a random-weight bf16 checkpoint of the real architecture on local disk
(no hub access on the GPU machine), then go through the harness's own code path — the
adapter's ``train`` (TRL SFTTrainer, LoRA r=16 on the study's target modules, 4-bit where
the adapter loads 4-bit) and ``load`` + the transformers engine's batched ``generate`` — and
record peak GPU memory, training tokens/s and generation tokens/s.

Speed and memory only: random weights say nothing about quality.

    python bench/gpu_adapters.py --adapters peft-phi2 unsloth-llama --out $OUT/gpu_adapters.json
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import random
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in [ROOT, *sorted((ROOT / "plugins").iterdir())]:
    sys.path.insert(0, str(p))

from harness.api import Decoding, FinetuneSpec, GenRequest, ModelSpec, NullProgress, TrainPair  # noqa: E402

SHAPES = {
    # the published configs of the three base models
    "llama": dict(cls="LlamaConfig", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=32, max_position_embeddings=4096, vocab_size=32000, rms_norm_eps=1e-5),
    "mistral": dict(cls="MistralConfig", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, max_position_embeddings=32768, vocab_size=32000, sliding_window=4096, rms_norm_eps=1e-5),
    "phi": dict(cls="PhiConfig", hidden_size=2560, intermediate_size=10240, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, max_position_embeddings=2048, vocab_size=51200, partial_rotary_factor=0.4),
}
ADAPTERS = {
    "peft-phi2": ("phi", "harness_models.phi2", "PeftPhi2", {"load_in_4bit": False}),
    "unsloth-llama": ("llama", "harness_models.unsloth_adapters", "UnslothLlama", {"load_in_4bit": True}),
    "unsloth-mistral": ("mistral", "harness_models.unsloth_adapters", "UnslothMistral", {"load_in_4bit": True}),
}


def build_tokenizer(out: Path, vocab: int = 4096):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    corpus = [" ".join(rng.choice(words) for _ in range(30)) for _ in range(3000)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    # without it decode() joins the byte-level pieces with spaces ("Ġ" kept), and a decoded 128-token
    # prompt re-encodes to 306-398 tokens: the generation numbers of 2026-11-27 ran at those lengths
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>")
    fast.save_pretrained(out)
    return fast, words


def build_checkpoint(arch: str, out: Path, tok_dir: Path) -> float:
    import torch
    import transformers

    shape = dict(SHAPES[arch])
    cfg = getattr(transformers, shape.pop("cls"))(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=2, torch_dtype="bfloat16")
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    for p in model.parameters():  # small random weights keep activations finite in bf16
        torch.nn.init.normal_(p, std=0.02)
    model.save_pretrained(out, safe_serialization=True)
    shutil.copytree(tok_dir, out, dirs_exist_ok=True)
    n = sum(p.numel() for p in model.parameters())
    del model
    torch.cuda.empty_cache()
    print(f"[{arch}] random checkpoint: {n / 1e9:.2f} B params in {time.perf_counter() - t0:.0f} s", flush=True)
    return n


def text_of(words, rng, n_words):
    return " ".join(rng.choice(words) for _ in range(n_words))


def bench_adapter(name: str, work: Path, tok, words, steps: int, batch: int, seq: int, gen_batch: int, prompt_len: int, new_tokens: int) -> dict:
    import importlib

    import torch

    from harness_engines.transformers_engine import TransformersEngine

    arch, module, cls_name, opts = ADAPTERS[name]
    ckpt = work / f"ckpt-{arch}"
    if not (ckpt / "config.json").exists():
        n_params = build_checkpoint(arch, ckpt, work / "tokenizer")
    else:
        n_params = None
    cls = getattr(importlib.import_module(module), cls_name)
    options = {k: o.default for k, o in cls.options.items()} | opts
    ft = FinetuneSpec(r=16, alpha=16, max_steps=steps, batch_size=batch, max_seq_length=seq, learning_rate=2e-4, gradient_checkpointing=True)
    spec = ModelSpec(name, name, str(ckpt), ft, options=options, base_dir=work)
    adapter = cls(options)
    rng = random.Random(1)
    # Alpaca-like pairs near max_seq_length so tokens/s counts real tokens, not padding
    pairs = [TrainPair(text_of(words, rng, seq // 4), text_of(words, rng, seq // 4)) for _ in range(steps * batch)]
    tokens_per_pair = [min(seq, len(tok(p.prompt + p.response)["input_ids"]) + 1) for p in pairs]

    torch.cuda.reset_peak_memory_stats()
    out_dir = work / f"adapter-{name}"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir()
    t0 = time.perf_counter()
    summary = adapter.train(spec, pairs, out_dir, NullProgress())
    train_wall = time.perf_counter() - t0
    train_peak = torch.cuda.max_memory_allocated() / 2**30
    hist = summary.get("loss_history", [])
    total_tokens = sum(tokens_per_pair)
    steady = None
    if len(hist) >= 6:  # tokens/s after the first 3 steps (compilation, allocator warm-up)
        a, b = hist[2], hist[-1]
        steady = sum(tokens_per_pair[a["step"] * batch : b["step"] * batch]) / (b["t"] - a["t"])
    import gc

    gc.collect()
    torch.cuda.empty_cache()

    torch.cuda.reset_peak_memory_stats()
    engine = TransformersEngine({"batch_size": gen_batch, "threads": 0})
    session = engine.open(adapter, spec, out_dir)
    prompts = [" ".join(rng.choice(words) for _ in range(prompt_len)) for _ in range(gen_batch)]
    prompts = [tok.decode(tok(p)["input_ids"][:prompt_len]) for p in prompts]
    greedy = Decoding("greedy", new_tokens)

    def run(decoding, reqs):
        made, t = 0, time.perf_counter()
        for batch_out in session.generate(reqs, NullProgress()):
            made += sum(r.new_tokens for r in batch_out)
        torch.cuda.synchronize()
        return made, time.perf_counter() - t

    # warm-up at the timed shape: the first generate at a new shape runs several times slower
    first_made, first_secs = run(greedy, [GenRequest(f"w{i}", p, greedy, i) for i, p in enumerate(prompts)])
    made, secs = run(greedy, [GenRequest(f"g{i}", p, greedy, i) for i, p in enumerate(prompts)])
    gen_peak = torch.cuda.max_memory_allocated() / 2**30
    # every strategy of the sweep goes through this adapter's model
    sample = Decoding("sample", 16, temperature=0.8, top_k=50)
    beam = Decoding("beam", 16, num_beams=3)
    s_made, _ = run(sample, [GenRequest(f"s{i}", p, sample, i) for i, p in enumerate(prompts[:8])])
    b_made, _ = run(beam, [GenRequest(f"b{i}", p, beam, i) for i, p in enumerate(prompts[:8])])
    session.close()
    del session
    gc.collect()
    torch.cuda.empty_cache()
    shutil.rmtree(ckpt, ignore_errors=True)
    return {
        "adapter": name,
        "shape": arch,
        "params_b": round(n_params / 1e9, 2) if n_params else None,
        "load_in_4bit": options.get("load_in_4bit"),
        "train_steps": summary.get("steps"),
        "train_batch": batch,
        "seq": seq,
        "train_tokens": total_tokens,
        "train_seconds": round(train_wall, 1),
        "train_tok_s_overall": round(total_tokens / summary["seconds"], 1) if summary.get("seconds") else None,
        "train_tok_s_steady": round(steady, 1) if steady else None,
        "train_peak_gib": round(train_peak, 2),
        "final_loss": summary.get("final_loss"),
        "gen_batch": gen_batch,
        "prompt_tokens": prompt_len,
        "new_tokens": new_tokens,
        "gen_tokens": made,
        "gen_seconds": round(secs, 2),
        "gen_tok_s": round(made / secs, 1),
        "gen_tok_s_first_call": round(first_made / first_secs, 1),
        "gen_peak_gib": round(gen_peak, 2),
        "sample_tokens": s_made,
        "beam3_tokens": b_made,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapters", nargs="+", default=list(ADAPTERS))
    ap.add_argument("--work", default="/tmp/harness-gpu-bench")
    ap.add_argument("--out", default="gpu_adapters.json")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--gen-batch", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=128)
    args = ap.parse_args()
    import torch

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tok, words = build_tokenizer(work / "tokenizer")
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else []
    env = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for pkg in ("transformers", "peft", "trl", "bitsandbytes", "unsloth", "unsloth_zoo", "datasets"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = None
    print(json.dumps(env), flush=True)
    for name in args.adapters:
        try:
            r = bench_adapter(name, work, tok, words, args.steps, args.batch, args.seq, args.gen_batch, args.prompt, args.new)
        except Exception as exc:  # record why an adapter could not run, and go on
            import traceback

            traceback.print_exc()
            r = {"adapter": name, "error": f"{type(exc).__name__}: {exc}"}
        r["env"] = env
        results = [x for x in results if x.get("adapter") != name] + [r]
        out.write_text(json.dumps(results, indent=2))
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
