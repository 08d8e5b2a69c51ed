"""The human-rating round trip through the CLI with fake plugins: export, fill, import, report."""

from __future__ import annotations

import json

import pytest

import fakes
from stores import query
from sheets import read_rows, stand_in_rating, write_rows

N_CELLS = 2 * len(fakes.STUDY_CONFIGS)
PER_CELL = 3


@pytest.fixture
def exported(cli, fake_registry):
    assert cli("run", "--all", "-r", fake_registry).exit_code == 0
    sheet = fake_registry.parent / "sheet.csv"
    result = cli("human", "export", "-o", sheet, "-n", PER_CELL, "-r", fake_registry)
    assert result.exit_code == 0, result.output
    assert f"wrote {N_CELLS * PER_CELL} items" in result.stdout
    return sheet


def test_export_is_blinded(exported) -> None:
    rows = read_rows(exported)
    assert list(rows[0]) == ["item_id", "instruction", "input", "reference", "response", "rating", "annotator", "comment"]
    assert len(rows) == N_CELLS * PER_CELL
    assert len({r["item_id"] for r in rows}) == len(rows)
    assert all(r["rating"] == "" and r["annotator"] == "" for r in rows)
    text = exported.read_text()
    assert "fake-base" not in text and "fake-tuned" not in text and "num_beams" not in text


def test_round_trip_two_annotators(cli, fake_registry, exported) -> None:
    before = {"open": fakes.FakeEngine.open_calls, "generated": fakes.FakeEngine.generated}
    filled = []
    for annotator in ("ann1", "ann2"):
        for r in read_rows(exported):
            filled.append(r | {"rating": str(stand_in_rating(r["item_id"], annotator)), "annotator": annotator})
    sheet = exported.parent / "filled.csv"
    write_rows(sheet, filled)

    result = cli("human", "import", sheet, "-r", fake_registry)
    assert result.exit_code == 0, result.output
    assert f"imported {len(filled)} new binary rating(s) from 2 annotator(s): ann1, ann2" in result.stdout
    assert query(fake_registry, "SELECT COUNT(*) FROM human_ratings") == [(len(filled),)]

    # expected per cell: mean over items of the mean over annotators
    cell_of = {i: (m, c) for i, m, c in query(fake_registry, "SELECT item_id, model, config FROM human_items")}
    per_cell: dict[tuple[str, str], list[float]] = {}
    for item_id in {r["item_id"] for r in filled}:
        per_cell.setdefault(cell_of[item_id], []).append((stand_in_rating(item_id, "ann1") + stand_in_rating(item_id, "ann2")) / 2)

    report = json.loads(cli("report", "--format", "json", "-r", fake_registry).stdout)
    human = {(r["model"], r["config"]): r for r in report if r["metric"] == "human"}
    assert len(human) == N_CELLS
    for cell, row in human.items():
        assert row["n"] == PER_CELL
        assert row["value"] == pytest.approx(sum(per_cell[cell]) / len(per_cell[cell]))
    assert {"open": fakes.FakeEngine.open_calls, "generated": fakes.FakeEngine.generated} == before

    table = cli("report", "-r", fake_registry)
    assert table.exit_code == 0 and f"(n={PER_CELL})" in table.stdout

    # importing the same sheet again changes nothing and says so
    again = cli("human", "import", sheet, "-r", fake_registry)
    assert again.exit_code == 0 and f"{len(filled)} already imported with the same value (unchanged)" in again.stdout
    assert query(fake_registry, "SELECT COUNT(*) FROM human_ratings") == [(len(filled),)]


def test_export_never_overwrites_a_sheet_without_force(cli, fake_registry, exported) -> None:
    """Issue 13, item 1: a filled sheet is never overwritten without --force."""
    rows = read_rows(exported)
    write_rows(exported, [r | {"rating": "1", "annotator": "ann"} for r in rows])
    filled = exported.read_bytes()
    result = cli("human", "export", "-o", exported, "-n", PER_CELL, "-r", fake_registry)
    assert result.exit_code == 2, result.output
    assert "already exists" in result.stderr and "--force" in result.stderr and str(exported) in result.stderr
    assert exported.read_bytes() == filled
    forced = cli("human", "export", "-o", exported, "-n", PER_CELL, "--force", "-r", fake_registry)
    assert forced.exit_code == 0, forced.output
    assert all(r["rating"] == "" for r in read_rows(exported))


