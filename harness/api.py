"""The public API for plugin authors.

A plugin is a class derived from one of the bases below (`ModelAdapter`, `Decoder`,
`Metric`, `Engine`, `DatasetSource`, `Reporter`) and handed to the matching
`register` callback of a hook in :mod:`harness.hookspecs`. Plugins import from
``harness.api`` (and ``harness.errors``) only; everything else in ``harness`` is
internal and may change.

Every plugin class declares:

* ``name``: how ``registry.toml`` refers to it;
* ``version``: bump it whenever the plugin's outputs change for the same inputs. The
  version is part of every cache key, so a bump recomputes exactly what it affects;
* ``options``: the settings it accepts in ``registry.toml``, as :class:`Option` values.
  The core validates them (type, range, choices, unknown keys) before anything runs,
  so a plugin receives a plain dict with defaults filled in.

Heavy libraries (torch, transformers, bert_score, vllm, unsloth) must be imported inside
methods, never at module import, so ``harness plugins`` and ``harness check`` stay fast
and a missing optional package only matters to the plugin that needs it. Raise
:class:`harness.errors.MissingDependency` with the extra to install when one is missing.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

__all__ = [
    "REQUIRED",
    "Option",
    "Plugin",
    "Progress",
    "NullProgress",
    "Example",
    "TrainPair",
    "ModelSpec",
    "FinetuneSpec",
    "ModelAdapter",
    "LoadedModel",
    "Decoding",
    "Decoder",
    "GenRequest",
    "GenResult",
    "TokenLogprob",
    "Engine",
    "EngineSession",
    "ScoreInput",
    "ExampleScore",
    "Metric",
    "DatasetSource",
    "Reporter",
    "ReportRow",
    "RatingScale",
    "RatingItem",
    "Rating",
    "RatingFormat",
    "PAIR_LEFT",
    "PAIR_TIE",
    "PAIR_RIGHT",
    "Job",
    "JobSink",
    "Executor",
    "stable_hash",
    "non_default",
    "file_lock",
    "temporary_beside",
    "write_atomically",
    "create_plugin",
    "MISSING_SCORE",
]


class _Required:
    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Option:
    """One setting a plugin accepts in ``registry.toml``.

    ``type`` is a Python type or tuple of types (``float`` also accepts integers;
    ``pathlib.Path`` means a path string, relative to the registry's folder, that must exist —
    the plugin receives it as written).
    ``items`` is the element type of a ``list`` option. ``minimum``/``maximum`` bound
    numbers (inclusive); ``choices`` restricts to a fixed set.
    """

    type: type | tuple[type, ...]
    default: Any = REQUIRED
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    items: type | None = None
    nullable: bool = False


class Plugin:
    """Base of every plugin kind."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}
    #: the plugin used when the registry or command line names none of this kind (one per kind)
    is_default: ClassVar[bool] = False

    def __init__(self, settings: dict[str, Any] | None = None):
        #: validated settings from registry.toml; the core fills in every option's default
        self.settings: dict[str, Any] = {k: copy.deepcopy(o.default) for k, o in self.options.items() if o.default is not REQUIRED}
        self.settings.update(settings or {})


class Progress(Protocol):
    """Progress reporting handed to long-running plugin methods.

    ``task(description, total)`` starts one task — one cell's work, named by
    ``description`` ("generating", "fine-tuning", a metric's label) — and returns a
    callable ``advance(n=1, **fields)``. Fields such as ``loss`` or ``tok_s`` are shown
    beside the bar, rounded for display (floats to 4 significant digits; a name ending
    in ``_s`` is a rate per second, shown as ``/s``, whole from 10 on), so pass raw
    numbers. A task is finished when it reaches ``total`` or the next task of the same
    description starts; where the output is not a terminal, each finished task prints
    one plain line.
    """

    def task(self, description: str, total: int | None) -> Callable[..., None]: ...


