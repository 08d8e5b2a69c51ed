"""examples/harness-plugin-example, installed as its own package, is found through its entry point.

Install it first (CI does):  pip install -e examples/harness-plugin-example
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json

import pytest
from click.testing import CliRunner

import fakes
import harness.cli
from harness.api import Example, NullProgress, ScoreInput
from harness.plugins import build_plugins
from harness.registry import load_experiment
from harness.pipeline.runner import Runner
from harness.report.results import Results
from harness.store import Store

PACKAGE = "harness-plugin-example"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("harness_plugin_example") is None,
    reason="harness_plugin_example is not installed; run: pip install -e examples/harness-plugin-example",
)


def test_it_is_an_installed_distribution_with_an_entry_point() -> None:
    dist = md.distribution(PACKAGE)
    eps = [ep for ep in dist.entry_points if ep.group == "harness.plugins"]
    assert [(ep.name, ep.value) for ep in eps] == [("exact_match", "harness_plugin_example.exact_match")]
    assert any(req.startswith("llm-decoding-harness") for req in dist.requires or [])


def test_cli_lists_it() -> None:
    result = CliRunner().invoke(harness.cli.main, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)
    (item,) = [i for i in items if i["name"] == "exact_match"]
    assert item["kind"] == "metric"
    assert item["package"] == PACKAGE
    assert item["version"] == md.version(PACKAGE)
    assert item["source"] == "harness_plugin_example.exact_match"
    assert not [i for i in items if i["kind"] == "failed"]


def test_build_plugins_finds_it_and_it_scores() -> None:
    plugins = build_plugins()
    info = plugins.info("metric", "exact_match")
    assert info.package == PACKAGE
    metric = plugins.create("metric", "exact_match", {})
    ex = Example.make("Capital of France?", "", "Paris.")
    inputs = [
        ScoreInput("a", "paris", ex.output, ex),
        ScoreInput("b", "  PARIS!! ", ex.output, ex),
        ScoreInput("c", "Paris, France", ex.output, ex),
        ScoreInput("d", "", ex.output, ex),
    ]
    scores = metric.score(inputs, NullProgress())
    assert [s.value for s in scores] == [1.0, 1.0, 0.0, 0.0]
    assert metric.aggregate(scores) == 0.5


def test_a_registry_using_it_validates_and_runs(tmp_path) -> None:
    # entry points (the built-ins and the example) plus the fakes, registered directly
    plugins = build_plugins(extra=[fakes])
    assert not plugins.failures, plugins.failures
    fakes.reset()
    registry = fakes.write_registry(tmp_path / "registry.toml", metrics=["exact_match", "fake-len"], models=[fakes.DEFAULT_MODELS[0]])
    exp = load_experiment(registry, plugins)
    assert exp.metrics == ["exact_match", "fake-len"]
    assert exp.metric_settings["exact_match"] == {}

    store = Store(exp.output_dir)
    try:
        store.start_run("test", {"experiment_snapshot": exp.snapshot(plugins)})
        Runner(exp, plugins, store, executor=plugins.create("executor", "local")).run(("split", "train", "generate", "score"))
        rows = [v for v in Results.load(store).values if v.metric == "exact_match"]
    finally:
        store.close()
    assert len(rows) == len(fakes.STUDY_CONFIGS)
    assert all(r.complete and r.n == 8 and 0.0 <= r.value <= 1.0 for r in rows)


def test_options_for_it_are_validated(tmp_path) -> None:
    from harness.errors import UserError

    plugins = build_plugins(extra=[fakes])
    registry = fakes.write_registry(tmp_path / "registry.toml", metrics=["exact_match"], metric_settings={"exact_match": {"lowercase": False}})
    with pytest.raises(UserError, match=r"metrics\.exact_match\.lowercase: unknown key"):
        load_experiment(registry, plugins)