def test_reimport_with_other_values_needs_replace(cli, fake_registry, exported) -> None:
    """Issue 13, item 2: an annotator's earlier ratings are replaced only with --replace, and the change is counted."""
    rows = read_rows(exported)[:6]
    first = exported.parent / "first.csv"
    write_rows(first, [r | {"rating": "1", "annotator": "ann"} for r in rows])
    assert cli("human", "import", first, "--scale", "binary", "-r", fake_registry).exit_code == 0
    before = query(fake_registry, "SELECT item_id, annotator, rating FROM human_ratings ORDER BY 1, 2")

    second = exported.parent / "second.csv"
    write_rows(second, [r | {"rating": "0" if i < 2 else "1", "annotator": "ann"} for i, r in enumerate(rows)])
    refused = cli("human", "import", second, "-r", fake_registry)
    assert refused.exit_code == 2, refused.output
    assert "2 rating(s) would replace ratings already imported" in refused.stderr and "--replace" in refused.stderr
    assert "nothing was imported" in refused.stderr
    assert query(fake_registry, "SELECT item_id, annotator, rating FROM human_ratings ORDER BY 1, 2") == before

    replaced = cli("human", "import", second, "--replace", "-r", fake_registry)
    assert replaced.exit_code == 0, replaced.output
    assert "replaced 2 changed rating(s)" in replaced.stdout and "4 already imported" in replaced.stdout
    after = dict(((i, a), r) for i, a, r in query(fake_registry, "SELECT item_id, annotator, rating FROM human_ratings"))
    assert sorted(after.values()) == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("problem", ["unknown-id", "out-of-range", "both"])
def test_a_bad_sheet_imports_nothing(cli, fake_registry, exported, problem) -> None:
    rows = read_rows(exported)
    good = [r | {"rating": "1", "annotator": "ann1"} for r in rows[:5]] + [r | {"rating": "0", "annotator": "ann1"} for r in rows[5:10]]
    write_rows(exported.parent / "good.csv", good)
    assert cli("human", "import", exported.parent / "good.csv", "-r", fake_registry).exit_code == 0
    before = query(fake_registry, "SELECT item_id, annotator, rating FROM human_ratings ORDER BY 1, 2")
    assert len(before) == 10

    bad = [r | {"rating": str(i % 2), "annotator": "ann2"} for i, r in enumerate(rows[:10])]
    if problem in ("unknown-id", "both"):
        bad[3] = bad[3] | {"item_id": "hdeadbeef00"}
    if problem in ("out-of-range", "both"):
        bad[6] = bad[6] | {"rating": "7"}
    sheet = exported.parent / "bad.csv"
    write_rows(sheet, bad)
    result = cli("human", "import", sheet, "-r", fake_registry)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert str(sheet) in result.stderr
    assert "nothing was imported" in result.stderr
    if problem in ("unknown-id", "both"):
        assert "unknown item ids" in result.stderr and "'hdeadbeef00'" in result.stderr
    if problem in ("out-of-range", "both"):
        assert "rating '7' is out of range" in result.stderr
    assert query(fake_registry, "SELECT item_id, annotator, rating FROM human_ratings ORDER BY 1, 2") == before


def test_import_before_export_is_a_user_error(cli, fake_registry, tmp_path) -> None:
    assert cli("run", "--all", "-r", fake_registry).exit_code == 0
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("item_id,rating,annotator\nh0123456789,1,a\n")
    result = cli("human", "import", sheet, "-r", fake_registry)
    assert result.exit_code == 2 and "harness human export" in result.stderr


def test_configs_sharing_generations_export_and_count_once_each(cli, tmp_path) -> None:
    """Issue 13, item 5: beam search ignores temperature, so a temperature x num_beams grid shares generations."""
    registry = fakes.write_registry(
        tmp_path / "registry.toml",
        models=[fakes.DEFAULT_MODELS[0]],
        sweep={"decoder": "standard", "mode": "grid", "max_new_tokens": 16, "seed": 0,
               "defaults": {"top_k": 50, "num_beams": 1, "temperature": 0.8}, "vary": {"temperature": [0.5, 1.0], "num_beams": [2]}},
    )
    assert cli("run", "--all", "-r", registry).exit_code == 0
    sheet = tmp_path / "sheet.csv"
    result = cli("human", "export", "-o", sheet, "-n", 4, "-r", registry)
    assert result.exit_code == 0, result.output
    rows = read_rows(sheet)
    assert len(rows) == 4  # both configs decode identically: 4 items, rated once
    write_rows(sheet, [r | {"rating": str(i % 2), "annotator": "ann"} for i, r in enumerate(rows)])
    assert cli("human", "import", sheet, "-r", registry).exit_code == 0
    report = json.loads(cli("report", "--format", "json", "-r", registry).stdout)
    human = {r["config"]: r for r in report if r["metric"] == "human"}
    assert set(human) == {"top_k_50_num_beams_2_temp_0.5", "top_k_50_num_beams_2_temp_1.0"}
    assert {r["n"] for r in human.values()} == {4}
    assert human["top_k_50_num_beams_2_temp_0.5"]["value"] == human["top_k_50_num_beams_2_temp_1.0"]["value"] == 0.5
