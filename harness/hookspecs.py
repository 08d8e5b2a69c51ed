"""The hooks a harness plugin implements. Read each docstring as a contract.

A plugin module implements one or more of these with ``@harness.hookimpl`` and is
listed under the ``harness.plugins`` entry-point group of its package::

    [project.entry-points."harness.plugins"]
    my_metric = "my_package.my_metric"

Every hook receives a ``register`` callback and calls it once per plugin class it
provides. ``register`` checks the class at the door (right base class, a name, valid
option declarations) and raises ``TypeError`` otherwise; the plugin manager reports
that as a failed plugin without stopping the others. Registration must be cheap: no
model loads, no heavy imports.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("harness")


@hookspec
def harness_register_models(register: Callable[[type], None]) -> None:
    """Register :class:`harness.api.ModelAdapter` subclasses.

    Called once when the plugin manager is built. A model adapter loads and fine-tunes
    a family of causal LMs; ``[[models]] adapter = NAME`` in registry.toml selects it.
    """


@hookspec
def harness_register_decoders(register: Callable[[type], None]) -> None:
    """Register :class:`harness.api.Decoder` subclasses.

    A decoder turns the swept parameters of one config into the effective decoding the
    engine applies; ``[sweep] decoder = NAME`` selects it.
    """


@hookspec
def harness_register_metrics(register: Callable[[type], None]) -> None:
    """Register :class:`harness.api.Metric` subclasses.

    ``[metrics] names = [...]`` selects them; ``[metrics.NAME]`` holds their options.
    """


@hookspec
def harness_register_engines(register: Callable[[type], None]) -> None:
    """Register :class:`harness.api.Engine` subclasses (``[engine] name = NAME``)."""


@hookspec
def harness_register_datasets(register: Callable[[type], None]) -> None:
    """Register :class:`harness.api.DatasetSource` subclasses (``[dataset] source = NAME``)."""


@hookspec
def harness_register_reporters(register: Callable[[type], None]) -> None:
    """Register :class:`harness.api.Reporter` subclasses (``harness report --format NAME``)."""


@hookspec
def harness_register_rating_formats(register: Callable[[type], None]) -> None:
    """Register :class:`harness.api.RatingFormat` subclasses (``harness human export/import --format NAME``).

    A rating format exports the blinded items of a run for annotators and reads their
    ratings back; the store keeps which model and config each item stands for.
    """


@hookspec
def harness_register_executors(register: Callable[[type], None]) -> None:
    """Register :class:`harness.api.Executor` subclasses (``[executor] name = NAME``).

    An executor runs the jobs a run is made of (fine-tunes, generation, scoring): in
    this process, or spread over the GPUs of a node or a cluster.
    """