class NullProgress:
    """A Progress that shows nothing (tests, library use)."""

    def task(self, description: str, total: int | None) -> Callable[..., None]:
        return lambda n=1, **fields: None


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Example:
    """One Alpaca-format record.

    ``id`` comes from what identifies the example — its instruction and input — never from
    its reference (``output``): correcting a reference changes that example's scores and
    nothing else (its place in the split, its generations and the trained adapters of
    models that never saw it stay). ``variant`` tells apart records with the same
    instruction and input but different outputs (0 for the first, 1 for the next, …).
    """

    id: str
    instruction: str
    input: str
    output: str

    @staticmethod
    def make(instruction: str, input: str, output: str, *, variant: int = 0) -> Example:
        ident: dict[str, Any] = {"instruction": instruction, "input": input}
        if variant:
            ident["variant"] = variant
        return Example(id=stable_hash(ident)[:16], instruction=instruction, input=input, output=output)

    @property
    def reference_sha(self) -> str:
        """sha256 of the reference: part of every score's key, so a corrected reference is re-scored."""
        return hashlib.sha256(self.output.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class TrainPair:
    """A rendered training example: the model learns ``response`` given ``prompt``."""

    prompt: str
    response: str


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class FinetuneSpec:
    """How to fine-tune with LoRA. Shared by every adapter; adapter-specific settings go in ``options``."""

    r: int = 16
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ()
    max_steps: int = 0
    epochs: float = 1.0
    learning_rate: float = 2e-4
    batch_size: int = 8
    grad_accum: int = 1
    max_seq_length: int = 512
    warmup_steps: int = 0
    weight_decay: float = 0.0
    #: true: always; false: only where memory needs it (with ``auto_batch``, when not even one
    #: example a forward pass fits without it)
    gradient_checkpointing: bool = False
    seed: int = 0
    #: how examples become batches: "padding_free" (the batches of "none", each flattened into one
    #: sequence without padding whose position ids restart at every example: the same examples and
    #: the same loss, no padding), "none" (padded batches in random order), "pack" (several
    #: examples per row of up to max_seq_length tokens, no padding; batch_size then counts rows),
    #: "group_by_length" (padded batches of examples of similar length). The default used to be
    #: "none": keys hash the field against that former default (see :func:`non_default`)
    packing: str = field(default="padding_free", metadata={"key_default": "none"})
    #: true: the batch_size x grad_accum examples of an optimizer step go through the model in as
    #: few forward passes as fit in memory (a GPU's free memory, measured; a CPU's token budget);
    #: the step, its examples and its loss stay the same. false: grad_accum passes of batch_size
    #: examples, as set ("group_by_length" always keeps them: its grouping depends on batch_size).
    #: Keys hash it against false, the behaviour before it existed
    auto_batch: bool = field(default=True, metadata={"key_default": False})


@dataclass(frozen=True)
class ModelSpec:
    """One ``[[models]]`` entry of the registry, validated."""

    name: str
    adapter: str
    base_model: str
    finetune: FinetuneSpec | None
    template: str = "alpaca"  # "alpaca" or "chat"
    options: dict[str, Any] = field(default_factory=dict)
    base_dir: Path = Path(".")  # the registry's folder: relative paths resolve against it


@dataclass
class LoadedModel:
    """What ``ModelAdapter.load`` returns: a ready causal LM and its tokenizer.

    ``generate`` is an optional override used by engines instead of
    ``model.generate`` (unsloth routes generation through its inference mode).
    """

    model: Any
    tokenizer: Any
    info: dict[str, Any] = field(default_factory=dict)
    generate: Any = None  # optional: called instead of model.generate with the same arguments


class ModelAdapter(Plugin):
    """Loads and fine-tunes one family of causal LMs.

    The core calls, in order: ``identity`` (cheap; part of every cache key),
    ``tokenizer`` (to render prompts), ``train`` (only when ``spec.finetune`` is set and
    no adapter with the same training input exists), and ``load`` (once per run per
    model, by the generation engine).
    """

    kind = "model"

    def identity(self, spec: ModelSpec) -> dict[str, Any]:
        """A JSON-able description of the base model that changes when its weights change.

        For a hub name: the name and revision. For a local file or folder: a content
        fingerprint. Must be cheap enough to call on every run.
        """
        raise NotImplementedError

    def tokenizer(self, spec: ModelSpec) -> Any:
        """The base model's tokenizer (with its chat template, if any)."""
        raise NotImplementedError

    def train(self, spec: ModelSpec, pairs: Sequence[TrainPair], out_dir: Path, progress: Progress) -> dict[str, Any]:
        """Fine-tune on ``pairs`` (loss on the response only) and save the LoRA adapter.

        Writes ``adapter_model.safetensors`` and ``adapter_config.json`` into ``out_dir``
        (which exists and is empty). Returns a JSON-able summary (steps, final loss,
        tokens per second) that is stored with the adapter.
        """
        raise NotImplementedError

    def load(self, spec: ModelSpec, adapter_dir: Path | None) -> LoadedModel:
        """Load the base model, with the LoRA adapter from ``adapter_dir`` applied if given, for inference."""
        raise NotImplementedError

    def base_path(self, spec: ModelSpec) -> str:
        """A path or hub name that engines which load weights themselves (vLLM) can use."""
        return spec.base_model


# --------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class Decoding:
    """The effective decoding parameters of one config, as an engine must apply them.

    ``strategy`` is one of ``greedy``, ``sample``, ``beam``, ``beam_sample``. Parameters
    that have no effect under the strategy are listed in ``unused`` (and keep the
    neutral value), so a report can show what the user asked for and what ran.
    """

    strategy: str
    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    #: keep tokens whose probability is at least ``min_p`` times the most likely token's (0 = off; transformers' MinPLogitsWarper)
    min_p: float = 0.0
    num_beams: int = 1
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    early_stopping: bool = False
    unused: tuple[str, ...] = ()
    requested: tuple[tuple[str, Any], ...] = ()

    @property
    def do_sample(self) -> bool:
        return self.strategy in ("sample", "beam_sample")

    def effective(self) -> dict[str, Any]:
        """Everything that determines the output (``requested`` excluded), recorded with every generation."""
        d = asdict(self)
        d.pop("requested")
        d["unused"] = list(self.unused)
        d["do_sample"] = self.do_sample
        return d

    def to_dict(self) -> dict[str, Any]:
        d = self.effective()
        d["requested"] = dict(self.requested)
        return d


class Decoder(Plugin):
    """Turns a sweep config (the parameters the user wrote) into an effective :class:`Decoding`.

    ``params`` declares the sweep parameters the decoder understands, with defaults and
    ranges; the registry validates every swept value against them before ``resolve``
    is called. ``config_name`` names a config from its requested parameters.
    """

    kind = "decoder"
    params: ClassVar[dict[str, Option]] = {}

    def resolve(self, params: dict[str, Any], max_new_tokens: int) -> Decoding:
        raise NotImplementedError

    def config_name(self, params: dict[str, Any]) -> str:
        return "_".join(f"{k}_{_fmt(v)}" for k, v in params.items())


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class GenRequest:
    """One prompt to complete. ``seed`` makes sampling reproducible per example.

    ``prompt`` is the rendered text (the model's template applied). ``messages`` holds the same
    prompt as a conversation, ``(role, content)`` pairs, when the template is a chat: engines
    that apply the chat template themselves (a served model behind an OpenAI-compatible API)
    send these instead of ``prompt``. ``logprobs`` > 0 asks for the log-probabilities of the
    ``logprobs`` most likely tokens at every generated position (see :class:`TokenLogprob`);
    an engine that cannot return them leaves :attr:`GenResult.logprobs` None.
    """

    key: str
    prompt: str
    decoding: Decoding
    seed: int
    messages: tuple[tuple[str, str], ...] = ()
    logprobs: int = 0


@dataclass(frozen=True)
class TokenLogprob:
    """One generated position: the chosen token's text and log-probability, and the most likely alternatives.

    ``top`` lists ``(token text, log-probability)`` for the ``GenRequest.logprobs`` most likely
    tokens at this position, most likely first (the chosen token among them when it is one of
    them). Log-probabilities are natural logarithms of the model's distribution before any
    sampling filter (temperature 1, no top-k/top-p), as OpenAI's API and vLLM report them.
    """

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class GenResult:
    key: str
    text: str
    prompt_tokens: int
    new_tokens: int
    seconds: float
    finish_reason: str  # "eos" | "length"
    #: per generated token, when the request asked for ``logprobs`` and the engine can give them
    logprobs: tuple[TokenLogprob, ...] | None = None


class EngineSession(Protocol):
    """A model loaded by an engine, serving every decoding config of a run."""

    def generate(self, requests: Sequence[GenRequest], progress: Progress) -> Iterator[list[GenResult]]:
        """Complete ``requests``, yielding results batch by batch as they finish.

        The requests of one call may mix decoding configs — the pipeline hands over every
        config of a model's sweep at once — and each is decoded with its own ``decoding``
        (an engine groups them as it needs; a yielded batch may mix configs). The caller
        stores each yielded batch before asking for the next, so an interrupted run loses
        at most one batch. A session may expose ``compile_seconds`` (float: time spent
        compiling so far); the pipeline records it as a stage of its own.
        """
        ...

    def close(self) -> None: ...


class Engine(Plugin):
    """Generates text for a model. ``open`` is called once per model per run."""

    kind = "engine"

    def identity(self) -> dict[str, Any]:
        """What changes the generated text besides model, prompt and decoding (hashed into cache keys)."""
        return {"engine": self.name, "version": self.version}

    def open(self, adapter: ModelAdapter, spec: ModelSpec, adapter_dir: Path | None) -> EngineSession:
        raise NotImplementedError

    def unsupported(self, decoding: Decoding) -> str | None:
        """Why this engine cannot decode ``decoding`` as asked (None: it can).

        ``harness check`` and ``harness run`` refuse such a config before anything runs, naming
        it: an engine never silently changes what it was asked for (e.g. beam search on a server
        without it, ``min_p`` where the backend has none).
        """
        return None

    def check(self, spec: ModelSpec) -> None:
        """Cheap preflight for ``spec`` before a run (reach a server, see that the model is served, that a key works).

        Raise :class:`harness.errors.UserError` with one clear message; called by ``harness check``
        and at the start of ``harness run``. The default checks nothing.
        """


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class ScoreInput:
    """One generation to score against its reference.

    For a metric that compares outputs (see :meth:`Metric.against`), ``other`` is the output it
    is compared with — the same model's generation for the same example under the config the
    metric compares against — and ``other_key`` that generation's key; both are None otherwise.
    ``model`` and ``config`` name the cell the generation belongs to.
    """

    key: str
    prediction: str
    reference: str
    example: Example
    other: str | None = None
    other_key: str | None = None
    model: str = ""
    config: str = ""


#: the value of an :class:`ExampleScore` that could not be scored (an unparseable judge verdict)
MISSING_SCORE = float("nan")


@dataclass(frozen=True)
class ExampleScore:
    """A per-example score.

    ``stats`` holds sufficient statistics for corpus-level metrics (BLEU). ``value`` NaN
    (:data:`MISSING_SCORE`) means the example could not be scored (say why in ``detail``): it is
    recorded and counted as missing, never averaged in as a number. ``detail`` is a small
    JSON-able mapping stored with the score and shown in reports (a judge's verdicts and why).
    """

    value: float
    stats: tuple[float, ...] | None = None
    detail: Mapping[str, Any] | None = None

    @property
    def missing(self) -> bool:
        return self.value != self.value  # NaN


class Metric(Plugin):
    """Scores generations against references.

    ``score`` is called with batches of inputs (possibly from several configs at once)
    and returns one :class:`ExampleScore` per input, in order. An empty prediction
    must score 0, never raise. ``aggregate`` turns the per-example scores of one
    (model, config) cell into the reported number (default: the mean).
    ``identity`` describes everything that changes the numbers (model, layer,
    tokenizer, signature); it is stored with every score and part of the cache key.
    """

    kind = "metric"
    higher_is_better: ClassVar[bool] = True
    label: ClassVar[str] = ""  # column title in reports, defaults to name
    #: the experiment file's folder, set by the core before ``check`` and ``score``: relative paths in the
    #: settings (an ``Option(Path)``, a model given as a local folder) resolve against it. Never part of
    #: ``identity`` (cache keys stay portable when the folder moves).
    base_dir: Path = Path(".")

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "settings": self.settings}

    def score(self, inputs: Sequence[ScoreInput], progress: Progress) -> list[ExampleScore]:
        raise NotImplementedError

    def against(self) -> str | None:
        """What each output is compared with: None (only its reference), ``"baseline"`` (the same model's
        output for the same example under the baseline config: the sweep's defaults when they are a
        config, else the first config) or a config's name. When set, the core fills
        :attr:`ScoreInput.other` and keys each score by the compared generation too."""
        return None

    def check(self) -> None:
        """Cheap preflight before a run (a judge's server reachable, its model there). Raise UserError; default: nothing."""

    def aggregate(self, scores: Sequence[ExampleScore]) -> float:
        """The cell's value: the mean of the scored examples (missing ones left out; NaN when none was scored)."""
        scored = [s.value for s in scores if not s.missing]
        return sum(scored) / len(scored) if scored else float("nan")

    def corpus_values(self, sums: Any) -> Any:
        """For a corpus-level metric: the aggregate of each row of ``sums``, or None.

        ``sums`` is a numpy array (resamples × k) of summed sufficient statistics
        (``ExampleScore.stats``); return one value per row, equal to what ``aggregate``
        gives for examples with those summed statistics. Reports call it thousands of
        times for bootstrap intervals and paired tests, on any machine: vectorise it with
        numpy and use no optional dependency. The default (None) means the aggregate is
        not computed from statistics; a metric that overrides ``aggregate`` some other way
        gets intervals by running ``aggregate`` on every resample.
        """
        return None

    @classmethod
    def aggregation(cls) -> str:
        """How the cell value follows from per-example scores: "mean", "corpus" (``corpus_values``) or "custom"."""
        if cls.aggregate is Metric.aggregate:
            return "mean"
        return "corpus" if cls.corpus_values is not Metric.corpus_values else "custom"

    def close(self) -> None:
        """Release models held between calls."""


