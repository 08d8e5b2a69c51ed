"""The terminal report, the ``analyze`` table and the run's progress fit the width they are given.

The report tables are rendered with rich's fixed-width console at 80 and 120 columns for
a study-sized report (2 models x 13 configs x BLEU, ROUGE-L, BERTScore and Human with
intervals, significance and best marks) and parsed back cell by cell: every header and
every number must come back whole. Progress is checked in both of its modes: plain lines
per finished cell when the output is not a terminal, bars that fit when it is.
"""

from __future__ import annotations

import io
import math
import random
import re

import pytest
from rich.cells import cell_len
from rich.console import Console, Group

from harness.report.analysis import CorrelationRow
from harness.api import ReportRow
from harness.pipeline.progress import RichProgress, format_fields, format_seconds
from harness.report.data import sweep_info

STUDY_DEFAULTS = {"top_k": 50, "num_beams": 1, "temperature": 0.8, "top_p": 1.0, "beam_sampling": False}
STUDY_VARY = {"top_k": [10, 25, 40, 75], "num_beams": [2, 3, 5, 10], "temperature": [0.0, 0.25, 0.5, 1.0]}
METRICS = [("bleu", "BLEU"), ("rouge_l", "ROUGE-L"), ("bertscore", "BERTScore"), ("human", "Human")]
MODELS = ["llama-2-7b-chat", "mistral-7b-lora"]
SHORT = {"top_k": "top_k", "num_beams": "beams", "temperature": "temp"}


def _study_configs() -> list[tuple[str, dict]]:
    from harness_decoders.standard import StandardDecoder

    decoder = StandardDecoder({})
    combos = [dict(STUDY_DEFAULTS)] + [{**STUDY_DEFAULTS, k: v} for k, vals in STUDY_VARY.items() for v in vals]
    return [(decoder.config_name(p), p) for p in combos]


def study_report(seed: int = 3):
    """Rows and context of a study-sized report, plus what each cell must show."""
    rng = random.Random(seed)
    configs = _study_configs()
    base = configs[0][0]
    rows, cells, expected = [], {}, {}
    for model in MODELS:
        for config, params in configs:
            for metric, _ in METRICS:
                center = {"bleu": 0.15, "rouge_l": 0.35, "bertscore": 0.86, "human": 0.6}[metric]
                value = round(center + rng.uniform(-0.12, 0.12), 6)
                if metric == "bertscore" and params["num_beams"] == 10:
                    value = -0.031  # a rescaled BERTScore can go below zero
                half = rng.uniform(0.004, 0.2)
                lo, hi = value - half * rng.uniform(0.6, 1.0), min(1.0, value + half * rng.uniform(0.6, 1.0))
                n = 30 if metric == "human" else 100
                rows.append(ReportRow(model, config, metric, value, n, ci_low=lo, ci_high=hi))
                significant = config != base and rng.random() < 0.4
                cells.setdefault(model, {}).setdefault(config, {})[metric] = {"significant": significant}
                expected[(model, config, metric)] = (value, lo, hi, n, significant)
    context = {
        "experiment": "study",
        "metrics": [{"name": m, "label": label, "higher_is_better": True} for m, label in METRICS],
        "cells": cells,
        "baseline": {"config": base, "how": "defaults", "reason": "its parameters are the sweep's defaults"},
        "statistics": {"confidence": 0.95, "resamples": 1000, "seed": 0, "significance_level": 0.05},
        "sweep": sweep_info(configs, STUDY_DEFAULTS),
        "failures": [],
    }
    best = {}
    for (model, _, metric), (value, *_rest) in expected.items():
        best[(model, metric)] = max(best.get((model, metric), -math.inf), value)
    return rows, context, expected, best, configs


def _label(config: str, params: dict, base: str) -> str:
    diff = [k for k in params if params[k] != STUDY_DEFAULTS[k]]
    label = " ".join(f"{SHORT[k]}={params[k]!r}" for k in diff) or "defaults"
    return label + (" (base)" if config == base else "")


