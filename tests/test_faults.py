"""Issue 13: kills, SIGTERM, two runs at once, moved folders and corrected references, with real processes where it matters.

Subprocess tests run `tests/fake_harness.py` (the harness with the fake plugins) so that a
real process can be killed or signalled.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fakes
from stores import query
from harness.locks import run_lock
from harness.pipeline.procs import descendants

FAKE_HARNESS = Path(__file__).resolve().parent / "fake_harness.py"


def spawn(registry: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(FAKE_HARNESS), *args, "-r", str(registry)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


# --------------------------------------------------------------------------- item 8: two runs at once


def test_a_second_run_on_the_same_experiment_exits_2_naming_the_first(cli, fake_registry) -> None:
    out = fake_registry.parent / "out"
    out.mkdir()
    with run_lock(out, "harness run --all (the first)"):
        result = cli("run", "--all", "-r", fake_registry)
    assert result.exit_code == 2, result.output
    assert "another run is using this experiment's output folder" in result.stderr
    assert f"pid {os.getpid()}" in result.stderr and "the first" in result.stderr
    assert query(fake_registry, "SELECT COUNT(*) FROM generations") == [(0,)]
    # once the first is done, the second runs
    assert cli("run", "--all", "-r", fake_registry).exit_code == 0


@pytest.mark.slow
def test_two_processes_started_together_one_runs_one_is_refused(tmp_path) -> None:
    registry = fakes.write_registry(tmp_path / "registry.toml")
    env = {"FAKE_BATCH_SECONDS": "0.05"}
    a, b = spawn(registry, "run", "--all", env=env), spawn(registry, "run", "--all", env=env)
    results = [(p.wait(120), p.stderr.read()) for p in (a, b)]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "another run is using this experiment's output folder" in refused and "Traceback" not in refused
    assert query(registry, "SELECT status, COUNT(*) FROM runs GROUP BY status") == [("ok", 1)]


# --------------------------------------------------------------------------- item 9: a killed run


@pytest.mark.slow
def test_a_killed_run_is_marked_interrupted_and_its_temporary_folders_cleaned(tmp_path) -> None:
    registry = fakes.write_registry(tmp_path / "registry.toml")
    proc = spawn(registry, "run", "--all", env={"FAKE_TRAIN_SECONDS": "30"})
    adapters = tmp_path / "out" / "adapters"
    wait_for(lambda: adapters.is_dir() and any(adapters.glob(".train-*")))
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert query(registry, "SELECT status FROM runs") == [("running",)]
    assert list(adapters.glob(".train-*"))

    again = spawn(registry, "run", "--all")
    code, err = again.wait(120), again.stderr.read()
    assert code == 0, err
    assert "run 1 had stopped without finishing: marked interrupted" in err
    assert query(registry, "SELECT run_id, status FROM runs ORDER BY run_id") == [(1, "interrupted"), (2, "ok")]
    assert not list(adapters.glob(".train-*"))


# --------------------------------------------------------------------------- item 13: SIGTERM


@pytest.mark.slow
def test_sigterm_stops_the_run_like_ctrl_c_and_every_process_the_engine_started(tmp_path) -> None:
    registry = fakes.write_registry(tmp_path / "registry.toml")
    pid_file = tmp_path / "engine-child.pid"
    proc = spawn(registry, "run", "--all", env={"FAKE_BATCH_SECONDS": "0.2", "FAKE_ENGINE_CHILD": str(pid_file)})
    wait_for(lambda: pid_file.exists() and query(registry, "SELECT COUNT(*) FROM generations")[0][0] >= 8)
    child = int(pid_file.read_text())
    assert alive(child) and child in descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(60)
    err = proc.stderr.read()
    assert code == 143, err
    assert "stopped (SIGTERM)" in err and "Traceback" not in err
    wait_for(lambda: not alive(child), timeout=15)
    assert query(registry, "SELECT status FROM runs") == [("interrupted",)]
    kept = query(registry, "SELECT COUNT(*) FROM generations")[0][0]
    assert kept >= 8 and kept % 4 == 0  # whole batches only: the one in flight was dropped

    again = spawn(registry, "run", "--all")
    assert again.wait(120) == 0, again.stderr.read()
    assert query(registry, "SELECT COUNT(*) FROM generations")[0][0] == 2 * len(fakes.STUDY_CONFIGS) * 8


# --------------------------------------------------------------------------- item 11: moved and copied output folders


def test_adapters_are_stored_relative_to_the_output_folder(cli, fake_registry, tmp_path) -> None:
    assert cli("run", "--all", "-r", fake_registry).exit_code == 0
    (path,) = query(fake_registry, "SELECT path FROM adapters")[0:1][0]
    assert not Path(path).is_absolute() and path.startswith("adapters/")

    # a moved experiment reuses its adapter (no retraining)
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path, moved / "exp", ignore=shutil.ignore_patterns("moved"))
    shutil.rmtree(tmp_path / "out")
    fakes.reset()
    assert cli("run", "--all", "-r", moved / "exp" / "registry.toml").exit_code == 0
    assert fakes.FakeAdapter.train_calls == 0 and fakes.FakeEngine.generated == 0


def test_a_copied_run_uses_its_own_adapter_files(cli, fake_registry, tmp_path) -> None:
    assert cli("run", "--all", "-r", fake_registry).exit_code == 0
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path, copy, ignore=shutil.ignore_patterns("copy"))
    # the original's adapter disappears: the copy must not have been reading it
    shutil.rmtree(tmp_path / "out" / "adapters")
    fakes.reset()
    assert cli("run", "--all", "-r", copy / "registry.toml").exit_code == 0
    assert fakes.FakeAdapter.train_calls == 0 and fakes.FakeEngine.generated == 0


# --------------------------------------------------------------------------- item 4: corrected references


def _records(n: int = 40) -> list[dict[str, str]]:
    return [{"instruction": f"Say the number {i}.", "input": "" if i % 3 else f"context {i}", "output": f"{i}"} for i in range(n)]


def _json_registry(tmp_path: Path, records: list[dict[str, str]]) -> Path:
    (tmp_path / "data.json").write_text(json.dumps(records), encoding="utf-8")
    return fakes.write_registry(
        tmp_path / "registry.toml",
        dataset={"source": "json", "path": "data.json", "test_size": 8, "train_size": 20, "seed": 3},
    )


def test_correcting_a_reference_rescores_that_example_only(cli, tmp_path) -> None:
    records = _records()
    registry = _json_registry(tmp_path, records)
    assert cli("run", "--all", "-r", registry).exit_code == 0
    test_ids = [r[0] for r in query(registry, "SELECT id FROM examples WHERE split='test' ORDER BY position")]
    test_rows = query(registry, "SELECT instruction, input FROM examples WHERE split='test' ORDER BY position")
    # correct the reference of one test example
    target = next(r for r in records if (r["instruction"], r["input"]) == test_rows[2])
    target["output"] = target["output"] + " (corrected)"
    (tmp_path / "data.json").write_text(json.dumps(records), encoding="utf-8")
    fakes.reset()
    before = dict(fakes._CountingMetric.scored)
    result = cli("run", "--all", "-r", registry)
    assert result.exit_code == 0, result.output
    split = query(registry, "SELECT split_key FROM splits ORDER BY created DESC LIMIT 1")[0][0]
    assert [r[0] for r in query(registry, f"SELECT id FROM examples WHERE split='test' AND split_key='{split}' ORDER BY position")] == test_ids
    assert fakes.FakeAdapter.train_calls == 0 and fakes.FakeEngine.generated == 0
    # the one corrected example is re-scored in every cell (2 models x 12 configs), by each metric
    assert {m: n - before.get(m, 0) for m, n in fakes._CountingMetric.scored.items()} == {"fake-len": 24, "fake-overlap": 24}


def test_editing_a_record_in_neither_split_changes_nothing(cli, tmp_path) -> None:
    records = _records(60)
    registry = _json_registry(tmp_path, records)
    assert cli("run", "--all", "-r", registry).exit_code == 0
    used = {tuple(r) for r in query(registry, "SELECT instruction, input FROM examples")}
    spare = next(r for r in records if (r["instruction"], r["input"]) not in used)
    spare["output"] = "something else entirely"
    (tmp_path / "data.json").write_text(json.dumps(records), encoding="utf-8")
    fakes.reset()
    assert cli("run", "--all", "-r", registry).exit_code == 0
    assert fakes.FakeAdapter.train_calls == 0 and fakes.FakeEngine.generated == 0
    assert sum(fakes._CountingMetric.scored.values()) == 0