# --------------------------------------------------------------------------- datasets


class DatasetSource(Plugin):
    """Provides Alpaca-format records (``instruction``, ``input``, ``output``)."""

    kind = "dataset"

    def fingerprint(self, base_dir: Path) -> dict[str, Any]:
        """Cheap JSON-able identity of the data (path + content hash, hub name + revision)."""
        raise NotImplementedError

    def load(self, base_dir: Path) -> list[dict[str, str]]:
        """All records, in a stable order. Raise UserError naming the row for malformed records."""
        raise NotImplementedError


# --------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class ReportRow:
    """One number of a report: ``metric`` of ``config`` for ``model`` over ``n`` examples."""

    model: str
    config: str
    metric: str
    value: float | None
    n: int
    ci_low: float | None = None
    ci_high: float | None = None
    #: the cell failed (stored with its error)
    error: str | None = None
    #: why a cell without a value has none, when it did not fail ("not scored yet", "generation incomplete: 12 of 20")
    note: str | None = None
    #: examples that could not be scored (e.g. unparseable judge verdicts): not in ``n``, not in ``value``
    missing: int = 0
    #: the config each output was compared with, for a metric that compares outputs (a pairwise judge)
    against: str | None = None


class Reporter(Plugin):
    """Renders report rows in one output format (``harness report --format NAME``).

    A reporter declares what it needs, so the core computes only that: ``correlations``
    (metric-human correlations and findings in the context) and ``figures`` ("none";
    "embedded": ``context["figures"]`` holds each plot's PNG bytes; "files": plots are
    written beside the ``-o`` file and the context holds their relative paths).

    ``views`` says what it renders: ``"report"`` (``harness report``: the rows and the report's
    context) and, if listed, ``"analysis"`` (``harness analyze``: no rows, and a context whose
    ``view`` is ``"analysis"``, holding ``title``, ``correlations``, ``findings``,
    ``correlation_notes``, ``method`` and ``source``).
    """

    kind = "reporter"
    correlations: ClassVar[bool] = True
    figures: ClassVar[str] = "none"
    views: ClassVar[tuple[str, ...]] = ("report",)

    def render(self, rows: Sequence[ReportRow], context: dict[str, Any]) -> str:
        raise NotImplementedError


