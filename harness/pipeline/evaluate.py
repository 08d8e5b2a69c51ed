"""Evaluating one config on some test examples, as a sweep cell would be: the real evaluator of a pruned search.

:class:`StoreEvaluator` runs the ordinary pipeline (:class:`~harness.pipeline.runner.Runner`) for one
(model, config) cell restricted to the given test examples: the executor runs the generation and scoring
jobs, the store keeps every generation and score under its usual key (anything stored before is reused),
and the cell is recorded — its examples are those evaluated so far, its aggregate over them — so
`harness report` shows the trial like any config. Models and metrics stay loaded between chunks
(:class:`~harness.pipeline.pool.PooledPlugins`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from ..api import Progress
from ..registry import Experiment, SweepConfig
from ..store import Store
from .runner import Runner, Selection
from .tune import TrialFailed


class StoreEvaluator:
    """Scores configs of ``model`` with ``metric`` through the store, counting the generations it made."""

    def __init__(self, exp: Experiment, plugins: Any, store: Store, executor: Any, progress: Progress, run_id: int | None, model: str, metric: str):
        self.exp = exp
        self.plugins = plugins
        self.store = store
        self.executor = executor
        self.progress = progress
        self.run_id = run_id
        self.model = model
        self.metric = metric
        #: new generations made (cached ones not counted)
        self.generated = 0
        self.cached = 0

    def experiment_with(self, configs: Sequence[SweepConfig]) -> Experiment:
        """The experiment with ``configs`` added to the sweep's (the runner knows configs by name)."""
        names = {c.name for c in self.exp.configs}
        return dataclasses.replace(self.exp, configs=[*self.exp.configs, *[c for c in configs if c.name not in names]])

    def runner(self, configs: Sequence[SweepConfig], example_ids: Sequence[str] | None) -> Runner:
        exp = self.experiment_with(configs)
        selection = Selection([self.model], [c.name for c in configs], [self.metric])
        return Runner(exp, self.plugins, self.store, self.progress, selection, executor=self.executor, run_id=self.run_id, test_ids=example_ids)

    def evaluate(self, config: SweepConfig, example_ids: Sequence[str] | None) -> list[float]:
        """Generate and score ``config`` on ``example_ids`` (None: the whole test split); the per-example scores, NaN where missing."""
        configs = [config]
        probe = self.runner(configs, example_ids)
        against = probe.metric_against(self.metric)
        if against is not None and against != config.name:  # a metric that compares outputs needs the compared config's first
            configs = [self.exp.config(against), config]
        runner = self.runner(configs, example_ids)
        runner.run(("generate", "score"))
        self.generated += runner.stats.generated
        self.cached += runner.stats.cached_generations
        if runner.stats.failed_cells:
            failures = {f["cell"]: f["error"] for f in self.store.failures()}
            cell = runner.stats.failed_cells[0]
            raise TrialFailed(f"{cell}: {failures.get(cell, 'failed')}")
        return [math.nan if s is None or s.missing else float(s.value) for _, s in runner.example_scores(self.metric, self.model, config.name)]


__all__ = ["StoreEvaluator"]
