"""The experiment's SQLite store: one database per output folder, WAL mode.

Everything is keyed by content: a generation by what it depends on (model identity,
template, example, effective decoding, seed, engine), a score by its generation and
the metric's identity. A row is written once its work is done, in a transaction per
batch, so an interrupted run loses at most the batch in flight and a re-run finds
everything else in place.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .api import Example, ExampleScore, GenResult
from .errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS splits(split_key TEXT PRIMARY KEY, info TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS examples(
  split_key TEXT NOT NULL, split TEXT NOT NULL, position INTEGER NOT NULL,
  id TEXT NOT NULL, instruction TEXT NOT NULL, input TEXT NOT NULL, output TEXT NOT NULL,
  PRIMARY KEY(split_key, split, position));
CREATE TABLE IF NOT EXISTS adapters(
  train_key TEXT PRIMARY KEY, model TEXT NOT NULL, path TEXT NOT NULL, adapter_sha256 TEXT NOT NULL,
  summary TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS generations(
  gen_key TEXT PRIMARY KEY, model TEXT NOT NULL, config TEXT NOT NULL, example_id TEXT NOT NULL,
  text TEXT NOT NULL, decoding TEXT NOT NULL, engine TEXT NOT NULL, model_key TEXT NOT NULL, template TEXT NOT NULL,
  prompt_tokens INTEGER, new_tokens INTEGER, seconds REAL, finish_reason TEXT, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS metric_ids(metric_key TEXT PRIMARY KEY, metric TEXT NOT NULL, identity TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scores(
  gen_key TEXT NOT NULL, metric_key TEXT NOT NULL, value REAL NOT NULL, stats TEXT,
  PRIMARY KEY(gen_key, metric_key));
CREATE TABLE IF NOT EXISTS aggregates(
  model TEXT NOT NULL, config TEXT NOT NULL, metric TEXT NOT NULL, value REAL, n INTEGER NOT NULL,
  metric_key TEXT, updated REAL NOT NULL, PRIMARY KEY(model, config, metric));
CREATE TABLE IF NOT EXISTS failures(
  cell TEXT PRIMARY KEY, stage TEXT NOT NULL, model TEXT, config TEXT, metric TEXT,
  error TEXT NOT NULL, traceback TEXT, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
  run_id INTEGER PRIMARY KEY AUTOINCREMENT, command TEXT NOT NULL, started REAL NOT NULL,
  finished REAL, status TEXT NOT NULL, metadata TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS human_items(
  item_id TEXT PRIMARY KEY, gen_key TEXT NOT NULL, model TEXT NOT NULL, config TEXT NOT NULL,
  example_id TEXT NOT NULL, exported REAL NOT NULL);
CREATE TABLE IF NOT EXISTS human_ratings(
  item_id TEXT NOT NULL, annotator TEXT NOT NULL, rating REAL NOT NULL, scale TEXT NOT NULL,
  source TEXT NOT NULL, imported REAL NOT NULL, PRIMARY KEY(item_id, annotator));
"""

STORE_NAME = "harness.sqlite"


