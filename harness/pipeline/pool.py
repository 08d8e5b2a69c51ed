"""Keep models and metrics loaded across the many small jobs of a pruned search.

A run makes one generation job per model and one scoring job per metric: each opens its engine
session (loads the model) or its metric once. A pruned search evaluates one config a few examples
at a time, so it makes a generation and a scoring job per chunk; without this pool each would load
the model and the metric's own model (BERTScore's encoder, a judge) again.

:class:`PooledPlugins` is the run's :class:`~harness.plugins.Plugins` with a pool behind ``create``:
an engine's ``open`` hands back the session already open for the same engine settings, model and
adapter, and a metric with the same settings is the same instance. Their ``close`` does nothing
until :meth:`PooledPlugins.close` closes everything at the end of the search (also on Ctrl-C).
Jobs that run in this process (the local executor) share the pool; jobs an executor runs elsewhere
build their plugins there, as in any run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..api import stable_hash
from ..plugins import Plugins


def _noop() -> None:
    return None


@dataclass
class PooledPlugins(Plugins):
    sessions: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def wrap(cls, plugins: Plugins) -> PooledPlugins:
        return cls(by_kind=plugins.by_kind, failures=plugins.failures)

    def create(self, kind: str, name: str, settings: dict[str, Any] | None = None) -> Any:
        if kind == "metric":
            key = stable_hash([name, settings or {}])
            if key not in self.metrics:
                metric = super().create(kind, name, settings)
                metric.close = _noop  # closed with the pool
                self.metrics[key] = metric
            return self.metrics[key]
        instance = super().create(kind, name, settings)
        if kind == "engine":
            real_open = instance.open

            def open_pooled(adapter: Any, spec: Any, adapter_dir: Any) -> Any:
                key = stable_hash([name, settings or {}, spec, str(adapter_dir) if adapter_dir else None])
                if key not in self.sessions:
                    session = real_open(adapter, spec, adapter_dir)
                    session.close = _noop  # closed with the pool
                    self.sessions[key] = session
                return self.sessions[key]

            instance.open = open_pooled
        return instance

    def close(self) -> None:
        """Close every pooled session and metric (their own ``close``)."""
        errors = []
        for obj in [*self.sessions.values(), *self.metrics.values()]:
            try:
                type(obj).close(obj)
            except Exception as exc:  # pragma: no cover - best effort; the first error is raised below
                errors.append(exc)
        self.sessions.clear()
        self.metrics.clear()
        if errors:
            raise errors[0]


__all__ = ["PooledPlugins"]
