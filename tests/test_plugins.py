"""The plugin manager (harness.plugins): registration, failure isolation, lookups, ``harness plugins``."""

from __future__ import annotations

import importlib.metadata as md
import json
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import fakes
import harness.cli
import harness.plugins
from harness.errors import UserError
from harness.plugins import ENTRY_POINT_GROUP, KINDS, build_plugins

GOOD_MODULE = '''
from harness import hookimpl
from harness.api import Metric, ExampleScore

class GoodMetric(Metric):
    name = "good-metric"
    def score(self, inputs, progress):
        return [ExampleScore(1.0) for _ in inputs]

@hookimpl
def harness_register_metrics(register):
    register(GoodMetric)
'''


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> str:
    """Write ``name``.py into tmp_path (on sys.path) and forget any cached import of it."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def _entry_points(monkeypatch: pytest.MonkeyPatch, eps: dict[str, str]) -> None:
    """Make harness.plugins see exactly these entry points (name -> module)."""
    fake = [md.EntryPoint(name=n, value=v, group=ENTRY_POINT_GROUP) for n, v in eps.items()]

    def entry_points(**kwargs):
        assert kwargs == {"group": ENTRY_POINT_GROUP}
        return fake

    monkeypatch.setattr(harness.plugins.md, "entry_points", entry_points)


def _inline_module(name: str, **attrs):
    import types

    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


# --------------------------------------------------------------------------- registration


def test_extra_registers_every_kind_directly(fake_plugins) -> None:
    assert fake_plugins.names("model") == ["fake-model"]
    assert fake_plugins.names("engine") == ["fake-engine"]
    assert fake_plugins.names("metric") == ["fake-len", "fake-overlap", "fake-prefer"]
    assert "fake-data" in fake_plugins.names("dataset")
    assert fake_plugins.names("decoder") == ["standard"]
    assert fake_plugins.names("reporter") == ["csv", "json", "markdown", "table"]
    assert fake_plugins.names("rating_format") == ["csv", "label-studio"]
    assert fake_plugins.names("executor") == ["local"]
    info = fake_plugins.info("metric", "fake-len")
    assert info.cls is fakes.FakeLenMetric
    assert info.package == "(registered directly)" and info.source == "fakes"
    metric = fake_plugins.create("metric", "fake-len", {"cap": 0.5})
    # the core fills every option's default once: plugins read settings, never repeat defaults
    assert isinstance(metric, fakes.FakeLenMetric) and metric.settings == {"cap": 0.5, "mode": "length"}


def test_each_kind_has_one_default_and_the_core_names_none(fake_plugins) -> None:
    for kind in ("decoder", "reporter", "rating_format", "executor"):
        assert fake_plugins.info(kind, fake_plugins.default(kind)).cls.is_default
    with pytest.raises(UserError, match="no engine plugin declares itself the default"):
        fake_plugins.default("engine")  # the fakes' engine does not claim it


def test_no_entry_points_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(**kwargs):
        raise AssertionError("entry points must not be read")

    monkeypatch.setattr(harness.plugins.md, "entry_points", boom)
    plugins = build_plugins(entry_points=False, extra=[fakes])
    assert plugins.names("engine") == ["fake-engine"] and not plugins.failures


def test_import_error_is_reported_by_name_and_others_load(tmp_path, monkeypatch) -> None:
    _module(tmp_path, monkeypatch, "good_plugin", GOOD_MODULE)
    _module(tmp_path, monkeypatch, "broken_plugin", "raise RuntimeError('boom at import')\n")
    _entry_points(monkeypatch, {"broken": "broken_plugin", "good": "good_plugin"})
    plugins = build_plugins()
    assert plugins.names("metric") == ["good-metric"]
    assert plugins.info("metric", "good-metric").source == "good_plugin"
    assert [f.name for f in plugins.failures] == ["broken"]
    assert "RuntimeError: boom at import" in plugins.failures[0].error
    assert "broken_plugin.py" in plugins.failures[0].error  # where it broke


def test_missing_module_is_reported(tmp_path, monkeypatch) -> None:
    _module(tmp_path, monkeypatch, "good_plugin", GOOD_MODULE)
    _entry_points(monkeypatch, {"gone": "no_such_module_xyz", "good": "good_plugin"})
    plugins = build_plugins()
    assert plugins.names("metric") == ["good-metric"]
    assert [f.name for f in plugins.failures] == ["gone"]
    assert "ModuleNotFoundError" in plugins.failures[0].error


def test_register_hook_raising_is_reported_and_others_load(tmp_path, monkeypatch) -> None:
    _module(tmp_path, monkeypatch, "good_plugin", GOOD_MODULE)
    _module(
        tmp_path,
        monkeypatch,
        "raising_plugin",
        """
        from harness import hookimpl

        @hookimpl
        def harness_register_metrics(register):
            raise ValueError("cannot register today")
        """,
    )
    _entry_points(monkeypatch, {"good": "good_plugin", "raising": "raising_plugin"})
    plugins = build_plugins()
    assert plugins.names("metric") == ["good-metric"]
    assert [(f.name, f.error.split(" (")[0]) for f in plugins.failures] == [("raising", "ValueError: cannot register today")]


def test_registering_a_non_subclass_fails_that_plugin_only() -> None:
    class NotAMetric:
        name = "not-a-metric"

    from harness import hookimpl

    @hookimpl
    def harness_register_metrics(register):
        register(NotAMetric)

    bad = _inline_module("bad_kind", harness_register_metrics=harness_register_metrics)
    plugins = build_plugins(entry_points=False, extra=[bad, fakes])
    assert "not-a-metric" not in plugins.names("metric")
    assert plugins.names("metric") == ["fake-len", "fake-overlap", "fake-prefer"]
    assert [f.name for f in plugins.failures] == ["bad_kind"]
    assert "must subclass harness.api.Metric" in plugins.failures[0].error


def test_class_without_name_or_with_bad_option_fails() -> None:
    from harness import hookimpl
    from harness.api import Metric

    class Nameless(Metric):
        pass

    class BadOption(Metric):
        name = "bad-option"
        options = {"x": 3}

    @hookimpl
    def harness_register_metrics(register):
        register(Nameless)

    @hookimpl
    def harness_register_engines(register):
        register(BadOption)  # also the wrong kind, but the first problem is enough

    plugins = build_plugins(
        entry_points=False,
        extra=[_inline_module("nameless", harness_register_metrics=harness_register_metrics), _inline_module("wrongkind", harness_register_engines=harness_register_engines)],
    )
    errors = {f.name: f.error for f in plugins.failures}
    assert "has no 'name'" in errors["nameless"]
    assert "must subclass harness.api.Engine" in errors["wrongkind"]


def test_unknown_hook_name_is_reported() -> None:
    from harness import hookimpl

    @hookimpl
    def harness_register_metric(register):  # typo: not a hookspec
        pass

    plugins = build_plugins(entry_points=False, extra=[_inline_module("typo_plugin", harness_register_metric=harness_register_metric), fakes])
    assert [f.name for f in plugins.failures] == ["typo_plugin"]
    assert "harness_register_metric" in plugins.failures[0].error
    assert plugins.names("metric") == ["fake-len", "fake-overlap", "fake-prefer"]


def test_duplicate_names_keep_the_first_and_report_the_second() -> None:
    from harness import hookimpl

    class Dup(fakes.FakeLenMetric):
        name = "fake-len"

    @hookimpl
    def harness_register_metrics(register):
        register(Dup)

    plugins = build_plugins(entry_points=False, extra=[fakes, _inline_module("dup_plugin", harness_register_metrics=harness_register_metrics)])
    assert plugins.info("metric", "fake-len").cls is fakes.FakeLenMetric
    assert [f.name for f in plugins.failures] == ["dup_plugin"]
    assert "metric 'fake-len' is already registered" in plugins.failures[0].error


def test_same_class_registered_twice_is_not_a_duplicate() -> None:
    from harness import hookimpl

    @hookimpl
    def harness_register_metrics(register):
        register(fakes.FakeLenMetric)

    plugins = build_plugins(entry_points=False, extra=[fakes, _inline_module("again", harness_register_metrics=harness_register_metrics)])
    assert not plugins.failures
    assert plugins.names("metric") == ["fake-len", "fake-overlap", "fake-prefer"]


# --------------------------------------------------------------------------- lookups


def test_info_unknown_name_suggests(fake_plugins) -> None:
    with pytest.raises(UserError) as info:
        fake_plugins.info("metric", "fake-lne", file="registry.toml", key="metrics.names[0]")
    err = info.value
    assert err.file == "registry.toml" and err.key == "metrics.names[0]"
    assert "unknown metric plugin 'fake-lne'" in err.message
    assert "did you mean 'fake-len'?" in err.message
    assert "allowed: 'fake-len', 'fake-overlap'" in err.message


def test_info_of_a_plugin_that_failed_to_load_says_why(tmp_path, monkeypatch) -> None:
    _module(tmp_path, monkeypatch, "broken_plugin", "raise ImportError('needs libfoo')\n")
    _entry_points(monkeypatch, {"exact_thing": "broken_plugin"})
    plugins = build_plugins()
    with pytest.raises(UserError, match=r"the plugin 'exact_thing' failed to load: ImportError: needs libfoo"):
        plugins.info("metric", "exact_thing")


def test_all_lists_every_kind_in_order(fake_plugins) -> None:
    infos = fake_plugins.all()
    kinds = [i.kind for i in infos]
    assert kinds == sorted(kinds, key=list(KINDS).index)
    assert {i.kind for i in infos} == set(KINDS)


# --------------------------------------------------------------------------- harness plugins


def test_cli_plugins_json_lists_the_real_builtins() -> None:
    result = CliRunner().invoke(harness.cli.main, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)
    failures = [i for i in items if i["kind"] == "failed"]
    assert not failures, failures
    for item in items:
        assert {"name", "kind", "package", "version"} <= set(item)
    assert set(KINDS) <= {i["kind"] for i in items}
    builtin = {(i["name"], i["kind"]) for i in items if i["package"] == "llm-decoding-harness"}
    for expected in [
        ("peft-lora", "model"),
        ("standard", "decoder"),
        ("bleu", "metric"),
        ("rouge_l", "metric"),
        ("bertscore", "metric"),
        ("transformers", "engine"),
        ("synthetic", "dataset"),
        ("json", "dataset"),
        ("table", "reporter"),
        ("json", "reporter"),
    ]:
        assert expected in builtin
    version = md.version("llm-decoding-harness")
    assert all(i["version"] == version for i in items if i["package"] == "llm-decoding-harness")


def test_cli_plugins_reports_a_broken_plugin_without_failing(tmp_path, monkeypatch) -> None:
    _module(tmp_path, monkeypatch, "good_plugin", GOOD_MODULE)
    # brackets in the error must be shown as written, not eaten as rich markup
    _module(tmp_path, monkeypatch, "broken_plugin", "raise RuntimeError('[/bad] [[models]] boom')\n")
    _entry_points(monkeypatch, {"broken": "broken_plugin", "good": "good_plugin"})
    result = CliRunner().invoke(harness.cli.main, ["plugins", "--json"])
    assert result.exit_code == 0
    items = json.loads(result.stdout)
    assert [i["name"] for i in items if i["kind"] == "failed"] == ["broken"]
    assert "good-metric" in [i["name"] for i in items]

    result = CliRunner().invoke(harness.cli.main, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "good-metric" in result.stdout
    assert "failed to load broken" in result.stderr
    assert "[/bad] [[models]] boom" in result.stderr
