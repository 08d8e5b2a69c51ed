"""Metrics that compare outputs (``Metric.against``), missing scores, and the store's schema 3 migration.

A metric that compares (a pairwise judge) gets, for each output, the same model's output for
the same example under the compared config; its scores are keyed by that generation too, so a
change of the compared output re-scores exactly what it affects. A score that could not be made
(an unparseable verdict) is recorded as missing and counted, never averaged in.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import fakes
from harness.store import STORE_NAME, SCHEMA_VERSION, Store
from test_records import digest

BASE = "top_k_50_num_beams_1_temp_0.8"


def pairwise_registry(folder: Path, **settings) -> Path:
    sweep = {"decoder": "standard", "mode": "one-at-a-time", "include_defaults": True, "max_new_tokens": 16, "seed": 0,
             "defaults": dict(fakes.STUDY_DEFAULTS), "vary": {"temperature": [0.0, 1.0], "num_beams": [2]}}
    return fakes.write_registry(folder / "registry.toml", models=fakes.DEFAULT_MODELS[:1], sweep=sweep,
                                metrics=["fake-len", "fake-prefer"], metric_settings={"fake-prefer": settings} if settings else None)


def rows(cli, registry: Path) -> list[dict]:
    result = cli("report", "--format", "json", "-r", registry)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def expected(folder: Path, config: str, against: str) -> tuple[float | None, int, int]:
    """The fake-prefer value, n and missing count of a cell, from the stored texts."""
    con = sqlite3.connect(folder / "out" / STORE_NAME)
    try:
        def texts(c: str) -> dict[str, str]:
            q = "SELECT ce.example_id, g.text FROM cell_examples ce JOIN generations g USING(gen_key) WHERE ce.config=?"
            return dict(con.execute(q, (c,)).fetchall())

        mine, other = texts(config), texts(against)
    finally:
        con.close()
    values = []
    missing = 0
    for e, text in mine.items():
        if "omega" in text.split():
            missing += 1
            continue
        a, b = len(text.split()), len(other[e].split())
        values.append(1.0 if a > b else 0.0 if a < b else 0.5)
    return (sum(values) / len(values) if values else None), len(values), missing


def test_a_pairwise_metric_compares_each_output_with_the_baselines_and_counts_missing_scores(cli, tmp_path) -> None:
    registry = pairwise_registry(tmp_path)
    assert cli("run", "--all", "-r", registry).exit_code == 0
    got = {r["config"]: r for r in rows(cli, registry) if r["metric"] == "fake-prefer"}
    assert set(got) == {BASE, "top_k_50_num_beams_1_temp_0.0", "top_k_50_num_beams_1_temp_1.0", "top_k_50_num_beams_2_temp_0.8"}
    for config, row in got.items():
        value, n, missing = expected(tmp_path, config, BASE)
        assert row["against"] == BASE
        assert (row["n"], row["n_missing"]) == (n, missing)
        assert n + missing == 8
        assert (row["value"] is None and value is None) or math.isclose(row["value"], value)
    # the baseline against itself: every example a tie (or missing)
    assert got[BASE]["value"] in (0.5, None)
    # the missing ones are recorded as missing (NULL), with the reason, and not scored again
    con = sqlite3.connect(tmp_path / "out" / STORE_NAME)
    nulls = con.execute("SELECT detail FROM scores WHERE value IS NULL").fetchall()
    con.close()
    assert sum(r["n_missing"] for r in got.values()) == len(nulls)
    assert all(json.loads(d)["why"] == "unparseable" for (d,) in nulls)
    fakes.reset()
    assert cli("run", "--all", "-r", registry).exit_code == 0
    assert fakes.FakePreferMetric.scored == 0


def test_comparing_with_another_config_rescores_exactly_that_metric(cli, tmp_path) -> None:
    registry = pairwise_registry(tmp_path)
    assert cli("run", "--all", "-r", registry).exit_code == 0
    first = {r["config"]: r for r in rows(cli, registry) if r["metric"] == "fake-prefer"}
    other = "top_k_50_num_beams_1_temp_0.0"
    pairwise_registry(tmp_path, against=other)
    fakes.reset()
    assert cli("run", "--all", "-r", registry).exit_code == 0
    # every cell compared again (against another output), nothing generated, the other metric untouched
    assert fakes.FakePreferMetric.scored == 4 * 8
    assert fakes.FakeEngine.generated == 0 and fakes._CountingMetric.scored == {}
    second = {r["config"]: r for r in rows(cli, registry) if r["metric"] == "fake-prefer"}
    for config, row in second.items():
        value, n, _ = expected(tmp_path, config, other)
        assert row["against"] == other and row["n"] == n
        assert (row["value"] is None and value is None) or math.isclose(row["value"], value)
    assert first.keys() == second.keys()


def test_an_unknown_config_to_compare_with_is_one_clear_error(cli, tmp_path) -> None:
    registry = pairwise_registry(tmp_path, against="top_k_50_num_beams_1_temp_9.9")
    result = cli("run", "--all", "-r", registry)
    assert result.exit_code == 2
    assert "metrics.fake-prefer" in result.output and "top_k_50_num_beams_1_temp_9.9" in result.output


def _downgrade_to_schema_2(path: Path) -> None:
    """Rewrite a store as the previous harness wrote it (schema 2: scores.value NOT NULL, no detail/against/missing)."""
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE scores_v2(gen_key TEXT NOT NULL, metric_key TEXT NOT NULL, ref_sha TEXT NOT NULL, value REAL NOT NULL, stats TEXT,
          PRIMARY KEY(gen_key, metric_key, ref_sha));
        INSERT INTO scores_v2 SELECT gen_key, metric_key, ref_sha, value, stats FROM scores;
        DROP TABLE scores; ALTER TABLE scores_v2 RENAME TO scores;
        ALTER TABLE cell_metrics DROP COLUMN against; ALTER TABLE cell_metrics DROP COLUMN missing;
        UPDATE meta SET value='2' WHERE key='schema_version';
        """
    )
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def test_a_schema_2_store_is_read_unchanged_and_migrated_in_place_by_a_run(cli, fake_registry) -> None:
    assert cli("run", "--all", "-r", fake_registry).exit_code == 0
    before = rows(cli, fake_registry)
    out = fake_registry.parent / "out"
    _downgrade_to_schema_2(out / STORE_NAME)
    old = digest(out)
    raw = (out / STORE_NAME).read_bytes()
    # reading commands read it (migrated in a copy in memory) and leave the file as it was
    assert rows(cli, fake_registry) == before
    for args in (("report",), ("report", "--format", "markdown"), ("runs",)):
        assert cli(*args, "-r", fake_registry).exit_code == 0
    assert digest(out) == old and (out / STORE_NAME).read_bytes() == raw
    # a run migrates it in place and reuses every result
    fakes.reset()
    assert cli("run", "--all", "-r", fake_registry).exit_code == 0
    assert fakes.FakeEngine.generated == 0 and fakes._CountingMetric.scored == {}
    store = Store(out)
    assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
    columns = [r[1] for r in store.db.execute("PRAGMA table_info(scores)")]
    assert "detail" in columns
    store.close()
    assert rows(cli, fake_registry) == before
