"""Benchmark: what checking a results store costs on every open (issue 17, item 2).

Builds a store of 100,000 generations through the store's own API (5 models x 12 configs x
1,667 examples; texts of 20-1,200 characters; 3 metrics, so 300,000 scores, BLEU-like ones with
sufficient statistics; the cells' records), then times:

* **open, unchanged**: ``Store(folder)`` + ``close()`` when the file still matches the stamp the
  last passing check left (what every ``report``, ``runs`` ... pays): the header and size check;
* **quick_check**: ``PRAGMA quick_check`` (what an open pays once after the file changed), with
  the file in the page cache (warm) and evicted from it (cold: ``posix_fadvise(DONTNEED)``);
* **integrity_check**, warm, for comparison (it also checks every index against its table);
* finding the issue's two damages (16 KiB of random bytes over the middle; the file truncated to
  half) on copies of the store, and ``harness recover`` of the first.

    .venv/bin/python bench/store_check.py [--generations 100000] [--repeats 5] [--no-write]
    .venv/bin/python bench/store_check.py --from-json bench/results/store_check.json
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _sub in ("", "bench"):
    if str(ROOT / _sub) not in sys.path:
        sys.path.insert(0, str(ROOT / _sub))

from common import add_output_args, load, machine, publish, rerender, write_section  # noqa: E402

from harness.api import ExampleScore, GenResult  # noqa: E402
from harness.store import STORE_NAME, Store  # noqa: E402
from harness.store_health import STAMP_NAME, StoreDamaged, check_store, quick_check  # noqa: E402

WORDS = "the a answer is of to in celsius meters seven twelve paris london sodium iron river stone cloud copper violet amber".split()


def build(folder: Path, n: int) -> float:
    rng = random.Random(0)
    models, configs = 5, 12
    per_cell = -(-n // (models * configs))
    store = Store(folder)
    t0 = time.perf_counter()
    made = 0
    metric_keys = [hashlib.sha256(m.encode()).hexdigest() for m in ("bleu", "rouge_l", "bertscore")]
    ref = hashlib.sha256(b"reference").hexdigest()
    for m in range(models):
        for c in range(configs):
            rows, keys = [], []
            for e in range(per_cell):
                if made >= n:
                    break
                key = hashlib.sha256(f"{m}/{c}/{e}".encode()).hexdigest()
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 240)))[: rng.randint(20, 1200)]
                info = {"model": f"model-{m}", "config": f"config-{c}", "example_id": f"ex{e:05d}", "decoding": {"top_k": 50, "num_beams": 1, "temperature": 0.8},
                        "engine": {"name": "transformers", "version": "2"}, "model_key": hashlib.sha256(str(m).encode()).hexdigest(), "template": {"name": "alpaca"}}
                rows.append((GenResult(key, text, 60, 40, 0.2, "eos"), info))
                keys.append((f"ex{e:05d}", key))
                made += 1
            with store.transaction():
                store._insert_generations(rows, time.time())
                for i, mk in enumerate(metric_keys):
                    stats = (lambda: tuple(float(rng.randint(0, 40)) for _ in range(10))) if i == 0 else (lambda: None)
                    store._insert_scores(mk, [(r.key, ref, ExampleScore(rng.random(), stats())) for r, _ in rows])
                store.db.executemany("INSERT OR REPLACE INTO cell_examples VALUES(?,?,?,?,?)",
                                     [(f"model-{m}", f"config-{c}", j, e, k) for j, (e, k) in enumerate(keys)])
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return time.perf_counter() - t0


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed(fn, repeats: int, before=None) -> float:
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def damaged_copy(src: Path, dst: Path, how: str) -> Path:
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    shutil.copy2(src / STORE_NAME, dst / STORE_NAME)
    db = dst / STORE_NAME
    size = db.stat().st_size
    if how == "random-bytes":
        with db.open("r+b") as fh:
            fh.seek(size // 2 - 8192)
            fh.write(random.Random(17).randbytes(16384))
    else:
        os.truncate(db, size // 2)
    return dst


def measure(work: Path, n: int, repeats: int) -> dict[str, Any]:
    folder = work / "store"
    built = build(folder, n)
    db = folder / STORE_NAME
    Store(folder, create=False).close()  # the first open checks and leaves the stamp
    r: dict[str, Any] = {"generations": n, "size_mib": round(db.stat().st_size / 2**20, 1), "build_s": round(built, 1)}
    r["open_unchanged_ms"] = round(1000 * timed(lambda: Store(folder, create=False).close(), repeats), 2)
    r["check_unchanged_ms"] = round(1000 * timed(lambda: check_store(db), repeats), 3)
    r["quick_check_warm_s"] = round(timed(lambda: quick_check(db), repeats), 3)
    r["quick_check_cold_s"] = round(timed(lambda: quick_check(db), repeats, before=lambda: evict(db)), 3)

    def integrity() -> None:
        con = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
        con.execute("PRAGMA integrity_check").fetchall()
        con.close()

    r["integrity_check_warm_s"] = round(timed(integrity, max(1, repeats // 2)), 3)

    def open_changed() -> None:
        (folder / STAMP_NAME).unlink(missing_ok=True)
        Store(folder, create=False).close()

    r["open_changed_warm_s"] = round(timed(open_changed, repeats), 3)
    for how in ("random-bytes", "truncated"):
        copy = damaged_copy(folder, work / how, how)
        t0 = time.perf_counter()
        try:
            check_store(copy / STORE_NAME)
            found = "not found"
        except StoreDamaged as exc:
            found = exc.message.split("; nothing was written")[0].removeprefix("the results store is damaged (").removesuffix(")")
        r[f"detect_{how}"] = {"seconds": round(time.perf_counter() - t0, 3), "found": found}
    from harness.recover import recover

    t0 = time.perf_counter()
    report = recover(work / "random-bytes", work / "recovered")
    r["recover_random_bytes"] = {"seconds": round(time.perf_counter() - t0, 1), "copied": sum(t.copied for t in report.tables),
                                 "unreadable": sum(t.unreadable for t in report.tables), "lost_in": [t.table for t in report.tables if not t.complete]}
    return r


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    x = r["result"]
    rb, tr, rec = x["detect_random-bytes"], x["detect_truncated"], x["recover_random_bytes"]
    lines = [
        f"Measured {r['date']} on {m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, Python {m['python']}, SQLite {r['sqlite']}; "
        f"load {r['load'][0]} before, {r['load'][1]} after (a shared machine). A store of {x['generations']:,} generations "
        f"({x['size_mib']} MiB: {3 * x['generations']:,} scores, the cells' records); medians of {r['repeats']} runs.",
        "",
        "| what | time |",
        "|---|---:|",
        f"| open a store unchanged since its last check (`Store()` + `close()`: header, size, stamp) | {x['open_unchanged_ms']} ms |",
        f"| of which the check itself | {x['check_unchanged_ms']} ms |",
        f"| open after the file changed (quick_check included), page cache warm | {x['open_changed_warm_s']} s |",
        f"| `PRAGMA quick_check`, warm | {x['quick_check_warm_s']} s |",
        f"| `PRAGMA quick_check`, cold (file evicted from the page cache) | {x['quick_check_cold_s']} s |",
        f"| `PRAGMA integrity_check`, warm (for comparison) | {x['integrity_check_warm_s']} s |",
        f"| found: 16 KiB of random bytes over the middle | {rb['seconds']} s — {rb['found']} |",
        f"| found: the file truncated to half | {tr['seconds']} s — {tr['found']} |",
        f"| `harness recover` of the random-bytes copy | {rec['seconds']} s — {rec['copied']:,} rows copied, {rec['unreadable']:,} row ids unreadable (in {', '.join(rec['lost_in']) or 'none'}) |",
    ]
    return "\n".join(lines)


def write(table: str) -> None:
    write_section(
        "store-check",
        table,
        "## Checking the results store on every open (CPU; issue 17, item 2)\n\n"
        "Script: `bench/store_check.py`. Every command that opens a store checks it first (`harness/store_health.py`). "
        "`PRAGMA quick_check` reads every page, so its cost grows with the store; an open whose file is unchanged since "
        "the last passing check does only the header and size check, and the first open after a change (a run, a copy, "
        "damage) pays the quick_check once.\n\n",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generations", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--work", default=None, help="a folder for the stores (default: a temporary one, removed after)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "store_check.json"))
    add_output_args(ap)
    args = ap.parse_args()
    if rerender(args, render, write):
        return
    start = load()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="store-check-"))
    try:
        result = measure(work, args.generations, args.repeats)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    r = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "load": [start, load()], "repeats": args.repeats,
         "sqlite": sqlite3.sqlite_version, "result": result}
    publish(args, Path(args.out), r, render, write)


if __name__ == "__main__":
    main()