# --------------------------------------------------------------------------- human ratings

#: pairwise ratings are the share of the win that goes to the output shown on the left
PAIR_LEFT = 1.0
PAIR_TIE = 0.5
PAIR_RIGHT = 0.0


@dataclass(frozen=True)
class RatingScale:
    """How annotators rate: ``binary`` (0 unacceptable / 1 acceptable), ``likert`` (1 worst … 5 best)
    or ``pairwise`` (which of two outputs for the same example is better: :data:`PAIR_LEFT`,
    :data:`PAIR_TIE`, :data:`PAIR_RIGHT`, as the sides were shown)."""

    name: str

    SCALES: ClassVar[dict[str, tuple[float, ...]]] = {
        "binary": (0.0, 1.0),
        "likert": (1.0, 2.0, 3.0, 4.0, 5.0),
        "pairwise": (PAIR_RIGHT, PAIR_TIE, PAIR_LEFT),
    }

    def __post_init__(self) -> None:
        if self.name not in self.SCALES:
            raise ValueError(f"unknown rating scale {self.name!r}; allowed: {', '.join(self.SCALES)}")

    @property
    def values(self) -> tuple[float, ...]:
        """The values a rating may take on this scale."""
        return self.SCALES[self.name]

    @property
    def pairwise(self) -> bool:
        return self.name == "pairwise"

    def allows(self, value: float) -> bool:
        return value in self.values


