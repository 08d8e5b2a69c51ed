"""What a run recorded, as typed values: the one way reporting code reads a store.

:meth:`Results.load` reads the records a run wrote beside its results (see
:mod:`harness.store`): the experiment as the run saw it, each (model, config) cell's
generation keys, decoding, engine and model identity, each metric's identity and the
aggregate the run computed, the per-example scores, the human ratings and the failures.
It needs only the core install: no model, engine or metric plugin is built, no cache key
is recomputed, and nothing is written. A store copied to another machine reads the same.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..api import ExampleScore
from ..errors import UserError
from ..store import Store, score_ref
from .pairwise import PairOutcome

HUMAN = "human"


@dataclass(frozen=True)
class MetricInfo:
    """A metric as the run recorded it."""

    name: str
    label: str
    higher_is_better: bool
    key: str | None  # the metric key of the latest scores (None: never scored)
    identity: dict[str, Any] = field(default_factory=dict)
    aggregation: str = "mean"  # "mean", "corpus" or "custom" (see harness.api.Metric.aggregation)


@dataclass(frozen=True)
class ConfigInfo:
    name: str
    params: dict[str, Any]
    decoding: dict[str, Any]


@dataclass(frozen=True)
class ExperimentInfo:
    """The experiment as the latest run recorded it (its registry, validated)."""

    name: str
    seed: int
    models: tuple[str, ...]
    configs: tuple[ConfigInfo, ...]
    sweep_defaults: dict[str, Any]
    metrics: tuple[str, ...]
    human: dict[str, Any]
    snapshot: dict[str, Any]

    def config(self, name: str) -> ConfigInfo | None:
        for c in self.configs:
            if c.name == name:
                return c
        return None


@dataclass(frozen=True)
class CellResult:
    """One metric (or ``human``) of one (model, config) cell.

    ``value`` is what the run recorded (the metric's own aggregate, e.g. corpus BLEU);
    ``examples`` the per-example scores behind it, in split order. ``error`` says why a
    cell has no value (a failure, or work that has not been done).
    """

    model: str
    config: str
    metric: str
    value: float | None
    n: int
    examples: tuple[tuple[str, ExampleScore], ...] = ()
    error: str | None = None  # the cell failed
    metric_key: str | None = None
    missing: str | None = None  # why there is no value, when nothing failed
    #: the config each output was compared with (a metric that compares outputs, e.g. a pairwise judge)
    against: str | None = None
    #: examples that could not be scored (their scores are NaN in ``examples``, not counted in ``n``)
    n_missing: int = 0

    @property
    def complete(self) -> bool:
        return self.value is not None


@dataclass(frozen=True)
class HumanRating:
    """One rating, on its own scale (0/1 binary, 1-5 Likert), attributed to a cell whose generation it rated."""

    model: str
    config: str
    item: str  # the rated generation's key
    annotator: str
    rating: float
    scale: str


@dataclass(frozen=True)
class Failure:
    cell: str
    stage: str
    model: str | None
    config: str | None
    metric: str | None
    error: str


@dataclass(frozen=True)
class CellRecord:
    """How a (model, config) cell was generated."""

    model: str
    config: str
    params: dict[str, Any]
    decoding: dict[str, Any]
    engine: dict[str, Any]
    model_info: dict[str, Any]
    keys: tuple[tuple[str, str], ...]  # (example id, gen key)
    generated: int  # how many of the keys have a stored generation
    split_key: str = ""


@dataclass(frozen=True)
class Results:
    """Everything a report reads, for the selected models, configs and metrics."""

    experiment: ExperimentInfo
    models: tuple[str, ...]
    configs: tuple[ConfigInfo, ...]
    metrics: tuple[MetricInfo, ...]
    cells: tuple[CellRecord, ...]
    values: tuple[CellResult, ...]  # one per (model, config, metric), plus one per (model, config) for human
    ratings: tuple[HumanRating, ...]
    failures: tuple[Failure, ...]
    runs: tuple[dict[str, Any], ...]
    store_path: str
    #: pairwise judgments of current generations, as shares of the win for ``config_a``
    pairs: tuple[PairOutcome, ...] = ()
    #: (model, example id, configs): configs of the model whose outputs for the example are the same text (groups of 2+)
    same_outputs: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    @property
    def metric_names(self) -> list[str]:
        return [m.name for m in self.metrics]

    @property
    def has_human(self) -> bool:
        return any(v.metric == HUMAN and v.value is not None for v in self.values) or bool(self.pairs)

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls,
        store: Store,
        *,
        models: Sequence[str] | None = None,
        configs: Sequence[str] | None = None,
        metrics: Sequence[str] | None = None,
    ) -> Results:
        """Read the records of ``store`` (only the selected models, configs and metrics)."""
        runs = tuple(store.runs())
        experiment = _experiment(runs, store)
        recorded_models = [r[0] for r in store.db.execute("SELECT DISTINCT model FROM cells ORDER BY model")]
        model_order = list(dict.fromkeys([*experiment.models, *recorded_models]))
        _check_selection("model", models, model_order, "--model")
        _check_selection("config", configs, [c.name for c in experiment.configs], "--config")
        _check_selection("metric", metrics, list(experiment.metrics), "--metric")
        chosen_models = tuple(m for m in model_order if models is None or m in models)
        chosen_configs = tuple(c for c in experiment.configs if configs is None or c.name in configs)
        chosen_metrics = [m for m in experiment.metrics if metrics is None or m in metrics]

        identities = store.metric_identities()
        failures = tuple(Failure(**f) for f in store.failures())
        fail_of = {f.cell: f.error for f in failures}
        examples_of_split: dict[str, dict[str, Any]] = {}
        labels = {m["name"]: m for m in experiment.snapshot.get("metrics", [])}

        cells: list[CellRecord] = []
        values: list[CellResult] = []
        gen_cells: dict[str, list[tuple[str, str, str]]] = {}  # gen key -> [(model, config, example id)]
        latest_key: dict[str, str] = {}
        for model in chosen_models:
            for config in chosen_configs:
                row = store.db.execute(
                    "SELECT split_key, params, decoding, engine, model_info FROM cells WHERE model=? AND config=?", (model, config.name)
                ).fetchone()
                if row is None:
                    failed = fail_of.get(f"train/{model}") or fail_of.get(f"generate/{model}/{config.name}")
                    for name in chosen_metrics:
                        error = _why(fail_of, model, config.name, name) or failed
                        values.append(CellResult(model, config.name, name, None, 0, error=error, missing=None if error else "not run yet"))
                    values.append(CellResult(model, config.name, HUMAN, None, 0))
                    continue
                split_key, params, decoding, engine, model_info = row
                keys = tuple(store.cell_keys(model, config.name))
                have = store.existing_generations(k for _, k in keys)
                cells.append(
                    CellRecord(model, config.name, json.loads(params), json.loads(decoding), json.loads(engine), json.loads(model_info), keys, len(have), split_key)
                )
                for e, k in keys:
                    gen_cells.setdefault(k, []).append((model, config.name, e))
                if split_key not in examples_of_split:
                    examples_of_split[split_key] = store.test_examples(split_key)
                gen_error = fail_of.get(f"generate/{model}/{config.name}") or fail_of.get(f"train/{model}")
                incomplete = None
                if len(have) < len({k for _, k in keys}):
                    incomplete = f"generation incomplete: {len(have)} of {len(keys)} examples generated; run again to continue"
                for name in chosen_metrics:
                    rec = store.db.execute(
                        "SELECT metric_key, split_key, value, n, against, missing FROM cell_metrics WHERE model=? AND config=? AND metric=?",
                        (model, config.name, name),
                    ).fetchone()
                    score_error = fail_of.get(f"score/{model}/{config.name}/{name}")
                    if rec is None:
                        error = score_error or gen_error
                        why = None if error else (incomplete or "not scored yet: run `harness run --all` (or `harness score`)")
                        values.append(CellResult(model, config.name, name, None, 0, error=error, missing=why))
                        continue
                    mkey, msplit, value, n, against, n_missing = rec
                    latest_key.setdefault(name, mkey)
                    refs = examples_of_split.setdefault(msplit, store.test_examples(msplit))
                    others = dict(store.cell_keys(model, against)) if against else None
                    ref_of = {
                        e: score_ref(refs[e].reference_sha, others.get(e) if others is not None else None)
                        for e, _ in keys
                        if e in refs and (others is None or e in others)
                    }
                    got = store.scores(mkey, [(k, ref_of[e]) for e, k in keys if e in ref_of])
                    per = tuple((e, got[(k, ref_of[e])]) for e, k in keys if e in ref_of and (k, ref_of[e]) in got)
                    undefined = None if value is not None else (
                        f"no example could be scored ({n_missing} missing)" if n_missing and not n else "the metric's aggregate is undefined for these examples"
                    )
                    values.append(CellResult(
                        model, config.name, name, None if value is None else float(value), int(n), per, score_error, mkey, undefined,
                        against, int(n_missing or 0),
                    ))
        # the human column: every rating of a generation counts for every cell that produced it
        ratings: list[HumanRating] = []
        per_cell: dict[tuple[str, str], dict[str, list[tuple[float, str]]]] = {}
        for gen_key, rated in store.ratings_by_gen().items():
            for model, config, example_id in gen_cells.get(gen_key, []):
                for annotator, rating, scale in rated:
                    ratings.append(HumanRating(model, config, gen_key, annotator, rating, scale))
                    per_cell.setdefault((model, config), {}).setdefault(example_id, []).append((rating, scale))
        for model in chosen_models:
            for config in chosen_configs:
                if any(v.model == model and v.config == config.name and v.metric == HUMAN for v in values):
                    continue
                items = per_cell.get((model, config.name), {})
                per = tuple((e, ExampleScore(sum(_unit(r, s) for r, s in rs) / len(rs))) for e, rs in items.items())
                value = sum(s.value for _, s in per) / len(per) if per else None
                values.append(CellResult(model, config.name, HUMAN, value, len(per), per))

        pairs = []
        keys_of = {(c.model, c.config): {k for _, k in c.keys} for c in cells}
        chosen_names = {c.name for c in chosen_configs}
        for item, annotator, shown in store.pair_ratings():
            model, a, b = item["model"], item["config"], item["config_b"]
            if model not in chosen_models or a not in chosen_names or b not in chosen_names:
                continue
            if item["gen_key"] not in keys_of.get((model, a), ()) or item["gen_key_b"] not in keys_of.get((model, b), ()):
                continue  # a judgment of generations the cells no longer stand for
            value = shown if item["a_on_left"] else 1.0 - shown
            pairs.append(PairOutcome(model, a, b, item["example_id"], annotator, value))

        metric_infos = []
        for name in chosen_metrics:
            key = latest_key.get(name)
            ident = identities.get(key, {}) if key else {}
            snap = labels.get(name, {})
            metric_infos.append(
                MetricInfo(
                    name,
                    ident.get("label") or snap.get("label") or name,
                    bool(ident.get("higher_is_better", snap.get("higher_is_better", True))),
                    key,
                    ident.get("identity", {}),
                    ident.get("aggregation", "mean"),
                )
            )
        return cls(
            experiment=experiment,
            models=chosen_models,
            configs=chosen_configs,
            metrics=tuple(metric_infos),
            cells=tuple(cells),
            values=tuple(values),
            ratings=tuple(ratings),
            failures=tuple(f for f in failures if f.model is None or f.model in chosen_models),
            runs=runs,
            store_path=str(store.path),
            pairs=tuple(pairs),
            same_outputs=_same_outputs(store, chosen_models, {c.name for c in chosen_configs}),
        )


def _same_outputs(store: Store, models: Sequence[str], configs: set[str]) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """Per model and example, the configs whose generations are the same text (seeded samplers share their draws)."""
    out = []
    rows = store.db.execute(
        "SELECT ce.model, ce.example_id, group_concat(ce.config, char(31)) FROM cell_examples ce JOIN generations g ON g.gen_key = ce.gen_key "
        "GROUP BY ce.model, ce.example_id, g.text HAVING COUNT(*) > 1"
    )
    chosen = set(models)
    for model, example_id, joined in rows:
        same = tuple(sorted(c for c in joined.split("\x1f") if c in configs))
        if model in chosen and len(same) > 1:
            out.append((model, example_id, same))
    return tuple(sorted(out))


def _why(fail_of: dict[str, str], model: str, config: str, metric: str) -> str | None:
    return fail_of.get(f"score/{model}/{config}/{metric}")


def _unit(rating: float, scale: str) -> float:
    """A rating on 0-1, higher is better: binary and pairwise as they are, Likert (r - 1) / 4."""
    return (rating - 1.0) / 4.0 if scale == "likert" else rating


def _check_selection(kind: str, chosen: Sequence[str] | None, known: Sequence[str], key: str) -> None:
    from ..errors import unknown_name

    for name in chosen or []:
        if name not in known:
            raise UserError(unknown_name(kind, name, known), key=key)


def _experiment(runs: Sequence[dict[str, Any]], store: Store) -> ExperimentInfo:
    for run in reversed(runs):
        snap = (run.get("metadata") or {}).get("experiment_snapshot")
        if snap:
            configs = list(snap["configs"])
            # the trials of the latest search (harness tune) stay configs of their own after later runs of the sweep
            searched = next((r["metadata"]["experiment_snapshot"]["configs"] for r in reversed(runs)
                             if (r.get("metadata") or {}).get("tuning") and (r["metadata"].get("experiment_snapshot") or {}).get("name") == snap["name"]), [])
            names = {c["name"] for c in configs}
            configs += [c for c in searched if c["name"] not in names]
            return ExperimentInfo(
                name=snap["name"],
                seed=int(snap.get("seed", 0)),
                models=tuple(snap["models"]),
                configs=tuple(ConfigInfo(c["name"], dict(c["params"]), dict(c.get("decoding") or {})) for c in configs),
                sweep_defaults=dict(snap.get("sweep_defaults") or {}),
                metrics=tuple(m["name"] for m in snap["metrics"]),
                human=dict(snap.get("human") or {}),
                snapshot=snap,
            )
    raise UserError("holds no recorded run yet; run `harness run --all` first", file=store.path)


__all__ = ["Results", "CellResult", "CellRecord", "MetricInfo", "ConfigInfo", "ExperimentInfo", "HumanRating", "Failure", "HUMAN"]
