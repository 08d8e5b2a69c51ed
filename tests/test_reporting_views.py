"""Issue 19, item 4: `harness analyze` reaches users through the reporter plugins, and the HTML report's comparisons are a
compact config x metric matrix that leaves out what has no value."""

from __future__ import annotations

import csv
import io
import json
import re

import dataclasses

import pytest

from harness.api import Reporter

from test_analyze_cli import GOOD, _csv


@pytest.fixture
def with_html(fake_plugins):
    """The fakes' plugins plus the html reporter."""
    import harness_reporters.html

    from harness.plugins import build_plugins

    fake_plugins.by_kind["reporter"].update(build_plugins(entry_points=False, extra=[harness_reporters.html]).by_kind["reporter"])
    return fake_plugins


def test_analyze_renders_through_every_built_in_reporter(cli, with_html, tmp_path) -> None:
    path = _csv(tmp_path, GOOD)
    rows = json.loads(cli("analyze", "--results", path, "--format", "json").stdout)
    assert {(r["scope"], r["metric"]) for r in rows} == {(s, m) for s in ("all", "m1", "m2") for m in ("bleu", "rouge_l")}
    # csv: one line per correlation row, the same numbers
    table = list(csv.DictReader(io.StringIO(cli("analyze", "--results", path, "--format", "csv").stdout)))
    assert [(t["scope"], t["metric"], float(t["pearson"])) for t in table] == [(r["scope"], r["metric"], r["pearson"]) for r in rows]
    # html: a self-contained page with the correlations and the findings
    page = cli("analyze", "--results", path, "--format", "html").stdout
    assert page.startswith("<!DOCTYPE html>") and '<section id="correlations">' in page and '<section id="findings">' in page
    assert "agrees best with human judgment" in page and not re.search(r'(src|href)="(https?:)?//', page)
    # the default reporter (the terminal table) when no format is named
    assert "Findings" in cli("analyze", "--results", path).stdout
    bad = cli("analyze", "--results", path, "--format", "markdwn")
    assert bad.exit_code == 2 and "did you mean 'markdown'" in bad.stderr


def test_a_reporter_without_the_analysis_view_is_refused(cli, fake_plugins, tmp_path) -> None:
    class ReportOnly(Reporter):
        name = "report-only"
        description = "renders reports only"

        def render(self, rows, context):
            return "report\n"

    fake_plugins.by_kind["reporter"]["report-only"] = dataclasses.replace(fake_plugins.by_kind["reporter"]["json"], name="report-only", cls=ReportOnly)
    bad = cli("analyze", "--results", _csv(tmp_path, GOOD), "--format", "report-only")
    assert bad.exit_code == 2 and "cannot render an analysis" in bad.stderr and "json" in bad.stderr


def test_html_comparisons_are_a_matrix_without_empty_rows(cli, with_html, fake_registry, tmp_path) -> None:
    assert cli("run", "--all", "-r", fake_registry).exit_code == 0  # no ratings: Human has no value anywhere
    out = tmp_path / "report.html"
    result = cli("report", "--format", "html", "-o", out, "-r", fake_registry)
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    section = page.split('<section id="comparisons">')[1].split("</section>")[0]
    assert section.count('<table class="matrix">') == 2  # one per model
    head = re.findall(r"<th>([^<]*)</th>", section.split("</thead>")[0])
    assert head == ["FakeLen", "fake-overlap"]  # Human has no differences: no column for it
    assert section.count("<tr><td") == 2 * 11  # every config but the baseline, per model
    assert "the baseline has no value" not in section.split("Left out:")[0]
    assert "Left out: Human for 22 configs (the baseline has no value)." in section
    assert '<section id="claims">' in page and "smallest differences from the baseline" in page
