"""The jobs a run is made of, and what they yield back to the driver.

* :class:`TrainJob` fine-tunes one model and yields one :class:`TrainOutput`.
* :class:`GenerateJob` generates every missing (config, example) of one model with one
  engine session (one model load). It first yields a :class:`CellKeys` per config (the
  generation key of every test example: the record of what the cell stands for), then
  :class:`GenBatch` outputs (one per config and engine batch) as the engine finishes batches,
  and a :class:`CellDone` or :class:`CellFailed` per config. Every config's requests go to the
  engine in *one* ``generate`` call (each request carries its own decoding), so an engine can
  decode configs together (the transformers engine shares each prompt's prefill and decodes
  greedy and sampled configs in one batch); if that call fails, each config not yet finished
  is retried in a call of its own, so a config that fails fails alone, as before. An engine
  that reports compile time (``compile_seconds``) gets it recorded as a stage of its own
  (:class:`StageSeconds`). When it needs a :class:`TrainJob`, it computes its keys from the
  adapter that job produced.
* :class:`ScoreJob` scores the generations of some cells with one metric and yields a
  :class:`ScoreBatch` (or :class:`CellFailed`) per cell.

Jobs are frozen, picklable dataclasses that carry everything they need (specs, examples,
texts), so an executor can run them in another process or on another machine; there they
build the plugins from the installed entry points (:func:`plugins_here`). Only the driver
reads and writes the store (see :mod:`harness.pipeline.runner`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import data
from ..api import Example, ExampleScore, GenRequest, GenResult, ModelSpec, Progress, ScoreInput, TrainPair
from ..errors import UserError
from ..registry import SweepConfig
from ..store import sha256_file
from . import keys

# --------------------------------------------------------------------------- plugins where a job runs


def use_plugins(plugins: Any) -> None:
    """The plugins jobs use in this process (the driver sets its own; a worker builds them from entry points)."""
    from ..plugins import use_plugins as _use

    _use(plugins)


def plugins_here() -> Any:
    from ..plugins import current_plugins

    return current_plugins()


# --------------------------------------------------------------------------- adapters


@dataclass(frozen=True)
class AdapterRef:
    """A trained LoRA adapter: its weights' sha256 and where to find it.

    ``path`` is a folder every worker can read (the driver's output folder, or a shared
    storage path); ``files`` carries the adapter's files instead, when a worker trained it
    where the driver cannot see (the driver writes them into its output folder).
    """

    sha256: str
    path: str | None = None
    files: tuple[tuple[str, bytes], ...] | None = field(default=None, repr=False)

    @contextmanager
    def local_dir(self) -> Iterator[Path]:
        """A local folder holding the adapter, for the length of the ``with`` block.

        ``path`` when this process can read it; otherwise ``files`` are written into a fresh
        temporary folder that is removed when the block ends, so a worker that generates for
        many models leaves nothing behind.
        """
        if self.path is not None and Path(self.path).exists():
            yield Path(self.path)
            return
        if self.files is None:
            raise RuntimeError(f"the adapter {self.sha256[:12]} is not at {self.path} and its files were not sent")
        target = Path(tempfile.mkdtemp(prefix=f"harness-adapter-{self.sha256[:12]}-"))
        try:
            for name, blob in self.files:
                (target / name).write_bytes(blob)
            yield target
        finally:
            shutil.rmtree(target, ignore_errors=True)


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class TrainOutput:
    model: str
    train_key: str
    adapter: AdapterRef
    summary: dict[str, Any]


@dataclass(frozen=True)
class CellKeys:
    """What a (model, config) cell stands for: the generation key of each test example, in split order."""

    model: str
    config: str
    model_key: str
    adapter_sha: str | None
    keys: tuple[tuple[str, str], ...]  # (example id, gen key)


@dataclass(frozen=True)
class GenBatch:
    model: str
    config: str
    results: tuple[GenResult, ...]
    example_ids: tuple[str, ...]
    model_key: str


@dataclass(frozen=True)
class CellDone:
    stage: str  # "generate" | "score"
    model: str
    config: str
    metric: str | None = None


@dataclass(frozen=True)
class CellFailed:
    stage: str  # "train" | "generate" | "score"
    model: str
    config: str | None
    error: str
    traceback: str = ""
    metric: str | None = None


@dataclass(frozen=True)
class StageSeconds:
    """Time a job spent on a part of its work worth its own line in the run's stage times (``compile``)."""

    stage: str
    seconds: float


@dataclass(frozen=True)
class ScoreBatch:
    metric: str
    metric_key: str
    model: str
    config: str
    scores: tuple[tuple[str, str, ExampleScore], ...]  # (gen key, reference sha, score)


# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class TrainJob:
    """Fine-tune ``spec`` on ``pairs``; write the adapter under ``storage`` (or send its files back)."""

    id: str
    spec: ModelSpec
    pairs: tuple[TrainPair, ...]
    train_key: str
    storage: str | None
    kind: str = "train"
    needs: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"train {self.spec.name}"

    def execute(self, needs: Mapping[str, Sequence[Any]], progress: Progress) -> Iterator[Any]:
        spec = self.spec
        adapter = plugins_here().create("model", spec.adapter, spec.options)
        parent = Path(self.storage) / "adapters" if self.storage else Path(tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".train-", dir=parent))
        try:
            note = getattr(progress, "note", None)
            if note is not None:
                note(spec.name)
            summary = adapter.train(spec, list(self.pairs), tmp, progress)
            weights = tmp / "adapter_model.safetensors"
            if not weights.exists():
                raise RuntimeError(f"the adapter plugin '{spec.adapter}' did not write adapter_model.safetensors")
            sha = sha256_file(weights)
            if self.storage:
                target = parent / f"{spec.name}-{self.train_key[:12]}"
                if target.exists():
                    shutil.rmtree(target)
                os.replace(tmp, target)
                ref = AdapterRef(sha, str(target))
            else:
                files = tuple(sorted((p.name, p.read_bytes()) for p in tmp.iterdir() if p.is_file()))
                ref = AdapterRef(sha, None, files)
            yield TrainOutput(spec.name, self.train_key, ref, dict(summary or {}))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class GenerateJob:
    """Generate what is missing for ``configs`` × ``examples`` of one model with one engine session."""

    id: str
    spec: ModelSpec
    identity: dict[str, Any]
    template_id: dict[str, str]
    engine: str
    engine_settings: dict[str, Any]
    engine_identity: dict[str, Any]
    configs: tuple[SweepConfig, ...]
    examples: tuple[Example, ...]
    sweep_seed: int
    adapter: AdapterRef | None = None  # a ready adapter; None: the base model, or the output of the train job in ``needs``
    known: frozenset[str] = frozenset()  # gen keys already stored
    kind: str = "generate"
    needs: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"generate {self.spec.name}"

    def resolve_adapter(self, needs: Mapping[str, Sequence[Any]]) -> AdapterRef | None:
        if self.adapter is not None:
            return self.adapter
        for outputs in needs.values():
            for out in outputs:
                if isinstance(out, TrainOutput):
                    return out.adapter
        if self.needs:
            raise RuntimeError(f"{self.id} needs a trained adapter but {', '.join(self.needs)} produced none")
        return None

    def plan(self, adapter: AdapterRef | None) -> tuple[str, list[CellKeys]]:
        mkey = keys.model_key(self.identity, adapter.sha256 if adapter else None)
        cells = []
        for config in self.configs:
            ks = tuple(
                (e.id, keys.gen_key(mkey, self.template_id, e.id, config.decoding, self.engine_identity, keys.example_seed(self.sweep_seed, e.id)))
                for e in self.examples
            )
            cells.append(CellKeys(self.spec.name, config.name, mkey, adapter.sha256 if adapter else None, ks))
        return mkey, cells

    def execute(self, needs: Mapping[str, Sequence[Any]], progress: Progress) -> Iterator[Any]:
        import traceback as tb

        adapter = self.resolve_adapter(needs)
        mkey, cells = self.plan(adapter)
        yield from cells
        by_id = {e.id: e for e in self.examples}
        owner: dict[str, str] = {}  # gen key -> the config that generates it
        todo: list[tuple[SweepConfig, list[tuple[Example, str]]]] = []
        needs_of: dict[str, list[str]] = {}
        for config, cell in zip(self.configs, cells):
            missing = [(by_id[e], k) for e, k in cell.keys if k not in self.known]
            needs_of[config.name] = [k for _, k in missing]
            mine = [(e, k) for e, k in missing if k not in owner]
            owner.update({k: config.name for _, k in mine})
            if mine:
                todo.append((config, mine))
        if not todo:
            for config in self.configs:
                yield CellDone("generate", self.spec.name, config.name)
            return
        plugins = plugins_here()
        model = plugins.create("model", self.spec.adapter, self.spec.options)
        engine = plugins.create("engine", self.engine, self.engine_settings)
        held = ExitStack()  # the adapter's local folder, kept until the session is closed
        try:
            adapter_dir = held.enter_context(adapter.local_dir()) if adapter is not None else None
            session = engine.open(model, self.spec, adapter_dir)
        except BaseException:
            held.close()
            raise
        failed: dict[str, str] = {}
        try:
            tok = model.tokenizer(self.spec) if self.spec.template == "chat" else None
            requests: dict[str, list[GenRequest]] = {
                config.name: [
                    GenRequest(k, data.render_prompt(e, self.spec.template, tok), config.decoding, keys.example_seed(self.sweep_seed, e.id),
                               messages=data.prompt_messages(e, self.spec.template))
                    for e, k in missing
                ]
                for config, missing in todo
            }
            example_of = {k: e.id for _, missing in todo for e, k in missing}
            left = {name: {r.key for r in reqs} for name, reqs in requests.items()}

            def batches(calls: list[GenRequest], label: str, cells: int = 1) -> Iterator[GenBatch]:
                note = getattr(progress, "note", None)
                if note is not None:
                    note(f"{self.spec.name} · {label}", cells=cells)
                for batch in session.generate(calls, progress):
                    by_config: dict[str, list[GenResult]] = {}
                    for r in batch:
                        by_config.setdefault(owner[r.key], []).append(r)
                    for name, results in by_config.items():
                        left[name].difference_update(r.key for r in results)
                        yield GenBatch(self.spec.name, name, tuple(results), tuple(example_of[r.key] for r in results), mkey)

            together = [r for reqs in requests.values() for r in reqs]
            label = todo[0][0].name if len(todo) == 1 else f"{len(todo)} configs"
            try:
                yield from batches(together, label, len(todo))
            except (KeyboardInterrupt, UserError):
                raise
            except Exception as exc:
                if len(todo) == 1:
                    failed[todo[0][0].name] = f"{type(exc).__name__}: {exc}"
                    yield CellFailed("generate", self.spec.name, todo[0][0].name, failed[todo[0][0].name], tb.format_exc())
                else:  # one config alone per call now: a config that fails fails alone
                    for config, _ in todo:
                        if not left[config.name]:
                            continue
                        try:
                            yield from batches([r for r in requests[config.name] if r.key in left[config.name]], config.name)
                        except (KeyboardInterrupt, UserError):
                            raise
                        except Exception as exc:
                            failed[config.name] = f"{type(exc).__name__}: {exc}"
                            yield CellFailed("generate", self.spec.name, config.name, failed[config.name], tb.format_exc())
            seconds = float(getattr(session, "compile_seconds", 0.0) or 0.0)
            if seconds > 0:
                yield StageSeconds("compile", seconds)
        finally:
            try:
                session.close()
            finally:
                held.close()
        for config in self.configs:
            if config.name in failed:
                continue
            lacking = [owner[k] for k in needs_of[config.name] if owner.get(k) in failed]
            if lacking:
                why = f"shares its generations with {lacking[0]}: {failed[lacking[0]]}"
                yield CellFailed("generate", self.spec.name, config.name, why)
            else:
                yield CellDone("generate", self.spec.name, config.name)


