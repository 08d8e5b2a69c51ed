"""Reading and validating ``registry.toml``, the experiment file.

Validation is complete before anything runs: every key is known, every value has the
right type and range, every plugin and metric exists, every local file is there. The
first problem found raises one :class:`~harness.errors.UserError` naming the file,
the key and what is allowed.

Layout (see the shipped ``registry.toml`` for a commented example)::

    [experiment]  name, output_dir, seed
    [dataset]     source, test_size, train_size, seed, + the source plugin's options
    [engine]      name, + the engine plugin's options
    [[models]]    name, adapter, base_model, template, finetune (bool or table), + adapter options
    [sweep]       decoder, mode, max_new_tokens, seed, include_defaults, [sweep.defaults], [sweep.vary]
    [metrics]     names, + [metrics.NAME] option tables
    [human]       n_per_cell, seed, scale, predictor
    [tune]        metric, trials, sampler, pruner, p_threshold, min_examples, chunk, holdout, finalists, seed,
                  [tune.space] (decoder parameter = [low, high] or {low, high, step, log} or {choices = [...]})
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import REQUIRED, Decoding, FinetuneSpec, ModelSpec, Option
from .errors import UserError, did_you_mean, unknown_name
from .plugins import Plugins

TEMPLATES = ("alpaca", "chat")
#: names that become file or folder names (models' adapter folders, the experiment's {name}): no separators, no ".."
PATH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PACKING = ("none", "pack", "group_by_length")
SWEEP_MODES = ("one-at-a-time", "grid")


@dataclass(frozen=True)
class SweepConfig:
    """One decoding config of the sweep: its study-style name, the requested params and the effective decoding."""

    name: str
    params: dict[str, Any]
    decoding: Decoding


@dataclass(frozen=True)
class SearchParam:
    """One dimension of ``[tune.space]``: a decoder parameter and the values a trial may give it.

    ``kind`` is "int" or "float" (a range from ``low`` to ``high``, both included, in steps of ``step``;
    ``log``: drawn on a log scale, no step) or "categorical" (one of ``choices``).
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def grid(self) -> list[Any] | None:
        """Every value the parameter can take (the grid sampler's axis); None for a continuous (log) range."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.step is None or self.low is None or self.high is None:
            return None
        n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        values = [self.low + i * self.step for i in range(n)]
        return [int(round(v)) for v in values] if self.kind == "int" else [round(v, 10) for v in values]

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one the search can draw (a baseline inside the space is tried first)."""
        if self.kind == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (self.low <= value <= self.high):  # type: ignore[operator]
            return False
        grid = self.grid()
        return grid is None or any(abs(value - g) < 1e-9 for g in grid)


@dataclass(frozen=True)
class TuneSpec:
    """``[tune]``: how `harness tune` searches the decoding space, and how a pruned search (tune, or a sweep with
    ``[sweep] prune = true``) evaluates candidates and confirms the finalists on held-out examples."""

    #: the metric the search optimises (its direction from the metric); default: the first of [metrics] names
    metric: str
    #: trials in the study (over every process working on it)
    trials: int = 20
    sampler: str = "tpe"
    pruner: str = "wilcoxon"
    #: WilcoxonPruner's p_threshold: prune when a one-sided signed-rank test says worse than the best trial at this level
    p_threshold: float = 0.1
    #: examples a trial is scored on before it may be pruned (WilcoxonPruner's n_startup_steps)
    min_examples: int = 4
    #: examples generated and scored between two pruning decisions
    chunk: int = 4
    #: share of the test split set aside before the search, on which the finalists are compared with the baseline
    holdout: float = 0.3
    #: best trials (distinct configs) confirmed on the held-out examples
    finalists: int = 3
    #: seed of the sampler and of the held-out split
    seed: int = 0
    space: tuple[SearchParam, ...] = ()


@dataclass(frozen=True)
class DatasetConfig:
    source: str
    settings: dict[str, Any]
    test_size: int
    train_size: int  # 0 = every record not in the test split
    seed: int


