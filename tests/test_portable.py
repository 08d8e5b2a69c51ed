"""Issue 9, done-when: a run's output folder, copied to another directory, reads the same in a virtualenv
holding only the core package (no torch, no transformers, no metric libraries).

The run uses the fake model and engine with the real BLEU plugin (a corpus-level metric, so its
intervals need the plugin's numpy resampling) and a mean metric; two stand-in annotators rate an
exported sheet. The copy is read by `.venv-core` (built by scripts/core-env.sh) as a subprocess.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import fakes
import sheets

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / ".venv-core"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def core_harness() -> Path:
    subprocess.run(["bash", str(ROOT / "scripts" / "core-env.sh")], check=True, capture_output=True, text=True)
    probe = subprocess.run([str(CORE / "bin" / "python"), "-c", "import torch"], capture_output=True, text=True)
    assert probe.returncode != 0, "the core venv must not hold torch"
    for lib in ("transformers", "sacrebleu", "rouge_score", "bert_score"):
        assert subprocess.run([str(CORE / "bin" / "python"), "-c", f"import {lib}"], capture_output=True).returncode != 0, lib
    return CORE / "bin" / "harness"


def _core(harness: Path, *args: str) -> str:
    proc = subprocess.run([str(harness), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def cli_with_bleu(cli, fake_plugins, monkeypatch):
    """The fakes plus the real BLEU plugin."""
    import harness_metrics.bleu

    import harness.cli.common
    from harness.plugins import build_plugins

    extra = build_plugins(entry_points=False, extra=[harness_metrics.bleu])
    fake_plugins.by_kind["metric"].update(extra.by_kind["metric"])
    monkeypatch.setattr(harness.cli.common, "build_plugins", lambda **kwargs: fake_plugins)
    return cli


def test_reading_commands_give_the_same_output_with_only_the_core_installed(cli_with_bleu, tmp_path, core_harness) -> None:
    cli = cli_with_bleu
    registry = fakes.write_registry(tmp_path / "registry.toml", metrics=["bleu", "fake-len"])
    assert cli("run", "--all", "-r", registry).exit_code == 0
    sheet = tmp_path / "sheet.csv"
    assert cli("human", "export", "-o", sheet, "-n", 6, "-r", registry).exit_code == 0
    sheets.fill(sheet)
    assert cli("human", "import", sheet, "-r", registry).exit_code == 0

    here, there = tmp_path / "copy-main", tmp_path / "laptop" / "results"
    shutil.copytree(tmp_path / "out", here)
    shutil.copytree(tmp_path / "out", there)

    def main(*args: str) -> str:
        result = cli(*args)
        assert result.exit_code == 0, result.output
        return result.stdout

    # the same rows, but Human (PPI) needs ppi-python, which the core install lacks: there it says how to install it
    core_rows = json.loads(_core(core_harness, "report", "--store", there, "--format", "json"))
    main_rows = json.loads(main("report", "--store", here, "--format", "json"))
    rated = [r for r in core_rows if r["metric"] == "human" and r["n"]]
    assert rated and all(r["ppi_value"] is None and "pip install 'llm-decoding-harness[ppi]'" in r["ppi_note"] for r in rated)
    assert all("pip install" not in (r["ppi_note"] or "") for r in main_rows if r["metric"] == "human")
    without_ppi = lambda rows: [{k: v for k, v in r.items() if not k.startswith("ppi_")} for r in rows]  # noqa: E731
    assert without_ppi(core_rows) == without_ppi(main_rows)
    assert "needs ppi-python" in _core(core_harness, "report", "--store", there)
    assert _core(core_harness, "analyze", "--store", there, "--format", "json") == main("analyze", "--store", here, "--format", "json")
    _core(core_harness, "human", "export", "--store", there, "-o", tmp_path / "core_sheet.csv", "-n", 6)
    main("human", "export", "--store", here, "-o", tmp_path / "main_sheet.csv", "-n", 6)
    assert (tmp_path / "core_sheet.csv").read_text() == (tmp_path / "main_sheet.csv").read_text()
    # the BLEU column has intervals there too (the plugin's numpy resampling, no sacrebleu)
    report = _core(core_harness, "report", "--store", there, "--format", "csv")
    bleu = [line for line in report.splitlines() if ",bleu," in line]
    assert bleu and all(line.split(",")[5] and line.split(",")[6] for line in bleu)
