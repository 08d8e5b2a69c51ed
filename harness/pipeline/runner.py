"""A run: split, then fine-tune, generate and score as jobs an executor runs, storing results as they arrive.

The runner is the driver. It splits the data (stored once per split key), turns the
experiment into jobs (:mod:`harness.pipeline.jobs`) — a :class:`~harness.pipeline.jobs.TrainJob` per model
that needs an adapter, a :class:`~harness.pipeline.jobs.GenerateJob` per model (after its train
job), and, once generation is over, a :class:`~harness.pipeline.jobs.ScoreJob` per metric — hands
them to the executor plugin, and commits every output the jobs yield to the store
together with the records of what each cell ran (see :mod:`harness.store`). Cache keys
come from :mod:`harness.pipeline.keys`; a result already stored under its key is never recomputed.

A plugin raising in one cell marks that cell failed (stored with its error) and the run
goes on; the failure is cleared when the cell later succeeds. ``KeyboardInterrupt`` and
bad input (:class:`~harness.errors.UserError`) stop the run; everything committed so far
stays.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import data
from ..api import Example, Job, Metric, ModelSpec, NullProgress, Progress, ScoreInput, stable_hash
from ..errors import UserError, unknown_name
from ..plugins import Plugins
from ..registry import Experiment, SweepConfig
from ..store import CellRecord, Store, score_ref
from . import jobs, keys

#: `harness run` asks for --yes above this many generations (a sweep that exploded by mistake)
CONFIRM_ABOVE = 50_000
STAGES = ("split", "train", "generate", "score")


@dataclass
class Selection:
    """Which part of the experiment a command works on (None = all)."""

    models: list[str] | None = None
    configs: list[str] | None = None
    metrics: list[str] | None = None

    def validate(self, exp: Experiment) -> None:
        for name in self.models or []:
            exp.model(name)
        for name in self.configs or []:
            exp.config(name)
        for name in self.metrics or []:
            if name not in exp.metrics:
                raise UserError(unknown_name("metric", name, exp.metrics), file=exp.path, key="--metric")


@dataclass(frozen=True)
class PlanSize:
    """How big a run is: cells and generations (before anything cached is subtracted)."""

    models: int
    finetuned: int
    configs: int
    examples: int
    metrics: int

    @property
    def cells(self) -> int:
        return self.models * self.configs

    @property
    def generations(self) -> int:
        return self.cells * self.examples

    def describe(self) -> str:
        return (
            f"{self.cells:,} cells ({self.models} model{'s' if self.models != 1 else ''} × {self.configs:,} configs), "
            f"{self.generations:,} generations ({self.examples} test examples each), "
            f"{self.generations * self.metrics:,} scores ({self.metrics} metric{'s' if self.metrics != 1 else ''}), "
            f"{self.finetuned} fine-tune{'s' if self.finetuned != 1 else ''}"
        )


def plan_size(exp: Experiment, n_test: int, selection: Selection | None = None) -> PlanSize:
    sel = selection or Selection()
    models = [m for m in exp.models if sel.models is None or m.name in sel.models]
    configs = [c for c in exp.configs if sel.configs is None or c.name in sel.configs]
    metrics = [m for m in exp.metrics if sel.metrics is None or m in sel.metrics]
    return PlanSize(len(models), sum(1 for m in models if m.finetune), len(configs), n_test, len(metrics))


def space_needed(store: Store, size: PlanSize) -> int:
    """About how many more bytes a run of ``size`` needs in ``store``: what the store holds per stored generation
    (with its scores and records) times the generations still missing (a floor of a few KiB each on an empty store)."""
    stored = store.db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    held = sum(p.stat().st_size for p in (store.path, Path(f"{store.path}-wal")) if p.exists())
    per_generation = held / stored if stored else 4096 * (1 + size.metrics)
    return int(per_generation * max(size.generations - stored, 0) * 1.25)


@dataclass
class RunStats:
    trained: int = 0
    reused_adapters: int = 0
    generated: int = 0
    cached_generations: int = 0
    scored: int = 0
    cached_scores: int = 0
    failed_cells: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class ModelState:
    """What the driver knows of one model: its identity, prompt template and trained adapter."""

    spec: ModelSpec
    identity: dict[str, Any]
    template_id: dict[str, str]
    train_key: str | None = None
    adapter: jobs.AdapterRef | None = None
    tokenizer: Any = None


class Runner:
    def __init__(
        self,
        exp: Experiment,
        plugins: Plugins,
        store: Store,
        progress: Progress | None = None,
        selection: Selection | None = None,
        *,
        executor: Any = None,
        run_id: int | None = None,
        test_ids: Sequence[str] | None = None,
    ):
        self.exp = exp
        self.plugins = plugins
        self.store = store
        self.progress = progress or NullProgress()
        self.sel = selection or Selection()
        self.sel.validate(exp)
        self.executor = executor
        self.run_id = run_id
        #: only these test examples, in this order (a pruned search evaluates a config chunk by chunk); None: the whole test split
        self.test_ids = tuple(test_ids) if test_ids is not None else None
        self.stats = RunStats()
        self.split_key = ""
        self._split: tuple[list[Example], list[Example]] | None = None
        self._models: dict[str, ModelState] = {}
        self._metrics: dict[str, Metric] = {}
        self._engine_identity: dict[str, Any] | None = None

    # ------------------------------------------------------------------ selection

    def models(self) -> list[ModelSpec]:
        return [m for m in self.exp.models if self.sel.models is None or m.name in self.sel.models]

    def configs(self) -> list[SweepConfig]:
        return [c for c in self.exp.configs if self.sel.configs is None or c.name in self.sel.configs]

    def metric_names(self) -> list[str]:
        return [m for m in self.exp.metrics if self.sel.metrics is None or m in self.sel.metrics]

    # ------------------------------------------------------------------ split

    def split(self) -> tuple[list[Example], list[Example]]:
        if self._split is not None:
            return self._split
        t0 = time.perf_counter()
        split_key, info = split_identity(self.exp, self.plugins)
        stored = self.store.load_split(split_key)
        if stored is None:
            train, test, n_records = compute_split(self.exp, self.plugins)
            self.store.save_split(split_key, info | {"n_records": n_records}, train, test)
            stored = (train, test)
        self.split_key = split_key
        if self.test_ids is not None:
            by_id = {e.id: e for e in stored[1]}
            unknown = [i for i in self.test_ids if i not in by_id]
            if unknown:
                raise UserError(f"example {unknown[0]} is not in the test split (the dataset or the split changed)", file=self.exp.path, key="dataset")
            stored = (stored[0], [by_id[i] for i in self.test_ids])
        self._split = stored
        self.stats.stage_seconds["split"] = self.stats.stage_seconds.get("split", 0) + time.perf_counter() - t0
        return stored

    # ------------------------------------------------------------------ models

    def model_state(self, spec: ModelSpec) -> ModelState:
        if spec.name not in self._models:
            adapter = self.plugins.create("model", spec.adapter, spec.options)
            identity = {"plugin": spec.adapter, "plugin_version": adapter.version, **adapter.identity(spec)}
            tokenizer = adapter.tokenizer(spec) if spec.template == "chat" else None
            state = ModelState(spec, identity, data.template_identity(spec.template, tokenizer), tokenizer=tokenizer)
            if spec.finetune is not None:
                train, _ = self.split()
                state.train_key = keys.train_key(identity, train, state.template_id, spec.finetune)
                found = self.store.adapter(state.train_key)
                if found and (found["path"] / "adapter_model.safetensors").exists():
                    state.adapter = jobs.AdapterRef(found["sha256"], str(found["path"]))
            self._models[spec.name] = state
        return self._models[spec.name]

    def engine_identity(self) -> dict[str, Any]:
        if self._engine_identity is None:
            self._engine_identity = self.plugins.create("engine", self.exp.engine, self.exp.engine_settings).identity()
        return self._engine_identity

    def metric(self, name: str) -> Metric:
        if name not in self._metrics:
            self._metrics[name] = self.plugins.create("metric", name, self.exp.metric_settings[name])
            self._metrics[name].base_dir = self.exp.base_dir
        return self._metrics[name]

    def metric_key(self, name: str) -> str:
        return keys.metric_key(self.metric(name).identity())

    def metric_against(self, name: str) -> str | None:
        """The config whose outputs the metric compares each output with (None: it reads only references)."""
        return compared_config(self.exp, name, self.metric(name))

    def _others(self, metric: str, spec: ModelSpec) -> dict[str, str] | None:
        """For a metric that compares outputs: example id -> the key of the generation each output is compared with
        (the model's generation under the compared config); None for a metric that does not compare, or when those
        generations are not all known yet (then the model's cells cannot be scored)."""
        against = self.metric_against(metric)
        if against is None:
            return None
        found = self._current_keys(spec, self.exp.config(against))
        return dict(found) if found is not None else {}

    def _score_pairs(self, metric: str, spec: ModelSpec, cell_keys: Sequence[tuple[str, str]]) -> list[tuple[str, str]] | None:
        """(gen key, score ref) per example of a cell (see :func:`harness.store.score_ref`); None when a compared generation is unknown."""
        _, test = self.split()
        refs = {e.id: e.reference_sha for e in test}
        others = self._others(metric, spec)
        if others is None:
            return [(k, refs[e]) for e, k in cell_keys]
        if any(e not in others for e, _ in cell_keys):
            return None
        return [(k, score_ref(refs[e], others[e])) for e, k in cell_keys]

    # ------------------------------------------------------------------ planning

    def train_job(self, spec: ModelSpec, storage: Path | None) -> jobs.TrainJob | None:
        state = self.model_state(spec)
        if spec.finetune is None or state.adapter is not None:
            return None
        train, _ = self.split()
        pairs = tuple(data.train_pairs(train, spec.template, state.tokenizer))
        return jobs.TrainJob(f"train/{spec.name}", spec, pairs, state.train_key or "", str(storage) if storage else None)

    def generate_jobs(self, spec: ModelSpec, train_job: jobs.TrainJob | None, parts: int) -> list[jobs.GenerateJob]:
        """The model's generation as ``parts`` jobs over disjoint groups of configs (one model load each)."""
        configs = self.configs()
        parts = max(1, min(parts, len(configs)))
        if parts == 1:
            return [self.generate_job(spec, train_job)]
        groups = [configs[i::parts] for i in range(parts)]
        return [self.generate_job(spec, train_job, tuple(g), f"generate/{spec.name}/{i}") for i, g in enumerate(groups)]

    def generate_job(self, spec: ModelSpec, train_job: jobs.TrainJob | None, configs: tuple[SweepConfig, ...] | None = None, job_id: str | None = None) -> jobs.GenerateJob:
        state = self.model_state(spec)
        _, test = self.split()
        configs = tuple(self.configs()) if configs is None else configs
        if train_job is None:  # the adapter (or the base model) is known: exactly the planned keys that are stored
            planned = [k for config in configs for _, k in self._current_keys(spec, config) or []]
            known = frozenset(self.store.existing_generations(planned))
        else:  # keys follow from the adapter the train job will make: what this model has made before
            known = frozenset(self.store.known_generation_keys(spec.name))
        return jobs.GenerateJob(
            id=job_id or f"generate/{spec.name}",
            spec=spec,
            identity=state.identity,
            template_id=state.template_id,
            engine=self.exp.engine,
            engine_settings=dict(self.exp.engine_settings),
            engine_identity=self.engine_identity(),
            configs=configs,
            examples=tuple(test),
            sweep_seed=self.exp.sweep_seed,
            adapter=state.adapter,
            known=known,
            needs=(train_job.id,) if train_job is not None else (),
        )

    def score_jobs(self) -> list[jobs.ScoreJob]:
        """For each metric, the cells whose generations are all stored and whose scores are not; complete cells get their record.

        A metric that compares outputs (``Metric.against``) also needs every generation of the compared config for
        the same model: the compared text goes into each :class:`~harness.api.ScoreInput` and its key into the score's key.
        """
        _, test = self.split()
        examples = {e.id: e for e in test}
        out = []
        for name in self.metric_names():
            metric = self.metric(name)
            mkey = self.metric_key(name)
            self.store.register_metric(mkey, name, metric.identity(), metric.label or name, metric.higher_is_better, type(metric).aggregation())
            cells: list[jobs.ScoreCell] = []
            queued: set[tuple[str, str]] = set()  # (gen key, score ref) already in a cell of this job
            for spec in self.models():
                others = self._others(name, spec)
                other_texts = self.store.texts(sorted(set(others.values()))) if others else {}
                for config in self.configs():
                    cell_keys = self._current_keys(spec, config)
                    if cell_keys is None:
                        continue
                    texts = self.store.texts([k for _, k in cell_keys])
                    if len(texts) < len({k for _, k in cell_keys}):
                        continue  # generation incomplete or failed: nothing to score yet
                    state = self.model_state(spec)
                    record = jobs.CellKeys(spec.name, config.name, keys.model_key(state.identity, state.adapter.sha256 if state.adapter else None),
                                           state.adapter.sha256 if state.adapter else None, tuple(cell_keys))
                    with self.store.transaction():
                        self.store.record_cell(self.cell_record(spec.name, config.name, record), cell_keys, self.run_id)
                    pairs = self._score_pairs(name, spec, cell_keys)
                    if pairs is None or (others is not None and any(others[e] not in other_texts for e, _ in cell_keys)):
                        continue  # the compared config's generations are not all there yet
                    have = self.store.scores(mkey, pairs)
                    self.stats.cached_scores += sum(1 for p in pairs if p in have)
                    missing = [(e, k, p) for (e, k), p in zip(cell_keys, pairs) if p not in have and p not in queued]
                    if missing:
                        inputs = []
                        for e, k, (_, ref) in missing:
                            other = others[e] if others is not None else None
                            inputs.append((ref, ScoreInput(
                                k, texts[k], examples[e].output, examples[e], other=other_texts.get(other) if other else None,
                                other_key=other, model=spec.name, config=config.name,
                            )))
                        queued.update(p for _, _, p in missing)
                        cells.append(jobs.ScoreCell(spec.name, config.name, tuple(inputs)))
                    elif not any(p not in have for p in pairs):
                        with self.store.transaction():
                            self._record_aggregate(name, mkey, spec.name, config.name, cell_keys)
            if cells:
                out.append(jobs.ScoreJob(f"score/{name}", name, dict(self.exp.metric_settings[name]), mkey, tuple(cells), base_dir=str(self.exp.base_dir)))
        return out

    def _current_keys(self, spec: ModelSpec, config: SweepConfig) -> list[tuple[str, str]] | None:
        """The cell's generation keys for the current model and adapter (None: a fine-tuned model without its adapter)."""
        state = self.model_state(spec)
        if spec.finetune is not None and state.adapter is None:
            return None
        _, test = self.split()
        probe = jobs.GenerateJob(
            id="", spec=spec, identity=state.identity, template_id=state.template_id, engine=self.exp.engine, engine_settings={},
            engine_identity=self.engine_identity(), configs=(config,), examples=tuple(test), sweep_seed=self.exp.sweep_seed,
        )
        _, (cell,) = probe.plan(state.adapter)
        return list(cell.keys)

    def example_scores(self, metric: str, model: str, config: str) -> list[tuple[str, Any]]:
        """(example id, stored :class:`~harness.api.ExampleScore` or None) of the cell's examples under ``metric``, in order."""
        spec = self.exp.model(model)
        cell_keys = self._current_keys(spec, self.exp.config(config)) or []
        pairs = self._score_pairs(metric, spec, cell_keys) or []
        have = self.store.scores(self.metric_key(metric), pairs) if pairs else {}
        return [(e, have.get(p)) for (e, _), p in zip(cell_keys, pairs)] if pairs else [(e, None) for e, _ in cell_keys]

    def _record_aggregate(self, metric: str, mkey: str, model: str, config: str, cell_keys: Sequence[tuple[str, str]]) -> bool:
        """Record the cell's aggregate when every example has its score (inside the caller's transaction). True if recorded.

        Missing scores (an example that could not be scored) are counted, not averaged in: ``n`` counts the scored ones.
        """
        pairs = self._score_pairs(metric, self.exp.model(model), cell_keys)
        if pairs is None:
            return False
        have = self.store.scores(mkey, pairs)
        if len(have) < len(set(pairs)):
            return False
        ordered = [have[p] for p in pairs]
        value = self.metric(metric).aggregate(ordered)
        missing = sum(1 for s in ordered if s.missing)
        value = None if value != value else float(value)
        self.store.record_cell_metric(
            model, config, metric, mkey, self.split_key, value, len(ordered) - missing, self.run_id,
            against=self.metric_against(metric), missing=missing,
        )
        self.store.clear_failure(f"score/{model}/{config}/{metric}")
        return True

    # ------------------------------------------------------------------ running

    def run(self, stages: Sequence[str]) -> RunStats:
        """Run ``stages`` (a subset of split, train, generate, score) with the executor."""
        self.split()
        self._clean_leftovers()
        jobs.use_plugins(self.plugins)
        sink = _Sink(self, score="score" in stages)
        initial: list[Job] = []
        generation: list[Job] = []
        storage = self.executor.adapter_storage(self.exp.output_dir) if self.executor is not None else self.exp.output_dir
        models = self.models()
        parts = -(-self.executor.capacity("generate") // max(1, len(models))) if self.executor is not None else 1
        if "train" in stages or "generate" in stages:
            for spec in models:
                tj = self.train_job(spec, storage)
                if tj is not None:
                    initial.append(tj)  # every fine-tune first: a failing one shows early
                elif spec.finetune is not None:
                    self.stats.reused_adapters += 1
                if "generate" in stages:
                    for gj in self.generate_jobs(spec, tj, parts):
                        generation.append(gj)
                        sink.pending_generation.add(gj.id)
        initial.extend(generation)
        if "score" in stages and not sink.pending_generation:
            initial.extend(self.score_jobs())
        if initial:
            if self.executor is None:
                raise RuntimeError("a run with jobs needs an executor")
            self.executor.run(initial, sink, self.progress)
        for metric in self._metrics.values():
            metric.close()
        return self.stats

    def _clean_leftovers(self) -> None:
        """Temporary folders a killed run left in the output folder (the caller holds the run lock)."""
        folder = self.exp.output_dir / "adapters"
        if folder.is_dir():
            for tmp in folder.glob(".train-*"):
                shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------------ bookkeeping

    def cell_record(self, model: str, config_name: str, keys_: jobs.CellKeys) -> CellRecord:
        spec = self.exp.model(model)
        config = self.exp.config(config_name)
        state = self.model_state(spec)
        info = {
            "adapter_plugin": spec.adapter,
            "base_model": spec.base_model,
            "template": spec.template,
            "identity": state.identity,
            "template_id": state.template_id,
            "finetune": asdict(spec.finetune) if spec.finetune else None,
            "lora_adapter_sha256": keys_.adapter_sha,
        }
        return CellRecord(model, config.name, self.split_key, keys_.model_key, info, dict(config.params), config.decoding.to_dict(), self.engine_identity())

    def fail(self, cell: str, stage: str, error: str, tb: str = "", **where: Any) -> None:
        self.stats.failed_cells.append(cell)
        self.store.record_failure(cell, stage, error, tb, **where)


class _Sink:
    """Stores what jobs produce, with the records of what each cell ran (the driver's side of a run)."""

    def __init__(self, runner: Runner, *, score: bool):
        self.r = runner
        self.store = runner.store
        self.score = score
        self.pending_generation: set[str] = set()
        self.started_at: dict[str, float] = {}
        self.failed_models: dict[str, str] = {}

    def started(self, job: Job, where: str) -> None:
        self.started_at[job.id] = time.perf_counter()

    def accept(self, job: Job, out: Any) -> None:
        r, store = self.r, self.store
        if isinstance(out, jobs.TrainOutput):
            self._adapter(out)
        elif isinstance(out, jobs.CellKeys):
            with store.transaction():
                store.record_cell(r.cell_record(out.model, out.config, out), list(out.keys), r.run_id)
            have = store.existing_generations(k for _, k in out.keys)
            r.stats.cached_generations += sum(1 for _, k in out.keys if k in have)
        elif isinstance(out, jobs.GenBatch):
            config = r.exp.config(out.config)
            info = {
                "model": out.model, "config": out.config, "decoding": config.decoding.to_dict(), "engine": r.engine_identity(),
                "model_key": out.model_key, "template": r.model_state(r.exp.model(out.model)).template_id,
            }
            store.save_generations([(res, info | {"example_id": e}) for res, e in zip(out.results, out.example_ids)])
            r.stats.generated += len(out.results)
        elif isinstance(out, jobs.CellDone):
            store.clear_failure(f"{out.stage}/{out.model}/{out.config}" + (f"/{out.metric}" if out.metric else ""))
        elif isinstance(out, jobs.CellFailed):
            cell = f"{out.stage}/{out.model}" + (f"/{out.config}" if out.config else "") + (f"/{out.metric}" if out.metric else "")
            r.fail(cell, out.stage, out.error, out.traceback, model=out.model, config=out.config, metric=out.metric)
        elif isinstance(out, jobs.StageSeconds):
            r.stats.stage_seconds[out.stage] = r.stats.stage_seconds.get(out.stage, 0.0) + out.seconds
        elif isinstance(out, jobs.ScoreBatch):
            with store.transaction():
                store._insert_scores(out.metric_key, list(out.scores))
                r.stats.scored += len(out.scores)
                self._aggregates(out)
        else:
            raise TypeError(f"{job.id} yielded an unknown output: {type(out).__name__}")

    def _aggregates(self, out: jobs.ScoreBatch) -> None:
        """Record the aggregate of every selected cell that holds one of the scored generations (shared ones included), once complete."""
        r = self.r
        selected = {(m.name, c.name) for m in r.models() for c in r.configs()}
        for model, config in sorted(self.store.cells_with({g for g, _, _ in out.scores}) & selected):
            r._record_aggregate(out.metric, out.metric_key, model, config, self.store.cell_keys(model, config))

    def _adapter(self, out: jobs.TrainOutput) -> None:
        r = self.r
        spec = r.exp.model(out.model)
        state = r.model_state(spec)
        ref = out.adapter
        target = r.exp.output_dir / "adapters" / f"{spec.name}-{out.train_key[:12]}"
        if ref.files is not None:  # trained where the driver cannot see: keep the files in the output folder
            tmp = Path(tempfile.mkdtemp(prefix=".train-", dir=_ensure(target.parent)))
            try:
                for name, blob in ref.files:
                    (tmp / name).write_bytes(blob)
                if target.exists():
                    shutil.rmtree(target)
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            path = target
        else:
            path = Path(ref.path or target)
        if jobs.sha256_file(path / "adapter_model.safetensors") != ref.sha256:
            raise RuntimeError(f"the adapter of {spec.name} at {path} does not match the sha256 its training reported")
        self.store.save_adapter(out.train_key, spec.name, path, ref.sha256, out.summary)
        self.store.clear_failure(f"train/{spec.name}")
        state.adapter = jobs.AdapterRef(ref.sha256, str(path))
        r.stats.trained += 1

    def done(self, job: Job) -> Sequence[Job]:
        self._time(job)
        return self._after(job)

    def failed(self, job: Job, error: str, traceback: str) -> Sequence[Job]:
        self._time(job)
        r = self.r
        if isinstance(job, jobs.TrainJob):
            self.failed_models[job.spec.name] = error
            r.fail(f"train/{job.spec.name}", "train", error, traceback, model=job.spec.name)
        elif isinstance(job, jobs.GenerateJob):
            why = self.failed_models.get(job.spec.name)
            message = f"fine-tuning failed: {why}" if why else error
            for config in job.configs:
                r.fail(f"generate/{job.spec.name}/{config.name}", "generate", message, traceback, model=job.spec.name, config=config.name)
        elif isinstance(job, jobs.ScoreJob):
            for cell in job.cells:
                r.fail(f"score/{cell.model}/{cell.config}/{job.metric}", "score", error, traceback, model=cell.model, config=cell.config, metric=job.metric)
        return self._after(job)

    def _after(self, job: Job) -> Sequence[Job]:
        if job.id in self.pending_generation:
            self.pending_generation.discard(job.id)
            if not self.pending_generation and self.score:
                return self.r.score_jobs()
        return []

    def _time(self, job: Job) -> None:
        started = self.started_at.pop(job.id, None)
        if started is not None:
            stats = self.r.stats.stage_seconds
            stats[job.kind] = stats.get(job.kind, 0.0) + time.perf_counter() - started


def preflight(exp: Experiment, plugins: Plugins, selection: Selection | None = None) -> None:
    """What must hold before a run, beyond the registry's validation: the engine can decode every config as asked
    (``Engine.unsupported``), reaches every model (``Engine.check``), and every metric is ready (``Metric.check``,
    the config it compares with exists). Raises one UserError; builds no model."""
    sel = selection or Selection()
    engine = plugins.create("engine", exp.engine, exp.engine_settings)
    # models first: an engine learns there what its servers can do (``unsupported`` may depend on it)
    for spec in exp.models:
        if sel.models is None or spec.name in sel.models:
            engine.check(spec)
    for config in exp.configs:
        if sel.configs is not None and config.name not in sel.configs:
            continue
        why = engine.unsupported(config.decoding)
        if why:
            raise UserError(f"the engine '{exp.engine}' cannot decode this config: {why}", file=exp.path, key=f"sweep ({config.name})")
    for name in exp.metrics:
        if sel.metrics is None or name in sel.metrics:
            metric = plugins.create("metric", name, exp.metric_settings[name])
            metric.base_dir = exp.base_dir
            metric.check()
            compared_config(exp, name, metric)


def compared_config(exp: Experiment, name: str, metric: Metric) -> str | None:
    """The config whose outputs ``metric`` compares each output with: its ``against()`` resolved (None: it reads only references)."""
    want = metric.against()
    if want is None:
        return None
    if want == "baseline":
        return exp.baseline()
    try:
        return exp.config(want).name
    except UserError as exc:
        raise UserError(f"compares with {exc.message}", file=exp.path, key=f"metrics.{name}") from None


def split_identity(exp: Experiment, plugins: Plugins) -> tuple[str, dict[str, Any]]:
    """The split's cache key and description: dataset fingerprint, sizes and seed."""
    ds = exp.dataset
    source = plugins.create("dataset", ds.source, ds.settings)
    info = {"source": ds.source, "fingerprint": source.fingerprint(exp.base_dir), "test_size": ds.test_size, "train_size": ds.train_size, "seed": ds.seed}
    return stable_hash(info), info


def compute_split(exp: Experiment, plugins: Plugins) -> tuple[list[Example], list[Example], int]:
    """Load the records and split them; raises UserError for bad records or sizes (before anything is written)."""
    ds = exp.dataset
    source = plugins.create("dataset", ds.source, ds.settings)
    examples = data.to_examples(source.load(exp.base_dir), source=f"dataset '{ds.source}'")
    train, test = data.split(examples, ds.test_size, ds.train_size, ds.seed, source=str(exp.path))
    return train, test, len(examples)


def run_metadata(exp: Experiment, command: str) -> dict[str, Any]:
    import importlib.metadata as md

    # every installed distribution: the libraries behind any plugin, whichever are installed
    versions = dict(sorted({d.metadata["Name"]: d.version for d in md.distributions() if d.metadata["Name"]}.items(), key=lambda kv: kv[0].lower()))
    hardware: dict[str, Any] = {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.platform()}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        hardware["gpu"] = torch.cuda.get_device_name(0)
    return {
        "command": command,
        "experiment": str(exp.path),
        "versions": versions,
        "hardware": hardware,
        "seeds": {"experiment": exp.seed, "split": exp.dataset.seed, "sweep": exp.sweep_seed},
    }


def _ensure(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


__all__ = ["Runner", "preflight", "Selection", "RunStats", "PlanSize", "plan_size", "split_identity", "compute_split", "run_metadata", "CONFIRM_ABOVE", "STAGES"]
