"""Inputs of the reference study built where nothing can be downloaded: tokenizers, checkpoints, data.

The study (``registries/alpaca-study.toml``) needs Llama-2-7B, Mistral-7B and Phi-2, roberta-large
for BERTScore and Alpaca. None can be fetched on the GPU machine, and Alpaca's text may not be
copied into the project, so this module builds stand-ins with the same shapes and lengths:

* **English text**: the Python documentation on the machine — ``pydoc_data.topics`` and the
  docstrings of the standard library and the installed packages (torch, transformers …), split
  at whitespace, long or symbol-only tokens dropped, in their order, 20 MB of it.
  :func:`english_words`. Its first half trains the tokenizers, its second half makes the data,
  so the data's rarer words split into several tokens as they do for a real tokenizer (about
  4 characters a token with 32,000 tokens; the text itself tokenizes at about 5).
* **Tokenizers** trained on that text with the ``tokenizers`` library: byte-level BPE (never an
  unknown byte) with each model's real vocabulary size and special tokens — 32,000 for
  Llama-2 and Mistral (``<unk>`` ``<s>`` ``</s>``, BOS added), GPT-2's 50,257 for Phi-2
  (``<|endoftext|>``, whose embedding matrix has 51,200 rows, as the real one), RoBERTa's 50,265
  for the BERTScore model (``<s> <pad> </s> <unk> <mask>``). :func:`build_tokenizer`.
* **Checkpoints** of the published shapes (``SHAPES``) with random weights (normal, std 0.02),
  saved as bf16 safetensors with their tokenizer, and roberta-large's shape (24 layers; the study
  scores with layer 17) in float32. Speed and memory only: random weights say nothing of quality.
* **Alpaca-length data**: 52,002 records whose instruction, input and output lengths in characters
  follow the published statistics of ``tatsu-lab/alpaca`` (``ALPACA_CHARS``): log-normal
  distributions fitted to them, clipped to the published extremes; 39.8% of the records have an
  input. The text is windows of the English words above. :func:`alpaca_length_records`.

``python bench/gpu_study_inputs.py --out DIR [--smoke]`` builds everything into DIR (``--smoke``:
toy shapes and a small data set, for a CPU). bench/gpu_study.py calls :func:`build_all`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

#: the published configs of the study's base models (as bench/gpu_adapters.py measured them)
SHAPES: dict[str, dict[str, Any]] = {
    "llama": dict(cls="LlamaConfig", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=32, max_position_embeddings=4096, vocab_size=32000, rms_norm_eps=1e-5),
    "mistral": dict(cls="MistralConfig", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, max_position_embeddings=32768, vocab_size=32000, sliding_window=4096, rms_norm_eps=1e-5,
                    rope_theta=10000.0),
    "phi": dict(cls="PhiConfig", hidden_size=2560, intermediate_size=10240, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, max_position_embeddings=2048, vocab_size=51200, partial_rotary_factor=0.4, layer_norm_eps=1e-5),
}
#: roberta-large (the BERTScore model): 24 layers of 1024, 16 heads, 50,265 tokens
ROBERTA_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, max_position_embeddings=514,
                     vocab_size=50265, type_vocab_size=1, layer_norm_eps=1e-5)
#: toy shapes for --smoke (the real module names at a size a CPU trains in seconds)
SMOKE_DIMS = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
SMOKE_ROBERTA = dict(hidden_size=32, num_hidden_layers=18, num_attention_heads=2, intermediate_size=64)

#: per model: (checkpoint folder, shape, tokenizer kind, tokenizer vocabulary, model_max_length)
MODELS = {
    "llama-2-7b": ("llama-2-7b-shape", "llama", "llama", 32000, 4096),
    "mistral-7b": ("mistral-7b-shape", "mistral", "llama", 32000, 32768),
    "phi-2": ("phi-2-shape", "phi", "gpt2", 50257, 2048),
}
ROBERTA_DIR = "roberta-large-shape"
DATA_FILE = "alpaca_lengths.json"

#: Character lengths of tatsu-lab/alpaca's 52,002 records (instruction, input, output as stored;
#: "input" over all records, empty ones included), computed with ``datasets`` + pandas ``str.len()``
#: and published in github.com/hgamaf/gpt2_finetuning, eda/stats/analysis_results_full.txt
#: (commit 8ec6d44); 20,679 records (39.8%) have an input.
ALPACA_CHARS = {
    "records": 52002,
    "with_input": 20679,
    "instruction": {"mean": 59.78, "median": 57.0, "std": 21.19, "min": 9, "max": 489},
    "input": {"mean": 22.91, "median": 0.0, "std": 57.51, "min": 0, "max": 2467},
    "output": {"mean": 270.31, "median": 185.0, "std": 275.03, "min": 0, "max": 4181},
}
ALPACA_HEADER = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.",
    "### Instruction:", "### Input:", "### Response:",
)
#: a kept token: up to 24 characters without whitespace or backquotes, at least one letter or digit
_WORD = re.compile(r"^(?=.*[A-Za-z0-9])[^\s`]{1,24}$")
_DOCSTRING = re.compile(r'"""(.*?)"""|\'\'\'(.*?)\'\'\'', re.S)


# --------------------------------------------------------------------------- text


def english_words(max_chars: int = 20_000_000) -> list[str]:
    """Words of the Python documentation on this machine, in order, up to ``max_chars`` characters.

    ``pydoc_data.topics`` first, then the docstrings (triple-quoted strings) of the standard
    library and of the installed packages, files in sorted order, split at whitespace; tokens of
    more than 24 characters (paths, URLs, long code) and tokens without a letter or digit are
    left out, so what remains is prose with the odd number or name in it, as Alpaca's texts have.
    Deterministic for a given set of installed packages.
    """
    import site

    from pydoc_data import topics

    words: list[str] = []
    size = 0

    def add(text: str) -> bool:
        nonlocal size
        for w in text.split():
            if _WORD.match(w):
                words.append(w)
                size += len(w) + 1
        return size >= max_chars

    for key in sorted(topics.topics):
        if add(topics.topics[key]):
            return words
    roots = [Path(sysconfig.get_paths()["stdlib"]), *(Path(p) for p in site.getsitepackages())]
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if "site-packages" in path.relative_to(root).parts:
                continue  # the standard library's copy of site-packages: reached as its own root
            try:
                text = path.read_text(encoding="utf-8", errors="ignore")
            except OSError:
                continue
            for a, b in _DOCSTRING.findall(text):
                if add(a or b):
                    return words
    return words


def lognormal(mean: float, median: float) -> tuple[float, float]:
    """(mu, sigma) of the log-normal distribution with this mean and median."""
    return math.log(median), math.sqrt(2 * math.log(mean / median))


def lognormal_moments(mean: float, std: float) -> tuple[float, float]:
    """(mu, sigma) of the log-normal distribution with this mean and standard deviation."""
    s2 = math.log(1 + (std / mean) ** 2)
    return math.log(mean) - s2 / 2, math.sqrt(s2)


def length_model() -> dict[str, Any]:
    """The fitted distributions: instruction and output from mean and median, non-empty inputs from the
    mean and standard deviation that the published all-records figures imply for them."""
    a = ALPACA_CHARS
    p = a["with_input"] / a["records"]
    i = a["input"]
    mean_c = i["mean"] / p
    var_c = (i["std"] ** 2 + i["mean"] ** 2) / p - mean_c**2
    return {
        "instruction": lognormal(a["instruction"]["mean"], a["instruction"]["median"]) + (a["instruction"]["min"], a["instruction"]["max"]),
        "input": lognormal_moments(mean_c, math.sqrt(var_c)) + (1, i["max"]),
        "output": lognormal(a["output"]["mean"], a["output"]["median"]) + (2, a["output"]["max"]),
        "p_input": p,
    }


def _text(words: list[str], rng: random.Random, chars: int, end: str = "") -> str:
    """A window of ``words`` from a random place, cut at the word boundary closest to ``chars`` characters."""
    n = len(words)
    i = rng.randrange(n)
    out = [words[i]]
    size = len(out[0])
    while size < chars:
        i += 1
        w = words[i % n]
        if size + 1 + len(w) - chars > chars - size:  # stopping here is closer to the target than going on
            break
        out.append(w)
        size += 1 + len(w)
    text = " ".join(out)
    text = text[0].upper() + text[1:]
    if end and text[-1] not in ".?!":
        text = text.rstrip(",;:") + end
    return text


def alpaca_length_records(words: list[str], n: int = ALPACA_CHARS["records"], seed: int = 0) -> list[dict[str, str]]:
    """``n`` records with Alpaca's length distributions (see ``ALPACA_CHARS``), text from ``words``."""
    rng = random.Random(seed)
    model = length_model()

    def draw(field: str) -> int:
        mu, sigma, lo, hi = model[field]
        return int(min(hi, max(lo, round(rng.lognormvariate(mu, sigma)))))

    records = []
    seen: set[tuple[str, str]] = set()
    while len(records) < n:
        instruction = _text(words, rng, draw("instruction"), end=rng.choice(".?"))
        inp = _text(words, rng, draw("input")) if rng.random() < model["p_input"] else ""
        if (instruction, inp) in seen:  # an example is identified by instruction + input
            continue
        seen.add((instruction, inp))
        records.append({"instruction": instruction, "input": inp, "output": _text(words, rng, draw("output"), end=".")})
    return records


