"""``transformers``: generation with Hugging Face models.

* The model is loaded once per run (``open``) and serves every decoding config. A ``generate``
  call may mix configs (the pipeline hands over every config of a sweep at once).
* Greedy, sampled and beam-search configs run through the harness's own decoding loop
  (``loop = "auto"``; ``fast_decode.py``) wherever the model allows it, on a GPU and on a CPU:
  each batch of prompts is prefilled once and copied to every config family that decodes it;
  the greedy and sampled configs of the call decode *together*, one row per (prompt, config),
  each row with its own temperature, top-k, top-p, min-p and repetition penalty; each beam
  config decodes its prompts' beams as rows of a static cache that never moves (beams reorder
  the attention mask). On a GPU a step is a replayed CUDA graph, compiled where the work ahead
  pays for it (``compile_cache.py``: torch's on-disk compile caches kept between runs).
  Beam sampling, and models the loop cannot drive, go through ``generate``. Both give the same
  text (tested in float32, beams included).
* Every decoding field is passed explicitly and the model's own generation config is
  replaced by a neutral one, so a checkpoint's ``generation_config.json`` cannot turn
  sampling on behind the user's back.
* Sampling is seeded per example and batch-invariant: ``sampling.py`` draws each row's token
  by Gumbel-max with noise hashed from (the request's seed, step, token id), on the device, so
  a re-run — resumed, re-batched, alone or beside other configs — reproduces the same text.
  Beam sampling is seeded per batch (``torch.manual_seed``), as before.
* Generation stops at EOS (the tokenizer's and the model's) or ``max_new_tokens``.

Engine versions (part of every generation's cache key): 1 drew samples with a per-row
``torch.Generator`` on the CPU; 2 with the counter-based sampler (other samples); 3 honours
``min_p`` (version 2 left it out, so a min-p config got the text of min-p 0) and keeps the
repetition penalty off the left padding (transformers' processor penalised the padding token,
often the EOS, so a padded row's text depended on its batch) — greedy, sampled and beam texts
of the other configs are the same as version 2's (the own beam loop gives ``generate``'s beams,
tested in float32), but cached version-2 generations are not reused.

Speed options (none changes the text beyond float rounding — like ``batch_size``, they
are not part of the engine's identity):

* ``prompt_cache`` (MiB, default 1024; 0 turns it off), for the ``generate`` path: the KV cache of
  each batch of prompts is computed once and kept (least recently used first out, within the
  budget) for the next configs of the same prompts. Prompts are ordered by length, then text, so
  every config forms the same batches. Used with the dynamic cache and the model's own
  ``generate`` (not an adapter's replacement, such as unsloth's inference path). The own loop
  needs none: a call decodes every config of a batch of prompts from one prefill;
* ``cache = "static"`` preallocates ``generate``'s KV cache (transformers' ``cache_implementation="static"``)
  instead of growing it by a copy of the whole cache every step;
* ``loop`` / ``cuda_graphs`` / ``compile``: see ``fast_decode.py`` and docs/engines.md; ``compile``
  unset compiles the own loop's step on a GPU where the steps ahead repay the compile time;
* with ``generate``, ``compile = true`` (needs the static cache) lets transformers ``torch.compile`` the decoding
  step (its default ``CompileConfig``: mode "reduce-overhead", CUDA graphs on a GPU). The cache
  length is the longest prompt of the call rounded up to a bucket (32, 48, 64, 96, 128, 192, …)
  plus ``max_new_tokens``, so a sweep compiles once per batch shape and beam width.

``batch_size`` left unset is 16 prompts on a CPU; on a GPU it is sized to free memory (the KV
cache a prompt needs with its rows, logits and activations), at most 256 prompts and
``MAX_ROWS`` rows a step. Whatever the setting, a batch that runs out of GPU memory is halved
and retried, and later batches stay within the rows that fitted.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import hookimpl
from harness.api import Decoding, Engine, GenRequest, GenResult, ModelAdapter, ModelSpec, Option, Progress
from harness.errors import MissingDependency, UserError

from . import logprobs
from .eos import unique_token_ids
from .sampling import CounterSampler, RepetitionPenalty

CACHES = ("dynamic", "static")
LOOPS = ("auto", "fast", "generate")
#: prompts per batch on a CPU when batch_size is unset
CPU_BATCH_SIZE = 16
#: upper bound of an automatic batch size (prompts) on a GPU
MAX_AUTO_BATCH = 256
#: upper bound of the rows (prompts x configs or beams) one decoding step runs on a GPU when batch_size is unset
MAX_ROWS = 1024
#: share of free GPU memory an automatic batch may plan to use
GPU_MEMORY_SHARE = 0.7
#: strategies the own loop decodes
FAST_STRATEGIES = ("greedy", "sample", "beam")


class TransformersEngine(Engine):
    name = "transformers"
    is_default = True
    # 2: sampling draws with the counter-based sampler (sampling.py), not torch.multinomial
    # 3: min_p is applied (version 2 ignored it) and the repetition penalty skips left padding; other texts as version 2's
    version = "3"
    description = "Hugging Face transformers models, batched, seeded per example; own decoding loop (CUDA graphs on a GPU) for greedy, sampled and beam configs"
    options = {
        "batch_size": Option(
            int, default=None, nullable=True, minimum=1,
            help="prompts per batch (each with its configs' rows or beams); unset: 16 on a CPU, sized to free memory on a GPU",
        ),
        "threads": Option(int, default=0, minimum=0, help="CPU threads for torch (0: torch's default)"),
        "cache": Option(str, default="dynamic", choices=CACHES, help="generate's KV cache: dynamic (grows each step) or static (preallocated; needed by compile there)"),
        "loop": Option(
            str, default="auto", choices=LOOPS,
            help="decoding loop: fast (the harness's own: greedy, sampled and beam configs, CUDA graphs on a GPU), generate (transformers' generate), auto (fast wherever the model allows it)",
        ),
        "compile": Option(
            bool, default=None, nullable=True,
            help="torch.compile the decoding step; unset: the fast loop compiles on a GPU where the work ahead pays for it, never on a CPU (with generate it needs cache = 'static')",
        ),
        "cuda_graphs": Option(bool, default=True, help="fast loop on a GPU: replay each decoding step as a captured CUDA graph"),
        "prompt_cache": Option(int, default=1024, minimum=0, help="MiB of prompt KV caches kept for the next decoding configs by the generate path (0: off; dynamic cache only)"),
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


@dataclass
class _Family:
    """Requests of one call that decode together in the own loop: every greedy / sampled request ("rows",
    one row per (prompt, request)), or one beam config (one unit per request, ``width`` beams)."""

    kind: str  # "rows" | "beam"
    width: int
    new: int
    units: dict[str, list[list[GenRequest]]] = field(default_factory=dict)  # prompt -> its units (a unit: the requests of one batch entry)
    decoding: Decoding | None = None
    selector: Any = None
    padded: int = 0  # batch entries per step on a GPU (a smaller last batch is padded to it: one graph)

    def n_units(self) -> int:
        return sum(len(u) for u in self.units.values())


class TransformersSession:
    """One loaded model serving every decoding config of a run.

    ``batch_size`` None: 16 prompts on a CPU, sized to free memory on a GPU.
    ``prompt_cache_mb`` > 0 keeps prompt KV caches across calls for the ``generate`` path (see the
    module docstring); it is ignored with the static cache or a replacement ``generate``.
    ``loop``: who decodes greedy, sampled and beam configs — ``fast`` (:mod:`fast_decode`), ``generate``,
    or ``auto`` (fast wherever the model allows it). ``compile`` None: the fast loop compiles on a GPU
    where it pays, never on a CPU; with ``generate`` it compiles only with the static cache.
    ``compile_seconds``: time spent compiling and capturing decoding steps so far (the pipeline
    reports it as a stage of its own).
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
        self.fast = None  # the own decoding loop, when in use
        self.fast_unsupported: str | None = None
        if loop in ("fast", "auto") and generate is not None:
            self.fast_unsupported = "the model adapter replaces generate()"
        elif loop in ("fast", "auto"):
            from .compile_cache import CompileCache
            from .fast_decode import FastDecoder

            self.fast_unsupported = FastDecoder.supported(model)
            if self.fast_unsupported is None:
                on_gpu = self.device.type == "cuda"
                self.fast = FastDecoder(
                    model, eos_ids=self.eos_ids, pad_id=self.tok.pad_token_id, cuda_graphs=cuda_graphs,
                    compile=compile if on_gpu else bool(compile),
                    compile_cache=CompileCache.for_model(model) if (on_gpu and compile is not False) or compile else None,
                )
        if loop == "fast" and self.fast is None:
            raise UserError(f"loop = 'fast' cannot decode this model: {self.fast_unsupported}", key="engine.loop")

    @property
    def compile_seconds(self) -> float:
        return self.fast.compile_seconds if self.fast is not None else 0.0

    def close(self) -> None:
        self.model = None
        if self.fast is not None:
            self.fast.clear()
            self.fast = None
        if self.prompt_cache is not None:
            self.prompt_cache.clear()

    def generate(self, requests: Sequence[GenRequest], progress: Progress) -> Iterator[list[GenResult]]:
        if any(logprobs.takes(r) for r in requests):  # log-probabilities: a path of their own (logprobs.py: generate with output_logits)
            yield from logprobs.generate(self, [r for r in requests if logprobs.takes(r)], progress)
            requests = [r for r in requests if not logprobs.takes(r)]
        if not requests:
            return
        # tokenized once per prompt: the lengths order the batches, the ids are padded per batch
        texts = list(dict.fromkeys(r.prompt for r in requests))
        ids = dict(zip(texts, self.tok(texts, add_special_tokens=True)["input_ids"]))
        fast = [r for r in requests if self.fast is not None and r.decoding.strategy in FAST_STRATEGIES]
        slow = [r for r in requests if not (self.fast is not None and r.decoding.strategy in FAST_STRATEGIES)]
        families = self._plan(fast, ids) if fast else []
        advance = progress.task("generating", len(requests))
        if families:
            self._prepare(families, ids, progress)
        produced = 0
        started = time.perf_counter()
        for results in _chain(self._fast_generate(families, ids) if families else iter(()), self._generate_path(slow, ids)):
            produced += sum(r.new_tokens for r in results)
            advance(len(results), tok_s=round(produced / max(time.perf_counter() - started, 1e-9), 1))
            yield results

    # ------------------------------------------------------------------ the own loop: plan, prepare, decode

    def _plan(self, requests: Sequence[GenRequest], ids: dict[str, list[int]]) -> list[_Family]:
        """The greedy / sampled requests as one family (rows per prompt), each beam config as one family."""
        from .beam_search import BeamSelector
        from .fast_decode import RowParams

        rows = _Family("rows", 0, 0)
        beams: dict[Decoding, _Family] = {}
        for r in requests:
            d = r.decoding
            if d.strategy == "beam":
                fam = beams.setdefault(d, _Family("beam", d.num_beams, d.max_new_tokens, decoding=d))
                fam.units.setdefault(r.prompt, []).append([r])
            else:
                units = rows.units.setdefault(r.prompt, [[]])
                units[0].append(r)
                rows.new = max(rows.new, d.max_new_tokens)
        families = []
        if rows.units:
            rows.width = max(len(u[0]) for u in rows.units.values())
            everything = [(r.decoding, r.seed) for u in rows.units.values() for r in u[0]]
            rows.selector = RowParams.of(everything, 1).selector(self.fast.vocab)
            families.append(rows)
        for d, fam in beams.items():
            fam.selector = BeamSelector.of(d, len(self.eos_ids))
            families.append(fam)
        longest = max(len(ids[p]) for fam in families for p in fam.units)
        size = balanced(self._fast_prompts(families, longest), len({p for fam in families for p in fam.units}))
        for fam in families:
            fam.padded = min(size, fam.n_units())
        return families

    def _cache_len(self, fam: _Family, longest: int) -> int:
        """Static cache slots for a family: the call's longest prompt, bucketed, plus ``width`` slots per new token."""
        return -(-(bucket(longest) + fam.width * fam.new) // 16) * 16

    def _prepare(self, families: list[_Family], ids: dict[str, list[int]], progress: Progress) -> None:
        """Capture (and, where it pays, compile) each family's step before decoding; say so in a progress line of its own."""
        import torch

        fast = self.fast
        if not fast.cuda_graphs and fast.compile_mode is not True:
            return
        longest = max(len(ids[p]) for fam in families for p in fam.units)
        before, compiled = fast.compile_seconds, fast.compiled_shapes
        for fam in families:
            batches = -(-fam.n_units() // max(1, fam.padded))
            with torch.inference_mode():
                fast.prepare(fam.padded, fam.width, self._cache_len(fam, longest), fam.new, fam.selector, batches * fam.new)
        line = getattr(progress, "line", None)  # RichProgress: a plain line that stays (the Progress protocol has no such method)
        if line is not None:
            line(f"compiling: {len(families)} decoding step(s) captured, {fast.compiled_shapes - compiled} compiled, "
                 f"in {fast.compile_seconds - before:.1f} s", console=True)

    def _fast_generate(self, families: list[_Family], ids: dict[str, list[int]]) -> Iterator[list[GenResult]]:
        """Batches of prompts: each prefilled once, then decoded by every family that has units for it."""
        import torch

        order = sorted({p for fam in families for p in fam.units}, key=lambda p: (len(ids[p]), p))
        longest = len(ids[order[-1]])
        done: set[int] = set()  # id() of finished units
        start, size = 0, 0
        while start < len(order):
            if not size:  # at the start, and after an out-of-memory: equal batches over the prompts left
                size = balanced(self._fast_prompts(families, longest), len(order) - start)
            for fam in families:  # after an out-of-memory: fewer (padded) rows, new graphs
                fam.padded = min(fam.padded, size)
            chunk = order[start : start + size]
            out_of_memory = False
            try:
                yield from self._fast_chunk(families, chunk, ids, longest, size, done)
            except torch.OutOfMemoryError:
                out_of_memory = True
            if out_of_memory:  # outside the except block: its traceback no longer holds the batch's tensors
                self._shrink(len(chunk), max(f.width for f in families))
                size = 0
                continue
            start += len(chunk)

    def _fast_chunk(self, families: list[_Family], chunk: list[str], ids: dict[str, list[int]], longest: int, size: int, done: set[int]) -> Iterator[list[GenResult]]:
        import torch

        from .fast_decode import RowParams

        with torch.inference_mode():
            enc = self.tok.pad({"input_ids": [ids[p] for p in chunk]}, padding=True, return_tensors="pt").to(self.device)
            prefix = self.fast.prefill(enc["input_ids"], enc["attention_mask"])
        where = {p: i for i, p in enumerate(chunk)}
        prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
        for fam in families:
            units = [(p, u) for p in chunk for u in fam.units.get(p, ()) if id(u) not in done]
            per = min(size, fam.padded) if self.fast.cuda_graphs else size
            for i in range(0, len(units), per):
                part = units[i : i + per]
                src = [where[p] for p, _ in part]
                pad = (fam.padded - len(part)) if self.fast.cuda_graphs else 0  # a smaller last batch replays the same graph
                src += [src[0]] * pad
                t0 = time.perf_counter()
                with torch.inference_mode():
                    if fam.kind == "rows":
                        table: list[tuple[Decoding, int] | None] = []
                        for _, u in part:
                            entry = [(r.decoding, r.seed) for r in u]
                            table += entry + [None] * (fam.width - len(entry))
                        table += [None] * (fam.width * pad)
                        params = RowParams.of(table, fam.width)
                        new = self.fast.sample(prefix, src, params, fam.new, self._cache_len(fam, longest), selector=fam.selector)
                        flat = new.reshape(new.shape[0] * fam.width, -1)
                        batch = [r for _, u in part for r in u]
                        picks = [j * fam.width + k for j, (_, u) in enumerate(part) for k in range(len(u))]
                        tokens = flat[torch.tensor(picks, device=flat.device)]
                        counts = [prompt_tokens[where[p]] for p, u in part for _ in u]
                    else:
                        best = self.fast.beams(prefix, src, fam.selector, self._cache_len(fam, longest))
                        batch = [u[0] for _, u in part]
                        tokens = best[: len(part)]
                        counts = [prompt_tokens[where[p]] for p, _ in part]
                    results = self._results(batch, tokens, counts)
                seconds = (time.perf_counter() - t0) / len(batch)
                for _, u in part:
                    done.add(id(u))
                yield [GenResult(r.key, r.text, r.prompt_tokens, r.new_tokens, round(seconds, 4), r.finish_reason) for r in results]

    def _fast_prompts(self, families: list[_Family], longest: int) -> int:
        """Prompts per batch for the own loop: the setting or the memory estimate, within the rows known to fit."""
        width = max(f.width for f in families)
        if self.batch_size:
            size = self.batch_size
        elif self.device.type != "cuda":
            size = CPU_BATCH_SIZE
        else:
            size = self._auto_prompts(families, longest)
        if self._row_cap is not None:
            size = min(size, max(1, self._row_cap // width))
        return max(1, size)

    def _auto_prompts(self, families: list[_Family], longest: int) -> int:
        import torch

        free, _ = torch.cuda.mem_get_info(self.device)
        free += torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        dtype = _dtype_size(self.model)
        per_prompt = max(prompt_bytes(self.model.config, longest, f.new, f.width, dtype) for f in families)
        fit = int(max(free, 0) * GPU_MEMORY_SHARE) // max(per_prompt, 1)
        return max(1, min(MAX_AUTO_BATCH, fit, *(max(1, MAX_ROWS // f.width) for f in families)))

    # ------------------------------------------------------------------ transformers' generate

    def _generate_path(self, requests: Sequence[GenRequest], ids: dict[str, list[int]]) -> Iterator[list[GenResult]]:
        """Requests through ``generate``, one decoding config at a time (in the order they first appear)."""
        import torch

        if not requests:
            return
        groups: dict[Decoding, list[GenRequest]] = {}
        for r in requests:
            groups.setdefault(r.decoding, []).append(r)
        for decoding, group in groups.items():
            # by length, then by prompt: every decoding config of the same prompts forms the same batches
            ordered = sorted(group, key=lambda r: (len(ids[r.prompt]), r.prompt, r.key))
            longest = len(ids[ordered[-1].prompt])
            start = 0
            while start < len(ordered):
                size = self._batch_prompts(decoding, longest)
                batch = ordered[start : start + size]
                t0 = time.perf_counter()
                out_of_memory = False
                try:
                    with torch.inference_mode():
                        results = self._generate_batch(batch, [ids[r.prompt] for r in batch], longest)
                except torch.OutOfMemoryError:
                    out_of_memory = True
                if out_of_memory:  # outside the except block: its traceback no longer holds the batch's tensors
                    self._shrink(len(batch), _beams(decoding))
                    continue
                start += len(batch)
                seconds = (time.perf_counter() - t0) / len(batch)
                yield [GenResult(r.key, r.text, r.prompt_tokens, r.new_tokens, round(seconds, 4), r.finish_reason) for r in results]

    def _batch_prompts(self, decoding: Decoding, longest: int) -> int:
        """Prompts in the next ``generate`` batch: the setting or the memory estimate, within the rows known to fit."""
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
        if self.prompt_cache is not None and enc["input_ids"].shape[1] > 1:
            past, kept = self.prompt_cache.get(tuple(tuple(i) for i in ids), lambda: self._prefill(enc))
            if kept:
                past = copy.deepcopy(past)  # generate extends the cache it is given: keep the original intact
            if kwargs["num_beams"] > 1:
                past.batch_repeat_interleave(kwargs["num_beams"])
            kwargs["past_key_values"] = past
        kwargs.update(penalty_kwargs(decoding, enc["attention_mask"]))
        if decoding.strategy == "sample":
            prompt_len = enc["input_ids"].shape[1]
            kwargs["logits_processor"] = kwargs.get("logits_processor", []) + [
                CounterSampler(decoding.temperature, decoding.top_k, decoding.top_p, [r.seed for r in batch], prompt_len, self.device, decoding.min_p)
            ]
        elif decoding.strategy == "beam_sample":
            import torch

            torch.manual_seed(batch[0].seed)  # beam sampling: seeded per batch
        out = self._generate(**enc, **kwargs)
        prompt_len = enc["input_ids"].shape[1]
        return self._results(batch, out[:, prompt_len:], enc["attention_mask"].sum(dim=1).tolist())

    def _results(self, batch: Sequence[GenRequest], new_tokens: Any, prompt_tokens: Sequence[int]) -> list[GenResult]:
        # one device-to-host copy per batch, not one per row
        rows = new_tokens.tolist()
        eos = set(self.eos_ids)
        results = []
        for req, new, n_prompt in zip(batch, rows, prompt_tokens, strict=True):
            new = new[: req.decoding.max_new_tokens]  # a row beside longer configs: pad after its own limit
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


def _chain(*parts: Iterator[list[GenResult]]) -> Iterator[list[GenResult]]:
    for part in parts:
        yield from part


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


def _shape(config: Any) -> tuple[Any, int, int, int, int, int]:
    """(text config, hidden size, layers, key/value heads, head dim, vocabulary) of a model config."""
    text = getattr(config, "get_text_config", lambda: config)()
    hidden = int(text.hidden_size)
    heads = int(getattr(text, "num_attention_heads", 1) or 1)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or hidden // heads)
    return text, hidden, int(text.num_hidden_layers), kv_heads, head_dim, int(getattr(text, "vocab_size", 0) or 0)


def row_bytes(config: Any, prompt_tokens: int, new_tokens: int, dtype_size: int) -> int:
    """Planned GPU bytes for one generated row (one beam): its KV cache, logits and prefill activations."""
    text, hidden, layers, kv_heads, head_dim, vocab = _shape(config)
    tokens = prompt_tokens + new_tokens
    kv = 2 * layers * kv_heads * head_dim * tokens * dtype_size
    logits = 3 * vocab * 4  # float32 scores, their softmax, the processors' copy
    prefill = prompt_tokens * (4 * hidden + 2 * int(getattr(text, "intermediate_size", 4 * hidden) or 4 * hidden)) * dtype_size
    return kv + logits + prefill


def prompt_bytes(config: Any, prompt_tokens: int, new_tokens: int, width: int, dtype_size: int) -> int:
    """Planned GPU bytes for one prompt in the own loop with ``width`` rows (configs or beams).

    Its static KV cache (the bucketed prompt once, then ``width`` slots per new token) and its
    prompt's KV as prefilled (held while the batch's families decode), per row the float32 logits
    and their processed copies, the mask and history over the slots, and the prefill activations.
    """
    text, hidden, layers, kv_heads, head_dim, vocab = _shape(config)
    per_token = 2 * layers * kv_heads * head_dim * dtype_size
    slots = bucket(prompt_tokens) + width * new_tokens
    kv = per_token * (slots + prompt_tokens)
    rows = width * (4 * vocab * 4 + slots * 9 + new_tokens * 24)
    prefill = prompt_tokens * (4 * hidden + 2 * int(getattr(text, "intermediate_size", 4 * hidden) or 4 * hidden)) * dtype_size
    return kv + rows + prefill


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


def balanced(size: int, n: int) -> int:
    """Prompts per batch for ``n`` prompts in batches of at most ``size``: as many batches, of equal size (64 in
    batches of 52 become 2 x 32: on a GPU a smaller last batch is padded to the others and would cost a whole one)."""
    if n <= 0:
        return max(1, size)
    return -(-n // -(-n // max(1, size)))


def bucket(n: int) -> int:
    """``n`` rounded up to 32, 48, 64, 96, 128, 192, 256, … (at most 1.5x; two sizes per doubling)."""
    size = 32
    while size < n:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


def penalty_kwargs(decoding: Decoding, attention_mask: Any) -> dict[str, Any]:
    """The repetition penalty as a processor blind to left padding (``sampling.RepetitionPenalty``), in place of
    transformers' own, which penalises the padding token (often the EOS) so that a row's text depended on its
    batch. Beam sampling keeps transformers' processor (its warpers come before any processor passed in)."""
    if decoding.repetition_penalty == 1.0 or decoding.strategy == "beam_sample":
        return {}
    beams = decoding.num_beams if decoding.strategy == "beam" else 1
    return {"repetition_penalty": None, "logits_processor": [RepetitionPenalty(decoding.repetition_penalty, attention_mask, beams)]}


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
        kwargs.update(temperature=decoding.temperature, top_k=decoding.top_k or None, top_p=decoding.top_p, min_p=decoding.min_p or None)
    return kwargs


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    return unique_token_ids(
        (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None), getattr(model.config, "eos_token_id", None))
    )


@hookimpl
def harness_register_engines(register):
    register(TransformersEngine)
