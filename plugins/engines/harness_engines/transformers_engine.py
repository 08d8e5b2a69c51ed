"""``transformers``: generation with Hugging Face ``generate``.

* The model is loaded once per run (``open``) and serves every decoding config.
* Prompts of one config are sorted by length and batched with left padding.
* Every decoding field is passed explicitly and the model's own generation config is
  replaced by a neutral one, so a checkpoint's ``generation_config.json`` cannot turn
  sampling on behind the user's back.
* Sampling is seeded per example: a logits processor draws each row's token with its
  own ``torch.Generator`` seeded from the request, so a re-run — resumed, re-batched or
  not — reproduces the same text.
* Generation stops at EOS (the tokenizer's and the model's) or ``max_new_tokens``.

Speed options (neither changes the text beyond float rounding — like ``batch_size``, they
are not part of the engine's identity):

* ``cache = "static"`` preallocates the KV cache (transformers' ``cache_implementation="static"``)
  instead of growing it by a copy of the whole cache every step;
* ``compile = true`` (needs the static cache) lets transformers ``torch.compile`` the decoding
  step (its default ``CompileConfig``: mode "reduce-overhead", CUDA graphs on a GPU). The prefill
  runs eagerly; only the one-token decoding steps go through the compiled forward, whose shapes
  are the batch (prompts x beams) and the cache length. The cache length is the longest prompt
  of the call rounded up to a bucket (32, 48, 64, 96, 128, 192, …) plus ``max_new_tokens`` and is
  shared by every batch of the call, so a sweep compiles once per batch shape and beam width,
  not once per prompt length.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness import hookimpl
from harness.api import Decoding, Engine, GenRequest, GenResult, ModelAdapter, ModelSpec, Option, Progress
from harness.errors import MissingDependency, UserError

from .eos import unique_token_ids

CACHES = ("dynamic", "static")


class TransformersEngine(Engine):
    name = "transformers"
    version = "1"
    description = "Hugging Face transformers generate(), batched, seeded per example"
    options = {
        "batch_size": Option(int, default=16, minimum=1, help="prompts per batch (beam search: prompts, not beams)"),
        "threads": Option(int, default=0, minimum=0, help="CPU threads for torch (0: torch's default)"),
        "cache": Option(str, default="dynamic", choices=CACHES, help="KV cache: dynamic (grows each step) or static (preallocated; needed by compile)"),
        "compile": Option(bool, default=False, help="torch.compile the decoding step (needs cache = 'static'; each new batch shape compiles once)"),
    }

    def open(self, adapter: ModelAdapter, spec: ModelSpec, adapter_dir: Path | None) -> TransformersSession:
        try:
            import torch
        except ImportError:
            raise MissingDependency("torch", "default", purpose="the transformers engine") from None
        cache, compile_ = self.settings.get("cache", "dynamic"), bool(self.settings.get("compile", False))
        if compile_ and cache != "static":
            raise UserError("compile = true needs cache = 'static' (transformers compiles the decoding step only with a static cache)", key="engine.compile")
        if self.settings.get("threads"):
            torch.set_num_threads(int(self.settings["threads"]))
        loaded = adapter.load(spec, adapter_dir)
        return TransformersSession(loaded.model, loaded.tokenizer, int(self.settings.get("batch_size", 16)), loaded.generate, cache=cache, compile=compile_)


class TransformersSession:
    def __init__(self, model: Any, tokenizer: Any, batch_size: int, generate: Any = None, *, cache: str = "dynamic", compile: bool = False):
        from transformers import GenerationConfig

        if cache not in CACHES or (compile and cache != "static"):
            raise ValueError(f"cache must be one of {CACHES}, and compile needs cache='static' (got cache={cache!r}, compile={compile})")
        self.model = model
        self._generate = generate or model.generate
        self.tok = tokenizer
        self.batch_size = batch_size
        self.cache = cache
        self.compile_config = None
        if compile:
            from transformers import CompileConfig

            self.compile_config = CompileConfig()  # transformers' defaults for generate: fullgraph=False, mode="reduce-overhead"
            self.compile_config._compile_all_devices = True  # compile on a CPU too (transformers skips it there otherwise)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.eos_ids = _eos_ids(model, tokenizer)
        # a neutral generation config: nothing inherited from the checkpoint
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=self.eos_ids, pad_token_id=tokenizer.pad_token_id
        )
        self.device = next(model.parameters()).device

    def close(self) -> None:
        self.model = None

    def generate(self, requests: Sequence[GenRequest], progress: Progress) -> Iterator[list[GenResult]]:
        import torch

        if not requests:
            return
        # tokenized once: the lengths order the batches, the ids are padded per batch
        ids = dict(zip((r.key for r in requests), self.tok([r.prompt for r in requests], add_special_tokens=True)["input_ids"]))
        ordered = sorted(requests, key=lambda r: (len(ids[r.key]), r.key))
        longest = len(ids[ordered[-1].key])
        advance = progress.task("generating", len(ordered))
        produced = 0
        started = time.perf_counter()
        for start in range(0, len(ordered), self.batch_size):
            batch = ordered[start : start + self.batch_size]
            t0 = time.perf_counter()
            with torch.inference_mode():
                results = self._generate_batch(batch, [ids[r.key] for r in batch], longest)
            seconds = (time.perf_counter() - t0) / len(batch)
            results = [GenResult(r.key, r.text, r.prompt_tokens, r.new_tokens, round(seconds, 4), r.finish_reason) for r in results]
            produced += sum(r.new_tokens for r in results)
            advance(len(batch), tok_s=round(produced / max(time.perf_counter() - started, 1e-9), 1))
            yield results

    def _generate_batch(self, batch: Sequence[GenRequest], ids: Sequence[list[int]], longest: int) -> list[GenResult]:
        decodings = {r.decoding for r in batch}
        if len(decodings) != 1:
            raise ValueError("a batch must share one decoding config")
        decoding: Decoding = decodings.pop()
        enc = self.tok.pad({"input_ids": list(ids)}, padding=True, return_tensors="pt").to(self.device)
        kwargs = generate_kwargs(decoding, pad_token_id=self.tok.pad_token_id, eos_token_id=self.eos_ids)
        if self.cache == "static":
            kwargs.update(cache_implementation="static", max_cache_len=bucket(longest) + decoding.max_new_tokens)
            if self.compile_config is not None:
                kwargs["compile_config"] = self.compile_config
            else:
                kwargs["disable_compile"] = True  # on a GPU transformers would compile a static cache's decoding step by itself
        if decoding.strategy == "sample":
            kwargs["logits_processor"] = [SeededSampler(decoding, [r.seed for r in batch], self.device)]
        elif decoding.strategy == "beam_sample":
            import torch

            torch.manual_seed(batch[0].seed)  # beam sampling: seeded per batch
        out = self._generate(**enc, **kwargs)
        prompt_len = enc["input_ids"].shape[1]
        # one device-to-host copy per batch, not one per row
        rows = out[:, prompt_len:].tolist()
        prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
        eos = set(self.eos_ids)
        results = []
        for req, new, n_prompt in zip(batch, rows, prompt_tokens, strict=True):
            finish = "length"
            for j, t in enumerate(new):
                if t in eos:
                    new, finish = new[: j + 1], "eos"
                    break
            else:
                while new and new[-1] == self.tok.pad_token_id and self.tok.pad_token_id not in eos:
                    new.pop()
            text = self.tok.decode(new, skip_special_tokens=True).strip()
            results.append(GenResult(req.key, text, int(n_prompt), len(new), 0.0, finish))
        return results


def bucket(n: int) -> int:
    """``n`` rounded up to 32, 48, 64, 96, 128, 192, 256, … (at most 1.5x; two sizes per doubling)."""
    size = 32
    while size < n:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


def generate_kwargs(decoding: Decoding, *, pad_token_id: int, eos_token_id: list[int]) -> dict[str, Any]:
    """Every decoding field, explicitly. Per-example sampling runs in SeededSampler, so HF itself decodes greedily."""
    beam = decoding.strategy in ("beam", "beam_sample")
    kwargs: dict[str, Any] = {
        "max_new_tokens": decoding.max_new_tokens,
        # no minimum; min_new_tokens=0 would add a MinLengthLogitsProcessor (three kernels and a copy of the scores per step) that never fires
        "min_length": 0,
        "min_new_tokens": None,
        "do_sample": decoding.strategy == "beam_sample",
        "num_beams": decoding.num_beams if beam else 1,
        "num_return_sequences": 1,
        "temperature": 1.0,
        "top_k": None,
        "top_p": None,
        "typical_p": None,
        "min_p": None,
        "epsilon_cutoff": None,
        "eta_cutoff": None,
        "repetition_penalty": decoding.repetition_penalty,
        "no_repeat_ngram_size": None,
        "length_penalty": decoding.length_penalty,
        "early_stopping": decoding.early_stopping,
        "pad_token_id": pad_token_id,
        "eos_token_id": eos_token_id,
        "use_cache": True,
    }
    if decoding.strategy == "beam_sample":
        kwargs.update(temperature=decoding.temperature, top_k=decoding.top_k or None, top_p=decoding.top_p)
    return kwargs


class SeededSampler:
    """A logits processor that samples each row with its own generator and forces that token.

    Applies temperature, top-k and top-p like transformers' warpers, draws one token per
    row from ``torch.Generator`` seeded by the request, and returns scores that are
    ``-inf`` everywhere else, so greedy selection picks the drawn token.
    """

    def __init__(self, decoding: Decoding, seeds: Sequence[int], device: Any):
        import torch

        self.decoding = decoding
        self.generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        self.device = device

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        d = self.decoding
        logits = scores.float() / max(d.temperature, 1e-6)
        if d.top_k and d.top_k < logits.shape[-1]:
            kth = torch.topk(logits, d.top_k, dim=-1).values[..., -1, None]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if d.top_p < 1.0:
            sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            drop = cum - sorted_logits.softmax(-1) > d.top_p  # keep the token that crosses top_p
            sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
            logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
        probs = logits.softmax(-1).cpu()

        def draw(i: int) -> Any:
            return torch.multinomial(probs[i], 1, generator=self.generators[i])

        # A draw costs one random number per vocabulary entry (~0.7 ms a row at 32k): 64 rows in
        # a loop cost more than a GPU decoding step. Each row has its own generator, so the rows
        # run on threads (torch releases the GIL) and draw exactly what the loop would.
        rows = range(len(self.generators))
        chosen = torch.stack(list(_sampling_pool().map(draw, rows)) if len(rows) > 1 else [draw(0)]).to(scores.device)
        forced = torch.full_like(scores, float("-inf"))
        return forced.scatter(-1, chosen, 0.0)


_POOL = None


def _sampling_pool() -> Any:
    global _POOL
    if _POOL is None:
        import os
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1), thread_name_prefix="harness-sampler")
    return _POOL


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    return unique_token_ids(
        (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None), getattr(model.config, "eos_token_id", None))
    )


@hookimpl
def harness_register_engines(register):
    register(TransformersEngine)