@dataclass(frozen=True)
class RatingItem:
    """One blinded item, as annotators see it.

    ``item_id`` is opaque: which model and config produced the output(s) stays in the
    store. ``outputs`` holds one output (absolute rating) or two (pairwise: left, right,
    in the order they are shown).
    """

    item_id: str
    instruction: str
    input: str
    reference: str
    outputs: tuple[str, ...]
    #: the scale the item was exported for ("binary", "likert", "pairwise"; "" when unknown)
    scale: str = ""

    @property
    def pairwise(self) -> bool:
        return len(self.outputs) == 2


@dataclass(frozen=True)
class Rating:
    """One rating given by one annotator to one item.

    ``value`` is on the item's scale (see :class:`RatingScale`); ``where`` says where it
    was read ("row 12", "task 7, annotation 31") so messages can point at it.
    """

    item_id: str
    annotator: str
    value: float
    comment: str = ""
    where: str = ""


class RatingFormat(Plugin):
    """Moves blinded items to annotators and their ratings back (``harness human export/import --format NAME``).

    ``export`` writes what annotators (or their tool) need; ``read`` reads their ratings
    back. Neither touches the store: the core hands over the items, checks that nothing
    would be overwritten (``targets``), and stores what ``read`` returns.
    """

    kind = "rating_format"
    #: what ``-o`` names for this format: "file" or "folder"
    destination: ClassVar[str] = "file"

    def targets(self, destination: Path) -> list[Path]:
        """The files ``export`` would write for ``destination``: the core refuses to overwrite them without ``--force``."""
        return [Path(destination)]

    def export(self, items: Sequence[RatingItem], scale: RatingScale, destination: Path) -> list[Path]:
        """Write ``items`` for rating on ``scale`` and return the files written (all of them, or none on error)."""
        raise NotImplementedError

    def read(self, path: Path, items: Mapping[str, RatingItem], scale: RatingScale | None) -> tuple[list[Rating], RatingScale]:
        """Every rating in ``path`` and the scale they are on (``scale`` None: the format infers it).

        ``items`` are the items the store knows, by id. Either every rating comes back, or one
        :class:`harness.errors.UserError` names the file and lists every bad row, task or item
        (unknown ids, values off the scale, an annotator rating one item twice, a file from
        another export).
        """
        raise NotImplementedError