@dataclass(frozen=True)
class Experiment:
    path: Path
    name: str
    output_dir: Path
    seed: int
    dataset: DatasetConfig
    engine: str
    engine_settings: dict[str, Any]
    models: list[ModelSpec]
    decoder: str
    configs: list[SweepConfig]
    sweep_seed: int
    max_new_tokens: int
    metrics: list[str]
    metric_settings: dict[str, dict[str, Any]]
    human: dict[str, Any] = field(default_factory=dict)
    #: every decoder parameter at its sweep default (the decoder's own default where [sweep.defaults] is silent)
    sweep_defaults: dict[str, Any] = field(default_factory=dict)
    executor: str = ""
    executor_settings: dict[str, Any] = field(default_factory=dict)
    #: [tune] (its defaults when the file has none); ``tune.space`` empty: nothing for `harness tune` to search
    tune: TuneSpec | None = None
    #: [sweep] prune: `harness run` evaluates the sweep's configs in chunks, stops clearly worse ones, confirms the finalists
    prune: bool = False

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise UserError(unknown_name("model", name, [m.name for m in self.models]), file=self.path)

    def config(self, name: str) -> SweepConfig:
        for c in self.configs:
            if c.name == name:
                return c
        raise UserError(unknown_name("config", name, [c.name for c in self.configs]), file=self.path)

    def baseline(self) -> str | None:
        """The baseline config: the one whose params are the sweep's defaults, else the first (None: no configs)."""
        return default_baseline([(c.name, c.params) for c in self.configs], self.sweep_defaults)

    def snapshot(self, plugins: Plugins) -> dict[str, Any]:
        """The experiment as JSON, recorded with every run: what reading commands know of it on any machine."""
        from dataclasses import asdict

        metrics = []
        for name in self.metrics:
            cls = plugins.info("metric", name).cls
            metrics.append({"name": name, "label": cls.label or name, "higher_is_better": cls.higher_is_better, "settings": self.metric_settings[name]})
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError:
            text = None
        return {
            "name": self.name,
            "seed": self.seed,
            "registry": str(self.path),
            "registry_text": text,
            "dataset": {"source": self.dataset.source, "settings": self.dataset.settings, "test_size": self.dataset.test_size,
                        "train_size": self.dataset.train_size, "seed": self.dataset.seed},
            "engine": {"name": self.engine, "settings": self.engine_settings},
            "executor": {"name": self.executor, "settings": self.executor_settings},
            "models": [m.name for m in self.models],
            "model_specs": {m.name: {"adapter": m.adapter, "base_model": m.base_model, "template": m.template, "options": m.options,
                                     "finetune": asdict(m.finetune) if m.finetune else None} for m in self.models},
            "decoder": self.decoder,
            "configs": [{"name": c.name, "params": c.params, "decoding": c.decoding.to_dict()} for c in self.configs],
            "sweep_defaults": self.sweep_defaults,
            "sweep_seed": self.sweep_seed,
            "max_new_tokens": self.max_new_tokens,
            "metrics": metrics,
            "human": self.human,
            "tune": asdict(self.tune) if self.tune is not None else None,
            "prune": self.prune,
        }


# --------------------------------------------------------------------------- schemas