class Store:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / STORE_NAME
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
        except (OSError, sqlite3.Error) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            raise UserError(f"cannot create the results store in {self.directory}: {why}", key="experiment.output_dir") from None
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    @classmethod
    def open_existing(cls, directory: Path) -> Store | None:
        return cls(directory) if (Path(directory) / STORE_NAME).exists() else None

    def close(self) -> None:
        self.db.close()

    def _tx(self):
        return _Transaction(self.db)

    # -- meta

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    # -- split

    def load_split(self, split_key: str) -> tuple[list[Example], list[Example]] | None:
        if not self.db.execute("SELECT 1 FROM splits WHERE split_key=?", (split_key,)).fetchone():
            return None
        out: dict[str, list[Example]] = {"train": [], "test": []}
        for split, id_, ins, inp, outp in self.db.execute(
            "SELECT split, id, instruction, input, output FROM examples WHERE split_key=? ORDER BY split, position", (split_key,)
        ):
            out[split].append(Example(id_, ins, inp, outp))
        return out["train"], out["test"]

    def save_split(self, split_key: str, info: dict[str, Any], train: Sequence[Example], test: Sequence[Example]) -> None:
        with self._tx():
            for name, rows in (("train", train), ("test", test)):
                self.db.executemany(
                    "INSERT OR REPLACE INTO examples VALUES(?,?,?,?,?,?,?)",
                    [(split_key, name, i, e.id, e.instruction, e.input, e.output) for i, e in enumerate(rows)],
                )
            self.db.execute("INSERT OR REPLACE INTO splits VALUES(?,?,?)", (split_key, json.dumps(info), time.time()))

    # -- adapters

    def adapter(self, train_key: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT path, adapter_sha256, summary FROM adapters WHERE train_key=?", (train_key,)).fetchone()
        if not row:
            return None
        return {"path": row[0], "sha256": row[1], "summary": json.loads(row[2])}

    def save_adapter(self, train_key: str, model: str, path: Path, sha: str, summary: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO adapters VALUES(?,?,?,?,?,?)", (train_key, model, str(path), sha, json.dumps(summary), time.time())
        )

    # -- generations

    def existing_generations(self, keys: Iterable[str]) -> set[str]:
        return {k for (k,) in self._select_in("SELECT gen_key FROM generations WHERE gen_key IN ({})", list(keys))}

    def save_generations(self, rows: Sequence[tuple[GenResult, dict[str, Any]]]) -> None:
        """``rows``: (result, info) where info has model, config, example_id, decoding, engine, model_key, template."""
        now = time.time()
        with self._tx():
            self.db.executemany(
                "INSERT OR REPLACE INTO generations VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        r.key, i["model"], i["config"], i["example_id"], r.text, json.dumps(i["decoding"]), i["engine"],
                        i["model_key"], json.dumps(i["template"]), r.prompt_tokens, r.new_tokens, r.seconds, r.finish_reason, now,
                    )
                    for r, i in rows
                ],
            )

    def generations(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        cols = ("gen_key", "text", "decoding", "engine", "prompt_tokens", "new_tokens", "seconds", "finish_reason", "example_id")
        out = {}
        for row in self._select_in(f"SELECT {', '.join(cols)} FROM generations WHERE gen_key IN ({{}})", list(keys)):
            d = dict(zip(cols, row))
            d["decoding"] = json.loads(d["decoding"])
            out[d["gen_key"]] = d
        return out

    # -- scores

    def register_metric(self, metric_key: str, name: str, identity: dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO metric_ids VALUES(?,?,?)", (metric_key, name, json.dumps(identity, sort_keys=True)))

    def metric_identities(self) -> dict[str, dict[str, Any]]:
        return {k: {"metric": m, "identity": json.loads(i)} for k, m, i in self.db.execute("SELECT * FROM metric_ids")}

    def scores(self, metric_key: str, gen_keys: Sequence[str]) -> dict[str, ExampleScore]:
        rows = self._select_in(
            "SELECT gen_key, value, stats FROM scores WHERE metric_key=? AND gen_key IN ({})", list(gen_keys), prefix=(metric_key,)
        )
        return {g: ExampleScore(v, tuple(json.loads(s)) if s else None) for g, v, s in rows}

    def save_scores(self, metric_key: str, items: Sequence[tuple[str, ExampleScore]]) -> None:
        with self._tx():
            self.db.executemany(
                "INSERT OR REPLACE INTO scores VALUES(?,?,?,?)",
                [(g, metric_key, float(s.value), json.dumps(list(s.stats)) if s.stats is not None else None) for g, s in items],
            )

    def save_aggregates(self, rows: Sequence[tuple[str, str, str, float | None, int, str | None]]) -> None:
        now = time.time()
        with self._tx():
            self.db.executemany("INSERT OR REPLACE INTO aggregates VALUES(?,?,?,?,?,?,?)", [(*r, now) for r in rows])

    # -- failures

    def record_failure(self, cell: str, stage: str, error: str, tb: str, *, model=None, config=None, metric=None) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO failures VALUES(?,?,?,?,?,?,?,?)", (cell, stage, model, config, metric, error, tb, time.time())
        )

    def clear_failure(self, cell: str) -> None:
        self.db.execute("DELETE FROM failures WHERE cell=?", (cell,))

    def failures(self) -> list[dict[str, Any]]:
        cols = ("cell", "stage", "model", "config", "metric", "error")
        return [dict(zip(cols, r)) for r in self.db.execute(f"SELECT {', '.join(cols)} FROM failures ORDER BY cell")]

    # -- runs

    def start_run(self, command: str, metadata: dict[str, Any]) -> int:
        cur = self.db.execute(
            "INSERT INTO runs(command, started, status, metadata) VALUES(?,?,?,?)", (command, time.time(), "running", json.dumps(metadata))
        )
        return int(cur.lastrowid)

    def finish_run(self, run_id: int, status: str, metadata: dict[str, Any] | None = None) -> None:
        if metadata is not None:
            self.db.execute("UPDATE runs SET metadata=? WHERE run_id=?", (json.dumps(metadata), run_id))
        self.db.execute("UPDATE runs SET finished=?, status=? WHERE run_id=?", (time.time(), status, run_id))

    def last_run(self) -> dict[str, Any] | None:
        row = self.db.execute("SELECT run_id, command, started, finished, status, metadata FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()
        if not row:
            return None
        return dict(zip(("run_id", "command", "started", "finished", "status"), row[:5])) | {"metadata": json.loads(row[5])}

    # -- human ratings

    def save_human_items(self, items: Sequence[tuple[str, str, str, str, str]]) -> None:
        now = time.time()
        with self._tx():
            self.db.executemany("INSERT OR REPLACE INTO human_items VALUES(?,?,?,?,?,?)", [(*i, now) for i in items])

    def human_item_ids(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT item_id FROM human_items")}

    def save_ratings(self, ratings: Sequence[tuple[str, str, float]], scale: str, source: str) -> None:
        now = time.time()
        with self._tx():
            self.db.executemany(
                "INSERT OR REPLACE INTO human_ratings VALUES(?,?,?,?,?,?)", [(i, a, r, scale, source, now) for i, a, r in ratings]
            )

    def existing_ratings(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], float]:
        """The stored rating of each (item_id, annotator) pair that has one."""
        wanted = set(pairs)
        rows = self._select_in("SELECT item_id, annotator, rating FROM human_ratings WHERE item_id IN ({})", sorted({i for i, _ in wanted}))
        return {(i, a): float(r) for i, a, r in rows if (i, a) in wanted}

    def human_ratings(self) -> list[tuple[str, str, str, str, float, str]]:
        """Every imported rating as (model, config, gen_key, annotator, rating, scale), model and config as exported."""
        q = (
            "SELECT i.model, i.config, i.gen_key, r.annotator, r.rating, r.scale "
            "FROM human_ratings r JOIN human_items i USING(item_id) ORDER BY i.model, i.config, i.gen_key, r.annotator"
        )
        return [(m, c, g, a, float(r), s) for m, c, g, a, r, s in self.db.execute(q)]

    def ratings_by_gen(self) -> dict[str, list[tuple[str, float, str]]]:
        """gen_key -> [(annotator, rating, scale)] over every imported rating."""
        out: dict[str, list[tuple[str, float, str]]] = {}
        for _, _, g, a, r, s in self.human_ratings():
            out.setdefault(g, []).append((a, r, s))
        return out

    # -- helpers

    def _select_in(self, sql: str, values: list[str], prefix: tuple = ()) -> list[tuple]:
        out: list[tuple] = []
        for i in range(0, len(values), 500):
            chunk = values[i : i + 500]
            out.extend(self.db.execute(sql.format(",".join("?" * len(chunk))), (*prefix, *chunk)).fetchall())
        return out


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False
