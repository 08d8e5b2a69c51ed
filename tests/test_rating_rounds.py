"""Issue 17, item 1: an item, once exported, keeps its scale for ever; another scale is a second round of new items.

The failure: `human export -n 3` (binary), rated and imported, then `human export -n 3 --scale likert`
(or only `human serve --scale likert`) re-labelled every exported item as Likert, so a binary sheet
of 1s ("acceptable") then imported as Likert 1s (the worst score) and another annotator's binary
sheet was refused as out of range.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

import fakes
from sheets import read_rows, write_rows
from harness.store import STORE_NAME, Store

PER_CELL = 3


def _items(registry) -> dict[str, tuple[str, str]]:
    con = sqlite3.connect(registry.parent / "out" / STORE_NAME)
    try:
        return {i: (g, s) for i, g, s in con.execute("SELECT item_id, gen_key, scale FROM human_items WHERE gen_key_b IS NULL")}
    finally:
        con.close()


def _ratings(registry) -> list[tuple]:
    con = sqlite3.connect(registry.parent / "out" / STORE_NAME)
    try:
        return con.execute("SELECT item_id, annotator, rating, scale FROM human_ratings ORDER BY item_id, annotator").fetchall()
    finally:
        con.close()


def _human(cli, registry) -> dict[tuple[str, str], float]:
    rows = json.loads(cli("report", "--format", "json", "-r", registry).stdout)
    return {(r["model"], r["config"]): r["value"] for r in rows if r["metric"] == "human"}


def _fill(sheet, annotator, value, out):
    write_rows(out, [r | {"rating": value, "annotator": annotator} for r in read_rows(sheet)])
    return out


@pytest.fixture
def binary_round(cli, fake_registry):
    """A finished run, a binary sheet of 3 items per cell, rated all 1 (acceptable) by ann1 and imported."""
    assert cli("run", "--all", "-r", fake_registry).exit_code == 0
    sheet = fake_registry.parent / "bin.csv"
    result = cli("human", "export", "-n", PER_CELL, "-o", sheet, "-r", fake_registry)
    assert result.exit_code == 0, result.output
    filled = _fill(sheet, "ann1", "1", fake_registry.parent / "bin-ann1.csv")
    result = cli("human", "import", filled, "-r", fake_registry)
    assert result.exit_code == 0 and "new binary rating(s)" in result.stdout, result.output
    return sheet


def test_a_likert_export_after_a_binary_one_makes_new_items_and_changes_no_rating(cli, fake_registry, binary_round) -> None:
    before_items, before_ratings, before_human = _items(fake_registry), _ratings(fake_registry), _human(cli, fake_registry)
    assert {s for _, s in before_items.values()} == {"binary"}
    assert set(before_human.values()) == {1.0}

    likert = fake_registry.parent / "likert.csv"
    result = cli("human", "export", "-n", PER_CELL, "--scale", "likert", "-o", likert, "-r", fake_registry)
    assert result.exit_code == 0, result.output
    assert "likert" in result.stdout and "binary items exported before for the same outputs keep their scale and their ratings" in result.stdout
    likert_ids = {r["item_id"] for r in read_rows(likert)}
    assert likert_ids.isdisjoint(before_items)  # new ids
    after = _items(fake_registry)
    # the old items are untouched, the new ones rate the same generations on the other scale
    assert {i: after[i] for i in before_items} == before_items
    assert {after[i][1] for i in likert_ids} == {"likert"}
    assert {after[i][0] for i in likert_ids} == {g for g, _ in before_items.values()}
    assert _ratings(fake_registry) == before_ratings
    assert _human(cli, fake_registry) == before_human

    # another annotator's binary sheet of 1s is still binary, and still "acceptable"
    filled = _fill(binary_round, "ann2", "1", fake_registry.parent / "bin-ann2.csv")
    result = cli("human", "import", filled, "-r", fake_registry)
    assert result.exit_code == 0, result.output
    assert f"imported {len(before_items)} new binary rating(s)" in result.stdout
    assert _human(cli, fake_registry) == before_human
    assert {s for *_, s in _ratings(fake_registry)} == {"binary"}

    # the Likert round is rated on its own scale; each rating keeps its meaning
    filled = _fill(likert, "ann3", "5", fake_registry.parent / "likert-ann3.csv")
    result = cli("human", "import", filled, "-r", fake_registry)
    assert result.exit_code == 0 and "new likert rating(s)" in result.stdout, result.output
    assert set(_human(cli, fake_registry).values()) == {1.0}  # binary 1 and Likert 5 are both the top of their scale

    # exporting the binary round again gives the same binary items (nothing new, nothing relabelled)
    again = fake_registry.parent / "bin-again.csv"
    assert cli("human", "export", "-n", PER_CELL, "-o", again, "-r", fake_registry).exit_code == 0
    assert {r["item_id"] for r in read_rows(again)} == set(before_items)
    assert {i: s for i, (_, s) in _items(fake_registry).items()} == {i: s for i, (_, s) in after.items()}


def test_serving_another_scale_relabels_nothing(cli, fake_registry, binary_round) -> None:
    """`human serve --scale likert`, stopped without a rating: the binary items stay binary."""
    from harness.report.items import prepare_items
    from harness.report.results import Results

    before = _items(fake_registry)
    store = Store.open_existing(fake_registry.parent / "out", threads=True)
    try:
        items, scale = prepare_items(store, Results.load(store, metrics=[]), n_per_cell=PER_CELL, scale="likert")
    finally:
        store.close()
    assert scale.name == "likert" and {i.scale for i in items} == {"likert"}
    assert {i.item_id for i in items}.isdisjoint(before)
    assert {i: _items(fake_registry)[i] for i in before} == before
    filled = _fill(binary_round, "ann2", "1", fake_registry.parent / "bin-ann2.csv")
    result = cli("human", "import", filled, "-r", fake_registry)
    assert result.exit_code == 0 and "new binary rating(s)" in result.stdout, result.output


def test_a_rating_on_another_scale_than_its_item_is_refused(cli, fake_registry, binary_round) -> None:
    """Naming --scale likert on import cannot turn a binary item's 1s into Likert 1s."""
    before = _ratings(fake_registry)
    filled = _fill(binary_round, "ann2", "1", fake_registry.parent / "bin-ann2.csv")
    result = cli("human", "import", filled, "--scale", "likert", "-r", fake_registry)
    assert result.exit_code == 2, result.output
    assert "exported for the binary scale" in result.stderr and "nothing was imported" in result.stderr
    assert _ratings(fake_registry) == before


def test_the_store_never_changes_an_exported_items_scale(tmp_path) -> None:
    store = Store(tmp_path)
    try:
        store.save_human_items([("h0000000001", "g1", "m", "c", "e1")], "binary")
        with pytest.raises(ValueError, match="keeps its scale"):
            store.save_human_items([("h0000000001", "g1", "m", "c", "e1"), ("h0000000002", "g2", "m", "c", "e2")], "likert")
        assert store.db.execute("SELECT item_id, scale FROM human_items").fetchall() == [("h0000000001", "binary")]
    finally:
        store.close()
