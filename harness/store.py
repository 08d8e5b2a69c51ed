"""The experiment's SQLite store: one database per output folder, WAL mode.

Everything is keyed by content: a generation by what it depends on (model identity,
template, example, effective decoding, seed, engine), a score by its generation, the
metric's identity and the reference it was scored against. A row is written once its
work is done, in a transaction per batch, so an interrupted run loses at most the batch
in flight and a re-run finds everything else in place.

Beside the cache, the store holds the **records of what a run ran** — what every reading
command reads, on any machine, without rebuilding a model, an engine or a metric:

* ``cells``: per (model, config) the effective decoding, the engine's identity, the model's
  identity and adapter, and the split it was generated on;
* ``cell_examples``: per (model, config) the generation key of every test example;
* ``cell_metrics``: per (model, config, metric) the metric key, the aggregate value and n;
* ``metric_ids``: each metric key's identity, label and direction;
* ``runs``: each run's command, status, versions, hardware and a snapshot of the experiment.

Records are written in the same transaction as the results they describe. Paths inside
the output folder (trained adapters) are stored relative to it, so a copied or moved
folder keeps working; adapters are also recorded by the sha256 of their weights.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .api import MISSING_SCORE, Example, ExampleScore, GenResult
from .errors import UserError
from .store_health import GuardedConnection, SpaceReserve, check_store

#: bump when tables change; a store of an older version this harness can migrate is migrated (see ``MIGRATIONS``),
#: any other is refused with a clear message
SCHEMA_VERSION = 3

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
CREATE TABLE IF NOT EXISTS metric_ids(
  metric_key TEXT PRIMARY KEY, metric TEXT NOT NULL, identity TEXT NOT NULL,
  label TEXT NOT NULL, higher_is_better INTEGER NOT NULL, aggregation TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scores(
  gen_key TEXT NOT NULL, metric_key TEXT NOT NULL, ref_sha TEXT NOT NULL, value REAL, stats TEXT, detail TEXT,
  PRIMARY KEY(gen_key, metric_key, ref_sha));
CREATE TABLE IF NOT EXISTS cells(
  model TEXT NOT NULL, config TEXT NOT NULL, split_key TEXT NOT NULL, model_key TEXT NOT NULL,
  model_info TEXT NOT NULL, params TEXT NOT NULL, decoding TEXT NOT NULL, engine TEXT NOT NULL,
  run_id INTEGER, updated REAL NOT NULL, PRIMARY KEY(model, config));
CREATE TABLE IF NOT EXISTS cell_examples(
  model TEXT NOT NULL, config TEXT NOT NULL, position INTEGER NOT NULL, example_id TEXT NOT NULL,
  gen_key TEXT NOT NULL, PRIMARY KEY(model, config, position));
CREATE INDEX IF NOT EXISTS cell_examples_gen ON cell_examples(gen_key);
CREATE TABLE IF NOT EXISTS cell_metrics(
  model TEXT NOT NULL, config TEXT NOT NULL, metric TEXT NOT NULL, metric_key TEXT NOT NULL,
  split_key TEXT NOT NULL, value REAL, n INTEGER NOT NULL, run_id INTEGER, updated REAL NOT NULL,
  against TEXT, missing INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(model, config, metric));
CREATE TABLE IF NOT EXISTS failures(
  cell TEXT PRIMARY KEY, stage TEXT NOT NULL, model TEXT, config TEXT, metric TEXT,
  error TEXT NOT NULL, traceback TEXT, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
  run_id INTEGER PRIMARY KEY AUTOINCREMENT, command TEXT NOT NULL, started REAL NOT NULL,
  finished REAL, status TEXT NOT NULL, pid INTEGER, host TEXT, metadata TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS human_items(
  item_id TEXT PRIMARY KEY, gen_key TEXT NOT NULL, model TEXT NOT NULL, config TEXT NOT NULL,
  example_id TEXT NOT NULL, exported REAL NOT NULL,
  gen_key_b TEXT, config_b TEXT, model_b TEXT, a_on_left INTEGER, scale TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS human_ratings(
  item_id TEXT NOT NULL, annotator TEXT NOT NULL, rating REAL NOT NULL, scale TEXT NOT NULL,
  source TEXT NOT NULL, imported REAL NOT NULL, comment TEXT NOT NULL DEFAULT '',
  PRIMARY KEY(item_id, annotator));
"""