EXPERIMENT_KEYS = {
    "name": Option(str, default="experiment", help="a name shown in reports"),
    "output_dir": Option(str, default="runs/{name}", help="where the store and adapters go, relative to this file"),
    "seed": Option(int, default=0, minimum=0, help="master seed"),
}
DATASET_KEYS = {
    "source": Option(str, help="a dataset plugin: synthetic, json, hub, …"),
    "test_size": Option(int, minimum=1, help="examples in the test split"),
    "train_size": Option(int, default=0, minimum=0, help="examples in the train split (0 = the rest)"),
    "seed": Option(int, default=42, minimum=0, help="seed of the split"),
}
ENGINE_KEYS = {"name": Option(str, default=None, nullable=True, help="a generation engine plugin (default: the installed engine that declares itself the default)")}
EXECUTOR_KEYS = {"name": Option(str, default=None, nullable=True, help="an executor plugin (default: the installed executor that declares itself the default)")}
MODEL_KEYS = {
    "name": Option(str, help="the model's name in reports"),
    "adapter": Option(str, help="a model adapter plugin"),
    "base_model": Option(str, help="hub name, local folder, .gguf file, or package:<pkg>/<path>"),
    "template": Option(str, default="alpaca", choices=TEMPLATES, help="prompt template"),
    "finetune": Option((bool, dict), default=False, help="false, true, or a table of LoRA settings"),
}
FINETUNE_KEYS = {
    "r": Option(int, default=16, minimum=1, help="LoRA rank"),
    "alpha": Option(int, default=16, minimum=1, help="LoRA alpha"),
    "dropout": Option(float, default=0.0, minimum=0.0, maximum=1.0),
    "target_modules": Option(list, default=[], items=str, help="module names (empty: the adapter's default)"),
    "max_steps": Option(int, default=0, minimum=0, help="optimizer steps (0: use epochs)"),
    "epochs": Option(float, default=1.0, minimum=0.0),
    "learning_rate": Option(float, default=2e-4, minimum=0.0),
    "batch_size": Option(int, default=8, minimum=1),
    "grad_accum": Option(int, default=1, minimum=1),
    "max_seq_length": Option(int, default=512, minimum=8),
    "warmup_steps": Option(int, default=0, minimum=0),
    "weight_decay": Option(float, default=0.0, minimum=0.0),
    "gradient_checkpointing": Option(bool, default=False),
    "seed": Option(int, default=0, minimum=0),
    "packing": Option(
        str,
        default="none",
        choices=PACKING,
        help="none: padded batches; pack: several examples per row of max_seq_length tokens (batch_size counts rows); group_by_length: batches of similar lengths",
    ),
}
SWEEP_KEYS = {
    "decoder": Option(str, default=None, nullable=True, help="a decoder plugin (default: the installed decoder that declares itself the default)"),
    "mode": Option(str, default="one-at-a-time", choices=SWEEP_MODES),
    "max_new_tokens": Option(int, default=64, minimum=1),
    "seed": Option(int, default=0, minimum=0, help="base of the per-example sampling seeds"),
    "include_defaults": Option(bool, default=False, help="also run the defaults as a config"),
    "defaults": Option(dict, default={}),
    "vary": Option(dict, default={}),
    "prune": Option(bool, default=False, help="generate configs in chunks and stop those clearly worse than the best so far ([tune] settings), then confirm the finalists on held-out examples"),
}
SAMPLERS = ("tpe", "gp", "cmaes", "random", "grid")
PRUNERS = ("wilcoxon", "none")
TUNE_KEYS = {
    "metric": Option(str, default=None, nullable=True, help="the metric to optimise (default: the first of metrics.names)"),
    "trials": Option(int, default=20, minimum=1, help="trials in the study"),
    "sampler": Option(str, default="tpe", choices=SAMPLERS, help="Optuna's sampler"),
    "pruner": Option(str, default="wilcoxon", choices=PRUNERS, help="wilcoxon: Optuna's WilcoxonPruner; none: every trial sees every example"),
    "p_threshold": Option(float, default=0.1, minimum=0.0, maximum=1.0, help="WilcoxonPruner's p_threshold"),
    "min_examples": Option(int, default=4, minimum=1, help="examples scored before a trial may be pruned"),
    "chunk": Option(int, default=4, minimum=1, help="examples generated and scored between pruning decisions"),
    "holdout": Option(float, default=0.3, minimum=0.05, maximum=0.9, help="share of the test split held out for the final comparison"),
    "finalists": Option(int, default=3, minimum=1, help="best trials confirmed on the held-out examples"),
    "seed": Option(int, default=None, nullable=True, minimum=0, help="seed of the sampler and the held-out split (default: experiment.seed)"),
    "space": Option(dict, default={}, help="decoder parameter = [low, high], {low, high, step, log} or {choices = [...]}"),
}
SPACE_KEYS = {
    "low": Option(float, default=None, nullable=True),
    "high": Option(float, default=None, nullable=True),
    "step": Option(float, default=None, nullable=True, help="grid step (default: 1 for integers, 0.01 for numbers)"),
    "log": Option(bool, default=False, help="draw on a log scale (no step)"),
    "choices": Option(list, default=None, nullable=True),
}
#: the step of a number range without one: configs are named by their values, so keep them short
FLOAT_STEP = 0.01
METRICS_KEYS = {"names": Option(list, items=str, help="metric plugins to compute")}
HUMAN_KEYS = {
    "n_per_cell": Option(int, default=30, minimum=1, help="items per (model, config) in the exported sheet"),
    "seed": Option(int, default=0, minimum=0),
    "scale": Option(str, default="auto", choices=("auto", "binary", "likert")),
    "predictor": Option(str, default=None, nullable=True, help="the metric whose scores predict the ratings in Human (PPI) (default: chosen by cross-fitting)"),
}
TOP_LEVEL = ("experiment", "dataset", "engine", "executor", "models", "sweep", "metrics", "human", "tune")