def _parse_tables(text: str, titles: list[str], key: int = -1) -> dict[str, dict]:
    """title -> {"header": [...], "rows": [[cell lines per column], ...]} from rich's box-drawn tables.

    A row starts on a line where column ``key`` (one that is never empty nor wrapped) has text.
    """
    lines = text.splitlines()
    out: dict[str, dict] = {}
    i = 0
    while i < len(lines):
        title = lines[i].strip()
        if title in titles and i + 2 < len(lines) and lines[i + 1].startswith("┏"):
            header = [c.strip() for c in lines[i + 2].split("┃")[1:-1]]
            rows: list[list[list[str]]] = []
            j = i + 4
            while lines[j].startswith("│"):
                parts = [c.strip() for c in lines[j].split("│")[1:-1]]
                if parts[key] or not rows:
                    rows.append([[p] if p else [] for p in parts])
                else:
                    for col, p in zip(rows[-1], parts):
                        if p:
                            col.append(p)
                j += 1
            out[title] = {"header": header, "rows": rows}
            i = j
        i += 1
    return out


def _consume(cell: str, pieces: list[str]) -> str:
    """Take each expected piece out of the cell's text once; what remains must be blank."""
    for piece in pieces:
        assert piece in cell, f"{piece!r} not whole in {cell!r}"
        cell = cell.replace(piece, " ", 1)
    return cell.strip()


def _assert_fits(text: str, width: int) -> None:
    assert "…" not in text
    too_long = [line for line in text.splitlines() if cell_len(line) > width]
    assert not too_long, too_long


# --------------------------------------------------------------------------- the report table


@pytest.mark.parametrize("width", [80, 120])
def test_report_table_shows_every_header_and_number_whole(width):
    from harness_reporters.builtin import TableReporter

    rows, context, expected, best, configs = study_report()
    text = TableReporter().render(rows, {**context, "width": width})
    _assert_fits(text, width)
    tables = _parse_tables(text, MODELS)
    assert list(tables) == MODELS
    base = configs[0][0]
    full_intervals = 0
    for model in MODELS:
        table = tables[model]
        assert table["header"] == ["Config", "BLEU", "ROUGE-L", "BERTScore", "Human", "n"]
        assert len(table["rows"]) == len(configs) == 13
        for (config, params), row in zip(configs, table["rows"]):
            assert " ".join(row[0]) == _label(config, params, base)
            assert row[-1] == ["100"]
            for (metric, _), cell in zip(METRICS, row[1:-1]):
                value, lo, hi, n, significant = expected[(model, config, metric)]
                shown = f"{value:.3f}" + ("†" if significant else "")
                interval = f"[{lo:.3f}, {hi:.3f}]"
                if interval in " ".join(cell):
                    full_intervals += 1
                else:
                    interval = f"±{(hi - lo) / 2:.3f}"
                pieces = [shown, interval] + ([f"(n={n})"] if metric == "human" else [])
                rest = _consume(" ".join(cell), pieces)
                assert rest == ("*" if value == best[(model, metric)] else ""), (model, config, metric, cell)
    if width >= 120:
        assert full_intervals == len(MODELS) * len(configs) * len(METRICS)  # the room is used for [lo, hi]
    else:
        assert full_intervals == 0 and "±: half the width of the 95% interval" in " ".join(text.split())
    # the full names stay available in the legend, the marks are explained
    flat = " ".join(text.split())
    for config, _ in configs:
        assert config in text
    assert "* best value" in flat and "† differs from the baseline" in flat and "(base) marks the baseline" in flat
    assert f"Baseline: {base}" in flat


def test_report_table_one_line_per_row_when_wide_enough():
    from harness_reporters.builtin import TableReporter

    rows, context, expected, _, configs = study_report()
    text = TableReporter().render(rows, {**context, "width": 200})
    _assert_fits(text, 200)
    tables = _parse_tables(text, MODELS)
    for model in MODELS:
        for row in tables[model]["rows"]:
            assert all(len(cell) == 1 for cell in row)  # value and [lo, hi] on one line
    value, lo, hi, n, _ = expected[(MODELS[0], configs[1][0], "human")]
    assert f"[{lo:.3f}, {hi:.3f}] (n={n})" in text