def length_stats(records: list[dict[str, str]]) -> dict[str, Any]:
    """Mean, median, std, min and max characters of each field (input over all records), as ALPACA_CHARS reports them."""
    import statistics

    out: dict[str, Any] = {"records": len(records), "with_input": sum(1 for r in records if r["input"])}
    for field in ("instruction", "input", "output"):
        xs = [len(r[field]) for r in records]
        out[field] = {"mean": round(statistics.fmean(xs), 2), "median": statistics.median(xs), "std": round(statistics.pstdev(xs), 2),
                      "min": min(xs), "max": max(xs)}
    return out


# --------------------------------------------------------------------------- tokenizers


def build_tokenizer(kind: str, vocab_size: int, corpus: list[str], out_dir: Path, model_max_length: int) -> Any:
    """A byte-level BPE tokenizer of ``vocab_size`` tokens trained on ``corpus``, saved in ``out_dir``.

    ``kind``: "llama" (``<unk> <s> </s>``, BOS prepended, as Llama-2's and Mistral's),
    "gpt2" (``<|endoftext|>`` as BOS, EOS and unknown, nothing added: Phi-2's), "roberta"
    (``<s> <pad> </s> <unk> <mask>``, ``<s> … </s>`` around each sentence).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, RobertaTokenizerFast

    special = {"llama": ["<unk>", "<s>", "</s>"], "gpt2": ["<|endoftext|>"], "roberta": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]}[kind]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=kind == "roberta")
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    if kind == "llama":
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                       model_max_length=model_max_length, padding_side="left")
    elif kind == "gpt2":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                       model_max_length=model_max_length)
    else:
        tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")), add_prefix_space=True)
        fast = RobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                                    pad_token="<pad>", mask_token="<mask>", model_max_length=model_max_length, add_prefix_space=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def corpus_lines(words: list[str], line_words: int = 64) -> list[str]:
    """The word stream as lines of ``line_words`` words, plus the Alpaca prompt template's lines."""
    lines = [" ".join(words[i : i + line_words]) for i in range(0, len(words), line_words)]
    return lines + list(ALPACA_HEADER) * 50


