"""Issue 19 end to end: the fake study, rated on a sample of its examples, reports Human (PPI), the claims and a plan.

Annotators follow the output's length (what ``fake-len`` measures) with some noise, so ``fake-len``
predicts them and cross-fitting chooses it; half of each cell's 8 test examples are rated.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import fakes
import sheets

pytest.importorskip("ppi_py")


def _noise(item_id: str, annotator: str) -> float:
    return int(hashlib.sha256(f"{item_id}|{annotator}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def fill_by_length(sheet: Path, annotators=("ann1", "ann2")) -> None:
    """Likert ratings that rise with the response's length (what fake-len scores), with per-annotator noise."""
    rows = sheets.read_rows(sheet)
    out = []
    for a in annotators:
        for r in rows:
            words = len(r["response"].split())
            rating = min(5, max(1, round(1 + words / 3 + (_noise(r["item_id"], a) - 0.5) * 1.5)))
            out.append(r | {"rating": str(rating), "annotator": a})
    sheets.write_rows(sheet, out)


@pytest.fixture
def rated(cli, fake_registry):
    assert cli("run", "--all", "-r", fake_registry).exit_code == 0
    sheet = fake_registry.parent / "sheet.csv"
    assert cli("human", "export", "-o", sheet, "-n", 4, "--scale", "likert", "-r", fake_registry).exit_code == 0
    fill_by_length(sheet)
    result = cli("human", "import", sheet, "--scale", "likert", "-r", fake_registry)
    assert result.exit_code == 0, result.output
    return fake_registry


def _json(cli, *args) -> list[dict]:
    result = cli("report", "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_rows_for_human_carry_the_ppi_estimate(cli, rated) -> None:
    rows = _json(cli, "-r", rated)
    human = [r for r in rows if r["metric"] == "human"]
    assert len(human) == 2 * len(fakes.STUDY_CONFIGS)
    for r in human:
        assert {"ppi_value", "ppi_ci_low", "ppi_ci_high", "ppi_predictor", "ppi_n_rated", "ppi_n_total"} <= set(r)
        assert r["ppi_n_rated"] == r["n"] == 4 and r["ppi_n_total"] == 8
        if r["ppi_value"] is None:
            assert r["ppi_note"], r  # says why
            continue
        assert r["ppi_predictor"] in ("fake-len", "fake-overlap")
        assert r["ppi_ci_low"] <= r["ppi_value"] <= r["ppi_ci_high"]
        assert r["ppi_n_effective"] > 0
    estimated = [r for r in human if r["ppi_value"] is not None]
    assert len(estimated) >= len(human) // 2
    # annotators follow length: the cross-fitted predictor is fake-len for most cells
    assert sum(r["ppi_predictor"] == "fake-len" for r in estimated) > len(estimated) / 2
    # paired differences with the baseline (the first config here) on the other configs
    diffs = [r for r in human if not r["baseline"] and r["ppi_diff"] is not None]
    assert diffs and all(r["ppi_diff_ci_low"] <= r["ppi_diff"] <= r["ppi_diff_ci_high"] and r["ppi_p_holm"] >= r["ppi_p_value"] for r in diffs)
    assert all(r["ppi_diff"] is None for r in human if r["baseline"])
    # other rows carry no ppi fields; every row says what would settle a non-significant comparison
    assert all("ppi_value" not in r and "n_to_settle" in r for r in rows if r["metric"] != "human")
    assert any(r["n_to_settle"] for r in rows)
    assert _json(cli, "-r", rated) == rows  # deterministic


def test_a_named_predictor_is_used_everywhere_and_a_wrong_one_is_refused(cli, rated) -> None:
    rows = _json(cli, "--predictor", "fake-overlap", "-r", rated)
    assert {r["ppi_predictor"] for r in rows if r["metric"] == "human"} == {"fake-overlap"}
    bad = cli("report", "--predictor", "fake-lenn", "-r", rated)
    assert bad.exit_code == 2 and "did you mean 'fake-len'" in bad.stderr and "--predictor" in bad.stderr
    bad = cli("report", "--predictor", "fake-overlap", "--metric", "fake-len", "-r", rated)
    assert bad.exit_code == 2 and "add --metric fake-overlap" in bad.stderr


def test_registry_predictor_is_validated_and_used(cli, tmp_path) -> None:
    path = fakes.write_registry(tmp_path / "registry.toml", human={"n_per_cell": 4, "predictor": "fake-lenn"})
    result = cli("check", path)
    assert result.exit_code == 2 and "human.predictor" in result.stderr and "did you mean 'fake-len'" in result.stderr
    path = fakes.write_registry(tmp_path / "registry.toml", human={"n_per_cell": 4, "predictor": "fake-overlap"})
    assert cli("run", "--all", "-r", path).exit_code == 0
    sheet = tmp_path / "sheet.csv"
    assert cli("human", "export", "-o", sheet, "--scale", "likert", "-r", path).exit_code == 0
    fill_by_length(sheet)
    assert cli("human", "import", sheet, "--scale", "likert", "-r", path).exit_code == 0
    rows = _json(cli, "-r", path)
    assert {r["ppi_predictor"] for r in rows if r["metric"] == "human"} == {"fake-overlap"}


def test_tables_show_the_column_and_the_claims(cli, rated) -> None:
    text = cli("report", "-r", rated).stdout
    flat = " ".join(text.split())
    assert "Human (PPI)" in text and "(≈" in text
    assert "Human (PPI) predictor: fake-base: fake-len" in flat
    assert "What these numbers can claim" in text and "smallest differences from the baseline" in flat
    md = cli("report", "--format", "markdown", "-r", rated).stdout
    assert "| Human (PPI) |" in md and "## What the numbers can claim" in md
    csv_text = cli("report", "--format", "csv", "-r", rated).stdout
    assert csv_text.splitlines()[0].endswith("ppi_value,ppi_ci_low,ppi_ci_high,ppi_predictor,ppi_n_rated,ppi_n_total,ppi_n_effective")


def test_identical_outputs_are_reported_with_their_share(cli, rated) -> None:
    """Beam configs ignore temperature, greedy ignores top_k: the fake engine gives them the same text."""
    rows = _json(cli, "-r", rated)
    assert rows
    from harness.report.claims import identical_outputs
    from harness.report.results import Results
    from harness.store import Store

    store = Store.open_existing(rated.parent / "out", readonly=True)
    results = Results.load(store)
    found = identical_outputs(results, "top_k_10_num_beams_1_temp_0.8")
    texts = {}
    for c in results.cells:
        texts[(c.model, c.config)] = store.texts([k for _, k in c.keys])
    for i in found:
        a = dict((e, texts[(i.model, i.config)][k]) for e, k in next(c for c in results.cells if (c.model, c.config) == (i.model, i.config)).keys)
        b = dict((e, texts[(i.model, i.baseline)][k]) for e, k in next(c for c in results.cells if (c.model, c.config) == (i.model, i.baseline)).keys)
        assert i.same == sum(a[e] == b[e] for e in a if e in b) and i.shared == len(set(a) & set(b))
