"""The whole pipeline on the embedded default model, at a tiny budget: real SmolLM2, real LoRA, real metrics,
then a human sheet round trip, `harness analyze` and the HTML report on that run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from stores import tiny_default

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"top_k_50_num_beams_2_temp_0.8", "top_k_50_num_beams_1_temp_0.0", "top_k_50_num_beams_1_temp_1.0"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    registry = tiny_default(tmp, vary="num_beams = [2]\ntemperature = [0.0, 1.0]")
    first = CliRunner().invoke(main, ["run", "--all", "-r", str(registry)])
    return registry, first


def _report(registry: Path) -> list[dict]:
    result = CliRunner().invoke(main, ["report", "--format", "json", "-r", str(registry)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_run_all_then_report_then_rerun_does_no_model_work(tiny_run):
    registry, first = tiny_run
    assert first.exit_code == 0, first.output
    assert "trained 1" in first.output and "generated 18" in first.output

    rows = _report(registry)
    auto = [r for r in rows if r["metric"] != "human"]
    assert {r["model"] for r in auto} == {"smollm2-135m", "smollm2-135m-lora"}
    assert {r["config"] for r in auto} == CONFIGS
    assert {r["metric"] for r in auto} == {"bleu", "rouge_l", "bertscore"}
    for r in auto:
        assert r["n"] == 3 and r["value"] is not None and 0.0 <= r["value"] <= 1.0, r

    out = registry.parent / "out"
    assert len(list((out / "adapters").glob("*/adapter_model.safetensors"))) == 1

    second = CliRunner().invoke(main, ["run", "--all", "-r", str(registry)])
    assert second.exit_code == 0, second.output
    assert "trained 0 (reused 1)" in second.output and "generated 0 (cached 18)" in second.output and "scored 0" in second.output
    assert _report(registry) == rows


def test_human_sheet_analyze_and_html_report_on_the_real_run(tiny_run, tmp_path):
    registry, first = tiny_run
    assert first.exit_code == 0, first.output
    cli = CliRunner()
    sheet = tmp_path / "sheet.csv"
    exported = cli.invoke(main, ["human", "export", "-o", str(sheet), "-n", "3", "-r", str(registry)])
    assert exported.exit_code == 0, exported.output
    with sheet.open(newline="", encoding="utf-8") as fh:
        items = list(csv.DictReader(fh))
    assert len(items) == 2 * 3 * 3 and "model" not in items[0] and "config" not in items[0]

    # two stand-in annotators (fixed patterns, not judgments) so the ratings vary and overlap
    filled = tmp_path / "filled.csv"
    with filled.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(items[0]))
        w.writeheader()
        for annotator, pattern in (("ann-a", lambda i: i % 2), ("ann-b", lambda i: (i // 2) % 2)):
            for i, it in enumerate(items):
                w.writerow(it | {"rating": pattern(i), "annotator": annotator})
    imported = cli.invoke(main, ["human", "import", str(filled), "--scale", "binary", "-r", str(registry)])
    assert imported.exit_code == 0, imported.output
    assert "from 2 annotator(s)" in imported.output

    human = [r for r in _report(registry) if r["metric"] == "human"]
    assert len(human) == 6 and all(r["n"] == 3 and 0.0 <= r["value"] <= 1.0 for r in human)

    analyzed = cli.invoke(main, ["analyze", "--format", "json", "--resamples", "200", "-r", str(registry)])
    assert analyzed.exit_code == 0, analyzed.output
    corr = json.loads(analyzed.stdout)
    assert {r["metric"] for r in corr} == {"bleu", "rouge_l", "bertscore"}
    assert {"all", "smollm2-135m", "smollm2-135m-lora"} <= {r["scope"] for r in corr}
    for key in ("n", "pearson", "spearman", "kendall", "pearson_ci_low", "spearman_ci_high", "kendall_ci_low"):
        assert key in corr[0]

    html = tmp_path / "report.html"
    written = cli.invoke(main, ["report", "--format", "html", "-o", str(html), "--resamples", "200", "-r", str(registry)])
    assert written.exit_code == 0, written.output
    page = html.read_text(encoding="utf-8")
    assert "smollm2-135m-lora" in page and "data:image/png;base64," in page
    assert "Krippendorff" in page
