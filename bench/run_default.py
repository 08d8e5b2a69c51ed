"""Benchmark: the default `harness run --all`, cold (fresh experiment folder) and warm (nothing changed).

Prints a table and writes it into BENCHMARKS.md between the markers of the
"default run" section. Stage times come from the run metadata in the store.

    .venv/bin/python bench/run_default.py [--registry registry.toml] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, write_section  # noqa: E402


def run(registry: Path) -> tuple[float, dict]:
    harness = Path(sys.executable).parent / "harness"
    t0 = time.perf_counter()
    proc = subprocess.run([str(harness), "run", "--all", "-r", str(registry)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"harness run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out_dir = re.search(r'output_dir = "(.*)"', registry.read_text()).group(1)
    db = sqlite3.connect(Path(out_dir) / "harness.sqlite")
    meta = json.loads(db.execute("SELECT metadata FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()[0])
    return wall, meta


def machine_line() -> str:
    m = machine()
    return f"{m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, Python {m['python']}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--registry", default=str(ROOT / "registry.toml"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    src = Path(args.registry).read_text()
    with tempfile.TemporaryDirectory() as tmp:
        reg = Path(tmp) / "registry.toml"
        reg.write_text(re.sub(r'output_dir = ".*"', f'output_dir = "{tmp}/out"', src))
        cold_wall, cold = run(reg)
        warm_wall, warm = run(reg)
    stages = ["split", "train", "generate", "compile", "score"]  # compile: part of generate (the engine's own line)
    rows = [("stage", "cold (s)", "warm (s)")]
    for s in stages:
        rows.append((s, f"{cold['stats']['stage_seconds'].get(s, 0):.1f}", f"{warm['stats']['stage_seconds'].get(s, 0):.2f}"))
    rows.append(("whole command (wall)", f"{cold_wall:.1f}", f"{warm_wall:.2f}"))
    ratio = warm_wall / cold_wall
    versions = cold.get("versions", {})
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {machine_line()}; torch {versions.get('torch')}, transformers {versions.get('transformers')}, "
        f"peft {versions.get('peft')}, trl {versions.get('trl')}. One run each (cold = fresh experiment folder, converted model "
        "already cached under ~/.cache/harness; warm = the same command again, nothing changed).",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|---|---:|---:|",
        *["| " + " | ".join(r) + " |" for r in rows[1:]],
        "",
        f"Goals: cold ≤ 600 s — **{'met' if cold_wall <= 600 else 'missed'}** ({cold_wall:.0f} s); "
        f"warm ≤ 5% of cold — **{'met' if ratio <= 0.05 else 'missed'}** ({100 * ratio:.1f}%).",
        f"Cold run: trained {cold['stats']['trained']}, generated {cold['stats']['generated']}, scored {cold['stats']['scored']}; "
        f"warm run: generated {warm['stats']['generated']}, scored {warm['stats']['scored']}.",
    ]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        write_section("default-run", table, "## Default run (`harness run --all`, CPU)\n\n")


if __name__ == "__main__":
    main()