# --------------------------------------------------------------------------- executors


class Job(Protocol):
    """One unit of a run's work: fine-tune a model, generate for a model's configs, or score cells with a metric.

    Jobs are made by the core and are picklable. An executor runs ``execute`` where it
    wants (this process, another process, another machine), passing the outputs of the
    jobs named in ``needs``, and hands every output the job yields back to the driver in
    order. The executor never looks inside a job beyond these fields.
    """

    #: unique within a run, e.g. "train/llama-2-7b", "generate/llama-2-7b/0"
    id: str
    #: "train", "generate" or "score": executors map kinds to resources (GPUs, CPUs)
    kind: str
    #: ids of jobs whose outputs this job receives; it runs after they finished
    needs: tuple[str, ...]
    #: shown in progress displays
    label: str

    def execute(self, needs: Mapping[str, Sequence[Any]], progress: Progress) -> Iterator[Any]:
        """Do the work, yielding outputs (e.g. batches of generations) as they are ready.

        ``needs`` maps each needed job's id to everything it yielded. Failures of single
        cells are yielded as outputs; an exception means the whole job failed.
        ``KeyboardInterrupt`` and :class:`harness.errors.UserError` must stop the run.
        """
        ...


class JobSink(Protocol):
    """The driver's side of a run: stores what jobs produce, as it arrives. Only the driver writes the store."""

    def started(self, job: Job, where: str) -> None:
        """``job`` began running; ``where`` names the place (``"local"``, a node and GPU) for progress displays."""
        ...

    def accept(self, job: Job, output: Any) -> None:
        """One output of ``job``, in the order the job yielded them (committed before this returns)."""
        ...

    def done(self, job: Job) -> Sequence[Job]:
        """``job`` finished; returns follow-up jobs to run (e.g. scoring what it generated)."""
        ...

    def failed(self, job: Job, error: str, traceback: str) -> Sequence[Job]:
        """``job`` raised (or a job it needs failed); its cells are marked failed. Returns follow-up jobs."""
        ...


