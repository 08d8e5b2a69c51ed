"""The default run's generation on the CPU, cold: the harness before issue 20 against this tree, interleaved.

Both sides run ``harness generate`` on the embedded default experiment (``registry.toml``:
SmolLM2-135M-Instruct as shipped and LoRA-tuned, the study's 13 configs, 20 test examples, 24 new
tokens, ``batch_size = 24``) in a fresh copy of one prepared output folder that holds the split
and the trained adapter but no generation, so each run generates all 520 texts from scratch
(model loads included) and trains nothing. *old* is the tree of ``--ref`` (default: the main
commit before issue 20), extracted with ``git archive`` and put first on ``PYTHONPATH`` (core and
plugins: one engine call per config, ``generate`` on a CPU); *new* is the tree this script is in,
put first on the path the same way (one engine call for all configs, the own decoding loop; run a
copy of the checkout to keep editing it meanwhile). The two alternate, which goes first alternating too,
``--rounds`` times; the machine is shared, so its load is recorded with each run and the
medians and the per-round ratios are reported. Generation seconds are the stores' ``generate``
stage (the runs' metadata); the texts of old and new are compared per (model, config, example).

    .venv/bin/python bench/cpu_default_ab.py [--rounds 2] [--threads N] [--no-write]
    .venv/bin/python bench/cpu_default_ab.py --from-json bench/results/cpu_default_ab.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, add_output_args, load, machine, publish, rerender, write_section  # noqa: E402

MARKER = "cpu-default-ab"
#: main before issue 20 (beams in the own loop, configs in one batch)
BASE_REF = "d6eeb1f"


def extract(ref: str, target: Path) -> Path:
    """``git archive ref`` into ``target`` (a plain copy: no worktree, nothing written into the repository)."""
    target.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def env_for(tree: Path, threads: int | None) -> dict[str, str]:
    """The environment of a run of the harness in ``tree``: its core and plugins first on the path (entry points
    resolve by module name, so the installed distribution's plugin list loads that tree's modules)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    paths = [str(tree), *sorted(str(p) for p in (tree / "plugins").iterdir() if p.is_dir())]
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def registry_in(folder: Path, threads: int | None) -> Path:
    text = (ROOT / "registry.toml").read_text()
    text = re.sub(r'output_dir = ".*"', f'output_dir = "{folder}/out"', text)
    if threads:
        text = text.replace('[engine]\nname = "transformers"', f'[engine]\nname = "transformers"\nthreads = {threads}')
    path = folder / "registry.toml"
    path.write_text(text)
    return path


