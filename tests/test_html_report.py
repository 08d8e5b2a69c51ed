"""The ``html`` reporter: every section, embedded plots, escaping, and a clean render in headless Chromium.

The browser test needs Debian's Chromium (``apt-get install -y chromium``); it is
skipped, saying so, when /usr/bin/chromium (or ``chromium`` on PATH) is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness.report import plots
from harness.report import data as rd
from harness.api import ReportRow
from harness_reporters.html import SECTIONS, HtmlReporter

from test_analyze_cli import fake_cli, import_ratings, invoke, run_experiment  # noqa: F401  (fixture)
from test_report_data import BleuMetric, agg, make_results

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def render_synthetic(*, model_name: str = "m1", with_figures: bool = True) -> str:
    rows = make_results(models=(model_name, "m2"), configs=("c0", "c1", "c2", "c3"))
    configs = [(f"c{i}", {"temperature": 0.25 * i, "num_beams": 1}) for i in range(4)]
    ratings = [rd.HumanRating(model_name, "c0", f"g{i}", a, float((i + k) % 2), "binary") for i in range(10) for k, a in enumerate(("x", "y"))]
    data = rd.build(rows, metrics={"bleu": agg(BleuMetric()), "rouge_l": rd.MEAN}, configs=configs, defaults={"temperature": 0.0, "num_beams": 1},
                    ratings=ratings, experiment="synthetic <exp>", labels={"bleu": "BLEU", "rouge_l": "ROUGE-L"},
                    provenance={"harness": "0.1.0", "generated": "now", "versions": {"numpy": "2"}, "seeds": {"experiment": 0},
                                "metrics": {"bleu": {"signature": "nrefs:1|case:mixed|tok:13a"}}, "decoding": {"c0": {"effective": {"strategy": "greedy"}}}})
    context = {"experiment": data.experiment, "metrics": data.metrics, "failures": [], **data.context()}
    if with_figures:
        context["figures"] = [{"id": f.id, "title": f.title, "caption": f.caption, "png": f.png} for f in plots.all_figures(context)]
    stats = {(c.model, c.config, c.metric): c for c in data.cells}
    report_rows = [ReportRow(r["model"], r["config"], r["metric"], r["value"], r["n"], stats[(r["model"], r["config"], r["metric"])].ci_low,
                             stats[(r["model"], r["config"], r["metric"])].ci_high) for r in rows]
    return HtmlReporter().render(report_rows, context)


def test_every_section_and_figure_is_there():
    page = render_synthetic()
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    assert page.count("data:image/png;base64,") == 3  # the temperature sweep and a scatter per metric
    assert 'id="fig-sweep-temperature"' in page and 'id="fig-human-bleu"' in page and 'id="fig-human-rouge_l"' in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "(baseline)" in page and "Krippendorff" in page and "nrefs:1|case:mixed|tok:13a" in page
    assert "Pearson r" in page and "agrees best with human judgment" in page


def test_text_is_escaped():
    page = render_synthetic(model_name="<script>alert(1)</script>", with_figures=False)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "synthetic &lt;exp&gt;" in page


def test_sections_say_what_is_missing_without_ratings():
    rows = [r for r in make_results(models=("m1",)) if r["metric"] != "human"]
    data = rd.build(rows, metrics={"bleu": agg(BleuMetric()), "rouge_l": rd.MEAN}, configs=[("c0", {}), ("c1", {}), ("c2", {})])
    context = {"experiment": "x", "metrics": data.metrics, **data.context(), "figures": []}
    page = HtmlReporter().render([ReportRow(r["model"], r["config"], r["metric"], r["value"], r["n"]) for r in rows], context)
    assert "no human ratings have been imported" in page
    assert "cannot be measured" in page and "No plots" in page


def _render_in_chromium(tmp_path: Path, page: str) -> tuple[str, str]:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian: apt-get update && apt-get install -y chromium)")
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=10000", "--dump-dom", path.as_uri()],
            capture_output=True, text=True, timeout=120,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


def _console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def test_html_report_renders_cleanly_in_headless_chromium(fake_cli, tmp_path):  # noqa: F811
    registry = run_experiment(fake_cli, tmp_path)
    import_ratings(fake_cli, tmp_path, registry, scale="likert")
    out = tmp_path / "report.html"
    invoke(fake_cli, "report", "--format", "html", "-o", out, "-r", registry)
    page = out.read_text(encoding="utf-8")
    dom, stderr = _render_in_chromium(tmp_path, page)
    assert 'data-render="ok"' in dom, re.findall(r'data-render="[^"]*"', dom)
    assert _console_messages(stderr) == []
    for section in SECTIONS:
        assert f'id="{section}"' in dom
    for figure in ("sweep-temperature", "sweep-num_beams", "human-bleu", "human-rouge_l"):
        assert f'id="fig-{figure}"' in dom
    assert "top_k_50_num_beams_1_temp_0.0 <em>(baseline)</em>" in dom
    assert "(baseline)" in dom and "†" in dom
    assert "Krippendorff" in dom and "ordinal" in dom
    assert "agrees best with human judgment" in dom
    for fact in ("sacrebleu", "nrefs:1", "Effective decoding parameters", "report_bootstrap", "machine"):
        assert fact in dom, fact


def test_the_render_check_catches_a_broken_page(tmp_path):
    """The page's own check reports a missing section or a script error, so the test above can trust 'ok'."""
    page = render_synthetic(with_figures=False).replace('<section id="findings">', '<section id="not-findings">')
    page = page.replace("</body>", "<script>undefinedFunction();</script></body>")
    dom, stderr = _render_in_chromium(tmp_path, page)
    state = re.search(r'data-render="([^"]*)"', dom).group(1)
    assert state.startswith("error") and "missing section findings" in state
    assert any("undefinedFunction" in line for line in _console_messages(stderr))


def test_html_to_stdout(fake_cli, tmp_path):  # noqa: F811
    registry = run_experiment(fake_cli, tmp_path)
    page = invoke(fake_cli, "report", "--format", "html", "-r", registry).output
    assert page.lstrip().startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "No correlations" in page
