"""registries/alpaca-study.toml validates with the real plugin manager (no network, no model loads)."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import tomllib
from pathlib import Path

import pytest

from harness.plugins import ENTRY_POINT_GROUP, build_plugins
from harness.registry import load_experiment

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "registries" / "alpaca-study.toml"

STUDY_CONFIGS = [
    "top_k_10_num_beams_1_temp_0.8",
    "top_k_25_num_beams_1_temp_0.8",
    "top_k_40_num_beams_1_temp_0.8",
    "top_k_75_num_beams_1_temp_0.8",
    "top_k_50_num_beams_2_temp_0.8",
    "top_k_50_num_beams_3_temp_0.8",
    "top_k_50_num_beams_5_temp_0.8",
    "top_k_50_num_beams_10_temp_0.8",
    "top_k_50_num_beams_1_temp_0.0",
    "top_k_50_num_beams_1_temp_0.25",
    "top_k_50_num_beams_1_temp_0.5",
    "top_k_50_num_beams_1_temp_1.0",
]


def project_plugins():
    """The plugin manager as the CLI builds it, from the installed entry points.

    When the installed metadata predates entry points declared in pyproject.toml (an
    editable install not yet refreshed), the declared modules are registered directly.
    """
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][ENTRY_POINT_GROUP]
    installed = {ep.name for ep in md.entry_points(group=ENTRY_POINT_GROUP)}
    if set(declared) <= installed:
        return build_plugins()
    return build_plugins(entry_points=False, extra=[importlib.import_module(m) for m in declared.values()])


def test_study_registry_validates():
    plugins = project_plugins()
    assert not plugins.failures, plugins.failures
    exp = load_experiment(STUDY, plugins)

    assert exp.dataset.source == "hub" and exp.dataset.settings["name"] == "tatsu-lab/alpaca"
    assert exp.dataset.test_size >= exp.human["n_per_cell"] == 30

    models = {m.name: m for m in exp.models}
    assert {(m.adapter, m.base_model) for m in exp.models} == {
        ("unsloth-llama", "meta-llama/Llama-2-7b-hf"),
        ("unsloth-mistral", "mistralai/Mistral-7B-v0.1"),
        ("peft-phi2", "microsoft/phi-2"),
    }
    for m in models.values():
        assert m.finetune is not None
        assert (m.finetune.r, m.finetune.alpha, m.finetune.learning_rate) == (16, 16, 2e-4)
    assert models["llama-2-7b"].options["load_in_4bit"] is True
    assert models["mistral-7b"].options["load_in_4bit"] is True

    assert [c.name for c in exp.configs] == STUDY_CONFIGS
    beams = [c for c in exp.configs if c.params["num_beams"] > 1]
    assert all(c.decoding.strategy == "beam" for c in beams)
    assert exp.engine == "transformers"
    assert exp.metrics == ["bleu", "rouge_l", "bertscore"]
    assert exp.metric_settings["bertscore"]["model"] == "roberta-large"
    assert exp.metric_settings["bertscore"]["num_layers"] == 17


@pytest.mark.parametrize("name", ["unsloth-llama", "unsloth-mistral", "peft-phi2"])
def test_study_adapters_are_registered(name):
    info = project_plugins().info("model", name)
    assert info.cls.name == name and info.cls.default_base_model


def test_check_of_the_study_with_the_hub_unreachable_is_quick_and_clear(monkeypatch):
    """Issue 17, item 7: `check` spent ~23 s in the Hub client's retries and printed only the Hub's error."""
    import socket

    from click.testing import CliRunner

    import harness.cli
    import harness.cli.common
    import harness_datasets.alpaca as alpaca

    with socket.socket() as s:  # a port nothing listens on: the connection is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)

    def no_hub_client(purpose):
        raise AssertionError("the Hub client (and its retries) should not be reached when the Hub is unreachable")

    monkeypatch.setattr(alpaca, "_import_datasets", no_hub_client)
    plugins = project_plugins()
    monkeypatch.setattr(harness.cli.common, "build_plugins", lambda **kwargs: plugins)
    result = CliRunner().invoke(harness.cli.main, ["check", str(STUDY)])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in result.output and "Retrying" not in result.output
    assert line.startswith(f"error: {STUDY}: the experiment file is valid (3 models (3 fine-tuned), 12 decoding configs")
    assert "the data could not be checked: dataset.source: the Hugging Face Hub is unreachable" in line
    assert f"127.0.0.1:{port}" in line and "HF_HUB_OFFLINE=1" in line
