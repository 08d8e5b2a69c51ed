"""The harness's own decoding loop for greedy and sampled configs: a step without Python overhead on a GPU.

``transformers``' ``generate`` runs every step through Python (logits processors, stopping
criteria, a host synchronisation to ask whether every row has finished), so on a GPU a step of a
small model costs far more than its kernels. This loop keeps the same arithmetic and moves the
rest onto the device:

* **Static KV cache** (transformers' ``StaticCache``), one per (rows, cache length) *state*. The
  cache length is the longest prompt of the call rounded up to a bucket plus ``max_new_tokens``
  (``transformers_engine.bucket``), so every config of a sweep over the same prompts reuses the
  state, its compiled step and its CUDA graphs; prompt lengths inside one bucket share them too.
* **The step** — the model's forward for one token per row, the token choice (argmax, or the
  counter-based sampler of ``sampling.py``), the repetition penalty, EOS bookkeeping, the output
  write and the advance of positions — touches only tensors of the state, in place. On a GPU it
  is optionally compiled (``torch.compile``, inductor, no CUDA graphs of its own; compiled once
  per state shape) and then captured once per (state, decoding) as a ``torch.cuda.CUDAGraph``:
  a step is one graph replay, a few microseconds of CPU.
* **Stopping on the device**: finished rows are tracked in a device tensor; the host reads
  "all finished?" only every ``sync_every`` steps (default 8), so the CPU enqueues replays far
  ahead of the GPU and never waits for a step.
* **Prefill** runs eagerly on the left-padded batch (exactly as ``generate`` does it: a 2-D
  attention mask, positions counted from the first real token, logits of the last position only).
  The decoding steps attend over the whole static cache with a 4-D mask (padding and slots not
  yet written masked out), which transformers passes to attention untouched.

On a CPU the same loop runs eagerly (no compile, no graph) and gives the text of ``generate``
in float32 — greedy exactly, sampling exactly too, since both call the same sampler
(tests/test_engine_fast.py). Beam search is not done here: see docs/engines.md.

Limits (the engine falls back to ``generate`` outside them): a cache whose layers are all plain
``StaticLayer`` (no sliding-window or hybrid layers), attention ``sdpa`` or ``eager``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from . import sampling

#: states (static caches, with their graphs) kept per session; the oldest is dropped first
MAX_STATES = 3


@dataclass(frozen=True)
class Selector:
    """How a step picks its token: greedy (temperature 0) or sampled, plus the repetition penalty."""

    greedy: bool
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    @classmethod
    def of(cls, decoding: Any) -> Selector:
        if decoding.strategy == "greedy":
            return cls(True, repetition_penalty=decoding.repetition_penalty)
        if decoding.strategy == "sample":
            return cls(False, decoding.temperature, int(decoding.top_k or 0), float(decoding.top_p), decoding.repetition_penalty)
        raise ValueError(f"the fast decoding loop does greedy and sample, not {decoding.strategy!r}")


@dataclass
class State:
    """Everything one (rows, cache length) decoding step reads and writes, allocated once."""

    rows: int
    length: int
    cache: Any
    cur: Any  # (rows, 1) the token fed at this step
    pos: Any  # (rows, 1) its position id
    slot: Any  # (1,) its cache slot
    step: Any  # (1,) index of the token this step chooses
    valid: Any  # (rows, length) bool: key slots that are real tokens (False: left padding)
    seq: Any  # (rows, length) token ids per slot, for the repetition penalty (unwritten slots repeat slot 0)
    out: Any  # (rows, length) chosen tokens, by step
    finished: Any  # (rows,) bool
    keys: Any  # (rows,) int64 per-row sampler keys
    arange: Any  # (length,) slot numbers
    graphs: dict = field(default_factory=dict)
    pool: Any = None


class FastDecoder:
    """Greedy and sampled decoding of left-padded batches (see the module docstring).

    ``compile``: torch.compile the model's one-token forward (CUDA only in practice: on a CPU it
    works but takes minutes). ``cuda_graphs``: capture each step as a CUDA graph (CUDA only).
    """

    def __init__(self, model: Any, *, eos_ids: list[int], pad_id: int, compile: bool = False, cuda_graphs: bool = True, sync_every: int = 8):
        import inspect

        import torch

        self.model = model
        self.device = next(model.parameters()).device
        self.pad_id = int(pad_id)
        self.eos = torch.tensor(list(eos_ids) or [-1], dtype=torch.long, device=self.device)
        self.cuda_graphs = bool(cuda_graphs) and self.device.type == "cuda"
        self.sync_every = max(1, int(sync_every))
        self.states: OrderedDict[tuple[int, int], State] = OrderedDict()
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._logits_to_keep = "logits_to_keep" in inspect.signature(base.forward).parameters
        config = getattr(base, "config", None)
        self._bool_mask = getattr(config, "_attn_implementation", "sdpa") != "eager"
        self.dtype = next(model.parameters()).dtype
        self.compile_seconds = 0.0  # wall time of the first (compiling, capturing) steps of each state
        self._forward = self._forward_eager
        if compile:
            import torch._dynamo

            for name in ("recompile_limit", "cache_size_limit"):  # one graph per state shape: allow many
                if hasattr(torch._dynamo.config, name):
                    setattr(torch._dynamo.config, name, max(64, getattr(torch._dynamo.config, name)))
            self._forward = torch.compile(self._forward_eager, dynamic=False, fullgraph=False)
        self.compiled = bool(compile)

    @staticmethod
    def supported(model: Any) -> str | None:
        """None if the loop can decode with ``model``, else why not."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = getattr(base, "config", None)
        attn = getattr(config, "_attn_implementation", None)
        if attn not in ("sdpa", "eager"):
            return f"attention implementation {attn!r} (the loop passes a 4-D mask: sdpa or eager only)"
        try:
            from transformers import StaticCache
            from transformers.cache_utils import StaticLayer

            layers = StaticCache(config=config, max_cache_len=8).layers
        except Exception as exc:  # pragma: no cover - exotic configs
            return f"no static cache for this model ({type(exc).__name__}: {exc})"
        if any(type(layer) is not StaticLayer for layer in layers):
            return "its static cache has sliding-window or other non-plain layers"
        return None

    def clear(self) -> None:
        self.states.clear()

    # ------------------------------------------------------------------ public

    def decode(self, input_ids: Any, attention_mask: Any, selector: Selector, seeds: list[int], max_new_tokens: int, cache_len: int) -> Any:
        """New tokens (rows, n <= max_new_tokens), pad after a row's EOS, for the left-padded prompts ``input_ids``."""
        rows, prompt_len = input_ids.shape
        if prompt_len + max_new_tokens > cache_len:
            raise ValueError(f"cache length {cache_len} < prompt {prompt_len} + {max_new_tokens} new tokens")
        st = self._state(rows, cache_len)
        logits = self._prefill(st, input_ids, attention_mask, seeds)
        self._advance(st, self._select(st, selector, logits))
        steps = 1
        if self.cuda_graphs and selector not in st.graphs and max_new_tokens > 1:
            t0 = time.perf_counter()
            self._capture(st, selector)  # compiles the step (first time for this state) and records it
            self.compile_seconds += time.perf_counter() - t0
        while steps < max_new_tokens:
            if steps % self.sync_every == 0 and bool(st.finished.all()):  # one host sync every sync_every steps
                break
            if self.cuda_graphs:
                st.graphs[selector].replay()
            else:
                self._step(st, selector)
            steps += 1
        return st.out[:, :steps]

    # ------------------------------------------------------------------ state

    def _state(self, rows: int, length: int) -> State:
        import torch

        key = (rows, length)
        if key in self.states:
            self.states.move_to_end(key)
            return self.states[key]
        while len(self.states) >= MAX_STATES:
            self.states.popitem(last=False)
        from transformers import StaticCache

        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        d = self.device
        zeros = lambda *shape, dtype=torch.long: torch.zeros(*shape, dtype=dtype, device=d)  # noqa: E731
        st = State(
            rows=rows, length=length, cache=StaticCache(config=base.config, max_cache_len=length),
            cur=zeros(rows, 1), pos=zeros(rows, 1), slot=zeros(1), step=zeros(1),
            valid=zeros(rows, length, dtype=torch.bool), seq=zeros(rows, length), out=zeros(rows, length),
            finished=zeros(rows, dtype=torch.bool), keys=zeros(rows), arange=torch.arange(length, device=d),
        )
        self.states[key] = st
        return st

    def _prefill(self, st: State, input_ids: Any, attention_mask: Any, seeds: list[int]) -> Any:
        import torch

        rows, p = input_ids.shape
        for layer in st.cache.layers:
            if getattr(layer, "is_initialized", False):
                layer.cumulative_length.zero_()
        mask = attention_mask.to(torch.long)
        position_ids = (mask.cumsum(-1) - 1).masked_fill_(mask == 0, 1)
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids, "past_key_values": st.cache, "use_cache": True}
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        logits = self.model(**kwargs).logits[:, -1, :].float()
        st.valid.fill_(True)
        st.valid[:, :p] = mask.bool()
        st.seq[:, :p] = input_ids
        st.seq[:, p:] = input_ids[:, :1]
        st.finished.fill_(False)
        st.keys.copy_(sampling.seed_keys(seeds, st.keys.device))
        st.pos.copy_(mask.sum(-1, keepdim=True))  # the next token's position: real tokens so far
        st.slot.fill_(p - 1)  # _advance moves it to p, where the first new token goes
        st.step.fill_(0)
        return logits

    # ------------------------------------------------------------------ the step

    def _forward_eager(self, cur: Any, pos: Any, mask: Any, cache: Any) -> Any:
        return self.model(input_ids=cur, position_ids=pos, attention_mask=mask, past_key_values=cache, use_cache=True).logits[:, -1, :].float()

    def _mask(self, st: State) -> Any:
        import torch

        allowed = (st.valid & (st.arange <= st.slot))[:, None, None, :]
        if self._bool_mask:
            return allowed
        zero = torch.zeros((), dtype=self.dtype, device=self.device)
        return torch.where(allowed, zero, torch.finfo(self.dtype).min)

    def _select(self, st: State, sel: Selector, logits: Any) -> Any:
        if sel.repetition_penalty != 1.0:  # as transformers' RepetitionPenaltyLogitsProcessor, over prompt + output
            import torch

            score = logits.gather(1, st.seq)
            score = torch.where(score < 0, score * sel.repetition_penalty, score / sel.repetition_penalty)
            logits = logits.scatter(1, st.seq, score)
        if sel.greedy:
            return logits.argmax(-1)
        return sampling.sample(logits, sampling.step_keys(st.keys, st.step), sel.temperature, sel.top_k, sel.top_p)

    def _advance(self, st: State, tok: Any) -> None:
        import torch

        tok = torch.where(st.finished, self.pad_id, tok)
        st.out.index_copy_(1, st.step, tok[:, None])
        st.slot.add_(1)
        st.seq.index_copy_(1, st.slot, tok[:, None])
        st.finished.logical_or_((tok[:, None] == self.eos[None, :]).any(-1))
        st.cur.copy_(tok[:, None])
        st.step.add_(1)

    def _step(self, st: State, sel: Selector) -> None:
        logits = self._forward(st.cur, st.pos, self._mask(st), st.cache)
        self._advance(st, self._select(st, sel, logits))
        st.pos.add_(1)

    def _capture(self, st: State, sel: Selector) -> None:
        """Warm the step up (compiling it), capture it as a CUDA graph, and restore the state it mutated."""
        import torch

        saved = {name: getattr(st, name).clone() for name in ("cur", "pos", "slot", "step", "seq", "out", "finished")}
        lengths = [layer.cumulative_length.clone() for layer in st.cache.layers]

        def restore() -> None:
            for name, value in saved.items():
                getattr(st, name).copy_(value)
            for layer, value in zip(st.cache.layers, lengths):
                layer.cumulative_length.copy_(value)

        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                self._step(st, sel)
                restore()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        torch.cuda.synchronize(self.device)
        if st.pool is None:
            st.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=st.pool, capture_error_mode="thread_local"):
            self._step(st, sel)
        restore()  # capture records without running, but be safe
        torch.cuda.synchronize(self.device)
        st.graphs[sel] = graph
