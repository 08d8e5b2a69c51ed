"""Tests for harness.analysis: CSV loading errors, correlations per scope, findings text."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harness.report import analysis, stats
from harness.report.analysis import CorrelationRow
from harness.errors import UserError

GOOD_CSV = """model,config,human,bleu,rouge
llama,greedy,4.0,30.1,0.52
llama,beam4,4.5,33.0,0.50
llama,topp,3.0,25.2,0.55
llama,temp1,2.0,18.4,
qwen,greedy,3.5,28.0,0.40
qwen,beam4,4.2,31.5,0.45
qwen,topp,2.5,22.0,0.47
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "results.csv"
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(UserError) as info:
        analysis.load_results_csv(_write(tmp_path, text))
    return str(info.value)


# --------------------------------------------------------------------------- loading


def test_load_results_csv(tmp_path):
    rows = analysis.load_results_csv(_write(tmp_path, GOOD_CSV))
    assert len(rows) == 7
    assert rows[0] == {"model": "llama", "config": "greedy", "human": 4.0, "bleu": 30.1, "rouge": 0.52}
    assert math.isnan(rows[3]["rouge"])  # empty cell = missing


def test_missing_human_column_lists_columns(tmp_path):
    message = _error(tmp_path, "model,config,bleu\na,x,1\na,y,2\na,z,3\n")
    assert "missing column 'human'" in message
    assert "'model', 'config', 'bleu'" in message
    assert "results.csv" in message


def test_missing_model_column(tmp_path):
    message = _error(tmp_path, "config,human,bleu\nx,1,1\n")
    assert "missing column 'model'" in message and "'config', 'human', 'bleu'" in message


def test_no_metric_column(tmp_path):
    assert "no metric columns" in _error(tmp_path, "model,config,human\na,x,1\n")


def test_non_numeric_cell_names_row_column_and_value(tmp_path):
    text = GOOD_CSV.replace("qwen,topp,2.5,22.0,0.47", "qwen,topp,2.5,n/a,0.47")
    message = _error(tmp_path, text)
    assert "row 8" in message  # header is row 1; this is the 7th data row
    assert "'bleu'" in message and "'n/a'" in message and "not a number" in message


def test_non_finite_cell(tmp_path):
    message = _error(tmp_path, GOOD_CSV.replace("4.5,33.0", "inf,33.0"))
    assert "row 3" in message and "'human'" in message and "'inf'" in message


def test_duplicate_model_config_lists_rows(tmp_path):
    message = _error(tmp_path, GOOD_CSV + "llama,beam4,4.4,32.0,0.51\n")
    assert "model 'llama' with config 'beam4'" in message
    assert "rows 3 and 9" in message


def test_too_few_rows_in_a_model(tmp_path):
    text = GOOD_CSV.replace("qwen,topp,2.5,22.0,0.47\n", "")
    message = _error(tmp_path, text)
    assert "model 'qwen' has only 2 rows (rows 6 and 7)" in message


def test_too_few_rows_overall(tmp_path):
    assert "only 2 data rows" in _error(tmp_path, "model,config,human,bleu\na,x,1,1\na,y,2,2\n")


def test_wrong_cell_count_and_empty_model(tmp_path):
    assert "row 3: the row has 4 cells but the header names 5 columns" in _error(
        tmp_path, GOOD_CSV.replace("llama,beam4,4.5,33.0,0.50", "llama,beam4,4.5,33.0")
    )
    assert "row 2: the 'model' cell is empty" in _error(tmp_path, GOOD_CSV.replace("llama,greedy", ",greedy"))