def test_report_table_grid_labels_wrap_between_parameters_at_80():
    """A 3-parameter grid at 80 columns: the Config column wraps between parameters, the numbers stay whole."""
    from harness_reporters.builtin import TableReporter

    combos = [dict(STUDY_DEFAULTS)] + [
        {**STUDY_DEFAULTS, "top_k": k, "num_beams": b, "temperature": t} for k in (10, 75) for b in (2, 10) for t in (0.25, 1.0)
    ]
    configs = [(f"grid_{i}", p) for i, p in enumerate(combos)]
    rows = [ReportRow("m", c, metric, 0.5, 30, ci_low=0.25, ci_high=0.75) for c, _ in configs for metric, _ in METRICS]
    context = {"metrics": [{"name": m, "label": label} for m, label in METRICS], "sweep": sweep_info(configs, STUDY_DEFAULTS),
               "baseline": {"config": "grid_0", "reason": "its parameters are the sweep's defaults"}, "width": 80}
    text = TableReporter().render(rows, context)
    _assert_fits(text, 80)
    table = _parse_tables(text, ["m"])["m"]
    assert [" ".join(r[0]) for r in table["rows"]] == ["defaults (base)"] + [_label(c, p, "") for c, p in configs[1:]]
    assert any(len(r[0]) > 1 for r in table["rows"])  # "top_k=10 beams=2 temp=0.25" did not fit on one line
    for row in table["rows"]:
        for cell in row[1:-1]:
            assert _consume(" ".join(cell), ["0.500", "±0.250"]).replace("(n=30)", "").strip() in ("", "*")


def test_report_table_failed_and_missing_cells_and_no_sweep():
    """Without sweep info the configs keep their names; a failed cell and a missing one are shown, not cut."""
    from harness_reporters.builtin import TableReporter

    rows = [
        ReportRow("m", "greedy", "bleu", 0.25, 10, ci_low=0.2, ci_high=0.3),
        ReportRow("m", "beam", "bleu", None, 0, error="RuntimeError: boom"),
        ReportRow("m", "greedy", "human", None, 0),
    ]
    context = {"metrics": [{"name": "bleu", "label": "BLEU"}, {"name": "human", "label": "Human"}], "width": 80}
    text = TableReporter().render(rows, context)
    _assert_fits(text, 80)
    table = _parse_tables(text, ["m"])["m"]
    assert [r[0] for r in table["rows"]] == [["greedy"], ["beam"]]
    assert " ".join(table["rows"][0][1]) == "0.250 [0.200, 0.300] *"
    assert table["rows"][1][1] == ["failed"] and table["rows"][0][2] == ["—"]
    assert "Full names" not in text  # nothing was shortened


def test_config_labels_say_what_varies():
    from harness_reporters.builtin import config_labels

    configs = _study_configs()
    ctx = {"sweep": sweep_info(configs, STUDY_DEFAULTS)}
    labels = config_labels(ctx, [c for c, _ in configs])
    assert list(labels.values()) == [
        "defaults", "top_k=10", "top_k=25", "top_k=40", "top_k=75", "beams=2", "beams=3", "beams=5", "beams=10",
        "temp=0.0", "temp=0.25", "temp=0.5", "temp=1.0",
    ]
    # a grid: the combination of what differs from the defaults
    grid = [("a", {**STUDY_DEFAULTS, "temperature": 0.5, "num_beams": 2}), ("b", {**STUDY_DEFAULTS, "temperature": 0.5}), ("c", dict(STUDY_DEFAULTS))]
    assert config_labels({"sweep": sweep_info(grid, STUDY_DEFAULTS)}, ["a", "b", "c"]) == {"a": "beams=2 temp=0.5", "b": "temp=0.5", "c": "defaults"}
    # no defaults known: the values of what varies between the configs
    assert config_labels({"sweep": sweep_info(grid, None)}, ["a", "b", "c"]) == {"a": "beams=2 temp=0.5", "b": "beams=1 temp=0.5", "c": "beams=1 temp=0.8"}


