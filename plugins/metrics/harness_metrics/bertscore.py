"""BERTScore F1 (bert_score), averaged over examples.

The numbers are bert_score 0.3.13's — its ``sent_encode`` tokenisation, the embeddings of the
model truncated to ``num_layers``, greedy cosine matching with its idf weights (``greedy_cos_idf``),
F1 NaN set to 0, the optional baseline rescaling — but the embedding loop of
``bert_cos_score_idf`` is done here, so that work can be reused across a sweep:

* **references are embedded once.** The runner makes one metric per run and calls ``score``
  once per (model, decoding config) cell, with the same references every time. Each
  reference's token ids and per-token embeddings are kept between calls in an LRU cache
  bounded by ``cache_mib`` (1 GiB by default, counted approximately: the tensors plus a small
  overhead per sentence; it lives on the encoder's device, in the encoder's dtype) and
  released by ``close``. Predictions are embedded in every call, each distinct one once. The
  idf weights are looked up per token id when pairs are matched, never cached, so
  ``idf = true`` (weights from each call's references) stays exact;
* sentences are batched by token count, longest first: little padding;
* ``dtype``: the encoder runs in float16 on CUDA and float32 elsewhere by default (``auto``);
  similarities are computed in float32 either way. Half precision moves F1 by ~1e-3, so every
  dtype but float32 is part of the identity; float32 matches bert_score within ~1e-6;
* ``batch_size`` (sentences per encoder batch, pairs per matching batch) is automatic by
  default: 64 on CPU; on CUDA estimated from free GPU memory, the model's width and the call's
  longest sentence (at most 512), halved and retried on out-of-memory, the smaller size kept
  for later batches. An explicit number is used as given (no retry).

bert_score 0.3.13 predates transformers 5; three of its habits are corrected here:

* an empty or whitespace-only sentence crashes it (it calls the tokenizer's removed
  ``build_inputs_with_special_tokens``): such pairs score 0 and never reach it;
* for RoBERTa and GPT-2 tokenizers it passes ``add_prefix_space=True`` to ``encode``,
  which transformers 5 ignores (the setting now belongs to the tokenizer's
  pre-tokenizer, fixed when it is built). The tokenizer is rebuilt with
  ``add_prefix_space=True`` so every sentence is encoded as bert_score intends, and the
  result is checked;
* a tokenizer that declares no ``model_max_length`` (transformers' 1e30 sentinel)
  overflows the truncation setting: the limit is capped at 512 tokens.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib.metadata as md
import importlib.util
import os
import sys
import warnings
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import hookimpl
from harness.api import ExampleScore, Metric, Option, Progress, ScoreInput, stable_hash
from harness.errors import MissingDependency, UserError

PACKAGE_PREFIX = "package:"
#: token limit for tokenizers that declare none (the usual BERT/RoBERTa limit)
MAX_LENGTH = 512
#: a model_max_length above this is transformers' "unknown" sentinel, not a real limit
_UNSET_MAX_LENGTH = 10**9
#: bert_score's rescaling baselines are per language; this plugin scores English
BASELINE_LANG = "en"
#: files up to this size are hashed into a local model's fingerprint (configs, tokenizer); larger ones by size
_HASHED_FILE_SIZE = 4 * 2**20
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_KEY = "metrics.bertscore"
#: encoder precisions; "auto" is float16 on CUDA, float32 elsewhere
DTYPES = ("auto", "float32", "float16", "bfloat16")
#: sentences (or pairs) per batch on CPU when batch_size is automatic
CPU_BATCH_SIZE = 64
#: the largest batch the automatic size picks on CUDA
MAX_AUTO_BATCH_SIZE = 512
#: share of the free GPU memory the automatic batch size plans to fill (the rest is headroom)
_GPU_MEMORY_SHARE = 0.5
#: default memory for reference embeddings kept between score calls
DEFAULT_CACHE_MIB = 1024
#: bytes counted per cached sentence besides its tensor, ids and text (dict slot, objects, tensor header)
_ENTRY_OVERHEAD = 256


@dataclass(frozen=True)
class ResolvedModel:
    """What bert_score loads (a hub name or a local directory) and what identifies it."""

    source: str
    local: bool
    package: str | None = None  # distribution that ships a ``package:`` directory
    package_version: str | None = None


def resolve_model(model: str) -> ResolvedModel:
    """Resolve the ``model`` setting: ``package:<pkg>/<dir>``, a local directory, or a hub name."""
    if model.startswith(PACKAGE_PREFIX):
        return _resolve_package(model)
    path = Path(model).expanduser()
    if path.is_dir():
        return ResolvedModel(str(path.resolve()), local=True)
    return ResolvedModel(model, local=False)


def _resolve_package(model: str) -> ResolvedModel:
    module, _, relative = model[len(PACKAGE_PREFIX) :].partition("/")
    key = f"{_KEY}.model"
    if not module.isidentifier() or not relative.strip("/"):
        raise UserError(f"'{model}' must look like 'package:<python package>/<folder inside it>'", key=key)
    try:
        # finds a top-level package without importing it (its __init__ may import heavy libraries)
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise UserError(
            f"the Python package '{module}' that provides '{model}' is not installed; "
            f"install it with: pip install {module.replace('_', '-')}",
            key=key,
        )
    if not spec.submodule_search_locations:
        raise UserError(f"'{module}' is a module, not a package with folders: '{model}' cannot be found", key=key)
    for location in spec.submodule_search_locations:
        directory = Path(location, relative)
        if directory.is_dir():
            break
    else:
        raise UserError(f"the package '{module}' has no folder '{relative}'", key=key)
    dists = md.packages_distributions().get(module) or []
    version = md.version(dists[0]) if dists else None
    return ResolvedModel(str(directory.resolve()), local=True, package=dists[0] if dists else module, package_version=version)


@dataclass(frozen=True, eq=False)
class Embedded:
    """One sentence as bert_score sees it: its token ids (special tokens included) and one embedding per token."""

    ids: tuple[int, ...]
    embedding: Any  # torch.Tensor, tokens × hidden, on the encoder's device and in its dtype

    def nbytes(self, sentence: str) -> int:
        """Approximate memory held by this entry of the cache under the key ``sentence``."""
        tensor = self.embedding.numel() * self.embedding.element_size()
        return tensor + 8 * len(self.ids) + sys.getsizeof(sentence) + _ENTRY_OVERHEAD


class EmbeddingCache:
    """Sentence → :class:`Embedded`, bounded by ``max_bytes``: the least recently used go first.

    An entry larger than the whole budget is not kept. Sizes are approximate (see
    :meth:`Embedded.nbytes`); the tensors dominate them.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max(0, int(max_bytes))
        self.nbytes = 0
        self.evictions = 0
        self._items: OrderedDict[str, Embedded] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, sentence: object) -> bool:
        return sentence in self._items

    def get(self, sentence: str) -> Embedded | None:
        item = self._items.get(sentence)
        if item is not None:
            self._items.move_to_end(sentence)
        return item

    def put(self, sentence: str, item: Embedded) -> None:
        size = item.nbytes(sentence)
        old = self._items.pop(sentence, None)
        if old is not None:
            self.nbytes -= old.nbytes(sentence)
        if size > self.max_bytes:
            return
        self._items[sentence] = item
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            key, evicted = self._items.popitem(last=False)
            self.nbytes -= evicted.nbytes(key)
            self.evictions += 1

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0