def test_missing_and_empty_file(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        analysis.load_results_csv(tmp_path / "absent.csv")
    assert "the file is empty" in _error(tmp_path, "")


# --------------------------------------------------------------------------- analyze


def _system_rows(seed: int = 0) -> list[dict]:
    """Two models x 8 configs: bleu follows human closely, rouge loosely, 'inverse' against it."""
    rng = np.random.default_rng(seed)
    rows = []
    for model in ("llama", "qwen"):
        for c in range(8):
            human = float(rng.normal())
            rows.append(
                {
                    "model": model,
                    "config": f"c{c}",
                    "human": human,
                    "bleu": human + 0.2 * float(rng.normal()),
                    "rouge": human + 1.5 * float(rng.normal()),
                    "inverse": -human + 0.2 * float(rng.normal()),
                }
            )
    return rows


def test_analyze_scopes_and_values():
    rows = _system_rows()
    result = analysis.analyze(rows, n_resamples=500)
    assert [(r.scope, r.metric) for r in result] == [
        (scope, metric) for scope in ("all", "llama", "qwen") for metric in ("bleu", "rouge", "inverse")
    ]
    overall = next(r for r in result if r.scope == "all" and r.metric == "bleu")
    expected = stats.correlations([r["bleu"] for r in rows], [r["human"] for r in rows])
    assert overall.n == 16 and overall.level == "system"
    assert overall.spearman == pytest.approx(expected["spearman"])
    assert overall.spearman_ci_low <= overall.spearman <= overall.spearman_ci_high
    assert set(overall.as_dict()) >= {"metric", "scope", "n", "pearson", "kendall_ci_high", "level"}
    assert result == analysis.analyze(rows, n_resamples=500)  # seeded


def test_analyze_metrics_filter_and_unknown_metric():
    rows = _system_rows()
    assert {r.metric for r in analysis.analyze(rows, metrics=["rouge"], n_resamples=100)} == {"rouge"}
    with pytest.raises(UserError, match="unknown metric 'blue'.*did you mean 'bleu'"):
        analysis.analyze(rows, metrics=["blue"])


def test_analyze_skips_small_scopes_unless_strict(tmp_path):
    text = GOOD_CSV.replace("qwen,beam4,4.2,31.5,0.45", "qwen,beam4,4.2,31.5,")
    rows = analysis.load_results_csv(_write(tmp_path, text))
    # qwen now has only 2 rows with both rouge and human
    lenient = analysis.analyze(rows, n_resamples=100)
    assert ("qwen", "rouge") not in {(r.scope, r.metric) for r in lenient}
    assert ("qwen", "bleu") in {(r.scope, r.metric) for r in lenient}
    with pytest.raises(UserError) as info:
        analysis.analyze(rows, n_resamples=100, strict=True, source="results.csv")
    assert str(info.value) == (
        "results.csv: model 'qwen': only 2 rows have both 'rouge' and 'human' (system level); "
        "a correlation needs at least 3"
    )


def test_example_level_resamples_examples():
    rng = np.random.default_rng(1)
    ratings = []
    for model in ("llama", "qwen"):
        for config in ("greedy", "beam4"):
            for e in range(15):
                human = float(rng.normal())
                ratings.append((model, config, f"ex{e}", {"bleu": human + float(rng.normal()), "rouge": None}, human))
    result = analysis.example_level(ratings, n_resamples=300)
    assert {r.level for r in result} == {"example"}
    assert [(r.scope, r.metric, r.n) for r in result] == [
        ("all", "bleu", 60),
        ("llama", "bleu", 30),
        ("qwen", "bleu", 30),
    ]
    overall = result[0]
    expected = stats.correlation_cis(
        [r[3]["bleu"] for r in ratings], [r[4] for r in ratings], n_resamples=300, groups=[r[2] for r in ratings]
    )
    assert overall.pearson == pytest.approx(expected["pearson"])
    assert overall.pearson_ci_low == pytest.approx(expected["pearson_ci_low"])


# --------------------------------------------------------------------------- findings


def _row(
    metric: str, spearman: float, low: float, high: float, scope: str = "all", level: str = "system"
) -> CorrelationRow:
    """A row whose three coefficients all have the given estimate and interval."""
    return CorrelationRow(
        metric=metric,
        scope=scope,
        n=20,
        pearson=spearman,
        spearman=spearman,
        kendall=spearman,
        pearson_ci_low=low,
        pearson_ci_high=high,
        spearman_ci_low=low,
        spearman_ci_high=high,
        kendall_ci_low=low,
        kendall_ci_high=high,
        level=level,
    )


def test_findings_best_metric_follows_the_numbers():
    rows = [_row("bleu", 0.80, 0.60, 0.90), _row("rouge", 0.50, 0.20, 0.70)]
    text = analysis.findings(rows)
    assert text[0].startswith("System level, overall: bleu agrees best with human judgment (Spearman 0.80")
    assert "0.30 ahead of rouge" in text[0]
    swapped = analysis.findings([replace(rows[0], spearman=0.40), rows[1]])
    assert swapped[0].startswith("System level, overall: rouge agrees best")
    assert "0.10 ahead of bleu" in swapped[0]


def test_findings_overlap_of_intervals():
    overlapping = analysis.findings([_row("bleu", 0.80, 0.60, 0.90), _row("rouge", 0.50, 0.20, 0.70)])
    assert "the intervals do not separate them" in overlapping[0]
    separated = analysis.findings([_row("bleu", 0.80, 0.75, 0.90), _row("rouge", 0.50, 0.20, 0.70)])
    assert "the intervals do not separate them" not in separated[0]
    assert "the intervals do not overlap" in separated[0]


def test_findings_best_within_each_model():
    rows = [
        _row("bleu", 0.8, 0.6, 0.9),
        _row("rouge", 0.5, 0.2, 0.7),
        _row("bleu", 0.3, 0.1, 0.5, scope="qwen"),
        _row("rouge", 0.9, 0.8, 0.95, scope="qwen"),
    ]
    text = analysis.findings(rows)
    assert any(s.startswith("System level, within model 'qwen': rouge agrees best") for s in text)


def test_findings_negative_and_unsupported_correlations():
    negative = analysis.findings([_row("chrf", -0.70, -0.90, -0.40)])
    assert any("chrf moves against human judgment" in s for s in negative)
    assert not any("interval includes 0" in s for s in negative)

    unsupported = analysis.findings([_row("chrf", -0.20, -0.60, 0.30)])
    assert not any("moves against" in s for s in unsupported)
    assert any(
        "correlation of chrf with human judgment is not supported by the data: the 95% interval includes 0" in s
        for s in unsupported
    )

    supported = analysis.findings([_row("chrf", 0.60, 0.30, 0.80)])
    assert not any("interval includes 0" in s or "moves against" in s for s in supported)


def test_findings_undefined_and_example_level():
    undefined = _row("bleu", math.nan, math.nan, math.nan)
    assert any("is undefined" in s for s in analysis.findings([undefined]))
    text = analysis.findings([_row("bleu", 0.4, 0.1, 0.6, level="example")])
    assert text[0].startswith("Example level, overall: bleu is the only metric")


def test_findings_end_to_end_change_with_data():
    rows = _system_rows()
    text = analysis.findings(analysis.analyze(rows, n_resamples=300))
    assert text[0].startswith("System level, overall: bleu agrees best")
    assert any("overall: inverse moves against human judgment" in s for s in text)
    # swap the columns: now rouge is the faithful one
    swapped = [{**r, "bleu": r["rouge"], "rouge": r["bleu"]} for r in rows]
    text = analysis.findings(analysis.analyze(swapped, n_resamples=300))
    assert text[0].startswith("System level, overall: rouge agrees best")