def harness(args: list[str], env: dict[str, str], cwd: Path) -> float:
    """``harness ARGS`` in a subprocess, from ``cwd`` (not this checkout: ``python -c`` puts the working directory first on the path)."""
    t0 = time.perf_counter()
    code = "import sys; from harness.cli import main; sys.argv = ['harness'] + sys.argv[1:]; main()"
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd)
    if proc.returncode != 0:
        sys.exit(f"harness {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def last_run(store: Path) -> dict[str, Any]:
    db = sqlite3.connect(store)
    try:
        return json.loads(db.execute("SELECT metadata FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()[0])
    finally:
        db.close()


def engine_versions(store: Path) -> list[str]:
    db = sqlite3.connect(store)
    try:
        return sorted({e for (e,) in db.execute("SELECT DISTINCT engine FROM generations")})
    finally:
        db.close()


def texts(store: Path) -> dict[tuple[str, str, str], str]:
    db = sqlite3.connect(store)
    try:
        rows = db.execute("SELECT model, config, example_id, text FROM generations").fetchall()
    finally:
        db.close()
    return {(m, c, e): t for m, c, e, t in rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", default=BASE_REF, help="the old harness: a git commit of this repository")
    ap.add_argument("--old-tree", type=Path, default=None, help="the old harness already extracted (instead of git archive of --ref)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads on both sides (default: the registry's, torch's default)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cpu_default_ab.json")
    add_output_args(ap)
    args = ap.parse_args()
    if rerender(args, render, lambda t: write_section(MARKER, t, SECTION)):
        return
    report: dict[str, Any] = {"machine": machine(), "ref": args.ref, "threads": args.threads, "runs": []}
    with tempfile.TemporaryDirectory(prefix="harness-ab-") as tmp:
        tmp_path = Path(tmp)
        old_tree = args.old_tree or extract(args.ref, tmp_path / "old-tree")
        base = tmp_path / "base"
        base.mkdir()
        reg = registry_in(base, args.threads)
        t = harness(["train", "-r", str(reg)], env_for(ROOT, args.threads), base)  # split + adapter, no generation
        print(f"prepared split and adapter in {t:.0f} s", flush=True)
        stores: dict[str, Path] = {}
        for r in range(args.rounds):
            order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
            for side in order:
                run_dir = tmp_path / f"{side}-{r}"
                shutil.copytree(base, run_dir)
                reg = registry_in(run_dir, args.threads)
                before = load()
                wall = harness(["generate", "-r", str(reg)], env_for(old_tree if side == "old" else ROOT, args.threads), run_dir)
                engines = engine_versions(run_dir / "out" / "harness.sqlite")
                if len(engines) != 1:
                    sys.exit(f"{side}: generations of several engine versions: {engines}")
                meta = last_run(run_dir / "out" / "harness.sqlite")
                stages = meta["stats"]["stage_seconds"]
                rec = {"side": side, "round": r, "engine": engines[0], "wall_s": round(wall, 1), "generate_s": round(stages.get("generate", 0.0), 1),
                       "compile_s": round(stages.get("compile", 0.0), 1), "generated": meta["stats"]["generated"], "load_before": before, "load_after": load()}
                report["runs"].append(rec)
                print(json.dumps(rec), flush=True)
                stores.setdefault(side, run_dir / "out" / "harness.sqlite")
        old_texts, new_texts = texts(stores["old"]), texts(stores["new"])
        same = sum(old_texts[k] == new_texts.get(k) for k in old_texts)
        by_config: dict[str, list[int]] = {}
        for (m, c, e), text in old_texts.items():
            by_config.setdefault(c, [0, 0])
            by_config[c][0] += text == new_texts.get((m, c, e))
            by_config[c][1] += 1
        report["same_text"] = {"identical": same, "total": len(old_texts), "by_config": by_config}
        print(f"identical texts old vs new: {same}/{len(old_texts)}", flush=True)
    publish(args, args.out, report, render, lambda table: write_section(MARKER, table, SECTION))


SECTION = "## The default run's generation on the CPU, old vs new (issue 20)\n\n"


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    side = {s: [x for x in r["runs"] if x["side"] == s] for s in ("old", "new")}
    med = {s: statistics.median(x["generate_s"] for x in side[s]) for s in side}
    ratios = [o["generate_s"] / n["generate_s"] for o, n in zip(side["old"], side["new"])]
    lines = [
        f"Measured on {m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, Python {m['python']} (a shared machine: load averages per run "
        f"below); old = the tree of `{r['ref']}`, new = this tree; torch threads: {r['threads'] or 'torch default'}. Each run is `harness generate` "
        "of the default experiment in a fresh copy of one folder holding the split and the trained adapter (520 generations, model loads included).",
        "",
        "| round | side | generate stage (s) | of it compile (s) | whole command (s) | load avg before → after (1 min) |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for x in r["runs"]:
        lines.append(f"| {x['round']} | {x['side']} | {x['generate_s']:.1f} | {x['compile_s']:.1f} | {x['wall_s']:.1f} | {x['load_before'][0]} → {x['load_after'][0]} |")
    same = r.get("same_text", {})
    lines += [
        "",
        f"Median generate stage: old {med['old']:.1f} s, new {med['new']:.1f} s: **{med['old'] / med['new']:.2f}×** "
        f"(per-round old/new: {', '.join(f'{x:.2f}' for x in ratios)}). Goal ≥ 1.5×: **{'met' if med['old'] / med['new'] >= 1.5 else 'missed'}**.",
        f"Texts: {same.get('identical')}/{same.get('total')} generations identical between old and new (same configs, same seeds).",
    ]
    if r.get("note"):
        lines.append(r["note"])
    return "\n".join(lines)


if __name__ == "__main__":
    main()