#: from version -> the statements that bring a store of that version to the next (run in one transaction)
MIGRATIONS: dict[int, str] = {
    # 2 -> 3: a score may be missing (NULL value: an unparseable judge verdict) and carries a detail; a cell's metric
    # records what its outputs were compared with (a pairwise metric) and how many examples could not be scored
    2: """
ALTER TABLE cell_metrics ADD COLUMN against TEXT;
ALTER TABLE cell_metrics ADD COLUMN missing INTEGER NOT NULL DEFAULT 0;
CREATE TABLE scores_v3(
  gen_key TEXT NOT NULL, metric_key TEXT NOT NULL, ref_sha TEXT NOT NULL, value REAL, stats TEXT, detail TEXT,
  PRIMARY KEY(gen_key, metric_key, ref_sha));
INSERT INTO scores_v3(gen_key, metric_key, ref_sha, value, stats) SELECT gen_key, metric_key, ref_sha, value, stats FROM scores;
DROP TABLE scores;
ALTER TABLE scores_v3 RENAME TO scores;
""",
}

STORE_NAME = "harness.sqlite"
LOCK_NAME = ".harness.lock"


@dataclass(frozen=True)
class CellRecord:
    """What a (model, config) cell was generated with (the ``cells`` table)."""

    model: str
    config: str
    split_key: str
    model_key: str
    model_info: dict[str, Any]
    params: dict[str, Any]
    decoding: dict[str, Any]
    engine: dict[str, Any]