class BertScoreMetric(Metric):
    """BERTScore F1 of each prediction against its reference; the cell value is the mean.

    One ``BERTScorer`` is built on the first ``score`` call (for its model, tokenizer, idf
    and baseline) and reused until ``close``; the embeddings and the matching are done here,
    as bert_score does them (see the module doc), with the references' embeddings cached
    between calls. Each distinct (prediction, reference) pair is scored once per call. With
    ``idf``, the weights come from the distinct references of each ``score`` call, so pass a
    whole evaluation set at once. With ``rescale_with_baseline``, bert_score's English
    baseline for the model is used (it exists for hub models such as roberta-large only).
    Numbers depend on the model, layer and dtype: compare only scores whose identity matches.
    """

    name = "bertscore"
    label = "BERTScore"
    version = "1"
    description = "bert_score F1 (roberta-large layer 17 by default; any HF encoder, local folder or package: folder)"
    options = {
        "model": Option(str, default="roberta-large", help="hub name, local folder, or package:<python package>/<folder>"),
        "num_layers": Option(
            int, default=None, nullable=True, minimum=0,
            help="layer whose embeddings are compared; default: bert_score's tuned layer (required for folders)",
        ),
        "batch_size": Option(
            int, default=None, nullable=True, minimum=1,
            help="sentences per encoder batch and pairs per matching batch; default: automatic "
            f"({CPU_BATCH_SIZE} on CPU; on CUDA sized to free memory, at most {MAX_AUTO_BATCH_SIZE}, halved on out-of-memory)",
        ),
        "dtype": Option(
            str, default="auto", choices=DTYPES,
            help="encoder precision: 'auto' (float16 on CUDA, float32 otherwise), 'float32', 'float16', 'bfloat16'; "
            "similarities are float32 always; any dtype but float32 is part of the identity",
        ),
        "device": Option(str, default="auto", help="'auto' (cuda when available, else cpu), 'cpu', 'cuda', 'cuda:1' …"),
        "idf": Option(bool, default=False, help="weight tokens by inverse document frequency over the references"),
        "rescale_with_baseline": Option(bool, default=False, help="rescale with bert_score's English baseline"),
        "cache_mib": Option(
            float, default=DEFAULT_CACHE_MIB, minimum=0,
            help="memory (MiB, on the encoder's device) for reference embeddings kept between score calls; "
            "least recently used evicted first; 0 keeps none",
        ),
    }

    def __init__(self, settings: dict[str, Any] | None = None):
        super().__init__(settings)
        self._resolved: ResolvedModel | None = None
        self._layers: int | None = None
        self._device_name: str | None = None
        self._bert: Any = None  # the BERTScorer, built on first use
        self._cache = EmbeddingCache(int(self.settings["cache_mib"] * 2**20))
        self._auto_cap: int | None = None  # automatic batch size after an out-of-memory, kept for later batches
        #: the largest batch of the last ``score`` call (for logs and benchmarks)
        self.last_batch_size: int | None = None

    # ------------------------------------------------------------------ identity

    def identity(self) -> dict[str, Any]:
        """Model, layer, weighting, dtype (unless float32) and library versions; not the device or batch size."""
        resolved = self._model()
        ident: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "model": self.settings["model"],
            "num_layers": self._num_layers(),
            "idf": self.settings["idf"],
            "rescale_with_baseline": self.settings["rescale_with_baseline"],
            "bert_score": _dist_version("bert-score"),
            "transformers": _dist_version("transformers"),
        }
        dtype = self._dtype()
        if dtype != "float32":  # absent for float32: scores stored before the option existed keep their keys
            ident["dtype"] = dtype
        if self.settings["rescale_with_baseline"]:
            ident["baseline_lang"] = BASELINE_LANG
        if resolved.package is not None:
            ident["model_package"] = {"name": resolved.package, "version": resolved.package_version}
        if resolved.local and resolved.package_version is None:
            ident["model_files"] = _fingerprint(Path(resolved.source))
        return ident

    def _model(self) -> ResolvedModel:
        if self._resolved is None:
            self._resolved = resolve_model(self.settings["model"])
        return self._resolved

    def _num_layers(self) -> int:
        if self._layers is None:
            self._layers = self.settings["num_layers"]
            if self._layers is None:
                self._layers = self._default_layer()
        return self._layers

    def _default_layer(self) -> int:
        """bert_score's tuned layer for a known hub model."""
        model = self.settings["model"]
        defaults = {} if self._model().local else _require("bert_score.utils", "bert-score").model2layers
        if model not in defaults:
            raise UserError(
                f"bert_score has no default layer for the model '{model}'; set num_layers "
                "(required for local and package: models)",
                key=f"{_KEY}.num_layers",
            )
        return defaults[model]

    def _device(self) -> str:
        """The device setting with 'auto' resolved, as the scorer is loaded (torch imported only for 'auto')."""
        if self._device_name is None:
            device = self.settings["device"]
            if device == "auto":
                torch = _require("torch", "torch")
                device = "cuda" if torch.cuda.is_available() else "cpu"
            self._device_name = device
        return self._device_name

    def _dtype(self) -> str:
        """The dtype setting with 'auto' resolved: float16 on CUDA, float32 elsewhere."""
        dtype = self.settings["dtype"]
        if dtype == "auto":
            dtype = "float16" if self._device().startswith("cuda") else "float32"
        return dtype

    # ------------------------------------------------------------------ scoring

    def score(self, inputs: Sequence[ScoreInput], progress: Progress) -> list[ExampleScore]:
        advance = progress.task("BERTScore", total=len(inputs))
        values = [0.0] * len(inputs)
        positions: dict[tuple[str, str], list[int]] = {}  # distinct non-blank pair -> input indexes
        references: set[str] = set()
        for i, inp in enumerate(inputs):
            # bert_score strips both sides itself; blank ones would crash it and score 0 by contract
            prediction, reference = inp.prediction.strip(), inp.reference.strip()
            if reference:
                references.add(reference)
            if prediction and reference:
                positions.setdefault((prediction, reference), []).append(i)
        blank = len(inputs) - sum(len(v) for v in positions.values())
        if blank:
            advance(blank)
        if not positions:
            return [ExampleScore(value=v) for v in values]

        scorer = self._scorer()
        idf_dict = self._idf_dict(scorer, references)
        self.last_batch_size = None
        embedded = self._embed(sorted({r for _, r in positions}), keep=True)
        embedded.update(self._embed(sorted({p for p, _ in positions} - embedded.keys()), keep=False))
        longest = max(len(e.ids) for e in embedded.values())

        def match(batch: list[tuple[str, str]]) -> None:
            f1 = self._match(batch, embedded, idf_dict)
            done = 0
            for pair, value in zip(batch, f1):
                for i in positions[pair]:
                    values[i] = value
                done += len(positions[pair])
            advance(done)

        # similar lengths together, longest first: little padding, and an out-of-memory shows early
        pairs = sorted(positions, key=lambda p: (-len(embedded[p[1]].ids), -len(embedded[p[0]].ids), p))
        self._batched(pairs, match, longest=longest)
        return [ExampleScore(value=v) for v in values]

    def _idf_dict(self, scorer: Any, references: set[str]) -> Any:
        """Token id -> weight, as ``BERTScorer.score`` picks it."""
        tokenizer = scorer._tokenizer
        if self.settings["idf"]:
            with warnings.catch_warnings():  # bert_score warns when it replaces earlier weights
                warnings.simplefilter("ignore")
                scorer.compute_idf(sorted(references))
            return scorer._idf_dict
        idf_dict: defaultdict[int, float] = defaultdict(lambda: 1.0)
        idf_dict[tokenizer.sep_token_id] = 0
        idf_dict[tokenizer.cls_token_id] = 0
        return idf_dict

    def _embed(self, sentences: Sequence[str], *, keep: bool) -> dict[str, Embedded]:
        """Each sentence's ids and embeddings: cached ones reused, the rest computed (and cached if ``keep``)."""
        from bert_score.utils import sent_encode

        out: dict[str, Embedded] = {}
        missing = []
        for sentence in sentences:
            hit = self._cache.get(sentence)
            if hit is None:
                missing.append(sentence)
            else:
                out[sentence] = hit
        if not missing:
            return out
        tokenizer = self._bert._tokenizer
        ids = {s: tuple(sent_encode(tokenizer, s)) for s in missing}

        def encode(batch: list[str]) -> None:
            for sentence, embedding in zip(batch, self._forward([ids[s] for s in batch])):
                out[sentence] = Embedded(ids[sentence], embedding)
                if keep:
                    self._cache.put(sentence, out[sentence])

        # longest first: little padding, and an out-of-memory shows on the first batch
        order = sorted(missing, key=lambda s: (-len(ids[s]), s))
        self._batched(order, encode, longest=len(ids[order[0]]))
        return out

    def _forward(self, token_ids: list[tuple[int, ...]]) -> list[Any]:
        """One encoder batch, as bert_score pads and encodes it: each sentence's embeddings, padding cut off."""
        import torch
        from bert_score.utils import bert_encode, padding

        scorer = self._bert
        padded, lens, mask = padding(token_ids, scorer._tokenizer.pad_token_id, dtype=torch.long)
        embedding = bert_encode(scorer._model, padded.to(scorer.device), attention_mask=mask.to(scorer.device))
        # copies: a slice would keep the whole padded batch alive in the cache
        return [embedding[i, :n].clone() for i, n in enumerate(lens.tolist())]

    def _match(self, pairs: list[tuple[str, str]], embedded: dict[str, Embedded], idf_dict: Any) -> list[float]:
        """bert_score's greedy matching of (prediction, reference) pairs: F1 per pair, rescaled if set."""
        import torch
        from bert_score.utils import greedy_cos_idf

        hyp = _padded([embedded[p] for p, _ in pairs], idf_dict)
        ref = _padded([embedded[r] for _, r in pairs], idf_dict)
        with torch.no_grad():
            _, _, f1 = greedy_cos_idf(*ref, *hyp)  # sets a NaN F1 to 0, as bert_score does
        f1 = f1.cpu()
        if self.settings["rescale_with_baseline"]:
            baseline = self._bert.baseline_vals[2]  # P, R, F
            f1 = (f1 - baseline) / (1 - baseline)
        return [float(v) for v in f1.tolist()]

    def _batched(self, items: Sequence[Any], run: Callable[[list[Any]], None], *, longest: int) -> None:
        """``run`` on consecutive batches of ``items``; an automatic batch size halves on out-of-memory and retries."""
        torch = _require("torch", "torch")
        out_of_memory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
        explicit = self.settings["batch_size"]
        size = explicit or self._auto_batch_size(longest)
        start = 0
        while start < len(items):
            batch = list(items[start : start + size])
            try:
                run(batch)
            except out_of_memory as exc:
                if explicit:
                    raise
                if len(batch) == 1:
                    raise UserError(
                        f"BERTScore ran out of memory on '{self._bert.device}' with one sentence per batch "
                        f"(the longest has {longest} tokens); free memory on that device, "
                        "use a smaller model or dtype, or set device = 'cpu'",
                        key=f"{_KEY}.device",
                    ) from exc
                failed = True
            else:
                failed = False
            if failed:  # outside the except block: the exception no longer holds the batch's tensors
                size = self._auto_cap = len(batch) // 2
                self._release_memory()
                continue
            self.last_batch_size = max(self.last_batch_size or 0, len(batch))
            start += len(batch)

    def _auto_batch_size(self, longest: int) -> int:
        size = self._gpu_batch_size(longest) if self._on_cuda() else CPU_BATCH_SIZE
        if self._auto_cap is not None:
            size = min(size, self._auto_cap)
        return max(1, size)

    def _gpu_batch_size(self, longest: int) -> int:
        """A batch that should fit in about half the free GPU memory, for sentences of ``longest`` tokens."""
        import torch

        model = self._bert._model
        config = getattr(model, "config", None)
        hidden = getattr(config, "hidden_size", None) or 1024
        heads = getattr(config, "num_attention_heads", None) or 16
        inner = getattr(config, "intermediate_size", None) or 4 * hidden
        element = next(model.parameters()).element_size()
        tokens = max(1, longest)
        # per sentence, one layer's working set without gradients — input, output, q/k/v and the attention
        # output, the feed-forward activations, attention scores and probabilities (eager attention keeps
        # heads × tokens²) — plus the float32 similarity and mask matrices of one pair in the matching
        encoder = element * tokens * (8 * hidden + 2 * inner + 2 * heads * tokens)
        matching = 4 * 6 * tokens * tokens
        device = torch.device(self._bert.device)
        free, _ = torch.cuda.mem_get_info(device)
        # memory torch's allocator holds but no tensor uses (earlier batches) is free for this one too
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return max(1, min(MAX_AUTO_BATCH_SIZE, int(free * _GPU_MEMORY_SHARE) // (encoder + matching)))

    def _on_cuda(self) -> bool:
        return self._bert is not None and str(self._bert.device).startswith("cuda")

    def _release_memory(self) -> None:
        gc.collect()
        if self._on_cuda():
            import torch

            torch.cuda.empty_cache()

    def close(self) -> None:
        self._cache.clear()
        self._auto_cap = None
        if self._bert is None:
            return
        on_cuda = self._on_cuda()
        self._bert = None
        gc.collect()
        if on_cuda:
            import torch

            torch.cuda.empty_cache()

    def _scorer(self) -> Any:
        if self._bert is None:
            self._bert = self._load()
        return self._bert

    def _load(self) -> Any:
        resolved = self._model()
        num_layers = self._num_layers()
        torch = _require("torch", "torch")
        bert_score = _require("bert_score", "bert-score")
        rescale = self.settings["rescale_with_baseline"]
        with _hub_offline() if resolved.local else contextlib.nullcontext():
            try:
                scorer = bert_score.BERTScorer(
                    model_type=resolved.source,
                    num_layers=num_layers,
                    nthreads=0,  # idf counting in-process: no fork of a process holding a model
                    idf=self.settings["idf"],
                    device=self._device(),
                    lang=BASELINE_LANG if rescale else None,
                    rescale_with_baseline=rescale,
                )
            except AssertionError as exc:  # bert_score checks the layer number with assert
                raise UserError(str(exc), key=f"{_KEY}.num_layers") from exc
            except OSError as exc:
                raise UserError(f"cannot load the model '{self.settings['model']}': {exc}", key=f"{_KEY}.model") from exc
            _fix_tokenizer(scorer, resolved.source)
        if rescale and not os.path.isfile(scorer.baseline_path):
            raise UserError(
                f"bert_score has no '{BASELINE_LANG}' baseline for the model '{self.settings['model']}'",
                key=f"{_KEY}.rescale_with_baseline",
            )
        dtype = self._dtype()
        if dtype != "float32":
            scorer._model.to(dtype=getattr(torch, dtype))
        return scorer


def _padded(items: list[Embedded], idf_dict: Any) -> tuple[Any, Any, Any]:
    """bert_score's ``pad_batch_stats``: embeddings (float32), mask, idf weights; fresh tensors, as
    ``greedy_cos_idf`` divides them in place. The weights are looked up per token id, as ``collate_idf`` does."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    device = items[0].embedding.device
    embedding = pad_sequence([e.embedding for e in items], batch_first=True, padding_value=2.0).float()
    weights = [torch.tensor([idf_dict[i] for i in e.ids], dtype=torch.float) for e in items]
    idf = pad_sequence(weights, batch_first=True).to(device)
    lens = torch.tensor([len(e.ids) for e in items], dtype=torch.long)
    mask = torch.arange(int(lens.max()), dtype=torch.long).expand(len(items), -1) < lens.unsqueeze(1)
    return embedding, mask.to(device), idf


def _fix_tokenizer(scorer: Any, source: str) -> None:
    """Make the scorer's tokenizer encode as bert_score 0.3.13 intends, under transformers 5."""
    from transformers import AutoTokenizer, GPT2Tokenizer, RobertaTokenizer

    tokenizer = scorer._tokenizer  # bert_score keeps it here and offers no setter
    # bert_score asks these classes for a leading space (" word", as inside a sentence) on every
    # encode() call; transformers 5 only honours add_prefix_space when the tokenizer is built.
    if isinstance(tokenizer, (GPT2Tokenizer, RobertaTokenizer)) and not _adds_prefix_space(tokenizer):
        tokenizer = AutoTokenizer.from_pretrained(source, use_fast=scorer.use_fast_tokenizer, add_prefix_space=True)
        if not _adds_prefix_space(tokenizer):
            raise RuntimeError(f"cannot build a tokenizer for '{source}' that adds a prefix space; BERTScore would be wrong")
    if not tokenizer.model_max_length or tokenizer.model_max_length > _UNSET_MAX_LENGTH:
        tokenizer.model_max_length = MAX_LENGTH
    scorer._tokenizer = tokenizer


def _adds_prefix_space(tokenizer: Any) -> bool:
    return tokenizer.encode("a", add_special_tokens=False) == tokenizer.encode(" a", add_special_tokens=False)


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """No hub requests while a local model loads; the previous state is restored afterwards.

    huggingface_hub reads HF_HUB_OFFLINE once, when it is imported, so its cached flag is
    set as well as the environment variables.
    """
    import huggingface_hub.constants as hub_constants

    saved_env = {name: os.environ.get(name) for name in _OFFLINE_VARS}
    saved_flag = hub_constants.HF_HUB_OFFLINE
    os.environ.update({name: "1" for name in _OFFLINE_VARS})
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = saved_flag
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _fingerprint(directory: Path) -> str:
    """A cheap content identity of a model folder: names and sizes of its files, bytes of the small ones."""
    entries = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        size = path.stat().st_size
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if size <= _HASHED_FILE_SIZE else None
        entries.append([relative.as_posix(), size, digest])
    return stable_hash(entries)


def _require(module: str, package: str) -> Any:
    """Import ``module``; a missing one (or a missing dependency of it) becomes MissingDependency."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = (exc.name or module).split(".")[0]
        name = package if missing == module.split(".")[0] else missing
        raise MissingDependency(name, "default", purpose="the BERTScore metric") from exc


def _dist_version(package: str) -> str:
    try:
        return md.version(package)
    except md.PackageNotFoundError as exc:
        raise MissingDependency(package, "default", purpose="the BERTScore metric") from exc


@hookimpl
def harness_register_metrics(register):
    register(BertScoreMetric)
