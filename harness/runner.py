"""The stages of a run: split, train, generate, score. Each stage skips work the store already holds.

Cache keys (see :mod:`harness.store`):

* split key   = dataset fingerprint + sizes + seed
* train key   = adapter plugin + base identity + train split + template + LoRA settings
* model key   = adapter plugin + base identity + adapter sha256 (or "base")
* gen key     = model key + template + example + effective decoding + engine
                (+ per-example seed for sampled strategies)
* score key   = gen key + metric identity (name, version, model, layer, signature …)

A plugin raising in one cell marks that cell failed (stored with its error) and the run
goes on; the failure is cleared when the cell later succeeds.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import data
from .api import Example, ExampleScore, GenRequest, Metric, ModelSpec, NullProgress, Progress, ScoreInput, non_default, stable_hash
from .errors import UserError
from .human import to_unit
from .plugins import Plugins
from .registry import Experiment, SweepConfig
from .store import Store


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
                from .errors import unknown_name

                raise UserError(unknown_name("metric", name, exp.metrics), file=exp.path, key="--metric")


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
    spec: ModelSpec
    adapter: Any
    identity: dict[str, Any]
    template_id: dict[str, str]
    tokenizer: Any = None
    adapter_dir: Path | None = None
    adapter_sha: str | None = None
    ready: bool = True  # False when training failed or was not done

    @property
    def model_key(self) -> str:
        return stable_hash({"identity": self.identity, "adapter_sha256": self.adapter_sha or "base"})


class Runner:
    def __init__(self, exp: Experiment, plugins: Plugins, store: Store, progress: Progress | None = None, selection: Selection | None = None):
        self.exp = exp
        self.plugins = plugins
        self.store = store
        self.progress = progress or NullProgress()
        self.sel = selection or Selection()
        self.sel.validate(exp)
        self.stats = RunStats()
        self._split: tuple[list[Example], list[Example]] | None = None
        self._models: dict[str, ModelState] = {}
        self._metrics: dict[str, Metric] = {}
        self._errors: dict[str, str] = {}  # cell -> error, for cells failed in this run

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
        self._split = stored
        self.stats.stage_seconds["split"] = self.stats.stage_seconds.get("split", 0) + time.perf_counter() - t0
        return stored

    # ------------------------------------------------------------------ models

    def model_state(self, spec: ModelSpec) -> ModelState:
        if spec.name not in self._models:
            adapter = self.plugins.create("model", spec.adapter, spec.options)
            identity = {"plugin": spec.adapter, "plugin_version": adapter.version, **adapter.identity(spec)}
            tokenizer = adapter.tokenizer(spec) if spec.template == "chat" else None
            self._models[spec.name] = ModelState(spec, adapter, identity, data.template_identity(spec.template, tokenizer), tokenizer)
        return self._models[spec.name]

    def _tokenizer(self, state: ModelState) -> Any:
        if state.tokenizer is None:
            state.tokenizer = state.adapter.tokenizer(state.spec)
        return state.tokenizer

    def train_key(self, state: ModelState, train: Sequence[Example]) -> str:
        """What a trained adapter depends on: base model, adapter plugin, train split, template, LoRA settings."""
        return stable_hash(
            {
                "identity": state.identity,
                "split": self.split_key,
                "train_ids": [e.id for e in train],
                "template": state.template_id,
                "finetune": non_default(state.spec.finetune),
            }
        )

    def train(self) -> None:
        t0 = time.perf_counter()
        train, _ = self.split()
        for spec in self.models():
            state = self.model_state(spec)
            if spec.finetune is None:
                continue
            train_key = self.train_key(state, train)
            cell = f"train/{spec.name}"
            found = self.store.adapter(train_key)
            if found and (Path(found["path"]) / "adapter_model.safetensors").exists():
                state.adapter_dir, state.adapter_sha = Path(found["path"]), found["sha256"]
                self.stats.reused_adapters += 1
                continue
            target = self.exp.output_dir / "adapters" / f"{spec.name}-{train_key[:12]}"
            tmp = Path(tempfile.mkdtemp(prefix=".train-", dir=_ensure(self.exp.output_dir / "adapters")))
            try:
                tok = self._tokenizer(state) if spec.template == "chat" else None
                pairs = data.train_pairs(train, spec.template, tok)
                self._note(spec.name)
                summary = state.adapter.train(spec, pairs, tmp, self.progress)
                weights = tmp / "adapter_model.safetensors"
                if not weights.exists():
                    raise RuntimeError(f"the adapter plugin '{spec.adapter}' did not write adapter_model.safetensors")
                if target.exists():
                    shutil.rmtree(target)
                os.replace(tmp, target)
                sha = _sha256(target / "adapter_model.safetensors")
                self.store.save_adapter(train_key, spec.name, target, sha, summary)
                self.store.clear_failure(cell)
                state.adapter_dir, state.adapter_sha = target, sha
                self.stats.trained += 1
            except (KeyboardInterrupt, UserError):
                raise
            except Exception as exc:
                state.ready = False
                self._fail(cell, "train", exc, model=spec.name)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        self.stats.stage_seconds["train"] = self.stats.stage_seconds.get("train", 0) + time.perf_counter() - t0

    def _resolve_adapters(self) -> None:
        """Find the trained adapters of fine-tuned models (training them if needed)."""
        pending = [s for s in self.models() if s.finetune is not None and self.model_state(s).adapter_sha is None and self.model_state(s).ready]
        if pending:
            self.train()

    # ------------------------------------------------------------------ generation

    def gen_key(self, state: ModelState, example: Example, config: SweepConfig, engine_identity: dict[str, Any]) -> str:
        key: dict[str, Any] = {
            "model": state.model_key,
            "template": state.template_id,
            "example": example.id,
            "decoding": {k: v for k, v in non_default(config.decoding).items() if k != "requested"},
            "engine": engine_identity,
        }
        if config.decoding.do_sample:
            key["seed"] = self.example_seed(example)
        return stable_hash(key)

    def example_seed(self, example: Example) -> int:
        return int(hashlib.sha256(f"{self.exp.sweep_seed}:{example.id}".encode()).hexdigest()[:8], 16)

    def engine(self):
        return self.plugins.create("engine", self.exp.engine, self.exp.engine_settings)

    def cell_keys(self, state: ModelState, config: SweepConfig, engine_identity: dict[str, Any]) -> list[tuple[Example, str]]:
        _, test = self.split()
        return [(e, self.gen_key(state, e, config, engine_identity)) for e in test]

    def generate(self) -> None:
        t0 = time.perf_counter()
        self._resolve_adapters()
        engine = self.engine()
        eid = engine.identity()
        for spec in self.models():
            state = self.model_state(spec)
            if not state.ready:
                why = self._errors.get(f"train/{spec.name}", "see the train cell")
                for config in self.configs():
                    self._fail(f"generate/{spec.name}/{config.name}", "generate", RuntimeError(f"fine-tuning failed: {why}"), model=spec.name, config=config.name)
                continue
            todo: list[tuple[SweepConfig, list[tuple[Example, str]]]] = []
            owner: dict[str, str] = {}  # gen key -> the config that generates it
            needs: dict[str, list[str]] = {}  # config -> its missing keys, shared ones included
            for config in self.configs():
                keys = self.cell_keys(state, config, eid)
                have = self.store.existing_generations(k for _, k in keys)
                missing = [(e, k) for e, k in keys if k not in have]
                self.stats.cached_generations += len(keys) - len(missing)
                needs[config.name] = [k for _, k in missing]
                # identical effective decodings share generations: do each key once
                mine = [(e, k) for e, k in missing if k not in owner]
                owner.update({k: config.name for _, k in mine})
                if mine:
                    todo.append((config, mine))
                elif not missing:
                    self.store.clear_failure(f"generate/{spec.name}/{config.name}")
            if not todo:
                continue
            try:
                session = engine.open(state.adapter, spec, state.adapter_dir)
            except (KeyboardInterrupt, UserError):
                raise
            except Exception as exc:
                for config, _ in todo:
                    self._fail(f"generate/{spec.name}/{config.name}", "generate", exc, model=spec.name, config=config.name)
                continue
            try:
                tok = self._tokenizer(state) if spec.template == "chat" else None
                for config, missing in todo:
                    self._generate_cell(session, state, config, missing, tok, eid)
            finally:
                session.close()
            self._settle_shared(spec, needs, owner)
        self.stats.stage_seconds["generate"] = self.stats.stage_seconds.get("generate", 0) + time.perf_counter() - t0

    def _settle_shared(self, spec: ModelSpec, needs: dict[str, list[str]], owner: dict[str, str]) -> None:
        """A config whose generations were made by another config fails or succeeds with them."""
        for config_name, keys in needs.items():
            if not keys or all(owner.get(k) == config_name for k in keys):
                continue  # nothing missing, or every key was its own (already settled)
            have = self.store.existing_generations(keys)
            cell = f"generate/{spec.name}/{config_name}"
            lacking = [k for k in keys if k not in have]
            if lacking:
                source = owner[lacking[0]]
                why = self._errors.get(f"generate/{spec.name}/{source}", "it failed")
                self._fail(cell, "generate", RuntimeError(f"shares its generations with {source}: {why}"), model=spec.name, config=config_name)
            else:
                self.store.clear_failure(cell)

    def _generate_cell(self, session, state: ModelState, config: SweepConfig, missing, tok, eid) -> None:
        spec = state.spec
        cell = f"generate/{spec.name}/{config.name}"
        by_key = {k: e for e, k in missing}
        requests = [GenRequest(k, data.render_prompt(e, spec.template, tok), config.decoding, self.example_seed(e)) for e, k in missing]
        info = {"model": spec.name, "config": config.name, "decoding": config.decoding.to_dict(), "engine": eid["engine"], "model_key": state.model_key, "template": state.template_id}
        self._note(f"{spec.name} · {config.name}")
        try:
            for batch in session.generate(requests, self.progress):
                self.store.save_generations([(r, info | {"example_id": by_key[r.key].id}) for r in batch])
                self.stats.generated += len(batch)
            self.store.clear_failure(cell)
        except (KeyboardInterrupt, UserError):
            raise
        except Exception as exc:
            self._fail(cell, "generate", exc, model=spec.name, config=config.name)

    # ------------------------------------------------------------------ scoring

    def metric(self, name: str) -> Metric:
        if name not in self._metrics:
            self._metrics[name] = self.plugins.create("metric", name, self.exp.metric_settings[name])
        return self._metrics[name]

    def metric_key(self, name: str) -> str:
        return stable_hash(self.metric(name).identity())

    def score(self) -> None:
        t0 = time.perf_counter()
        self._resolve_adapters_readonly()
        eid = self.engine().identity()
        try:
            for name in self.metric_names():
                metric = self.metric(name)
                mkey = self.metric_key(name)
                self.store.register_metric(mkey, name, metric.identity())
                for spec in self.models():
                    state = self.model_state(spec)
                    for config in self.configs():
                        self._score_cell(metric, mkey, state, config, eid)
        finally:
            for metric in self._metrics.values():
                metric.close()
        self.stats.stage_seconds["score"] = self.stats.stage_seconds.get("score", 0) + time.perf_counter() - t0

    def _score_cell(self, metric: Metric, mkey: str, state: ModelState, config: SweepConfig, eid) -> None:
        cell = f"score/{state.spec.name}/{config.name}/{metric.name}"
        keys = self.cell_keys(state, config, eid)
        gens = self.store.generations([k for _, k in keys])
        if len(gens) < len(keys):
            return  # generation incomplete or failed: nothing to score yet
        have = self.store.scores(mkey, [k for _, k in keys])
        todo = [ScoreInput(k, gens[k]["text"], e.output, e) for e, k in keys if k not in have]
        self.stats.cached_scores += len(keys) - len(todo)
        if not todo:
            self.store.clear_failure(cell)
            return
        self._note(f"{state.spec.name} · {config.name}")
        try:
            scores = metric.score(todo, self.progress)
            if len(scores) != len(todo):
                raise RuntimeError(f"metric '{metric.name}' returned {len(scores)} scores for {len(todo)} inputs")
            self.store.save_scores(mkey, [(i.key, s) for i, s in zip(todo, scores)])
            self.stats.scored += len(todo)
            self.store.clear_failure(cell)
        except (KeyboardInterrupt, UserError):
            raise
        except Exception as exc:
            self._fail(cell, "score", exc, model=state.spec.name, config=config.name, metric=metric.name)

    # ------------------------------------------------------------------ results

    def results(self) -> list[dict[str, Any]]:
        """Per (model, config, metric): value, n, per-example scores — from the store, computing nothing."""
        self._resolve_adapters_readonly()
        eid = self.engine().identity()
        failures = {f["cell"]: f["error"] for f in self.store.failures()}
        ratings = self.store.ratings_by_gen()
        rows: list[dict[str, Any]] = []
        for spec in self.models():
            state = self.model_state(spec)
            for config in self.configs():
                keys = self.cell_keys(state, config, eid) if state.ready and (spec.finetune is None or state.adapter_sha) else []
                gen_error = failures.get(f"generate/{spec.name}/{config.name}") or failures.get(f"train/{spec.name}")
                if not keys and gen_error is None:
                    gen_error = "not fine-tuned yet for the current training input: run `harness run --all` (or `harness train`)"
                for name in self.metric_names():
                    mkey = self.metric_key(name)
                    scores = self.store.scores(mkey, [k for _, k in keys]) if keys else {}
                    complete = bool(keys) and len(scores) == len(keys)
                    per_example = [scores[k] for _, k in keys if k in scores]
                    value = self.metric(name).aggregate(per_example) if complete else None
                    err = failures.get(f"score/{spec.name}/{config.name}/{name}") or gen_error
                    rows.append(
                        {"model": spec.name, "config": config.name, "metric": name, "value": value, "n": len(per_example),
                         "complete": complete, "error": err, "metric_key": mkey,
                         "examples": [(e.id, scores[k]) for e, k in keys if k in scores]}
                    )
                human = [(k, ratings[k]) for _, k in keys if k in ratings]
                rows.append(_human_row(spec.name, config.name, human, [(e.id, k) for e, k in keys]))
        return rows

    def _resolve_adapters_readonly(self) -> None:
        """Look up trained adapters without training (report, export)."""
        train, _ = self.split()
        for spec in self.models():
            state = self.model_state(spec)
            if spec.finetune is None or state.adapter_sha is not None:
                continue
            found = self.store.adapter(self.train_key(state, train))
            if found:
                state.adapter_dir, state.adapter_sha = Path(found["path"]), found["sha256"]
            else:
                state.ready = False

    def save_aggregates(self, rows: Sequence[dict[str, Any]]) -> None:
        self.store.save_aggregates([(r["model"], r["config"], r["metric"], r["value"], r["n"], r.get("metric_key")) for r in rows])

    # ------------------------------------------------------------------ bookkeeping

    def _note(self, message: str) -> None:
        note = getattr(self.progress, "note", None)
        if note is not None:
            note(message)

    def _fail(self, cell: str, stage: str, exc: BaseException, **where: Any) -> None:
        self.stats.failed_cells.append(cell)
        self._errors[cell] = f"{type(exc).__name__}: {exc}"
        self.store.record_failure(cell, stage, f"{type(exc).__name__}: {exc}", traceback.format_exc(), **where)


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


def _human_row(model: str, config: str, human: list[tuple[str, list[tuple[str, float, str]]]], ids: list[tuple[str, str]]) -> dict[str, Any]:
    """Human metric of one cell: per-item mean over annotators, then mean over items, on a 0–1 scale."""
    example_of = {k: e for e, k in ids}
    per_item = []
    for key, ratings in human:
        unit = [to_unit(r, scale) for _, r, scale in ratings]
        per_item.append((example_of[key], ExampleScore(sum(unit) / len(unit))))
    value = sum(s.value for _, s in per_item) / len(per_item) if per_item else None
    return {"model": model, "config": config, "metric": "human", "value": value, "n": len(per_item), "complete": bool(per_item),
            "error": None, "metric_key": None, "examples": per_item}


def run_metadata(exp: Experiment, command: str) -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for pkg in ("llm-decoding-harness", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "sacrebleu", "rouge-score", "bert-score", "vllm", "unsloth", "bitsandbytes"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _ensure(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p
