"""``transformers``: generation with Hugging Face models.

* The model is loaded once per run (``open``) and serves every decoding config.
* Prompts of one config are sorted by length and batched with left padding.
* Greedy and sampled configs run through the harness's own decoding loop on a GPU
  (``loop = "auto"``; ``fast_decode.py``: static KV cache, the step compiled and replayed as a
  CUDA graph, stopping checked on the device) and through ``generate`` on a CPU; beam search
  and beam sampling always through ``generate``. Both give the same text (tested in float32).
* Every decoding field is passed explicitly and the model's own generation config is
  replaced by a neutral one, so a checkpoint's ``generation_config.json`` cannot turn
  sampling on behind the user's back.
* Sampling is seeded per example and batch-invariant: ``sampling.py`` draws each row's token
  by Gumbel-max with noise hashed from (the request's seed, step, token id), on the device, so
  a re-run — resumed, re-batched or not — reproduces the same text. (Engine version 1 drew
  with a per-row ``torch.Generator`` on the CPU: other samples, hence the version bump.)
  Beam sampling is seeded per batch (``torch.manual_seed``), as before.
* Generation stops at EOS (the tokenizer's and the model's) or ``max_new_tokens``.

Speed options (none changes the text beyond float rounding — like ``batch_size``, they
are not part of the engine's identity):

* ``prompt_cache`` (MiB, default 1024; 0 turns it off): a sweep generates from the same prompts
  once per decoding config, so the KV cache of each batch of prompts is computed once and kept
  (least recently used first out, within the budget) for the next configs. Only the decoding
  steps then run per config, and beam search no longer encodes each prompt once per beam (the
  cache is repeated per beam instead). Prompts are ordered by length, then text, so every
  config forms the same batches. On two CPU cores with SmolLM2-135M this halves a greedy
  config and a beam-5 config (20 prompts of 37–77 tokens, 24 new tokens). Used with the
  dynamic cache and the model's own ``generate`` (not an adapter's replacement, such as
  unsloth's inference path);
* ``cache = "static"`` preallocates the KV cache (transformers' ``cache_implementation="static"``)
  instead of growing it by a copy of the whole cache every step;
* ``loop`` / ``cuda_graphs``: see ``fast_decode.py`` and docs/engines.md; ``compile`` unset
  compiles the fast loop's step on a GPU;
* with ``generate``, ``compile = true`` (needs the static cache) lets transformers ``torch.compile`` the decoding
  step (its default ``CompileConfig``: mode "reduce-overhead", CUDA graphs on a GPU). The prefill
  runs eagerly; only the one-token decoding steps go through the compiled forward, whose shapes
  are the batch (prompts x beams) and the cache length. The cache length is the longest prompt
  of the call rounded up to a bucket (32, 48, 64, 96, 128, 192, …) plus ``max_new_tokens`` and is
  shared by every batch of the call, so a sweep compiles once per batch shape and beam width,
  not once per prompt length.

``batch_size`` left unset is 16 on a CPU; on a GPU it is sized to free memory (the KV cache,
logits and activations a row needs at the config's beam width, prompt and new-token lengths),
at most 256 prompts. Whatever the setting, a batch that runs out of GPU memory is halved and
retried, and later batches stay within the rows that fitted.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from harness import hookimpl
from harness.api import Decoding, Engine, GenRequest, GenResult, ModelAdapter, ModelSpec, Option, Progress
from harness.errors import MissingDependency, UserError

from .eos import unique_token_ids
from .sampling import CounterSampler

CACHES = ("dynamic", "static")
LOOPS = ("auto", "fast", "generate")
#: prompts per batch on a CPU when batch_size is unset
CPU_BATCH_SIZE = 16
#: upper bound of an automatic batch size (prompts) on a GPU
MAX_AUTO_BATCH = 256
#: share of free GPU memory an automatic batch may plan to use
GPU_MEMORY_SHARE = 0.7


class TransformersEngine(Engine):
    name = "transformers"
    is_default = True
    # 2: sampling draws with the counter-based Gumbel-max sampler (sampling.py), not torch.multinomial
    version = "2"
    description = "Hugging Face transformers models, batched, seeded per example; own CUDA-graph decoding loop on a GPU"
    options = {
        "batch_size": Option(
            int, default=None, nullable=True, minimum=1,
            help="prompts per batch (beam search: prompts, not beams); unset: 16 on a CPU, sized to free memory on a GPU",
        ),
        "threads": Option(int, default=0, minimum=0, help="CPU threads for torch (0: torch's default)"),
        "cache": Option(str, default="dynamic", choices=CACHES, help="KV cache: dynamic (grows each step) or static (preallocated; needed by compile)"),
        "loop": Option(
            str, default="auto", choices=LOOPS,
            help="greedy/sample decoding loop: fast (the harness's static-cache loop, CUDA graphs on a GPU), generate (transformers' generate), auto (fast on a GPU, generate on a CPU)",
        ),
        "compile": Option(
            bool, default=None, nullable=True,
            help="torch.compile the decoding step; unset: on for the fast loop on a GPU, off otherwise (with generate it needs cache = 'static')",
        ),
        "cuda_graphs": Option(bool, default=True, help="fast loop on a GPU: replay each decoding step as a captured CUDA graph"),
        "prompt_cache": Option(int, default=1024, minimum=0, help="MiB of prompt KV caches kept for the next decoding configs (0: off; dynamic cache only)"),
    }

    def open(self, adapter: ModelAdapter, spec: ModelSpec, adapter_dir: Path | None) -> TransformersSession:
        try:
            import torch
        except ImportError:
            raise MissingDependency("torch", "default", purpose="the transformers engine") from None
        cache, compile_ = self.settings["cache"], self.settings["compile"]
        loop = self.settings["loop"]
        if compile_ and cache != "static" and loop == "generate":
            raise UserError("compile = true needs cache = 'static' (transformers compiles the decoding step only with a static cache)", key="engine.compile")
        if self.settings["threads"]:
            torch.set_num_threads(int(self.settings["threads"]))
        loaded = adapter.load(spec, adapter_dir)
        batch_size = self.settings["batch_size"]
        return TransformersSession(
            loaded.model, loaded.tokenizer, int(batch_size) if batch_size else None, loaded.generate,
            cache=cache, compile=compile_, prompt_cache_mb=int(self.settings["prompt_cache"]),
            loop=loop, cuda_graphs=bool(self.settings["cuda_graphs"]),
        )


class TransformersSession:
    """One loaded model serving every decoding config of a run.

    ``batch_size`` None: 16 prompts on a CPU, sized to free memory on a GPU.
    ``prompt_cache_mb`` > 0 keeps prompt KV caches across calls (see the module docstring);
    it is ignored with the static cache or a replacement ``generate``.
    ``loop``: who decodes greedy and sampled configs — ``fast`` (:mod:`fast_decode`), ``generate``,
    or ``auto`` (fast on a GPU). ``compile`` None: on for the fast loop on a GPU, off elsewhere;
    with ``generate`` it compiles only with the static cache.
    """

    def __init__(
        self, model: Any, tokenizer: Any, batch_size: int | None = None, generate: Any = None, *,
        cache: str = "dynamic", compile: bool | None = None, prompt_cache_mb: int = 0,
        loop: str = "generate", cuda_graphs: bool = True,
    ):
        from transformers import GenerationConfig

        if cache not in CACHES or loop not in LOOPS or (compile and cache != "static" and loop == "generate"):
            raise ValueError(
                f"cache must be one of {CACHES}, loop one of {LOOPS}, and compile with loop='generate' needs cache='static' "
                f"(got cache={cache!r}, compile={compile}, loop={loop!r})"
            )
        self.model = model
        self._generate = generate or model.generate
        self.tok = tokenizer
        self.batch_size = batch_size
        self.cache = cache
        self.prompt_cache = PromptCache(prompt_cache_mb * 2**20) if prompt_cache_mb and cache == "dynamic" and generate is None else None
        self._row_cap: int | None = None  # rows (prompts x beams) known to fit after an out-of-memory
        self.compile_config = None
        if compile and cache == "static":
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
        self._position_ids = _accepts(model, "position_ids")
        self._logits_to_keep = _accepts(model, "logits_to_keep")
        self.fast = None  # the fast decoding loop (greedy and sampled configs), when in use
        self.fast_unsupported: str | None = None
        use_fast = loop == "fast" or (loop == "auto" and self.device.type == "cuda")
        if use_fast and generate is not None:
            self.fast_unsupported = "the model adapter replaces generate()"
        elif use_fast:
            from .fast_decode import FastDecoder

            self.fast_unsupported = FastDecoder.supported(model)
            if self.fast_unsupported is None:
                self.fast = FastDecoder(
                    model, eos_ids=self.eos_ids, pad_id=self.tok.pad_token_id, cuda_graphs=cuda_graphs,
                    compile=self.device.type == "cuda" if compile is None else bool(compile),
                )
        if loop == "fast" and self.fast is None:
            raise UserError(f"loop = 'fast' cannot decode this model: {self.fast_unsupported}", key="engine.loop")

    def close(self) -> None:
        self.model = None
        if self.fast is not None:
            self.fast.clear()
            self.fast = None
        if self.prompt_cache is not None:
            self.prompt_cache.clear()

    def generate(self, requests: Sequence[GenRequest], progress: Progress) -> Iterator[list[GenResult]]:
        import torch

        if not requests:
            return
        # tokenized once: the lengths order the batches, the ids are padded per batch
        ids = dict(zip((r.key for r in requests), self.tok([r.prompt for r in requests], add_special_tokens=True)["input_ids"]))
        # by length, then by prompt: every decoding config of the same prompts forms the same batches
        ordered = sorted(requests, key=lambda r: (len(ids[r.key]), r.prompt, r.key))
        longest = len(ids[ordered[-1].key])
        advance = progress.task("generating", len(ordered))
        produced = 0
        started = time.perf_counter()
        start = 0
        while start < len(ordered):
            size = self._batch_prompts(ordered[start].decoding, longest)
            batch = ordered[start : start + size]
            t0 = time.perf_counter()
            out_of_memory = False
            try:
                with torch.inference_mode():
                    # rows: the fast loop pads a smaller last batch to this (one CUDA graph per call), never beyond the call's prompts
                    results = self._generate_batch(batch, [ids[r.key] for r in batch], longest, rows=min(size, len(ordered)))
            except torch.OutOfMemoryError:
                out_of_memory = True
            if out_of_memory:  # outside the except block: its traceback no longer holds the batch's tensors
                self._shrink(len(batch), _beams(batch[0].decoding))
                continue
            start += len(batch)
            seconds = (time.perf_counter() - t0) / len(batch)
            results = [GenResult(r.key, r.text, r.prompt_tokens, r.new_tokens, round(seconds, 4), r.finish_reason) for r in results]
            produced += sum(r.new_tokens for r in results)
            advance(len(batch), tok_s=round(produced / max(time.perf_counter() - started, 1e-9), 1))
            yield results

    # ------------------------------------------------------------------ batch size

    def _batch_prompts(self, decoding: Decoding, longest: int) -> int:
        """Prompts in the next batch: the setting or the memory estimate, within the rows known to fit."""
        size = self.batch_size or (self._auto_batch(decoding, longest) if self.device.type == "cuda" else CPU_BATCH_SIZE)
        if self._row_cap is not None:
            size = min(size, max(1, self._row_cap // _beams(decoding)))
        return size

    def _auto_batch(self, decoding: Decoding, longest: int) -> int:
        import torch

        free, _ = torch.cuda.mem_get_info(self.device)
        # memory torch's allocator holds for tensors already freed (earlier batches) is free for this one too
        free += torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        if self.prompt_cache is not None:  # what the prompt cache may still grow by
            free -= self.prompt_cache.budget - self.prompt_cache.bytes
        per_row = row_bytes(self.model.config, longest, decoding.max_new_tokens, _dtype_size(self.model))
        return max(1, min(MAX_AUTO_BATCH, int(max(free, 0) * GPU_MEMORY_SHARE) // (per_row * _beams(decoding))))

    def _shrink(self, prompts: int, beams: int) -> None:
        """After an out-of-memory with ``prompts`` x ``beams`` rows: free what can be freed, fit at most half as many."""
        import gc

        import torch

        if prompts <= 1:
            raise RuntimeError(
                f"out of GPU memory with a single prompt ({beams} beam(s)): use a shorter max_new_tokens, fewer beams or a smaller model"
            )
        rows = prompts * beams
        if self.prompt_cache is not None:
            self.prompt_cache.clear()
        if self.fast is not None:
            self.fast.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self._row_cap = rows // 2

    def _generate_batch(self, batch: Sequence[GenRequest], ids: Sequence[list[int]], longest: int, rows: int | None = None) -> list[GenResult]:
        decodings = {r.decoding for r in batch}
        if len(decodings) != 1:
            raise ValueError("a batch must share one decoding config")
        decoding: Decoding = decodings.pop()
        if self.fast is not None and decoding.strategy in ("greedy", "sample"):
            return self._fast_batch(batch, ids, longest, decoding, rows)
        enc = self.tok.pad({"input_ids": list(ids)}, padding=True, return_tensors="pt").to(self.device)
        kwargs = generate_kwargs(decoding, pad_token_id=self.tok.pad_token_id, eos_token_id=self.eos_ids)
        if self.cache == "static":
            kwargs.update(cache_implementation="static", max_cache_len=bucket(longest) + decoding.max_new_tokens)
            if self.compile_config is not None:
                kwargs["compile_config"] = self.compile_config
            else:
                kwargs["disable_compile"] = True  # on a GPU transformers would compile a static cache's decoding step by itself
        if self.prompt_cache is not None and enc["input_ids"].shape[1] > 1:
            past, kept = self.prompt_cache.get(tuple(tuple(i) for i in ids), lambda: self._prefill(enc))
            if kept:
                past = copy.deepcopy(past)  # generate extends the cache it is given: keep the original intact
            if kwargs["num_beams"] > 1:
                past.batch_repeat_interleave(kwargs["num_beams"])
            kwargs["past_key_values"] = past
        if decoding.strategy == "sample":
            prompt_len = enc["input_ids"].shape[1]
            kwargs["logits_processor"] = [
                CounterSampler(decoding.temperature, decoding.top_k, decoding.top_p, [r.seed for r in batch], prompt_len, self.device)
            ]
        elif decoding.strategy == "beam_sample":
            import torch

            torch.manual_seed(batch[0].seed)  # beam sampling: seeded per batch
        out = self._generate(**enc, **kwargs)
        prompt_len = enc["input_ids"].shape[1]
        return self._results(batch, out[:, prompt_len:], enc["attention_mask"])

    def _fast_batch(self, batch: Sequence[GenRequest], ids: Sequence[list[int]], longest: int, decoding: Decoding, rows: int | None) -> list[GenResult]:
        """Greedy / sampled batch through the fast loop; on a GPU with CUDA graphs, padded to ``rows`` prompts (one graph per call)."""
        from .fast_decode import Selector

        ids, seeds = list(ids), [r.seed for r in batch]
        if self.fast.cuda_graphs and rows and len(ids) < rows:  # a smaller last batch reuses the full batch's graph
            ids += [ids[0]] * (rows - len(ids))
            seeds += [0] * (rows - len(seeds))
        enc = self.tok.pad({"input_ids": ids}, padding=True, return_tensors="pt").to(self.device)
        new = self.fast.decode(
            enc["input_ids"], enc["attention_mask"], Selector.of(decoding), seeds, decoding.max_new_tokens,
            bucket(longest) + decoding.max_new_tokens,
        )
        n = len(batch)
        return self._results(batch, new[:n], enc["attention_mask"][:n])

    def _results(self, batch: Sequence[GenRequest], new_tokens: Any, attention_mask: Any) -> list[GenResult]:
        # one device-to-host copy per batch, not one per row
        rows = new_tokens.tolist()
        prompt_tokens = attention_mask.sum(dim=1).tolist()
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


    def _prefill(self, enc: Any) -> Any:
        """The KV cache of every prompt token but the last (generate feeds that one itself)."""
        from transformers import DynamicCache

        ids, mask = enc["input_ids"][:, :-1], enc["attention_mask"][:, :-1]
        cache = DynamicCache(config=self.model.config)
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "past_key_values": cache, "use_cache": True}
        if self._position_ids:  # as generate numbers left-padded rows: from the first real token
            position_ids = mask.long().cumsum(-1) - 1
            kwargs["position_ids"] = position_ids.masked_fill_(mask == 0, 1)
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        self.model(**kwargs)
        return cache


class PromptCache:
    """Prompt KV caches by the batch's token ids, least recently used evicted first, within ``budget`` bytes."""

    def __init__(self, budget: int):
        self.budget = budget
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()

    def get(self, key: Any, build: Callable[[], Any]) -> tuple[Any, bool]:
        """The cache for ``key`` (built on a miss) and whether it is kept here (then copy before extending it)."""
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key][0], True
        self.misses += 1
        value = build()
        size = cache_bytes(value)
        if size > self.budget:
            return value, False
        while self.bytes + size > self.budget:
            _, (_, freed) = self._items.popitem(last=False)
            self.bytes -= freed
        self._items[key] = (value, size)
        self.bytes += size
        return value, True

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)


