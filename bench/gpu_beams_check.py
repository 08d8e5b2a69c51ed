"""The own loop's CUDA paths against ``generate`` and against one config at a time, in bf16 on a GPU.

The CPU tests (tests/test_engine_beams.py, tests/test_engine_fast.py) show in float32 that the own
loop gives ``generate``'s text token for token and that a call mixing configs gives each request the
text a call of its config alone gives. On a GPU the loop takes paths a CPU never runs (CUDA graphs
per window of slots, ``torch.compile``, the grouped-query fold in the captured attention) and bf16
kernels differ with the batch's shape, so near-ties may flip. This script runs, on a random
grouped-query Llama at the SmolLM2-135M shape (vocabulary cut to a tokenizer built here) and
``--prompts`` prompts of unequal length, the mix of the tests — greedy, sampled (top-k, top-p +
min-p), greedy with a repetition penalty, beams 2, 5 and 3 with ``length_penalty`` 2 and
``early_stopping`` — three ways:

* ``generate``: the engine with ``loop = "generate"`` (transformers' ``generate``, one config a call);
* one batch: the engine with the own loop, every config in one call (captured graphs; then compiled,
  greedy and sampled configs only, so the compile stays one shape);
* alone: the own loop, one config per call (same session).

Per config it reports rows identical to ``generate``, to alone, and between two runs of the one
batch, and the token agreement (positions equal / positions, on the re-tokenized texts) of greedy
and beam rows against ``generate`` and of greedy rows against alone. Expected in bf16: ≥ 99% greedy
token agreement. With ``--smoke`` it runs on this CPU in float32 at toy size, where every row must be
identical (exit 1 otherwise).

    python bench/gpu_beams_check.py --out $OUT/beams_check.json        # a GPU, ~1-2 min (compile ~30-60 s)
    python bench/gpu_beams_check.py --smoke --out /tmp/beams_check.json
"""

from __future__ import annotations

import argparse
import json
import random
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

U = ("temperature", "top_k", "top_p")
#: SmolLM2-135M's shape (grouped-query: 9 heads over 3 key/value heads); the vocabulary is the tokenizer's
SHAPE = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048)
SMOKE_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)


def mix(n: int) -> list[tuple[str, Decoding]]:
    return [
        ("greedy", Decoding("greedy", n, unused=U)),
        ("sample_k50", Decoding("sample", n, temperature=0.8, top_k=50)),
        ("sample_k10", Decoding("sample", n, temperature=0.8, top_k=10)),
        ("sample_p0.9_min0.05", Decoding("sample", n, temperature=1.0, top_p=0.9, min_p=0.05)),
        ("greedy_penalty1.3", Decoding("greedy", n, repetition_penalty=1.3, unused=U)),
        ("beam_2", Decoding("beam", n, num_beams=2, unused=U)),
        ("beam_5", Decoding("beam", n, num_beams=5, unused=U)),
        ("beam_3_lp2_early", Decoding("beam", n, num_beams=3, length_penalty=2.0, early_stopping=True, unused=U)),
    ]


def build(torch: Any, device: str, smoke: bool) -> tuple[Any, Any, list[str]]:
    """A random grouped-query Llama and a tokenizer built here; logits of ids the tokenizer lacks are 0 (never chosen)."""
    import transformers
    from gpu_adapters import build_tokenizer

    tok, words = build_tokenizer(Path(tempfile.mkdtemp(prefix="harness-tok-")), vocab=4096)
    cfg = transformers.LlamaConfig(**(SMOKE_SHAPE if smoke else SHAPE), vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32 if smoke else torch.bfloat16).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            else:
                torch.nn.init.normal_(p, std=0.05)  # larger than 0.02: fewer near-ties in bf16, as a trained model has
    return model, tok, words


def token_agreement(tok: Any, a: dict[str, str], b: dict[str, str], keys: list[str]) -> float:
    """Positions where the re-tokenized texts of ``a`` and ``b`` agree, over the longer of each pair."""
    same = total = 0
    for k in keys:
        x, y = tok(a[k], add_special_tokens=False)["input_ids"], tok(b.get(k, ""), add_special_tokens=False)["input_ids"]
        same += sum(i == j for i, j in zip(x, y))
        total += max(len(x), len(y))
    return round(same / total, 4) if total else 1.0