class Executor(Plugin):
    """Runs a run's jobs (``[executor] name = NAME``): in this process, or spread over machines.

    ``run`` executes every job in ``jobs`` and every follow-up job the sink returns, each
    after the jobs in its ``needs`` have finished; calls ``sink.started`` when a job begins
    running; passes each output to ``sink.accept`` in
    the driver as soon as it arrives; calls ``sink.done`` when a job finishes and
    ``sink.failed`` when it raises (then jobs that need it are not run: ``sink.failed`` is
    called for them too, naming the failed need). ``KeyboardInterrupt`` and
    :class:`harness.errors.UserError` raised by a job stop the run and propagate.
    A job that fails because its worker died may be retried; its outputs are only ever
    accepted from one attempt.
    """

    kind = "executor"

    def capacity(self, kind: str) -> int:
        """How many jobs of ``kind`` can run at once (the runner splits a model's configs over that many generation jobs)."""
        return 1

    def adapter_storage(self, output_dir: Path) -> Path | None:
        """Where training jobs write adapters so that generation jobs can read them: a folder every worker
        sees (the driver's output folder for a local executor), or None to send the files back to the driver."""
        return output_dir

    def run(self, jobs: Sequence[Job], sink: JobSink, progress: Progress) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the executor started (a local cluster, worker pools)."""


def file_lock(path: str | Path, *, timeout: float | None = None) -> Any:
    """A context manager holding an exclusive lock on ``path`` across processes (see :func:`harness.locks.file_lock`).

    Plugins take it around writes to caches that concurrent runs share: take the lock,
    check whether another process already did the work, do it only if not.
    """
    from .locks import file_lock as _file_lock

    return _file_lock(Path(path), timeout=timeout)


def temporary_beside(path: str | Path, write: Callable[[Any], object], *, newline: str | None = None) -> Path:
    """A new hidden file beside ``path`` holding what ``write(handle)`` wrote (text, UTF-8), flushed to disk.

    For an export of several files: write each with this, then ``os.replace`` each into
    place, so no half-written file is ever seen (see :mod:`harness.files`). On failure the
    temporary file is removed and the error (an ``OSError`` for a full disk) raised.
    """
    from .files import temporary_beside as _temporary_beside

    return _temporary_beside(Path(path), write, newline=newline)


def write_atomically(path: str | Path, write: Callable[[Any], object], *, newline: str | None = None) -> None:
    """Write ``path`` with ``write(handle)`` so that it is either whole or untouched (see :func:`temporary_beside`)."""
    from .files import write_atomically as _write_atomically

    _write_atomically(Path(path), write, newline=newline)


def create_plugin(kind: str, name: str, settings: dict[str, Any] | None = None) -> Any:
    """An instance of the installed plugin ``name`` of ``kind`` ("model", "engine", "metric", …) with ``settings``.

    For plugins built on others (a judge metric opens a model through an engine plugin). The
    plugins are those of the running process (the run's own, or the installed entry points in
    a worker). Unknown names raise :class:`harness.errors.UserError`; ``settings`` are taken as
    given (defaults filled in), so validate what comes from the user.
    """
    if _plugin_source is None:  # no plugin instance exists before harness.plugins is imported
        raise RuntimeError("create_plugin is for plugins the harness created: import harness.plugins first")
    return _plugin_source().create(kind, name, settings)


#: the running process's plugins, for :func:`create_plugin`: ``harness.plugins`` sets it when imported, so the
#: contract never imports the plugin manager (which imports the contract)
_plugin_source: Callable[[], Any] | None = None


def _set_plugin_source(source: Callable[[], Any]) -> None:
    global _plugin_source
    _plugin_source = source


def non_default(obj: Any) -> dict[str, Any]:
    """A dataclass's fields that differ from their defaults: what cache keys hash.

    A field added later with a neutral default then leaves every existing key unchanged,
    so cached adapters and generations survive the upgrade. A field whose default changed
    keeps its former default as ``key_default`` in its metadata and is compared with that:
    a result made under the old default is found again when the old value is asked for
    explicitly, and never under the new default, which gets keys of its own.
    """
    from dataclasses import MISSING, fields

    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if "key_default" in f.metadata:
            default = f.metadata["key_default"]
        else:
            default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING else MISSING)
        if default is MISSING or value != default:
            out[f.name] = value
    return out


def stable_hash(obj: Any) -> str:
    """sha256 of a JSON-able object with sorted keys: the basis of every cache key."""
    data = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    raise TypeError(f"not JSON-able: {type(obj).__name__}")
