"""The harness's own decoding loop: every strategy but beam sampling, a step without Python overhead on a GPU.

``transformers``' ``generate`` runs every step through Python (logits processors, stopping
criteria, a host synchronisation to ask whether every row has finished), its beam search reorders
every cache layer each step (``index_select``, which no CUDA graph survives), and it decodes one
decoding config at a time. This loop keeps the same arithmetic and moves the rest onto the device.

**Layout: a prompt and its rows.** A batch is ``prompts`` x ``width`` rows: the rows of one prompt
are the configs of a sweep that decode it (greedy and sampled configs together, each row with its
own temperature, top-k, top-p, min-p and repetition penalty — ``sampling.sample_rows``) or the beams
of one beam config. The static KV cache (transformers' ``StaticCache``) has one entry per *prompt*,
not per row: slots ``[0, P)`` hold the prompt, computed once (:meth:`FastDecoder.prefill`) and copied
in for each config family, and the token that row ``j`` chooses at step ``s`` is written at slot
``P + s * width + j``. A step feeds the ``width`` new tokens of each prompt as ``width`` query
positions of one sequence, with a 4-D attention mask ``allowed`` (prompts, width, slots) saying which
slots each row sees: the prompt, and its own tokens. Beam search changes only that mask: a new beam
inherits its parent's row of ``allowed`` (a gather of booleans) and adds its own slot, so the KV
cache never moves (TensorRT-LLM reorders beams through an index table the same way). Per prompt,
the cache holds the prompt once instead of once per row, and attention reads it once for all rows.

**The step** — the model's forward for ``width`` tokens per prompt, the token choice (argmax, the
counter-based sampler, or ``beam_search.select``), EOS and length bookkeeping, the mask update —
touches only tensors of the state, in place. On a GPU it is optionally compiled (``torch.compile``,
inductor, no CUDA graphs of its own) and captured as a ``torch.cuda.CUDAGraph`` per (state,
selector): a step is one graph replay. The host reads "all finished?" every ``sync_every`` steps.

**Attention.** For an ``sdpa`` model the decoding steps use :func:`decode_attention`, registered with
transformers' ``AttentionInterface``: plain ``scaled_dot_product_attention`` over the static cache
with the 4-D mask, except that grouped-query heads are folded into the query length instead of
repeating keys and values per head (transformers' ``repeat_kv`` copies the whole cache every layer
every step when a mask is given), and that it reads only a *window* of the slots: on a CPU the
slots written so far, on a GPU the first of ``windows`` (default 4) captured graphs whose window
covers them — a prompt's rows fill ``width`` slots a step, so without windows attention would read
the whole generated region from the first step on (windows are off for a compiled step: each would
compile again).

**Prefill** runs eagerly on the left-padded prompts, as ``generate`` does (a 2-D mask, positions
counted from the first real token, a dynamic cache, logits of the last position).

On a CPU the loop runs eagerly and gives the text of ``generate`` in float32 — greedy, sampling,
min-p, repetition penalty, EOS, and beam search (``beam_search``: transformers' arithmetic op for op)
— tests/test_engine_fast.py and tests/test_engine_beams.py.

Limits (the engine falls back to ``generate`` outside them): a cache whose layers are all plain
``StaticLayer`` (no sliding-window or hybrid layers), attention ``sdpa`` or ``eager``; beam sampling.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from . import beam_search, sampling
from .beam_search import BeamSelector

#: states (static caches, with their graphs) kept on a CPU; on a GPU fewer when memory runs short
MAX_STATES = 3
#: the name :func:`decode_attention` is registered under
ATTENTION = "harness_decode"
#: what compiling is expected to save per step of a captured graph (issue 20: 2x slower without compile)
COMPILE_GAIN = 0.5
#: graphs per uncompiled state on a GPU, each attending over a longer prefix of the generated slots
WINDOWS = 4
#: the slots :func:`decode_attention` reads in the current forward (None: all); set around a forward by the loop
_WINDOW: list[int | None] = [None]


@dataclass(frozen=True)
class RowSelector:
    """How the rows of a greedy / sampled batch choose (the static part; the values are per row)."""

    filters: sampling.RowFilters | None  # None: every row greedy
    penalty: bool  # some row has a repetition penalty


@dataclass(frozen=True)
class RowParams:
    """Per-row decoding values of a (prompts x width) greedy / sampled batch, row-major (prompt, then row)."""

    width: int
    greedy: tuple[bool, ...]
    temperature: tuple[float, ...]
    top_k: tuple[int, ...]
    top_p: tuple[float, ...]
    min_p: tuple[float, ...]
    penalty: tuple[float, ...]
    limit: tuple[int, ...]  # max_new_tokens per row
    seeds: tuple[int, ...]

    @classmethod
    def of(cls, rows: list[tuple[Any, int] | None], width: int) -> RowParams:
        """From (decoding, seed) per row (None: a padding row, greedy, one token)."""
        cols: dict[str, list[Any]] = {k: [] for k in ("greedy", "temperature", "top_k", "top_p", "min_p", "penalty", "limit", "seeds")}
        for row in rows:
            d, seed = row if row is not None else (None, 0)
            greedy = d is None or d.strategy == "greedy"
            cols["greedy"].append(greedy)
            cols["temperature"].append(1.0 if greedy else max(float(d.temperature), 1e-6))
            cols["top_k"].append(0 if greedy else int(d.top_k or 0))
            cols["top_p"].append(1.0 if greedy else float(d.top_p))
            cols["min_p"].append(0.0 if greedy else float(d.min_p))
            cols["penalty"].append(1.0 if d is None else float(d.repetition_penalty))
            cols["limit"].append(1 if d is None else int(d.max_new_tokens))
            cols["seeds"].append(int(seed))
        return cls(width, *(tuple(cols[k]) for k in cols))

    def selector(self, vocab: int) -> RowSelector:
        sampled = [(k, p, m) for g, k, p, m in zip(self.greedy, self.top_k, self.top_p, self.min_p) if not g]
        filters = sampling.RowFilters.of(sampled, vocab) if sampled else None
        return RowSelector(filters, any(p != 1.0 for p in self.penalty))


@dataclass
class Prefix:
    """The prompts of one batch, computed once: their KV per layer, the last position's logits, the mask."""

    input_ids: Any  # (n, P) left-padded
    mask: Any  # (n, P) long
    layers: list[tuple[Any, Any]]  # per layer (keys, values), (n, kv heads, P, head dim)
    logits: Any  # (n, vocab) float32: the first new token's
    lengths: Any  # (n,) real prompt tokens