class Store:
    """The store of one output folder.

    ``readonly``: the caller only reads (reports, analyses, a merge's sources). Nothing is written to
    the file then, not even a migration: a store of an older schema is migrated in a copy in memory.
    """

    def __init__(self, directory: Path, *, create: bool = True, threads: bool = False, readonly: bool = False):
        self.directory = Path(directory)
        self.path = self.directory / STORE_NAME
        self.readonly = readonly
        self._check_integrity()
        try:
            if create:
                self.directory.mkdir(parents=True, exist_ok=True)
            # threads: the connection is used from several threads (the rating page), one at a time (the caller locks)
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=not threads, factory=GuardedConnection)
            self.db.path = self.path
            self.db.execute("PRAGMA journal_mode=WAL")
        except (OSError, sqlite3.Error) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            raise UserError(f"cannot create the results store in {self.directory}: {why}", key="experiment.output_dir") from None
        self.db.execute("PRAGMA synchronous=NORMAL")
        version = self._check_version()
        in_memory = self.readonly and version != SCHEMA_VERSION
        if in_memory:  # the file is never written: migrate or complete a copy
            memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=not threads)
            self.db.backup(memory)
            self.db.close()
            self.db = memory
        if version is not None and version < SCHEMA_VERSION:
            self._migrate(version)
        if not self.readonly or in_memory:
            self.db.executescript(SCHEMA)
            if self.get_meta("schema_version") is None:
                self.set_meta("schema_version", str(SCHEMA_VERSION))

    def _check_version(self) -> int | None:
        """The store's schema version (None: a new or empty store); refuses one this harness cannot read."""
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return None
        version = None
        if "meta" in tables:
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = row[0] if row else None
        if version is None and "generations" not in tables:
            return None  # an empty store from an interrupted first start
        if version is None or not version.isdigit() or int(version) not in (SCHEMA_VERSION, *MIGRATIONS):
            self.db.close()
            raise UserError(
                f"written by another version of the harness (store schema {version or 1}, this harness reads {SCHEMA_VERSION}"
                f"{' and migrates ' + ', '.join(map(str, sorted(MIGRATIONS))) if MIGRATIONS else ''}); "
                "its results are kept as they are: read them with the harness that wrote them, or move the folder away "
                "to start the experiment afresh",
                file=self.path,
            )
        return int(version)

    def _migrate(self, version: int) -> None:
        """Bring the store from ``version`` to the current schema, in one transaction."""
        with self._tx():
            for v in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[v].split(";"):
                    if statement.strip():
                        self.db.execute(statement)
            self.set_meta("schema_version", str(SCHEMA_VERSION))

    def _check_integrity(self) -> None:
        """Refuse a damaged store before anything is written to it (``harness.store_health.check_store``: exit 2, one message)."""
        check_store(self.path)

    def keep_reserve(self) -> None:
        """Keep a little disk space beside the store while a run writes (``store_health.SpaceReserve``): given back
        when the disk fills, so the run can still be recorded as interrupted. :meth:`close` or :meth:`release_reserve` ends it."""
        reserve = SpaceReserve(self.directory)
        reserve.keep()
        self.db.reserve = reserve

    def release_reserve(self) -> None:
        reserve = getattr(self.db, "reserve", None)
        if reserve is not None:
            reserve.release()
            self.db.reserve = None

    @classmethod
    def open_existing(cls, directory: Path, *, threads: bool = False, readonly: bool = False) -> Store | None:
        return cls(directory, create=False, threads=threads, readonly=readonly) if (Path(directory) / STORE_NAME).exists() else None

    def close(self) -> None:
        self.release_reserve()
        self.db.close()

    def _tx(self):
        return _Transaction(self.db)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction: several ``save_*`` calls commit together (records with their results)."""
        with self._tx():
            yield

    # -- meta

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    # -- paths inside the output folder

    def relative(self, path: Path) -> str:
        """``path`` relative to the output folder when it lies inside it (as stored), else absolute."""
        path = Path(path).resolve()
        try:
            return path.relative_to(self.directory.resolve()).as_posix()
        except ValueError:
            return str(path)

    def resolve(self, stored: str) -> Path:
        p = Path(stored)
        return p if p.is_absolute() else self.directory / p

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

    def test_examples(self, split_key: str) -> dict[str, Example]:
        """The test examples of a split by id."""
        rows = self.db.execute("SELECT id, instruction, input, output FROM examples WHERE split_key=? AND split='test'", (split_key,))
        return {r[0]: Example(*r) for r in rows}

    # -- adapters

    def adapter(self, train_key: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT path, adapter_sha256, summary FROM adapters WHERE train_key=?", (train_key,)).fetchone()
        if not row:
            return None
        return {"path": self.resolve(row[0]), "stored_path": row[0], "sha256": row[1], "summary": json.loads(row[2])}

    def save_adapter(self, train_key: str, model: str, path: Path, sha: str, summary: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO adapters VALUES(?,?,?,?,?,?)",
            (train_key, model, self.relative(path), sha, json.dumps(summary), time.time()),
        )

    # -- generations

    def existing_generations(self, keys: Iterable[str]) -> set[str]:
        return {k for (k,) in self._select_in("SELECT gen_key FROM generations WHERE gen_key IN ({})", list(keys))}

    def known_generation_keys(self, model: str) -> set[str]:
        """Every stored generation key first made for ``model``."""
        return {k for (k,) in self.db.execute("SELECT gen_key FROM generations WHERE model=?", (model,))}

    def save_generations(self, rows: Sequence[tuple[GenResult, dict[str, Any]]]) -> None:
        """``rows``: (result, info) where info has model, config, example_id, decoding, engine, model_key, template."""
        now = time.time()
        with self._tx():
            self._insert_generations(rows, now)

    def _insert_generations(self, rows: Sequence[tuple[GenResult, dict[str, Any]]], now: float) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO generations VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    r.key, i["model"], i["config"], i["example_id"], r.text, json.dumps(i["decoding"]), json.dumps(i["engine"], sort_keys=True),
                    i["model_key"], json.dumps(i["template"]), r.prompt_tokens, r.new_tokens, r.seconds, r.finish_reason, now,
                )
                for r, i in rows
            ],
        )

    def generations(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        cols = ("gen_key", "text", "decoding", "engine", "prompt_tokens", "new_tokens", "seconds", "finish_reason", "example_id", "model", "config")
        out = {}
        for row in self._select_in(f"SELECT {', '.join(cols)} FROM generations WHERE gen_key IN ({{}})", list(keys)):
            d = dict(zip(cols, row))
            d["decoding"] = json.loads(d["decoding"])
            out[d["gen_key"]] = d
        return out

    def texts(self, keys: Sequence[str]) -> dict[str, str]:
        return dict(self._select_in("SELECT gen_key, text FROM generations WHERE gen_key IN ({})", list(keys)))

    # -- scores

    def register_metric(self, metric_key: str, name: str, identity: dict[str, Any], label: str, higher_is_better: bool, aggregation: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO metric_ids VALUES(?,?,?,?,?,?)",
            (metric_key, name, json.dumps(identity, sort_keys=True), label, int(higher_is_better), aggregation),
        )

    def metric_identities(self) -> dict[str, dict[str, Any]]:
        return {
            k: {"metric": m, "identity": json.loads(i), "label": lab, "higher_is_better": bool(h), "aggregation": agg}
            for k, m, i, lab, h, agg in self.db.execute("SELECT metric_key, metric, identity, label, higher_is_better, aggregation FROM metric_ids")
        }

    def scores(self, metric_key: str, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], ExampleScore]:
        """Stored scores for (gen_key, ref_sha) pairs (a missing score has value NaN)."""
        wanted = set(pairs)
        rows = self._select_in(
            "SELECT gen_key, ref_sha, value, stats, detail FROM scores WHERE metric_key=? AND gen_key IN ({})",
            sorted({g for g, _ in wanted}),
            prefix=(metric_key,),
        )
        return {
            (g, r): ExampleScore(MISSING_SCORE if v is None else v, tuple(json.loads(s)) if s else None, json.loads(d) if d else None)
            for g, r, v, s, d in rows
            if (g, r) in wanted
        }

    def _insert_scores(self, metric_key: str, items: Sequence[tuple[str, str, ExampleScore]]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO scores(gen_key, metric_key, ref_sha, value, stats, detail) VALUES(?,?,?,?,?,?)",
            [
                (
                    g, metric_key, ref, None if s.missing else float(s.value), json.dumps(list(s.stats)) if s.stats is not None else None,
                    json.dumps(dict(s.detail), sort_keys=True, ensure_ascii=False) if s.detail is not None else None,
                )
                for g, ref, s in items
            ],
        )

    # -- records of what the run ran

    def record_cell(self, cell: CellRecord, keys: Sequence[tuple[str, str]], run_id: int | None) -> None:
        """The cell's definition and the gen key of each test example, in split order (call inside a transaction)."""
        old_keys = [k for (k,) in self.db.execute("SELECT gen_key FROM cell_examples WHERE model=? AND config=? ORDER BY position", (cell.model, cell.config))]
        if old_keys != [k for _, k in keys]:
            # the cell now stands for other generations: its metric records no longer apply
            self.db.execute("DELETE FROM cell_metrics WHERE model=? AND config=?", (cell.model, cell.config))
            self.db.execute("DELETE FROM cell_examples WHERE model=? AND config=?", (cell.model, cell.config))
            self.db.executemany(
                "INSERT INTO cell_examples VALUES(?,?,?,?,?)",
                [(cell.model, cell.config, i, e, k) for i, (e, k) in enumerate(keys)],
            )
        self.db.execute(
            "INSERT OR REPLACE INTO cells VALUES(?,?,?,?,?,?,?,?,?,?)",
            (
                cell.model, cell.config, cell.split_key, cell.model_key, _dumps(cell.model_info), _dumps(cell.params),
                _dumps(cell.decoding), _dumps(cell.engine), run_id, time.time(),
            ),
        )

    def cell_keys(self, model: str, config: str) -> list[tuple[str, str]]:
        return [tuple(r) for r in self.db.execute("SELECT example_id, gen_key FROM cell_examples WHERE model=? AND config=? ORDER BY position", (model, config))]

    def cells_with(self, gen_keys: Iterable[str]) -> set[tuple[str, str]]:
        """The (model, config) cells whose recorded generation keys include any of ``gen_keys``."""
        return {(m, c) for m, c in self._select_in("SELECT DISTINCT model, config FROM cell_examples WHERE gen_key IN ({})", sorted(set(gen_keys)))}

    def record_cell_metric(
        self, model: str, config: str, metric: str, metric_key: str, split_key: str, value: float | None, n: int, run_id: int | None,
        *, against: str | None = None, missing: int = 0,
    ) -> None:
        """The cell's aggregate over ``n`` scored examples (``missing`` more could not be scored), compared ``against`` a config or not."""
        self.db.execute(
            "INSERT OR REPLACE INTO cell_metrics(model, config, metric, metric_key, split_key, value, n, run_id, updated, against, missing) "
            "VALUES(?,?,?,?,?,?,?,?,?,?,?)",
            (model, config, metric, metric_key, split_key, value, n, run_id, time.time(), against, missing),
        )

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
        import socket

        cur = self.db.execute(
            "INSERT INTO runs(command, started, status, pid, host, metadata) VALUES(?,?,?,?,?,?)",
            (command, time.time(), "running", os.getpid(), socket.gethostname(), json.dumps(metadata)),
        )
        return int(cur.lastrowid)

    def update_run(self, run_id: int, metadata: dict[str, Any]) -> None:
        """Replace a running run's metadata (a search records its trials as they finish)."""
        self.db.execute("UPDATE runs SET metadata=? WHERE run_id=?", (json.dumps(metadata), run_id))

    def mark_stopped(self, run_ids: Sequence[int]) -> None:
        """Runs whose process is known to be gone (another process's search): now 'interrupted'."""
        self.db.executemany("UPDATE runs SET status='interrupted' WHERE run_id=? AND status='running'", [(r,) for r in run_ids])

    def finish_run(self, run_id: int, status: str, metadata: dict[str, Any] | None = None) -> None:
        if metadata is not None:
            self.db.execute("UPDATE runs SET metadata=? WHERE run_id=?", (json.dumps(metadata), run_id))
        self.db.execute("UPDATE runs SET finished=?, status=? WHERE run_id=?", (time.time(), status, run_id))

    def mark_interrupted(self) -> list[int]:
        """Runs left 'running' by a process that died (call while holding the run lock): now 'interrupted'."""
        ids = [r for (r,) in self.db.execute("SELECT run_id FROM runs WHERE status='running'")]
        if ids:
            self.db.execute("UPDATE runs SET status='interrupted' WHERE status='running'")
        return ids

    def runs(self) -> list[dict[str, Any]]:
        cols = ("run_id", "command", "started", "finished", "status", "pid", "host", "metadata")
        out = []
        for row in self.db.execute(f"SELECT {', '.join(cols)} FROM runs ORDER BY run_id"):
            d = dict(zip(cols, row))
            d["metadata"] = json.loads(d["metadata"])
            out.append(d)
        return out

    # -- human ratings

    def save_human_items(self, items: Sequence[tuple[str, str, str, str, str]], scale: str) -> None:
        """Items of one output: (item_id, gen_key, model, config, example_id), exported for ``scale``.

        An item keeps the scale it was first exported for, for ever: its ratings mean what that
        scale says. An item already known on another scale raises ``ValueError`` and nothing is
        saved (a request for another scale makes other items: :func:`harness.report.items.prepare_items`).
        Only an item recorded without a scale (``''``, from before scales were recorded) takes ``scale``.
        """
        now = time.time()
        with self._tx():
            known = dict(self._select_in("SELECT item_id, scale FROM human_items WHERE item_id IN ({})", [i[0] for i in items]))
            other = sorted(i for i, s in known.items() if s and s != scale)
            if other:
                raise ValueError(
                    f"item(s) {', '.join(other[:5])} were exported for the {known[other[0]]} scale; an item keeps its scale, "
                    f"so a {scale} round needs items of its own"
                )
            self.db.executemany(
                "INSERT OR IGNORE INTO human_items(item_id, gen_key, model, config, example_id, exported, scale) VALUES(?,?,?,?,?,?,?)",
                [(*i, now, scale) for i in items],
            )
            self.db.executemany("UPDATE human_items SET scale=? WHERE item_id=? AND scale=''", [(scale, i[0]) for i in items])

    def save_pair_items(self, items: Sequence[tuple[str, str, str, str, str, str, str, bool]]) -> None:
        """Pairwise items: (item_id, gen_key_a, gen_key_b, model, config_a, config_b, example_id, a_on_left)."""
        now = time.time()
        with self._tx():
            self.db.executemany(
                "INSERT OR IGNORE INTO human_items(item_id, gen_key, gen_key_b, model, model_b, config, config_b, example_id, a_on_left, exported, scale) "
                "VALUES(?,?,?,?,?,?,?,?,?,?,'pairwise')",
                [(i, ga, gb, m, m, ca, cb, e, int(left), now) for i, ga, gb, m, ca, cb, e, left in items],
            )

    def human_items(self) -> list[dict[str, Any]]:
        """Every exported item: ids, generation keys, cell(s), example, and for pairs the sides as shown."""
        cols = ("item_id", "gen_key", "gen_key_b", "model", "model_b", "config", "config_b", "example_id", "a_on_left", "scale")
        return [dict(zip(cols, r)) for r in self.db.execute(f"SELECT {', '.join(cols)} FROM human_items ORDER BY item_id")]

    def add_rating(self, item_id: str, annotator: str, value: float, scale: str, source: str, comment: str = "") -> tuple[float, str] | None:
        """Store one rating at once (committed before returning); None, or the (value, comment) already given for this item and annotator."""
        with self._tx():
            row = self.db.execute("SELECT rating, comment FROM human_ratings WHERE item_id=? AND annotator=?", (item_id, annotator)).fetchone()
            if row is not None:
                return float(row[0]), row[1]
            self.db.execute("INSERT INTO human_ratings VALUES(?,?,?,?,?,?,?)", (item_id, annotator, value, scale, source, time.time(), comment))
        return None

    def ratings_of(self, annotator: str) -> list[tuple[str, float, str]]:
        """(item_id, rating, comment) of everything ``annotator`` rated."""
        return [(i, float(r), c) for i, r, c in self.db.execute("SELECT item_id, rating, comment FROM human_ratings WHERE annotator=?", (annotator,))]

    def pair_ratings(self) -> list[tuple[dict[str, Any], str, float]]:
        """(item, annotator, rating as shown) for every rating of a pairwise item."""
        items = {i["item_id"]: i for i in self.human_items() if i["gen_key_b"] is not None}
        q = "SELECT item_id, annotator, rating FROM human_ratings WHERE item_id IN (SELECT item_id FROM human_items WHERE gen_key_b IS NOT NULL)"
        return [(items[i], a, float(r)) for i, a, r in self.db.execute(q)]

    def save_ratings(self, ratings: Sequence[tuple[str, str, float]], scale: str, source: str, comments: Sequence[str] | None = None) -> None:
        now = time.time()
        comments = list(comments) if comments is not None else [""] * len(ratings)
        with self._tx():
            self.db.executemany(
                "INSERT OR REPLACE INTO human_ratings VALUES(?,?,?,?,?,?,?)",
                [(i, a, r, scale, source, now, c) for (i, a, r), c in zip(ratings, comments)],
            )

    def existing_ratings(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], float]:
        """The stored rating of each (item_id, annotator) pair that has one."""
        wanted = set(pairs)
        rows = self._select_in("SELECT item_id, annotator, rating FROM human_ratings WHERE item_id IN ({})", sorted({i for i, _ in wanted}))
        return {(i, a): float(r) for i, a, r in rows if (i, a) in wanted}

    def ratings_by_gen(self) -> dict[str, list[tuple[str, float, str]]]:
        """gen_key -> [(annotator, rating, scale)] over every imported rating of single-output items."""
        q = (
            "SELECT i.gen_key, r.annotator, r.rating, r.scale FROM human_ratings r JOIN human_items i USING(item_id) "
            "WHERE i.gen_key_b IS NULL ORDER BY i.gen_key, r.annotator"
        )
        out: dict[str, list[tuple[str, float, str]]] = {}
        for g, a, r, s in self.db.execute(q):
            out.setdefault(g, []).append((a, float(r), s))
        return out

    # -- helpers

    def _select_in(self, sql: str, values: list[str], prefix: tuple = ()) -> list[tuple]:
        out: list[tuple] = []
        for i in range(0, len(values), 500):
            chunk = values[i : i + 500]
            out.extend(self.db.execute(sql.format(",".join("?" * len(chunk))), (*prefix, *chunk)).fetchall())
        return out


def score_ref(reference_sha: str, other_key: str | None = None) -> str:
    """What a score was computed against, its third key: the reference's sha, and for a metric that compares
    outputs (:meth:`harness.api.Metric.against`) the key of the generation it was compared with."""
    if other_key is None:
        return reference_sha
    import hashlib

    return hashlib.sha256(f"{reference_sha}|{other_key}".encode()).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    """sha256 of a file's content (how trained adapters are identified)."""
    import hashlib

    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT; nested uses join the outer transaction."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db
        self.outer = False

    def __enter__(self) -> None:
        self.outer = not self.db.in_transaction
        if self.outer:
            self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not self.outer:
            return False
        if exc_type is not None:
            if self.db.in_transaction:  # SQLite may have rolled back already (a full disk, say)
                self.db.execute("ROLLBACK")
            return False
        try:
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # a COMMIT that failed (a full disk) leaves the transaction open: nothing of it stays
                self.db.execute("ROLLBACK")
            raise
        return False