def test_config_labels_degrade_for_any_decoder():
    from harness_reporters.builtin import config_labels

    # another decoder's parameters keep their names; an abbreviation that would clash is not used
    params = {"x": {"temp": 1, "temperature": 0.5, "mirostat_tau": 5.0}, "y": {"temp": 1, "temperature": 0.7, "mirostat_tau": 5.0}, "z": {"temp": 2, "temperature": 0.5, "mirostat_tau": 3.0}}
    ctx = {"sweep": {"config_params": params, "defaults": {"temp": 1, "temperature": 0.5, "mirostat_tau": 5.0}}}
    assert config_labels(ctx, ["x", "y", "z", "unknown"]) == {"x": "defaults", "y": "temperature=0.7", "z": "temp=2 mirostat_tau=3.0", "unknown": "unknown"}
    # no sweep info at all: full names
    assert config_labels({}, ["p", "q"]) == {"p": "p", "q": "q"}


def test_markdown_csv_json_keep_full_config_names():
    import json

    from harness_reporters.builtin import CsvReporter, JsonReporter, MarkdownReporter

    rows, context, *_rest, configs = study_report()
    md = MarkdownReporter().render(rows, context)
    assert f"| {configs[0][0]} (baseline) |" in md and f"| {configs[5][0]} |" in md
    assert {r["config"] for r in json.loads(JsonReporter().render(rows, context))} == {c for c, _ in configs}
    assert configs[9][0] in CsvReporter().render(rows, context)


# --------------------------------------------------------------------------- the analyze table