def cache_bytes(cache: Any) -> int:
    """Bytes held by a transformers cache's key and value tensors."""
    total = 0
    for layer in getattr(cache, "layers", ()):
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if tensor is not None and hasattr(tensor, "nbytes"):
                total += tensor.nbytes
    return total


def row_bytes(config: Any, prompt_tokens: int, new_tokens: int, dtype_size: int) -> int:
    """Planned GPU bytes for one generated row (one beam): its KV cache, logits and prefill activations."""
    text = getattr(config, "get_text_config", lambda: config)()
    hidden = int(text.hidden_size)
    layers = int(text.num_hidden_layers)
    heads = int(getattr(text, "num_attention_heads", 1) or 1)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or hidden // heads)
    vocab = int(getattr(text, "vocab_size", 0) or 0)
    tokens = prompt_tokens + new_tokens
    kv = 2 * layers * kv_heads * head_dim * tokens * dtype_size
    logits = 3 * vocab * 4  # float32 scores, their softmax, the processors' copy
    prefill = prompt_tokens * (4 * hidden + 2 * int(getattr(text, "intermediate_size", 4 * hidden) or 4 * hidden)) * dtype_size
    return kv + logits + prefill


def _beams(decoding: Decoding) -> int:
    return decoding.num_beams if decoding.strategy in ("beam", "beam_sample") else 1


def _dtype_size(model: Any) -> int:
    return next(model.parameters()).element_size()


def _accepts(model: Any, name: str) -> bool:
    """Whether the model's forward (a PEFT wrapper's base model's) names the argument ``name``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return name in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def bucket(n: int) -> int:
    """``n`` rounded up to 32, 48, 64, 96, 128, 192, 256, … (at most 1.5x; two sizes per doubling)."""
    size = 32
    while size < n:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


def generate_kwargs(decoding: Decoding, *, pad_token_id: int, eos_token_id: list[int]) -> dict[str, Any]:
    """Every decoding field, explicitly. Per-example sampling runs in CounterSampler, so HF itself decodes greedily."""
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


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    return unique_token_ids(
        (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None), getattr(model.config, "eos_token_id", None))
    )


@hookimpl
def harness_register_engines(register):
    register(TransformersEngine)