@dataclass
class State:
    """Everything one (prompts, width, cache slots, new tokens) decoding step reads and writes, allocated once."""

    prompts: int
    width: int
    length: int
    new: int
    cache: Any
    cur: Any  # (prompts, width) the tokens fed at the next forward
    pos: Any  # (prompts, 1) their position id
    gen0: Any  # (1,) the first generated slot (the batch's padded prompt length)
    step: Any  # (1,) index of the token chosen next
    allowed: Any  # (prompts, width, length) bool: the slots each row attends to
    history: Any  # (prompts, width, length) token ids each row has seen (its first real token at left padding and where unwritten)
    out: Any  # (prompts, width, new) chosen tokens (greedy / sampled rows)
    finished: Any  # (prompts, width) bool
    keys: Any  # (prompts * width,) sampler keys
    slots: Any  # (width,) 0..width-1
    eye: Any  # (width, width) bool
    temperature: Any  # (rows, 1)
    top_k: Any  # (rows,)
    top_p: Any  # (rows, 1)
    min_p: Any  # (rows, 1)
    penalty: Any  # (rows, 1)
    greedy: Any  # (rows,) bool
    limit: Any  # (prompts, width)
    run_scores: Any  # beam search (prompts, width) ...
    run_seq: Any
    fin_seq: Any
    fin_scores: Any
    fin_done: Any
    heur: Any  # (prompts, 1)
    stop: Any  # (1,)
    graphs: dict = field(default_factory=dict)
    pool: Any = None
    compiled: bool = False  # steps of this shape run the compiled forward

    MUTABLE = ("cur", "pos", "gen0", "step", "allowed", "history", "out", "finished", "run_scores", "run_seq", "fin_seq",
               "fin_scores", "fin_done", "heur", "stop")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.prompts, self.width, self.length, self.new)

    def nbytes(self) -> int:
        total = sum(getattr(self, n).nbytes for n in self.MUTABLE)
        for layer in self.cache.layers:
            total += layer.keys.nbytes + layer.values.nbytes
        return total