def _correlations() -> list[CorrelationRow]:
    rng = random.Random(5)
    out = []
    for level, n_all in (("system", 26), ("example", 780)):
        for scope in ["all", *MODELS]:
            for metric in ("bleu", "rouge_l", "bertscore"):
                vals = {}
                for c in ("pearson", "spearman", "kendall"):
                    v = rng.uniform(-0.4, 0.95)
                    vals[c] = v
                    vals[f"{c}_ci_low"] = v - rng.uniform(0.05, 0.5)
                    vals[f"{c}_ci_high"] = min(1.0, v + rng.uniform(0.05, 0.5))
                out.append(CorrelationRow(metric=metric, scope=scope, n=n_all if scope == "all" else n_all // 2, level=level, **vals))
    return out


@pytest.mark.parametrize("width", [80, 120])
def test_analyze_table_fits(width, monkeypatch):
    from harness_reporters.analysis_view import LEVEL_TITLES
    from harness_reporters.builtin import TableReporter

    from harness.report import analyze as analyze_cmd

    monkeypatch.setenv("COLUMNS", str(width))
    rows = _correlations()
    context = analyze_cmd.context(rows, ["A finding."], ["A note."], title="Metric-human agreement: study", source={"resamples": 1000, "seed": 0})
    text = TableReporter().render([], context)  # what `harness analyze` hands the default reporter
    _assert_fits(text, width)
    titles = [LEVEL_TITLES[level] for level in ("system", "example")]
    tables = _parse_tables(text, titles, key=0)
    assert list(tables) == titles
    full = 0
    for level, title in zip(("system", "example"), titles):
        table = tables[title]
        assert table["header"] == ["Scope", "Metric", "n", "Pearson r", "Spearman ρ", "Kendall τ-b"]
        mine = [r for r in rows if r.level == level]
        assert len(table["rows"]) == len(mine)
        for r, row in zip(mine, table["rows"]):
            assert row[:3] == [[r.scope], [r.metric], [str(r.n)]]
            for c, cell in zip(("pearson", "spearman", "kendall"), row[3:]):
                lo, hi = r.interval(c)
                interval = f"[{lo:.3f}, {hi:.3f}]"
                if interval in " ".join(cell):
                    full += 1
                else:
                    interval = f"±{(hi - lo) / 2:.3f}"
                assert _consume(" ".join(cell), [f"{r.value(c):.3f}", interval]) == ""
    assert full == (3 * len(rows) if width >= 120 else 0)
    assert "Findings" in text and "A finding." in text


# --------------------------------------------------------------------------- progress


def test_progress_fields_are_rounded():
    assert format_fields({"loss": 0.1234567890123}) == "loss=0.1235"
    assert format_fields({"loss": 2.718281828, "tok_s": 123.456}) == "loss=2.718  tok/s=123"
    assert format_fields({"tok_s": 1.4321, "samples_s": 0.0123}) == "tok/s=1.4  samples/s=0.012"
    assert format_fields({"step": 7, "lr": 2e-05, "big": 12345.678, "note": "warmup", "ok": True}) == "step=7  lr=2e-05  big=12346  note=warmup  ok=True"
    assert format_fields({"loss": float("nan")}) == "loss=nan"
    assert (format_seconds(5.21), format_seconds(125), format_seconds(3725)) == ("5.2 s", "2 min 05 s", "1 h 02 min")


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_progress_not_a_terminal_prints_one_line_per_cell_and_stage(tmp_path):
    buf = io.StringIO()
    clock = Clock()
    log = tmp_path / "out" / "harness.log"
    with RichProgress(Console(file=buf, width=80), log_path=log, every=30, clock=clock) as p:
        assert not p.live
        p.note("tuned")
        adv = p.task("fine-tuning", 40)
        for _ in range(40):
            clock.t += 0.5
            adv(1, loss=0.1234567890123)
        for config in ("top_k_50_num_beams_1_temp_0.0", "top_k_50_num_beams_5_temp_0.8"):
            p.note(f"tuned · {config}")
            adv = p.task("generating", 20)
            clock.t += 2.6
            adv(10, tok_s=311.4)
            assert buf.getvalue().count("generating tuned") == (0 if config.endswith("0.0") else 1)  # nothing until the cell ends
            clock.t += 2.6
            adv(10, tok_s=305.9)
        clock.t += 31
        p.note("tuned · top_k_50_num_beams_10_temp_0.8")
        adv = p.task("generating", 20)
        clock.t += 31
        adv(5)  # a long cell: a line with its ETA
        p.task("BERTScore", 20)  # a task of another description gets no stale cell name
    lines = buf.getvalue().splitlines()
    assert lines == [
        "fine-tuning tuned: 40/40 in 20.0 s, loss=0.1235",
        "fine-tuning: 1 cell, 40/40 in 20.0 s",
        "generating tuned · top_k_50_num_beams_1_temp_0.0: 20/20 in 5.2 s, tok/s=306",
        "generating tuned · top_k_50_num_beams_5_temp_0.8: 20/20 in 5.2 s, tok/s=306",
        "generating tuned · top_k_50_num_beams_10_temp_0.8: 5/20 after 31.0 s, eta 1 min 33 s",
        "generating tuned · top_k_50_num_beams_10_temp_0.8: 5/20 stopped after 31.0 s",
        "generating: 3 cells, 45/60 in 1 min 12 s (1 stopped before the end)",
        "BERTScore: 0/20 stopped after 0.0 s",
        "BERTScore: 1 cell, 0/20 in 0.0 s (1 stopped before the end)",
    ]
    logged = log.read_text().splitlines()
    assert [re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", "", line) for line in logged] == lines


def _shown(p: RichProgress) -> str:
    """What the bars show now, rendered at their console's width."""
    out = io.StringIO()
    Console(file=out, width=p.console.width).print(Group(*p._bars.get_renderables()))
    return out.getvalue()


@pytest.mark.parametrize("width", [80, 200])
def test_progress_in_a_terminal_fits_and_still_logs(width, tmp_path):
    buf = io.StringIO()
    log = tmp_path / "harness.log"
    console = Console(file=buf, width=width, force_terminal=True, color_system=None)
    with RichProgress(console, log_path=log) as p:
        assert p.live
        p.note("mistral-7b-lora · top_k_50_num_beams_1_temp_0.25")
        p.task("generating", 20)(5, tok_s=123.456)
        text = _shown(p)
        _assert_fits(text, width)
        assert "generating" in text and "mistral-7b-lora · top_k_50_num_beams_1_temp_0.25" in text
        assert "5/20" in text and "eta" in text and "tok/s=123" in text and "123.4" not in text
        assert len(text.splitlines()) == (2 if width == 80 else 1)  # stage and cell above the bar when one line would not fit
        p.note("mistral-7b-lora")
        p.task("fine-tuning", 400)(3, loss=0.1234567890123)
        text = _shown(p)
        _assert_fits(text, width)
        assert "generating" not in text  # the finished stage's bar gave way to its line
        assert "fine-tuning mistral-7b-lora" in " ".join(text.split()) and "3/400" in text and "loss=0.1235" in text and "0.123456" not in text
    # no per-cell lines in a terminal (the bars show them), the stage lines stay; the log has everything
    out = buf.getvalue()
    assert "generating: 1 cell, 5/20" in out and "fine-tuning: 1 cell, 3/400" in out
    assert "generating mistral-7b-lora · top_k_50_num_beams_1_temp_0.25: 5/20 stopped" not in out
    logged = log.read_text()
    assert "generating mistral-7b-lora · top_k_50_num_beams_1_temp_0.25: 5/20 stopped after" in logged and "fine-tuning: 1 cell" in logged


def test_run_without_a_terminal_prints_a_line_per_cell(cli, fake_registry):
    """A model's generation is one engine call for all its configs (issue 20): one line per model naming how many
    configs it decoded; the stage line still counts the cells (model × config)."""
    result = cli("run", "--all", "-r", fake_registry)
    assert result.exit_code == 0, result.output
    err = result.stderr
    calls = re.findall(r"^generating (fake-base|fake-tuned) · (\d+) configs: (\d+)/(\d+) in \d+\.\d s", err, flags=re.M)
    assert sorted(m for m, *_ in calls) == ["fake-base", "fake-tuned"]
    assert all(done == total == str(8 * int(n)) for _, n, done, total in calls)
    cells = sum(int(n) for _, n, _, _ in calls)
    assert re.search(rf"^generating: {cells} cells, {8 * cells}/{8 * cells} in ", err, flags=re.M)
    assert re.search(r"^training fake-tuned: \d+/\d+ in \d+\.\d s, loss=0\.5$", err, flags=re.M)


# --------------------------------------------------------------------------- issue 17, item 8


def test_markdown_report_escapes_the_experiment_and_model_names():
    """The Markdown report wrote the experiment name raw (the HTML report escapes it)."""
    from harness_reporters.builtin import MarkdownReporter

    rows, context, *_rest = study_report()
    name = "<img src=x onerror=alert(1)> *study* [link](http://x) | # `code` & more\nsecond line"
    context = {**context, "experiment": name}
    md = MarkdownReporter().render([r.__class__(**{**r.__dict__, "model": "m*_[1]"}) if r.model == MODELS[0] else r for r in rows], context)
    title = md.splitlines()[0]
    assert title == r"# &lt;img src=x onerror=alert(1)&gt; \*study\* \[link\](http://x) \| \# \`code\` &amp; more second line"
    assert "<img" not in md and "\nsecond line" not in md
    assert r"## m\*\_\[1\]" in md


def test_plugins_listing_is_readable_at_80_columns(monkeypatch):
    """`harness plugins` at 80 columns cut every package name ("llm-decoding-…") and wrapped descriptions into 6-line rows."""
    from click.testing import CliRunner

    import harness.cli
    from harness.plugins import build_plugins

    found = build_plugins()
    for width in (80, 60):
        monkeypatch.setenv("COLUMNS", str(width))
        result = CliRunner().invoke(harness.cli.main, ["plugins"])
        assert result.exit_code == 0, result.output
        text = result.stdout
        assert not re.search(r"\w…", text) and text.endswith("\n")  # nothing cut (a description may hold its own "…")
        assert all(cell_len(line) <= width for line in text.splitlines())
        for info in found.all():
            line = next(line for line in text.splitlines() if line.startswith(f"  {info.name} ") and not line.startswith("   "))
            assert f"{info.package} {info.version}" in line  # the package whole, on the plugin's own line
        if width == 80:  # each description takes at most three lines under its plugin
            blocks = re.split(r"\n(?=  \S)", text)
            assert all(len([l for l in b.splitlines() if l.startswith("      ")]) <= 3 for b in blocks)
    monkeypatch.setenv("COLUMNS", "240")
    wide = CliRunner().invoke(harness.cli.main, ["plugins"]).stdout
    assert "┃ name" in wide and "llm-decoding-harness" in wide and not re.search(r"\w…", wide)


def test_runs_output_ends_with_a_newline(cli, fake_registry):
    assert cli("run", "--all", "-r", fake_registry).exit_code == 0
    for args in (("runs",), ("runs", "--requirements", "1")):
        result = cli(*args, "-r", fake_registry)
        assert result.exit_code == 0 and result.stdout.endswith("\n") and not result.stdout.endswith("\n\n"), repr(result.stdout[-80:])
