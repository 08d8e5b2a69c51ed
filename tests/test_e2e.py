"""The whole pipeline on the embedded default model, at a tiny budget: real SmolLM2, real LoRA, real metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def tiny_registry(tmp_path: Path) -> Path:
    """The shipped registry.toml with sizes cut down: 3 test examples, 3 configs, 2 training steps."""
    text = (ROOT / "registry.toml").read_text()
    text = text.replace('output_dir = "runs/default"', f'output_dir = "{tmp_path / "out"}"')
    text = re.sub(r"test_size = \d+", "test_size = 3", text)
    text = re.sub(r"train_size = \d+", "train_size = 16", text)
    text = re.sub(r"max_steps = \d+", "max_steps = 2", text)
    text = re.sub(r"batch_size = 4\n", "batch_size = 2\n", text)
    text = re.sub(r"max_new_tokens = \d+", "max_new_tokens = 6", text)
    text = text.replace("include_defaults = true", "include_defaults = false")
    text = re.sub(r"\[sweep.vary\].*?\n\n", "[sweep.vary]\nnum_beams = [2]\ntemperature = [0.0, 1.0]\n\n", text, flags=re.S)
    path = tmp_path / "registry.toml"
    path.write_text(text)
    return path


def test_run_all_then_report_then_rerun_does_no_model_work(tmp_path):
    registry = tiny_registry(tmp_path)
    cli = CliRunner()
    first = cli.invoke(main, ["run", "--all", "-r", str(registry)])
    assert first.exit_code == 0, first.output
    assert "trained 1" in first.output and "generated 18" in first.output

    report = cli.invoke(main, ["report", "--format", "json", "-r", str(registry)])
    assert report.exit_code == 0, report.output
    rows = json.loads(report.output)
    auto = [r for r in rows if r["metric"] != "human"]
    assert {r["model"] for r in auto} == {"smollm2-135m", "smollm2-135m-lora"}
    assert {r["config"] for r in auto} == {"top_k_50_num_beams_2_temp_0.8", "top_k_50_num_beams_1_temp_0.0", "top_k_50_num_beams_1_temp_1.0"}
    assert {r["metric"] for r in auto} == {"bleu", "rouge_l", "bertscore"}
    for r in auto:
        assert r["n"] == 3 and r["value"] is not None and 0.0 <= r["value"] <= 1.0, r

    adapters = list((tmp_path / "out" / "adapters").glob("*/adapter_model.safetensors"))
    assert len(adapters) == 1

    second = cli.invoke(main, ["run", "--all", "-r", str(registry)])
    assert second.exit_code == 0, second.output
    assert "trained 0 (reused 1)" in second.output and "generated 0 (cached 18)" in second.output and "scored 0" in second.output
    again = json.loads(cli.invoke(main, ["report", "--format", "json", "-r", str(registry)]).output)
    assert again == rows