# --------------------------------------------------------------------------- loading


def load_experiment(path: str | Path, plugins: Plugins) -> Experiment:
    """Read and validate ``path``. Raises UserError on the first problem."""
    path = Path(path)
    if not path.is_file():
        raise UserError("file not found; pass the path of an experiment file such as registry.toml", file=path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read the file: {exc.strerror or exc}", file=path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        hint = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise UserError(f"not UTF-8 text{hint}: byte {exc.start} cannot be decoded; save the experiment file as UTF-8", file=path) from None
    try:
        raw = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"not valid TOML: {exc}", file=path) from None
    return _Validator(path, plugins).experiment(raw)


class _Validator:
    def __init__(self, path: Path, plugins: Plugins):
        self.path = path
        self.plugins = plugins

    def fail(self, key: str, message: str) -> UserError:
        return UserError(message, file=self.path, key=key)

    # -- generic

    def table(self, raw: Any, schema: dict[str, Option], key: str, *, extra: dict[str, Option] | None = None) -> dict[str, Any]:
        """Validate one table: known keys only, types, ranges, defaults filled."""
        if not isinstance(raw, dict):
            raise self.fail(key, f"must be a table, got {_type_name(raw)}")
        full = {**schema, **(extra or {})}
        out: dict[str, Any] = {}
        for k in raw:
            if k not in full:
                allowed = ", ".join(sorted(full)) or "none"
                raise self.fail(f"{key}.{k}" if key else k, f"unknown key{did_you_mean(k, full)}; allowed keys: {allowed}")
        for k, opt in full.items():
            sub = f"{key}.{k}" if key else k
            if k in raw:
                out[k] = self.value(raw[k], opt, sub)
            elif opt.default is REQUIRED:
                raise self.fail(sub, f"is required{': ' + opt.help if opt.help else ''}")
            else:
                out[k] = opt.default
        return out

    def value(self, value: Any, opt: Option, key: str) -> Any:
        if value is None and opt.nullable:
            return None
        types = opt.type if isinstance(opt.type, tuple) else (opt.type,)
        if Path in types:
            if not isinstance(value, str):
                raise self.fail(key, f"must be a path string, got {_type_name(value)}")
            p = Path(value).expanduser()
            p = p if p.is_absolute() else (self.path.parent / p)
            if not p.exists():
                raise self.fail(key, f"file not found: {p}")
            return value  # as written: plugins resolve it against the registry's folder, cache keys stay portable
        if not _is_instance(value, types):
            allowed = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
            raise self.fail(key, f"must be {allowed}, got {_type_name(value)} {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, got {value!r}")
        if opt.choices is not None and value not in opt.choices:
            allowed = ", ".join(repr(c) for c in opt.choices)
            hint = did_you_mean(value, [str(c) for c in opt.choices]) if isinstance(value, str) else ""
            raise self.fail(key, f"{value!r} is not allowed{hint}; allowed: {allowed}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if opt.minimum is not None and value < opt.minimum:
                raise self.fail(key, f"must be >= {_num(opt.minimum)}, got {value!r}")
            if opt.maximum is not None and value > opt.maximum:
                raise self.fail(key, f"must be <= {_num(opt.maximum)}, got {value!r}")
        if isinstance(value, list) and opt.items is not None:
            for i, item in enumerate(value):
                if not _is_instance(item, (opt.items,)):
                    raise self.fail(f"{key}[{i}]", f"must be {_TYPE_NAMES.get(opt.items, opt.items.__name__)}, got {_type_name(item)} {item!r}")
        if isinstance(value, float) and float in types:
            return float(value)
        if isinstance(value, int) and not isinstance(value, bool) and float in types and int not in types:
            return float(value)
        return value

    def path_name(self, name: str, key: str) -> None:
        """A name that becomes part of a path: letters, digits, '-', '_' and '.', not starting with a dot."""
        if not PATH_NAME.match(name) or ".." in name:
            raise self.fail(key, f"{name!r} is not allowed: it names files and folders, so use letters, digits, '-', '_' and '.' (not starting with '.', no '..', at most 128 characters)")

    def named_section(self, raw: Any, section: str, schema: dict[str, Option]) -> tuple[str, dict[str, Any]]:
        """A section naming a plugin of the same kind (``name``) plus that plugin's options."""
        if not isinstance(raw, dict):
            raise self.fail(section, f"must be a table, got {_type_name(raw)}")
        name = self.table({k: v for k, v in raw.items() if k == "name"}, schema, section)["name"]
        if name is None:
            name = self.default_plugin(section, f"{section}.name")
        cls = self.plugin(section, name, f"{section}.name")
        return name, self.table({k: v for k, v in raw.items() if k != "name"}, cls.options, section)

    def default_plugin(self, kind: str, key: str) -> str:
        try:
            return self.plugins.default(kind)
        except UserError as exc:
            raise self.fail(key, exc.message) from None

    def plugin(self, kind: str, name: str, key: str):
        return self.plugins.info(kind, name, file=str(self.path), key=key).cls

    # -- sections

    def experiment(self, raw: dict[str, Any]) -> Experiment:
        for k in raw:
            if k not in TOP_LEVEL:
                raise self.fail(k, f"unknown section{did_you_mean(k, TOP_LEVEL)}; allowed: {', '.join(TOP_LEVEL)}")
        for required in ("dataset", "models", "metrics"):
            if required not in raw:
                raise self.fail(required, "section is required")
        exp = self.table(raw.get("experiment", {}), EXPERIMENT_KEYS, "experiment")
        if "{name}" in exp["output_dir"]:
            self.path_name(exp["name"], "experiment.name")
        try:
            output_dir = Path(exp["output_dir"].format(name=exp["name"])).expanduser()
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise self.fail("experiment.output_dir", f"bad placeholder ({exc}); only {{name}} is replaced, write {{{{ and }}}} for literal braces") from None
        if not output_dir.is_absolute():
            output_dir = self.path.parent / output_dir
        if output_dir.exists() and not output_dir.is_dir():
            raise self.fail("experiment.output_dir", f"{output_dir} exists and is not a folder; name a folder for the results")

        dataset = self.dataset(raw["dataset"])
        engine_name, engine_settings = self.named_section(raw.get("engine", {}), "engine", ENGINE_KEYS)
        executor_name, executor_settings = self.named_section(raw.get("executor", {}), "executor", EXECUTOR_KEYS)
        models = self.models(raw["models"])
        decoder, configs, sweep, sweep_defaults = self.sweep(raw.get("sweep", {}))
        metrics, metric_settings = self.metrics(raw["metrics"])
        human = self.table(raw.get("human", {}), HUMAN_KEYS, "human")
        if human["predictor"] is not None and human["predictor"] not in metrics:
            raise self.fail("human.predictor", f"{unknown_name('metric', human['predictor'], metrics)}: the predictor is one of metrics.names")
        tune = self.tune(raw.get("tune", {}), decoder, metrics, exp["seed"])
        return Experiment(
            path=self.path.resolve(),
            name=exp["name"],
            output_dir=output_dir.resolve(),
            seed=exp["seed"],
            dataset=dataset,
            engine=engine_name,
            engine_settings=engine_settings,
            models=models,
            decoder=decoder,
            configs=configs,
            sweep_seed=sweep["seed"],
            max_new_tokens=sweep["max_new_tokens"],
            metrics=metrics,
            metric_settings=metric_settings,
            human=human,
            sweep_defaults=sweep_defaults,
            executor=executor_name,
            executor_settings=executor_settings,
            tune=tune,
            prune=sweep["prune"],
        )

    def dataset(self, raw: Any) -> DatasetConfig:
        if not isinstance(raw, dict):
            raise self.fail("dataset", f"must be a table, got {_type_name(raw)}")
        if "source" not in raw:
            raise self.fail("dataset.source", f"is required; allowed: {', '.join(self.plugins.names('dataset'))}")
        source = self.value(raw["source"], DATASET_KEYS["source"], "dataset.source")
        cls = self.plugin("dataset", source, "dataset.source")
        values = self.table(raw, DATASET_KEYS, "dataset", extra=cls.options)
        settings = {k: values[k] for k in cls.options}
        return DatasetConfig(source, settings, values["test_size"], values["train_size"], values["seed"])

    def models(self, raw: Any) -> list[ModelSpec]:
        if not isinstance(raw, list) or not raw:
            raise self.fail("models", "must be a non-empty array of tables ([[models]])")
        specs: list[ModelSpec] = []
        seen: set[str] = set()
        for i, entry in enumerate(raw):
            key = f"models[{i}]"
            if not isinstance(entry, dict):
                raise self.fail(key, f"must be a table, got {_type_name(entry)}")
            if "adapter" not in entry:
                raise self.fail(f"{key}.adapter", f"is required; allowed: {', '.join(self.plugins.names('model'))}")
            adapter = self.value(entry["adapter"], MODEL_KEYS["adapter"], f"{key}.adapter")
            cls = self.plugin("model", adapter, f"{key}.adapter")
            values = self.table(entry, MODEL_KEYS, key, extra=cls.options)
            self.path_name(values["name"], f"{key}.name")
            if values["name"] in seen:
                raise self.fail(f"{key}.name", f"duplicate model name '{values['name']}'; model names must be unique")
            seen.add(values["name"])
            ft = values["finetune"]
            finetune = None
            if ft is True:
                finetune = FinetuneSpec()
            elif isinstance(ft, dict):
                ftv = self.table(ft, FINETUNE_KEYS, f"{key}.finetune")
                ftv["target_modules"] = tuple(ftv["target_modules"])
                finetune = FinetuneSpec(**ftv)
            base = values["base_model"]
            _check_local_model(base, self.path.parent, lambda msg: self.fail(f"{key}.base_model", msg))
            specs.append(
                ModelSpec(
                    name=values["name"],
                    adapter=adapter,
                    base_model=base,
                    finetune=finetune,
                    template=values["template"],
                    options={k: values[k] for k in cls.options},
                    base_dir=self.path.parent.resolve(),
                )
            )
        return specs

    def sweep(self, raw: Any):
        values = self.table(raw, SWEEP_KEYS, "sweep")  # raw is {} when [sweep] is absent; `sweep = 0` must fail
        if values["decoder"] is None:
            values["decoder"] = self.default_plugin("decoder", "sweep.decoder")
        cls = self.plugin("decoder", values["decoder"], "sweep.decoder")
        decoder = cls({})
        params: dict[str, Option] = cls.params
        defaults = self.table(values["defaults"], params, "sweep.defaults")
        vary_raw = values["vary"]
        vary: dict[str, list[Any]] = {}
        for k, vals in vary_raw.items():
            if k not in params:
                raise self.fail(f"sweep.vary.{k}", f"unknown parameter{did_you_mean(k, params)}; allowed: {', '.join(params)}")
            if not isinstance(vals, list) or not vals:
                raise self.fail(f"sweep.vary.{k}", f"must be a non-empty list of values, got {_type_name(vals)}")
            vary[k] = [self.value(v, params[k], f"sweep.vary.{k}[{j}]") for j, v in enumerate(vals)]

        combos: list[dict[str, Any]] = []
        if values["include_defaults"] or not vary:
            combos.append(dict(defaults))
        if values["mode"] == "grid" and vary:
            keys = list(vary)
            for prod in itertools.product(*(vary[k] for k in keys)):
                combos.append({**defaults, **dict(zip(keys, prod))})
        else:
            for k, vals in vary.items():
                for v in vals:
                    combos.append({**defaults, k: v})
        configs: list[SweepConfig] = []
        names: set[str] = set()
        for params_ in combos:
            name = decoder.config_name(params_)
            if name in names:
                continue
            names.add(name)
            try:
                decoding = decoder.resolve(params_, values["max_new_tokens"])
            except UserError as exc:
                raise self.fail(f"sweep ({name})", exc.message) from None
            configs.append(SweepConfig(name, params_, decoding))
        return values["decoder"], configs, values, dict(defaults)

    def metrics(self, raw: Any) -> tuple[list[str], dict[str, dict[str, Any]]]:
        if not isinstance(raw, dict):
            raise self.fail("metrics", f"must be a table, got {_type_name(raw)}")
        if "names" not in raw:
            raise self.fail("metrics.names", f"is required; allowed: {', '.join(self.plugins.names('metric'))}")
        names = self.value(raw["names"], METRICS_KEYS["names"], "metrics.names")
        if not names:
            raise self.fail("metrics.names", "must name at least one metric")
        settings: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(names):
            if name in settings:
                raise self.fail(f"metrics.names[{i}]", f"'{name}' is listed twice")
            cls = self.plugin("metric", name, f"metrics.names[{i}]")
            settings[name] = self.table(raw.get(name, {}), cls.options, f"metrics.{name}")
        for k in raw:
            if k != "names" and k not in settings:
                raise self.fail(f"metrics.{k}", f"options for a metric not listed in metrics.names{did_you_mean(k, names)}; listed: {', '.join(names)}")
        return names, settings


    def tune(self, raw: Any, decoder: str, metrics: list[str], seed: int) -> TuneSpec:
        values = self.table(raw, TUNE_KEYS, "tune")
        metric = values["metric"]
        if metric is None:
            metric = metrics[0]
        elif metric not in metrics:
            raise self.fail("tune.metric", f"{unknown_name('metric', metric, metrics)}; the tuned metric must be one of metrics.names")
        params: dict[str, Option] = self.plugin("decoder", decoder, "sweep.decoder").params
        space = []
        for name, spec in values["space"].items():
            key = f"tune.space.{name}"
            if name not in params:
                raise self.fail(key, f"unknown parameter{did_you_mean(name, params)}; allowed: {', '.join(params)}")
            space.append(self.search_param(name, spec, params[name], key))
        return TuneSpec(
            metric=metric, trials=values["trials"], sampler=values["sampler"], pruner=values["pruner"], p_threshold=values["p_threshold"],
            min_examples=values["min_examples"], chunk=values["chunk"], holdout=values["holdout"], finalists=values["finalists"],
            seed=seed if values["seed"] is None else values["seed"], space=tuple(space),
        )

    def search_param(self, name: str, spec: Any, opt: Option, key: str) -> SearchParam:
        types = opt.type if isinstance(opt.type, tuple) else (opt.type,)
        numeric = int in types or float in types
        if isinstance(spec, list):
            if numeric and len(spec) == 2 and all(_is_instance(v, (float,)) for v in spec):
                spec = {"low": spec[0], "high": spec[1]}
            else:
                what = "[low, high] (a range), {low, high, step, log} or {choices = [...]}" if numeric else "{choices = [...]}"
                raise self.fail(key, f"must be {what}, got {spec!r}")
        elif not isinstance(spec, dict):
            raise self.fail(key, f"must be [low, high] (a range) or a table {{low, high, step, log}} / {{choices = [...]}}, got {_type_name(spec)}")
        t = self.table(spec, SPACE_KEYS, key)
        if t["choices"] is not None:
            extra = [k for k in ("low", "high", "step") if t[k] is not None] + (["log"] if t["log"] else [])
            if extra:
                raise self.fail(f"{key}.{extra[0]}", "choices and a range exclude each other; give one")
            if not t["choices"]:
                raise self.fail(f"{key}.choices", "must list at least one value")
            choices = tuple(self.value(v, opt, f"{key}.choices[{i}]") for i, v in enumerate(t["choices"]))
            if len(set(map(repr, choices))) != len(choices):
                raise self.fail(f"{key}.choices", "lists a value twice")
            return SearchParam(name, "categorical", choices=choices)
        if not numeric:
            raise self.fail(key, f"{name} is not a number: give its values as {{choices = [...]}}")
        if t["low"] is None or t["high"] is None:
            raise self.fail(key, "needs both low and high (or choices)")
        kind = "int" if int in types and float not in types else "float"
        low, high = (self.value(int(v) if kind == "int" and float(v).is_integer() else v, opt, f"{key}.{b}") for b, v in (("low", t["low"]), ("high", t["high"])))
        if kind == "int" and not (isinstance(low, int) and isinstance(high, int)):
            raise self.fail(key, f"{name} is an integer: low and high must be integers, got {t['low']!r}, {t['high']!r}")
        if not low < high:
            raise self.fail(key, f"low must be below high, got [{low!r}, {high!r}] (a single value: leave the parameter out and set it in [sweep.defaults])")
        step = t["step"]
        if t["log"]:
            if step is not None:
                raise self.fail(f"{key}.step", "a log-scale range has no step")
            if low <= 0:
                raise self.fail(f"{key}.low", f"a log-scale range needs low > 0, got {low!r}")
        else:
            if step is None:
                step = 1 if kind == "int" else FLOAT_STEP
            if step <= 0 or (kind == "int" and not float(step).is_integer()):
                raise self.fail(f"{key}.step", f"must be a positive {'integer' if kind == 'int' else 'number'}, got {step!r}")
            step = int(step) if kind == "int" else float(step)
        return SearchParam(name, kind, low, high, step, t["log"])


def config_with_defaults(configs: Sequence[tuple[str, Mapping[str, Any]]], defaults: Mapping[str, Any] | None) -> str | None:
    """The first config whose params equal the sweep's ``defaults`` (None: none does, or there are no defaults)."""
    if defaults:
        for name, params in configs:
            if all(k in params and params[k] == v for k, v in defaults.items()):
                return name
    return None


def default_baseline(configs: Sequence[tuple[str, Mapping[str, Any]]], defaults: Mapping[str, Any] | None) -> str | None:
    """The config every other is compared with by default: the sweep's defaults when they are a config, else the first."""
    return config_with_defaults(configs, defaults) or (configs[0][0] if configs else None)


def _check_local_model(ref: str, base_dir: Path, fail) -> None:
    """A base_model that looks like a local path must exist (hub names are checked when loaded)."""
    if ref.startswith("package:"):
        return
    looks_local = ref.startswith((".", "/", "~")) or ref.endswith(".gguf") or ref.count("/") > 1
    if looks_local:
        p = Path(ref).expanduser()
        p = p if p.is_absolute() else base_dir / p
        if not p.exists():
            raise fail(f"file not found: {p}; use a hub name (org/model), a local folder or .gguf file, or package:<pkg>/<path>")


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list", dict: "a table"}


def _is_instance(value: Any, types: tuple[type, ...]) -> bool:
    for t in types:
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if t not in (int, float) and isinstance(value, t):
            return True
    return False


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


__all__ = ["Experiment", "SweepConfig", "DatasetConfig", "TuneSpec", "SearchParam", "load_experiment", "default_baseline", "config_with_defaults"]