# --------------------------------------------------------------------------- checkpoints


def build_checkpoint(arch: str, tok: Any, out_dir: Path, *, smoke: bool, device: str) -> int:
    """A random-weight ``arch`` model (bf16 on a GPU, fp32 in smoke mode) with ``tok``, saved in ``out_dir``; returns its parameter count."""
    import torch
    import transformers

    shape = dict(SHAPES[arch])
    cls = getattr(transformers, shape.pop("cls"))
    if smoke:
        shape.update(SMOKE_DIMS, num_key_value_heads=2 if arch != "phi" else 4, max_position_embeddings=512)
        shape["vocab_size"] = len(tok) if arch != "phi" else len(tok) + 16  # Phi's embedding is wider than its tokenizer
        if arch == "mistral":
            shape["sliding_window"] = 256
    dtype = torch.float32 if smoke else torch.bfloat16
    config = cls(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    with torch.no_grad():
        for p in model.parameters():  # small random weights keep activations finite in bf16
            p.normal_(0.0, 0.02)
    model.generation_config.pad_token_id = tok.eos_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    n = sum(p.numel() for p in model.parameters())
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return n


def build_roberta(tok: Any, out_dir: Path, *, smoke: bool, device: str) -> int:
    """roberta-large's shape (random float32 weights) with ``tok``: what BERTScore loads as ``model``."""
    import torch
    import transformers

    shape = dict(ROBERTA_LARGE, **(SMOKE_ROBERTA if smoke else {}))
    shape["vocab_size"] = len(tok)
    config = transformers.RobertaConfig(**shape, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.AutoModel.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    n = sum(p.numel() for p in model.parameters())
    del model
    return n


# --------------------------------------------------------------------------- all of it


def build_all(out: Path, *, smoke: bool = False, models: tuple[str, ...] = tuple(MODELS), records: int | None = None,
              log: Any = print) -> dict[str, Any]:
    """Build every input into ``out`` (skipping what a previous call finished); returns what was built and how long it took."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() and not smoke else "cpu"
    report: dict[str, Any] = {"smoke": smoke, "device": device, "seconds": {}}
    text: dict[str, list[str]] = {}

    def words_for(part: str) -> list[str]:
        """The text, read once and only when something still has to be built: "train" (tokenizers) or "data"."""
        if not text:
            t = time.perf_counter()
            words = english_words(400_000 if smoke else 20_000_000)
            half = len(words) // 2
            text["train"], text["data"] = corpus_lines(words[:half]), words[half:]
            report["corpus"] = {"words": len(words), "chars": sum(len(w) + 1 for w in words), "python": sys.version.split()[0]}
            report["seconds"]["corpus"] = round(time.perf_counter() - t, 1)
        return text[part]

    t0 = time.perf_counter()
    n = records if records is not None else (600 if smoke else ALPACA_CHARS["records"])
    data = out / DATA_FILE
    if not data.exists():
        recs = alpaca_length_records(words_for("data"), n)
        tmp = data.with_suffix(".tmp")
        tmp.write_text(json.dumps(recs))
        tmp.replace(data)
    recs = json.loads(data.read_text())
    report["data"] = {"file": DATA_FILE, "stats": length_stats(recs), "published": ALPACA_CHARS}
    report["seconds"]["data"] = round(time.perf_counter() - t0, 1)
    log(f"data: {len(recs)} records ({report['seconds']['data']} s)")

    tokenizers: dict[tuple[str, int], Any] = {}
    from transformers import AutoTokenizer

    def tokenizer(kind: str, vocab: int, max_len: int) -> Any:
        size = {"llama": 512, "gpt2": 640, "roberta": 640}[kind] if smoke else vocab
        key = (kind, size)
        if key not in tokenizers:
            t = time.perf_counter()
            target = out / f"tokenizer-{kind}-{size}"
            if not (target / "tokenizer.json").exists():
                build_tokenizer(kind, size, words_for("train"), target, max_len)
            tokenizers[key] = AutoTokenizer.from_pretrained(target)
            report["seconds"][f"tokenizer {kind}"] = round(time.perf_counter() - t, 1)
            log(f"tokenizer {kind}: {len(tokenizers[key])} tokens")
        tok = tokenizers[key]
        tok.model_max_length = max_len
        return tok

    report["models"] = {}
    for name in models:
        folder, arch, kind, vocab, max_len = MODELS[name]
        tok = tokenizer(kind, vocab, max_len)
        target = out / folder
        t = time.perf_counter()
        if not (target / "config.json").exists():
            tmp = out / f".{folder}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            params = build_checkpoint(arch, tok, tmp, smoke=smoke, device=device)
            tmp.replace(target)
        else:
            params = None
        sample = [r["instruction"] + " " + r["input"] + " " + r["output"] for r in recs[:2000]]
        n_tokens = sum(len(ids) for ids in tok(sample, add_special_tokens=False)["input_ids"])
        report["models"][name] = {"folder": folder, "shape": arch, "params": params, "tokenizer_tokens": len(tok),
                                  "chars_per_token": round(sum(map(len, sample)) / n_tokens, 3)}
        report["seconds"][f"checkpoint {name}"] = round(time.perf_counter() - t, 1)
        log(f"checkpoint {name}: {report['seconds'][f'checkpoint {name}']} s")
    tok = tokenizer("roberta", ROBERTA_LARGE["vocab_size"], 512)
    target = out / ROBERTA_DIR
    t = time.perf_counter()
    if not (target / "config.json").exists():
        tmp = out / f".{ROBERTA_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        params = build_roberta(tok, tmp, smoke=smoke, device=device)
        tmp.replace(target)
    report["seconds"]["roberta-large shape"] = round(time.perf_counter() - t, 1)
    report["bertscore"] = {"folder": ROBERTA_DIR, "tokenizer_tokens": len(tok)}
    (out / "inputs.json").write_text(json.dumps(report, indent=1))
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--smoke", action="store_true", help="toy shapes, a small data set (a CPU)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = ap.parse_args()
    print(json.dumps(build_all(args.out, smoke=args.smoke, models=tuple(args.models)), indent=1))


if __name__ == "__main__":
    main()