@dataclass(frozen=True)
class ScoreCell:
    """The generations of one (model, config) cell to score: (gen key, reference sha, input) per missing example."""

    model: str
    config: str
    inputs: tuple[tuple[str, ScoreInput], ...]  # (reference sha, input)


@dataclass(frozen=True)
class ScoreJob:
    """Score ``cells`` with one metric (one metric instance for the whole job)."""

    id: str
    metric: str
    settings: dict[str, Any]
    metric_key: str
    cells: tuple[ScoreCell, ...]
    kind: str = "score"
    needs: tuple[str, ...] = ()
    #: the experiment file's folder (``Metric.base_dir``)
    base_dir: str = "."

    @property
    def label(self) -> str:
        return f"score {self.metric}"

    def execute(self, needs: Mapping[str, Sequence[Any]], progress: Progress) -> Iterator[Any]:
        import traceback as tb

        metric = plugins_here().create("metric", self.metric, self.settings)
        metric.base_dir = Path(self.base_dir)
        try:
            for cell in self.cells:
                note = getattr(progress, "note", None)
                if note is not None:
                    note(f"{cell.model} · {cell.config}")
                inputs = [i for _, i in cell.inputs]
                try:
                    scores = metric.score(inputs, progress)
                    if len(scores) != len(inputs):
                        raise RuntimeError(f"metric '{self.metric}' returned {len(scores)} scores for {len(inputs)} inputs")
                except (KeyboardInterrupt, UserError):
                    raise
                except Exception as exc:
                    yield CellFailed("score", cell.model, cell.config, f"{type(exc).__name__}: {exc}", tb.format_exc(), metric=self.metric)
                    continue
                items = tuple((i.key, ref, s) for (ref, i), s in zip(cell.inputs, scores))
                yield ScoreBatch(self.metric, self.metric_key, cell.model, cell.config, items)
        finally:
            metric.close()


__all__ = [
    "AdapterRef",
    "TrainOutput",
    "CellKeys",
    "GenBatch",
    "CellDone",
    "CellFailed",
    "ScoreBatch",
    "ScoreCell",
    "StageSeconds",
    "TrainJob",
    "GenerateJob",
    "ScoreJob",
    "use_plugins",
    "plugins_here",
    "sha256_file",
]
