"""Issue 19 end to end: the fake study, rated on a sample of its examples, reports Human (PPI), the claims and a plan.

Annotators follow the output's length (what ``fake-len`` measures) with some noise, so ``fake-len``
predicts them and cross-fitting chooses it; half of each cell's 8 test examples are rated.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import sys
from pathlib import Path

import pytest

import fakes
import sheets
from harness.store import STORE_NAME

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


def test_outputs_identical_to_the_baselines_are_reported_with_their_share(cli, tmp_path) -> None:
    """Seeded samplers give sampled configs the same draws: the report says which share of a config's outputs equal the baseline's."""
    sweep = {"decoder": "standard", "mode": "one-at-a-time", "max_new_tokens": 16, "seed": 0, "include_defaults": True,
             "defaults": {"top_k": 50, "num_beams": 1, "temperature": 0.8}, "vary": {"top_k": [40], "num_beams": [2]}}
    path = fakes.write_registry(tmp_path / "registry.toml", sweep=sweep, models=fakes.DEFAULT_MODELS[:1])
    assert cli("run", "--all", "-r", path).exit_code == 0
    base, top_k = "top_k_50_num_beams_1_temp_0.8", "top_k_40_num_beams_1_temp_0.8"
    # the fake engine's text depends on top_k; here 3 of the 8 outputs came out the same, as a seeded sampler's often do
    con = sqlite3.connect(tmp_path / "out" / STORE_NAME)
    keys = {c: dict(con.execute("SELECT example_id, gen_key FROM cell_examples WHERE config=?", (c,)).fetchall()) for c in (base, top_k)}
    for e in sorted(keys[base])[:3]:
        con.execute("UPDATE generations SET text=(SELECT text FROM generations WHERE gen_key=?) WHERE gen_key=?", (keys[base][e], keys[top_k][e]))
    con.commit()
    con.close()
    md = cli("report", "--format", "markdown", "-r", path).stdout
    flat = " ".join(md.split())
    assert f"fake-base: outputs that are the same text as the baseline's ({base}), share of the examples: {top_k} 38%." in flat
    assert "seeded sampler gives every sampled config the same random draws" in flat
    assert "top_k_50_num_beams_2_temp_0.8" not in flat.split("same text as the baseline's")[1].split(".")[0]
    table = " ".join(cli("report", "-r", path).stdout.split())
    assert "share of the examples: top_k=40 38%" in table


def test_plan_from_the_pilot_in_json_and_as_a_table(cli, rated) -> None:
    result = cli("plan", "--format", "json", "-r", rated)
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert set(found) >= {"targets", "paired", "ratings", "correlations", "registry", "registry_toml", "notes"}
    paired = {(r["model"], r["metric"], r["config"]): r for r in found["paired"]}
    assert len(paired) == 2 * 3 * 11  # 2 models x (2 metrics + human) x 11 configs against the baseline
    row = paired[("fake-base", "fake-len", "top_k_25_num_beams_1_temp_0.8")]
    assert row["n"] == 8 and row["n_needed"] == math.ceil((1.959964 + 0.841621) ** 2 * row["sd"] ** 2 / 0.05**2 - 1e-9)
    assert paired[("fake-base", "human", "top_k_25_num_beams_1_temp_0.8")]["unit"] == "ratings"
    for r in found["ratings"]:
        assert r["predictor"] == "fake-len" and r["rho"] > 0.5 and r["n_ppi"] < r["n_needed"]
    assert found["registry"]["predictor"] == "fake-len"
    assert found["registry_toml"].startswith("[dataset]\ntest_size = ")
    assert {c["metric"] for c in found["correlations"]} == {"fake-len", "fake-overlap"}
    table = cli("plan", "--delta", "0.1", "-r", rated).stdout
    assert "Test examples to detect a paired difference of 0.1" in table and "Set in registry.toml:" in table
    assert 'predictor = "fake-len"' in table and "With PPI" in table
    # stated assumptions override the pilot
    assumed = json.loads(cli("plan", "--format", "json", "--sd", "0.2", "--rho", "0.6", "-r", rated).stdout)
    assert [r["n_needed"] for r in assumed["paired"]] == [126] and all(r["rho"] == 0.6 for r in assumed["ratings"])


def test_plan_without_a_pilot_and_its_bad_input(cli, tmp_path) -> None:
    missing = tmp_path / "nothing.toml"
    result = cli("plan", "--sd", "0.2", "--rho", "0.5", "--format", "json", "-r", missing)
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["source"] == "assumptions" and found["paired"][0]["n_needed"] == 126
    # an experiment that has not run yet: its test size is the current one
    path = fakes.write_registry(tmp_path / "registry.toml")
    found = json.loads(cli("plan", "--sd", "0.2", "--format", "json", "-r", path).stdout)
    assert found["test_size"] == 8 and found["paired"][0]["n"] == 8
    for args, message in [
        ((), "--sd and/or --rho"),
        (("--rho", "1.5"), "--rho"),
        (("--sd", "0.2", "--power", "1"), "--power"),
        (("--sd", "0.2", "--predictor", "bleu"), "--predictor"),
    ]:
        bad = cli("plan", *args, "-r", missing)
        assert bad.exit_code == 2 and message in bad.stderr, (args, bad.output)


def test_without_ppi_py_the_column_says_how_to_install_it(cli, rated, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ppi_py", None)
    rows = _json(cli, "-r", rated)
    human = [r for r in rows if r["metric"] == "human"]
    assert all(r["ppi_value"] is None and "pip install 'llm-decoding-harness[ppi]'" in r["ppi_note"] for r in human)
    text = " ".join(cli("report", "-r", rated).stdout.split())
    assert "needs ppi-python" in text and "install it with: pip install 'llm-decoding-harness[ppi]'" in text