class FastDecoder:
    """Greedy, sampled and beam decoding of left-padded batches (see the module docstring).

    ``compile``: torch.compile the model's decoding forward — True, False, or None: on a GPU
    where it pays (:meth:`prepare`: the steps ahead x half the measured step time against the
    expected compile time, ``compile_cache``), never on a CPU. ``cuda_graphs``: capture each step as
    a CUDA graph (CUDA only). ``compile_cache``: a ``compile_cache.CompileCache`` (records of
    earlier compile times; the on-disk caches live in its folder).
    """

    def __init__(self, model: Any, *, eos_ids: list[int], pad_id: int, compile: bool | None = False, cuda_graphs: bool = True,
                 sync_every: int = 8, compile_cache: Any = None, windows: int = WINDOWS):
        import inspect

        import torch

        self.model = model
        self.device = next(model.parameters()).device
        self.pad_id = int(pad_id)
        self.n_eos = len(eos_ids)
        self.eos = torch.tensor(list(eos_ids) or [-1], dtype=torch.long, device=self.device)
        self.cuda_graphs = bool(cuda_graphs) and self.device.type == "cuda"
        self.sync_every = max(1, int(sync_every))
        self.windows = max(1, int(windows))
        self.states: OrderedDict[tuple[int, int, int, int], State] = OrderedDict()
        self.base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.config = self.base.config
        self._logits_to_keep = "logits_to_keep" in inspect.signature(self.base.forward).parameters
        attn = getattr(self.config, "_attn_implementation", "sdpa")
        self._bool_mask = attn != "eager"
        self._attention = ATTENTION if attn == "sdpa" else None
        if self._attention:
            register_attention()
        self.dtype = next(model.parameters()).dtype
        self.vocab = int(self.config.get_text_config().vocab_size) if hasattr(self.config, "get_text_config") else int(self.config.vocab_size)
        self.compile_seconds = 0.0  # compiling (and capturing) the steps, all states
        self.compile_mode = compile if self.device.type == "cuda" else bool(compile)
        self.compile_cache = compile_cache
        self.step_seconds: dict[tuple[int, int, int, int], float] = {}  # measured eager graph replay, per shape
        self._compiled_shapes: set[tuple[int, int, int, int]] = set()
        self._decided: dict[tuple[int, int, int, int], bool] = {}  # compile or not, per shape (outlives evicted states)
        self._clock = time.perf_counter
        self._gen0 = 0  # the current batch's first generated slot, on the host (a CPU step's window)
        self._compiled = None
        if compile or (compile is None and self.device.type == "cuda"):
            import torch._dynamo

            for name in ("recompile_limit", "cache_size_limit"):  # one graph per state shape: allow many
                if hasattr(torch._dynamo.config, name):
                    setattr(torch._dynamo.config, name, max(64, getattr(torch._dynamo.config, name)))
            self._compiled = torch.compile(self._forward_eager, dynamic=False, fullgraph=False)

    @property
    def compiled_shapes(self) -> int:
        """Step shapes compiled by this decoder so far."""
        return len(self._compiled_shapes)

    @property
    def compiled(self) -> bool:
        return any(st.compiled for st in self.states.values()) or self.compile_mode is True

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

    def prefill(self, input_ids: Any, attention_mask: Any) -> Prefix:
        """Run the left-padded prompts once; their KV and first logits serve every config family of the batch."""
        import torch
        from transformers import DynamicCache

        mask = attention_mask.to(torch.long)
        position_ids = (mask.cumsum(-1) - 1).masked_fill_(mask == 0, 1)
        cache = DynamicCache(config=self.model.config)
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids, "past_key_values": cache, "use_cache": True}
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        logits = self.model(**kwargs).logits[:, -1, :].float()
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        return Prefix(input_ids, mask, layers, logits, mask.sum(-1))

    def sample(self, prefix: Prefix, src: list[int], params: RowParams, new_tokens: int, cache_len: int, selector: RowSelector | None = None) -> Any:
        """Greedy / sampled rows: tokens (prompts, width, n <= new_tokens), pad after a row's EOS or limit.

        ``src[b]``: the prefix row (prompt) of batch prompt ``b``; ``params``: the values of its ``width``
        rows; ``selector``: a wider one than ``params`` needs (the whole call's, so every batch replays
        one graph) gives the same tokens.
        """
        import torch

        st = self._state(len(src), params.width, cache_len, new_tokens)
        logits = self._load(st, prefix, src)
        sel = selector or params.selector(self.vocab)
        d = self.device
        st.temperature.copy_(torch.tensor(params.temperature, dtype=torch.float32, device=d)[:, None])
        st.top_k.copy_(torch.tensor(params.top_k, dtype=torch.long, device=d))
        st.top_p.copy_(torch.tensor(params.top_p, dtype=torch.float32, device=d)[:, None])
        st.min_p.copy_(torch.tensor(params.min_p, dtype=torch.float32, device=d)[:, None])
        st.penalty.copy_(torch.tensor(params.penalty, dtype=torch.float32, device=d)[:, None])
        st.greedy.copy_(torch.tensor(params.greedy, dtype=torch.bool, device=d))
        st.limit.copy_(torch.tensor(params.limit, dtype=torch.long, device=d).view(st.prompts, st.width))
        st.keys.copy_(sampling.seed_keys(params.seeds, d))
        first = logits[:, None, :].expand(st.prompts, st.width, logits.shape[-1]).reshape(-1, logits.shape[-1])
        self._rows_choose(st, sel, first)
        steps = self._loop(st, sel, new_tokens, lambda: bool(st.finished.all()))
        return st.out[:, :, :steps]

    def beams(self, prefix: Prefix, src: list[int], sel: BeamSelector, cache_len: int) -> Any:
        """Beam search per batch prompt: the best hypothesis' tokens (prompts, n <= new_tokens), pad after its end."""
        st = self._state(len(src), sel.beams, cache_len, sel.new_tokens)
        logits = self._load(st, prefix, src)
        beam_search.reset(st, sel, self.pad_id)
        first = logits[:, None, :].expand(st.prompts, st.width, logits.shape[-1]).reshape(-1, logits.shape[-1])
        self._beam_choose(st, sel, first)
        steps = self._loop(st, sel, sel.new_tokens, lambda: bool(st.stop.all()))
        return st.fin_seq[:, 0, :steps]

    def prepare(self, prompts: int, width: int, cache_len: int, new_tokens: int, selector: Any, steps_ahead: int) -> float:
        """Before a call decodes: capture the step of this shape (and compile it if that pays); seconds spent.

        A no-op on a CPU (no graphs) unless compiling was asked for there.
        """
        if not self.cuda_graphs and self.compile_mode is not True:
            return 0.0
        t0 = time.perf_counter()
        st = self._state(prompts, width, cache_len, new_tokens)
        self._benign(st)
        if self.cuda_graphs:
            if st.shape not in self._decided:
                st.compiled = self._decided[st.shape] = st.compiled or self._should_compile(st, selector, steps_ahead)
            for limit in self._limits(st):
                if (selector, st.compiled, limit) not in st.graphs:
                    self._capture(st, selector, limit)
        else:  # compile = true on a CPU: compile by running the step
            self._warm(st, selector)
        spent = time.perf_counter() - t0
        self.compile_seconds += spent
        return spent

    # ------------------------------------------------------------------ state

    def _state(self, prompts: int, width: int, length: int, new: int) -> State:
        import torch

        key = (prompts, width, length, new)
        if key in self.states:
            self.states.move_to_end(key)
            return self.states[key]
        limit = MAX_STATES
        if self.device.type == "cuda":
            need = self._state_bytes(prompts, width, length, new)
            free, _ = torch.cuda.mem_get_info(self.device)
            free += torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
            while self.states and free < need * 1.2:
                _, old = self.states.popitem(last=False)
                free += old.nbytes()
                del old
            if not self.states:
                torch.cuda.empty_cache()
        while len(self.states) >= limit:
            self.states.popitem(last=False)
        from transformers import StaticCache

        d = self.device
        rows = prompts * width
        zeros = lambda *shape, dtype=torch.long: torch.zeros(*shape, dtype=dtype, device=d)  # noqa: E731
        text = self.config.get_text_config() if hasattr(self.config, "get_text_config") else self.config
        heads = int(text.num_attention_heads)
        kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
        cache = StaticCache(config=self.config, max_cache_len=length)
        cache.early_initialization(prompts, kv_heads, head_dim, self.dtype, d)
        st = State(
            prompts=prompts, width=width, length=length, new=new, cache=cache,
            cur=zeros(prompts, width), pos=zeros(prompts, 1), gen0=zeros(1), step=zeros(1),
            allowed=zeros(prompts, width, length, dtype=torch.bool), history=zeros(prompts, width, length),
            out=zeros(prompts, width, new), finished=zeros(prompts, width, dtype=torch.bool), keys=zeros(rows),
            slots=torch.arange(width, device=d), eye=torch.eye(width, dtype=torch.bool, device=d),
            temperature=torch.ones(rows, 1, device=d), top_k=zeros(rows), top_p=torch.ones(rows, 1, device=d),
            min_p=torch.zeros(rows, 1, device=d), penalty=torch.ones(rows, 1, device=d), greedy=zeros(rows, dtype=torch.bool),
            limit=zeros(prompts, width), run_scores=torch.zeros(prompts, width, device=d), run_seq=zeros(prompts, width, new),
            fin_seq=zeros(prompts, width, new), fin_scores=torch.zeros(prompts, width, device=d),
            fin_done=zeros(prompts, width, dtype=torch.bool), heur=zeros(prompts, 1, dtype=torch.bool), stop=zeros(1, dtype=torch.bool),
            compiled=self._decided.get(key, self.compile_mode is True),
        )
        self.states[key] = st
        return st

    def _state_bytes(self, prompts: int, width: int, length: int, new: int) -> int:
        text = self.config.get_text_config() if hasattr(self.config, "get_text_config") else self.config
        heads = int(text.num_attention_heads)
        kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
        kv = 2 * int(text.num_hidden_layers) * kv_heads * head_dim * length * prompts * self.dtype.itemsize
        return kv + prompts * width * (length * 10 + new * 24) + prompts * width * self.vocab * 16

    def _load(self, st: State, prefix: Prefix, src: list[int]) -> Any:
        """Copy the prefix's prompts (rows ``src``) into ``st``; their first logits (prompts, vocab)."""
        import torch

        idx = torch.tensor(src, dtype=torch.long, device=self.device)
        p = prefix.input_ids.shape[1]
        if p > st.length - st.width * st.new:
            raise ValueError(f"cache length {st.length} < prompt {p} + {st.width} x {st.new} generated slots")
        for layer, (k, v) in zip(st.cache.layers, prefix.layers):
            layer.keys[:, :, :p].copy_(k.index_select(0, idx))
            layer.values[:, :, :p].copy_(v.index_select(0, idx))
            layer.cumulative_length.fill_(p)
        mask = prefix.mask.index_select(0, idx)
        ids = sampling.unpadded(prefix.input_ids.index_select(0, idx), mask)  # the penalty never reaches the padding token
        st.allowed.zero_()
        st.allowed[:, :, :p] = mask.bool()[:, None, :]
        st.history[:, :, :p] = ids[:, None, :]
        st.history[:, :, p:] = ids[:, None, :1]
        st.pos.copy_(prefix.lengths.index_select(0, idx)[:, None])
        st.gen0.fill_(p)
        self._gen0 = p
        st.step.zero_()
        st.finished.zero_()
        st.out.fill_(self.pad_id)
        return prefix.logits.index_select(0, idx)

    def _benign(self, st: State) -> None:
        """A state any step can run on (before real prompts: compiling, capturing, timing): slot 0 visible."""
        st.allowed.zero_()
        st.allowed[:, :, 0] = True
        st.history.zero_()
        st.cur.fill_(self.pad_id)
        st.pos.fill_(1)
        st.gen0.fill_(1)
        st.step.zero_()
        st.finished.zero_()
        st.limit.fill_(st.new)
        for layer in st.cache.layers:
            layer.cumulative_length.fill_(1)
        st.run_scores.zero_()
        st.fin_scores.fill_(beam_search.NEG)
        st.fin_done.zero_()
        st.heur.fill_(True)
        st.stop.zero_()

    # ------------------------------------------------------------------ the step

    def _forward_eager(self, cur: Any, pos: Any, mask: Any, cache: Any) -> Any:
        return self.model(input_ids=cur, position_ids=pos, attention_mask=mask, past_key_values=cache, use_cache=True).logits.float()

    def _limits(self, st: State) -> list[int]:
        """The windows of a state's captured graphs: slot counts, the last the whole cache."""
        if not (self.cuda_graphs and self._attention and not st.compiled and self.windows > 1):
            return [st.length]
        base, generated = st.length - st.width * st.new, st.width * st.new
        return sorted({min(st.length, -(-(base + -(-generated * (w + 1) // self.windows)) // 16) * 16) for w in range(self.windows)})

    def _window(self, st: State, steps: int) -> int | None:
        """Slots the forward of step ``steps`` must see: on a GPU the smallest captured window that covers them, on a CPU exactly them."""
        if not self._attention or (st.compiled and not self.cuda_graphs):  # a compiled step keeps one shape
            return None
        if self.cuda_graphs:
            need = st.length - st.width * st.new + steps * st.width
            return next(limit for limit in self._limits(st) if limit >= need)
        return min(st.length, -(-(self._gen0 + steps * st.width) // 16) * 16)

    def _forward(self, st: State, limit: int | None = None) -> Any:
        """Logits (prompts * width, vocab) for the tokens ``st.cur``, written into the cache at the next slots.

        ``limit``: attend over the first ``limit`` slots only (they hold every slot written so far).
        """
        import torch

        if limit is not None and limit >= st.length:
            limit = None
        allowed = st.allowed[:, None] if limit is None else st.allowed[:, None, :, :limit]
        if self._bool_mask:
            mask = allowed
        else:
            zero = torch.zeros((), dtype=self.dtype, device=self.device)
            mask = torch.where(allowed, zero, torch.finfo(self.dtype).min)
        fn = self._compiled if st.compiled and self._compiled is not None else self._forward_eager
        pos = st.pos.expand(st.prompts, st.width)
        with _attention_as(self.config, self._attention):
            _WINDOW[0] = limit
            try:
                logits = fn(st.cur, pos, mask, st.cache)
            finally:
                _WINDOW[0] = None
        return logits.reshape(st.prompts * st.width, -1)

    def _rows_choose(self, st: State, sel: RowSelector, logits: Any) -> None:
        import torch

        rows = st.prompts * st.width
        if sel.penalty:
            logits = sampling.repetition_penalty(logits, st.history.view(rows, -1), st.penalty)
        tok = logits.argmax(-1)
        if sel.filters is not None:
            drawn = sampling.sample_rows(logits, sampling.step_keys(st.keys, st.step), st.temperature, st.top_k, st.top_p, st.min_p, sel.filters)
            tok = torch.where(st.greedy, tok, drawn)
        tok = torch.where(st.finished.view(rows), self.pad_id, tok).view(st.prompts, st.width)
        st.out.index_copy_(2, st.step, tok[:, :, None])
        st.finished.logical_or_((tok[:, :, None] == self.eos).any(-1) | (st.step + 1 >= st.limit))
        self._advance(st, tok)

    def _beam_choose(self, st: State, sel: BeamSelector, logits: Any) -> None:
        rows = st.prompts * st.width
        history = st.history.view(rows, -1) if sel.repetition_penalty != 1.0 else None
        tok, parents = beam_search.select(st, sel, logits, self.eos, history)
        # the new beams inherit their parents' view of the cache (and history); the cache itself stays
        index = parents[:, :, None].expand(st.prompts, st.width, st.length)
        st.allowed.copy_(st.allowed.gather(1, index))
        if history is not None:
            st.history.copy_(st.history.gather(1, index))
        self._advance(st, tok)

    def _advance(self, st: State, tok: Any) -> None:
        """Token ``step`` of every row is chosen: it goes into the history, the mask (its slot) and the next forward."""
        st.history.index_copy_(2, st.gen0 + st.step, tok[:, :, None])
        st.allowed.index_copy_(2, st.gen0 + st.step * st.width + st.slots, st.eye.expand(st.prompts, st.width, st.width))
        st.cur.copy_(tok)
        st.step.add_(1)

    def _step(self, st: State, sel: Any, limit: int | None = None) -> None:
        logits = self._forward(st, limit)
        if isinstance(sel, BeamSelector):
            self._beam_choose(st, sel, logits)
        else:
            self._rows_choose(st, sel, logits)
        st.pos.add_(1)

    def _loop(self, st: State, sel: Any, new_tokens: int, done: Any) -> int:
        """Steps until every row is done (read every ``sync_every`` steps) or ``new_tokens`` are chosen; the steps run."""
        steps = 1
        while steps < new_tokens:
            if steps % self.sync_every == 0 and done():  # one host sync every sync_every steps
                break
            limit = self._window(st, steps)
            if self.cuda_graphs:
                key = (sel, st.compiled, limit)
                if key not in st.graphs:
                    t0 = time.perf_counter()
                    self._capture(st, sel, limit)
                    self.compile_seconds += time.perf_counter() - t0
                st.graphs[key].replay()
            else:
                self._step(st, sel, limit)
            steps += 1
        return steps

    # ------------------------------------------------------------------ graphs and compiling

    def _saved(self, st: State) -> Any:
        saved = {name: getattr(st, name).clone() for name in st.MUTABLE}
        lengths = [layer.cumulative_length.clone() for layer in st.cache.layers]

        def restore() -> None:
            for name, value in saved.items():
                getattr(st, name).copy_(value)
            for layer, value in zip(st.cache.layers, lengths):
                layer.cumulative_length.copy_(value)

        return restore

    def _compiling(self, st: State) -> Any:
        """Around the first steps of a shape: the on-disk compile caches in their folder, the compile time recorded."""
        import contextlib

        first = st.compiled and st.shape not in self._compiled_shapes
        if not first:
            return contextlib.nullcontext()
        self._compiled_shapes.add(st.shape)
        cache = self.compile_cache
        scope = cache.scope() if cache is not None else contextlib.nullcontext()

        @contextlib.contextmanager
        def timed() -> Any:
            t0 = time.perf_counter()
            with scope:
                yield
            if cache is not None:
                cache.record(st.shape, time.perf_counter() - t0)

        return timed()

    def _warm(self, st: State, sel: Any, steps: int = 2) -> None:
        restore = self._saved(st)
        with self._compiling(st):
            for _ in range(steps):
                self._step(st, sel)
                restore()

    def _capture(self, st: State, sel: Any, limit: int | None = None) -> None:
        """Warm the step up (compiling it), capture it as a CUDA graph, and restore the state it mutated.

        Once a graph of the state is captured, the next ones (other windows, other selectors) warm up with one step.
        """
        import torch

        limit = st.length if limit is None else limit
        restore = self._saved(st)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with self._compiling(st), torch.cuda.stream(stream):
            for _ in range(1 if st.graphs else 3):
                self._step(st, sel, limit)
                restore()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        torch.cuda.synchronize(self.device)
        if st.pool is None:
            st.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=st.pool, capture_error_mode="thread_local"):
            self._step(st, sel, limit)
        restore()
        torch.cuda.synchronize(self.device)
        st.graphs[(sel, st.compiled, limit)] = graph

    def _should_compile(self, st: State, sel: Any, steps_ahead: int) -> bool:
        """Compile this shape if the steps ahead save more than compiling is expected to cost (``compile = None``)."""
        import torch

        if self._compiled is None or self.compile_mode is False:
            return False
        if self.compile_mode is True:
            return True
        self._capture(st, sel, st.length)  # the eager graph over every slot: cheap, and what runs if compiling does not pay
        graph = st.graphs[(sel, False, st.length)]
        restore = self._saved(st)
        graph.replay()
        torch.cuda.synchronize(self.device)
        t0 = self._clock()
        for _ in range(8):
            graph.replay()
        torch.cuda.synchronize(self.device)
        per_step = (self._clock() - t0) / 8
        restore()
        self.step_seconds[st.shape] = per_step
        expected = self.compile_cache.expected_seconds(st.shape) if self.compile_cache is not None else None
        cost = expected if expected is not None else (self.compile_cache.cold_seconds if self.compile_cache is not None else 30.0)
        return steps_ahead * per_step * COMPILE_GAIN > cost


def register_attention() -> None:
    """Make :func:`decode_attention` known to transformers (idempotent)."""
    from transformers import AttentionInterface

    if ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTENTION, decode_attention)


class _attention_as:
    """Within the block, the model's attention modules dispatch to ``name`` (None: leave it)."""

    def __init__(self, config: Any, name: str | None):
        self.config, self.name, self.before = config, name, None

    def __enter__(self) -> None:
        if self.name is not None:
            self.before = self.config._attn_implementation_internal
            self.config._attn_implementation_internal = self.name

    def __exit__(self, *exc: Any) -> None:
        if self.name is not None:
            self.config._attn_implementation_internal = self.before


def decode_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0, scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
    """``sdpa`` attention for decoding steps over a static cache with a 4-D mask, grouped-query heads folded.

    ``query`` (b, heads, q, d) against ``key``/``value`` (b, kv heads, slots, d): the ``heads / kv
    heads`` query heads that share a key head become extra query positions, so keys and values are
    read as they are (transformers' sdpa path repeats them per head whenever a mask is given).
    Returns (b, q, heads, d), as transformers' attention functions do.
    """
    import torch

    limit = _WINDOW[0]
    if limit is not None:  # the slots written so far are all below it
        key, value = key[:, :, :limit], value[:, :, :limit]
    b, heads, q, d = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    if group > 1:
        query = query.reshape(b, kv_heads, group * q, d)
        if attention_mask is not None:
            m = attention_mask
            attention_mask = m[:, :, None].expand(m.shape[0], m.shape[1], group, q, m.shape[-1]).reshape(m.shape[0], m.shape[1], group * q, m.shape[-1])
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0, scale=scaling)
    return out.reshape(b, heads, q, d).transpose(1, 2).contiguous(), None