def run_check(torch: Any, model: Any, tok: Any, prompts: list[str], new_tokens: int, *, compiled: bool = True, log: Any = print) -> dict[str, Any]:
    """The three ways of the module docstring on ``model``; the per-config agreement table."""
    from harness_engines.transformers_engine import TransformersSession

    configs = mix(new_tokens)
    reqs = [GenRequest(f"{name}|{i:03d}", p, d, 100 + i) for name, d in configs for i, p in enumerate(prompts)]
    cuda = next(model.parameters()).device.type == "cuda"

    def call(session: Any, rs: list[GenRequest]) -> tuple[float, dict[str, str]]:
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = {r.key: r.text for b in session.generate(rs, NullProgress()) for r in b}
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t, out

    res: dict[str, Any] = {"prompts": len(prompts), "new_tokens": new_tokens, "configs": [n for n, _ in configs]}
    with torch.inference_mode():
        plain = TransformersSession(model, tok, len(prompts), loop="generate")
        res["generate_s"], want = call(plain, reqs)
        res["generate_s"] = round(res["generate_s"], 2)
        plain.close()
    variants = [("graphs", {"compile": False})] + ([("compiled", {"compile": True})] if compiled and cuda else [])
    for label, kw in variants:
        session = TransformersSession(model, tok, len(prompts), loop="fast", **kw)
        use = [n for n, d in configs if label == "graphs" or d.strategy != "beam"]  # compiled: one family, one compile
        rs = [r for r in reqs if r.key.split("|")[0] in use]
        t1, got = call(session, rs)
        t2, again = call(session, rs)
        alone: dict[str, str] = {}
        for n in use:
            alone.update(call(session, [r for r in rs if r.key.startswith(f"{n}|")])[1])
        table = {}
        for n in use:
            keys = [k for k in got if k.startswith(f"{n}|")]
            row = {"rows": len(keys), "same_as_generate": sum(got[k] == want[k] for k in keys), "same_as_alone": sum(got[k] == alone[k] for k in keys),
                   "run2_same": sum(got[k] == again[k] for k in keys)}
            if n.startswith(("greedy", "beam")):
                row["token_agreement_vs_generate"] = token_agreement(tok, got, want, keys)
            if n.startswith("greedy"):
                row["token_agreement_vs_alone"] = token_agreement(tok, got, alone, keys)
            table[n] = row
        res[label] = {"first_s": round(t1, 2), "second_s": round(t2, 2), "compile_s": round(session.compile_seconds, 2),
                      "states": [list(k) + [st.compiled] for k, st in session.fast.states.items()], "agreement": table}
        log(label, json.dumps(res[label]))
        session.close()
    greedy = [row for v in variants for n, row in res[v[0]]["agreement"].items() if n == "greedy"]
    res["greedy_token_agreement_min"] = min(min(r["token_agreement_vs_generate"], r["token_agreement_vs_alone"]) for r in greedy)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("beams_check.json"))
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--no-compile", action="store_true", help="captured graphs only (the compiled variant costs a compile)")
    ap.add_argument("--smoke", action="store_true", help="this CPU, float32, toy size: every row must be identical")
    args = ap.parse_args()
    import torch

    device = "cpu" if args.smoke else "cuda"
    if args.smoke:
        args.prompts, args.new = min(args.prompts, 5), min(args.new, 8)
    model, tok, words = build(torch, device, args.smoke)
    rng = random.Random(0)
    prompts = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 60))) for _ in range(args.prompts)]
    env = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (smoke)", "torch": torch.__version__,
           "dtype": str(next(model.parameters()).dtype)}
    print(json.dumps(env), flush=True)
    res = {"env": env, **run_check(torch, model, tok, prompts, args.new, compiled=not args.no_compile)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    print(f"wrote {args.out}")
    if args.smoke:  # float32 on a CPU: identical, row for row
        bad = {n: r for n, r in res["graphs"]["agreement"].items() if not r["rows"] == r["same_as_generate"] == r["same_as_alone"] == r["run2_same"]}
        if bad:
            sys.exit(f"float32 rows differ: {bad}")
        print("smoke: every row identical to generate and to one config at a time")


if __name__ == "__main__":
    main()
