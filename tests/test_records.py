"""Issue 9: reading commands read what the run recorded; results travel and merge; the package layout holds.

Also issue 13, item 3: a reading command never writes results.
"""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

import fakes
import sheets
from harness.store import STORE_NAME

ROOT = Path(__file__).resolve().parent.parent


def digest(folder: Path) -> str:
    """The store's content, table by table (what a reading command must leave untouched)."""
    con = sqlite3.connect(folder / STORE_NAME)
    try:
        return hashlib.sha256("\n".join(con.iterdump()).encode()).hexdigest()
    finally:
        con.close()


def report_json(cli, *args: str) -> list[dict]:
    result = cli("report", "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def rate(cli, registry: Path, sheet: Path) -> None:
    sheets.fill(sheet)
    result = cli("human", "import", sheet, "-r", registry)
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- reading commands read the records


def test_reading_commands_never_write_and_show_recorded_values_when_the_environment_changed(cli, fake_registry, monkeypatch) -> None:
    assert cli("run", "--all", "-r", fake_registry).exit_code == 0
    sheet = fake_registry.parent / "sheet.csv"
    assert cli("human", "export", "-o", sheet, "-n", 4, "-r", fake_registry).exit_code == 0
    rate(cli, fake_registry, sheet)
    out = fake_registry.parent / "out"
    before_json = report_json(cli, "-r", fake_registry)
    before = digest(out)
    # another version of a metric library is installed here (issue 13, item 3: sacrebleu 2.5.1 vs 2.6.0)
    monkeypatch.setattr(fakes.FakeLenMetric, "version", "99")
    fakes.reset()
    for fmt in ("table", "json", "csv", "markdown"):
        assert cli("report", "--format", fmt, "-r", fake_registry).exit_code == 0
    assert cli("analyze", "--format", "json", "-r", fake_registry).exit_code == 0
    assert digest(out) == before  # nothing written
    assert report_json(cli, "-r", fake_registry) == before_json  # every value still shown, as recorded
    assert all(r["value"] is not None for r in before_json if r["metric"] != "human")
    assert fakes.FakeEngine.open_calls == 0 and sum(fakes._CountingMetric.scored.values()) == 0
    # a run in this environment recomputes exactly what the new identity changed
    assert cli("run", "--all", "-r", fake_registry).exit_code == 0
    assert fakes._CountingMetric.scored == {"fake-len": 2 * len(fakes.STUDY_CONFIGS) * 8}


def test_a_copied_output_folder_reads_the_same_without_the_experiment_file(cli, fake_registry, tmp_path) -> None:
    assert cli("run", "--all", "-r", fake_registry).exit_code == 0
    original = report_json(cli, "-r", fake_registry)
    copy = tmp_path / "elsewhere" / "results"
    shutil.copytree(tmp_path / "out", copy)
    (tmp_path / "registry.toml").unlink()
    assert report_json(cli, "--store", copy) == original
    table = cli("report", "--store", copy)
    assert table.exit_code == 0 and "fake-base" in table.stdout


def test_a_cell_without_a_value_says_why(cli, fake_registry) -> None:
    assert cli("run", "--model", "fake-base", "-r", fake_registry).exit_code == 0
    rows = report_json(cli, "-r", fake_registry)
    tuned = [r for r in rows if r["model"] == "fake-tuned" and r["metric"] != "human"]
    assert tuned and all(r["value"] is None and r["note"] == "not run yet" for r in tuned)


# --------------------------------------------------------------------------- merge


def _halves(cli, tmp_path: Path) -> tuple[Path, Path, Path]:
    """The fake experiment run whole in one folder and by model in two others (as on two machines)."""
    for name in ("whole", "a", "b"):
        (tmp_path / name).mkdir()
    whole = fakes.write_registry(tmp_path / "whole" / "registry.toml")
    a = fakes.write_registry(tmp_path / "a" / "registry.toml")
    b = fakes.write_registry(tmp_path / "b" / "registry.toml")
    assert cli("run", "--all", "-r", whole).exit_code == 0
    assert cli("run", "--model", "fake-base", "-r", a).exit_code == 0
    assert cli("run", "--model", "fake-tuned", "-r", b).exit_code == 0
    return whole, a, b


def test_merged_halves_report_like_the_whole_run_and_merging_again_changes_nothing(cli, tmp_path) -> None:
    whole, a, b = _halves(cli, tmp_path)
    merged = tmp_path / "merged"
    result = cli("merge", a.parent / "out", b.parent / "out", "-o", merged)
    assert result.exit_code == 0, result.output
    assert "adapter files: fake-tuned" in result.stderr
    assert report_json(cli, "--store", merged) == report_json(cli, "-r", whole)
    (adapter_path,) = [r for (r,) in sqlite3.connect(merged / STORE_NAME).execute("SELECT path FROM adapters")]
    assert (merged / adapter_path / "adapter_model.safetensors").exists()

    before = digest(merged)
    again = cli("merge", a.parent / "out", b.parent / "out", "-o", merged)
    assert again.exit_code == 0 and "copied nothing new" in again.stderr
    assert digest(merged) == before
    # merging into one of the halves works the same
    assert cli("merge", b.parent / "out", "-r", a).exit_code == 0
    assert report_json(cli, "-r", a) == report_json(cli, "-r", whole)


def test_a_conflicting_key_is_reported_and_nothing_is_merged(cli, tmp_path) -> None:
    _, a, b = _halves(cli, tmp_path)
    # the same generation key with another text (a store edited or produced by a broken engine)
    con = sqlite3.connect(a.parent / "out" / STORE_NAME)
    key = con.execute("SELECT gen_key FROM generations LIMIT 1").fetchone()[0]
    con.close()
    con = sqlite3.connect(b.parent / "out" / STORE_NAME)
    con.execute("INSERT INTO generations SELECT * FROM generations LIMIT 0")
    src = sqlite3.connect(a.parent / "out" / STORE_NAME).execute("SELECT * FROM generations WHERE gen_key=?", (key,)).fetchone()
    con.execute(f"INSERT INTO generations VALUES({','.join('?' * len(src))})", (src[0], *src[1:4], "a different text", *src[5:]))
    con.commit()
    con.close()
    before = digest(a.parent / "out")
    result = cli("merge", b.parent / "out", "-r", a)
    assert result.exit_code == 2, result.output
    assert "1 key(s) hold different values" in result.stderr and "nothing was merged" in result.stderr
    assert f"generations (gen_key={key})" in result.stderr and "'a different text'" in result.stderr
    assert digest(a.parent / "out") == before


def test_a_refused_merge_into_a_new_folder_creates_nothing_and_names_whole_keys(cli, tmp_path) -> None:
    """Issue 17, item 5: a refused merge left an empty store (harness.sqlite + lock) in a new -o folder, and keys cut to
    24 characters made different conflicts print as identical lines."""
    _, a, b = _halves(cli, tmp_path)
    # two cells of configs whose names agree on their first 24 characters hold other definitions in b
    configs = [c for (c,) in sqlite3.connect(a.parent / "out" / STORE_NAME).execute("SELECT config FROM cells WHERE model='fake-base' ORDER BY config")]
    twins = next((x, y) for x in configs for y in configs if x < y and x[:24] == y[:24])
    con = sqlite3.connect(b.parent / "out" / STORE_NAME)
    rows = sqlite3.connect(a.parent / "out" / STORE_NAME).execute("SELECT * FROM cells WHERE model='fake-base' AND config IN (?, ?)", twins).fetchall()
    con.executemany(f"INSERT INTO cells VALUES({','.join('?' * len(rows[0]))})", [(*r[:5], '{"edited": true}', *r[6:]) for r in rows])
    con.commit()
    con.close()
    new = tmp_path / "new" / "merged"
    result = cli("merge", a.parent / "out", b.parent / "out", "-o", new)
    assert result.exit_code == 2, result.output
    assert "2 key(s) hold different values" in result.stderr and "nothing was merged" in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip().startswith("cells (")]
    assert len(lines) == 2 and lines[0] != lines[1]
    assert all(f"config={name})" in result.stderr for name in twins)
    assert not (tmp_path / "new").exists()  # no folder, no store, no lock


