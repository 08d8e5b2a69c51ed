"""BERTScore F1 (bert_score), averaged over examples.

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
import warnings
from collections.abc import Iterator, Sequence
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


class BertScoreMetric(Metric):
    """BERTScore F1 of each prediction against its reference; the cell value is the mean.

    One ``BERTScorer`` is built on the first ``score`` call and reused until ``close``.
    Each distinct (prediction, reference) pair is scored once per call. With ``idf``, the
    weights come from the distinct references of each ``score`` call, so pass a whole
    evaluation set at once. With ``rescale_with_baseline``, bert_score's English baseline
    for the model is used (it exists for hub models such as roberta-large only).
    Numbers depend on the model and layer: compare only scores whose identity matches.
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
        "batch_size": Option(int, default=32, minimum=1, help="sentence pairs per batch"),
        "device": Option(str, default="auto", help="'auto' (cuda when available, else cpu), 'cpu', 'cuda', 'cuda:1' …"),
        "idf": Option(bool, default=False, help="weight tokens by inverse document frequency over the references"),
        "rescale_with_baseline": Option(bool, default=False, help="rescale with bert_score's English baseline"),
    }

    def __init__(self, settings: dict[str, Any] | None = None):
        super().__init__({**{k: o.default for k, o in self.options.items()}, **(settings or {})})
        self._resolved: ResolvedModel | None = None
        self._layers: int | None = None
        self._bert: Any = None  # the BERTScorer, built on first use

    # ------------------------------------------------------------------ identity

    def identity(self) -> dict[str, Any]:
        """Model, layer, weighting and library versions; not the device or batch size."""
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
        if self.settings["idf"]:
            with warnings.catch_warnings():  # bert_score warns when it replaces earlier weights
                warnings.simplefilter("ignore")
                scorer.compute_idf(sorted(references))
        # similar lengths together: less padding in each batch
        pairs = sorted(positions, key=lambda p: (len(p[0]) + len(p[1]), p))
        batch_size = self.settings["batch_size"]
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]
            _, _, f1 = scorer.score([p for p, _ in batch], [r for _, r in batch], batch_size=batch_size)
            done = 0
            for pair, value in zip(batch, f1.tolist()):
                for i in positions[pair]:
                    values[i] = float(value)
                done += len(positions[pair])
            advance(done)
        return [ExampleScore(value=v) for v in values]

    def close(self) -> None:
        if self._bert is None:
            return
        on_cuda = str(self._bert.device).startswith("cuda")
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
        device = self.settings["device"]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        rescale = self.settings["rescale_with_baseline"]
        with _hub_offline() if resolved.local else contextlib.nullcontext():
            try:
                scorer = bert_score.BERTScorer(
                    model_type=resolved.source,
                    num_layers=num_layers,
                    batch_size=self.settings["batch_size"],
                    nthreads=0,  # idf counting in-process: no fork of a process holding a model
                    idf=self.settings["idf"],
                    device=device,
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
        return scorer


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