def test_a_merge_that_copies_only_run_records_says_so(cli, fake_registry, tmp_path) -> None:
    """Issue 17, item 5: it said "copied nothing new"."""
    assert cli("run", "--all", "-r", fake_registry).exit_code == 0
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path, copy, ignore=shutil.ignore_patterns("copy"))
    assert cli("run", "--all", "-r", copy / "registry.toml").exit_code == 0  # nothing to compute: only a run record
    result = cli("merge", copy / "out", "-r", fake_registry)
    assert result.exit_code == 0, result.output
    assert "copied 1 run record" in result.stderr and "nothing new" not in result.stderr
    again = cli("merge", copy / "out", "-r", fake_registry)
    assert "copied nothing new" in again.stderr


def test_merge_refuses_a_folder_without_a_store(cli, tmp_path) -> None:
    result = cli("merge", tmp_path / "nothing-here", "-o", tmp_path / "target")
    assert result.exit_code == 2 and "no results store here" in result.stderr
    assert not (tmp_path / "target").exists()


# --------------------------------------------------------------------------- the package layout


CORE = {"harness.api", "harness.errors", "harness.hookspecs", "harness.plugins", "harness.registry", "harness.data", "harness.store", "harness.locks", "harness.merge", "harness.tuning"}


def _imports(path: Path, package: str) -> set[str]:
    """harness modules imported by ``path`` (module level and inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parts = package.split(".")
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("harness"):
                out.add(mod)
                out.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("harness"))
    return out


def _modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / "harness").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts)
        found[name.removesuffix(".__init__")] = path
    return found


def test_no_import_cycles_and_the_pipeline_never_imports_the_report_wing() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = {d for d in _imports(path, package + ".x") if d in modules and d != name}
        graph[name] = deps
    # Tarjan-free check: a cycle exists if some module reaches itself
    for start in graph:
        seen, stack = set(), list(graph[start])
        while stack:
            node = stack.pop()
            if node == start:
                pytest.fail(f"import cycle through {start}")
            if node not in seen:
                seen.add(node)
                stack.extend(graph.get(node, ()))
    pipeline = {m for m in graph if m.startswith("harness.pipeline")}
    report = {m for m in graph if m.startswith("harness.report")}
    assert pipeline and report
    for name in pipeline | CORE:  # the pipeline and the shared core never read the reporting wing (nor the CLI)
        assert not any(d.startswith(("harness.report", "harness.cli")) for d in graph[name]), (name, graph[name])
    for name in report | CORE:  # the reporting wing and the shared core never run the pipeline
        assert not any(d.startswith(("harness.pipeline", "harness.cli")) for d in graph[name]), (name, graph[name])


def test_the_core_names_no_built_in_plugin() -> None:
    """No string in the core is the name of a built-in plugin (defaults come from `is_default`)."""
    import tomllib

    entry_points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["harness.plugins"]
    from harness.plugins import build_plugins

    plugins = build_plugins()
    builtin = {i.name for i in plugins.all() if i.source in entry_points.values()}
    # literals that are not plugin references: plan's own output formats (a plan is not a report of results), the kinds
    # of a results source
    allowed = {("harness/report/plan.py", "table"), ("harness/report/plan.py", "json"), ("harness/cli/plan.py", "table"),
               ("harness/cli/plan.py", "json"), ("harness/report/analyze.py", "csv")}
    found = []
    for name, path in _modules().items():
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in builtin and (rel, node.value) not in allowed:
                found.append(f"{rel}:{node.lineno} {node.value!r}")
    assert not found, found


def test_runs_lists_runs_and_pins_a_runs_versions(cli, fake_registry) -> None:
    assert cli("run", "--all", "-r", fake_registry).exit_code == 0
    listing = cli("runs", "-r", fake_registry)
    assert listing.exit_code == 0 and " ok " in listing.stdout and "harness" in listing.stdout
    pins = cli("runs", "--requirements", 1, "-r", fake_registry)
    assert pins.exit_code == 0
    import importlib.metadata as md

    assert f"numpy=={md.version('numpy')}" in pins.stdout.splitlines()
    assert cli("runs", "--requirements", 7, "-r", fake_registry).exit_code == 2
