"""Issue 17, items 2 and 3: a damaged store is never written again; a full disk is one clean line.

The failures: with 16 KiB of random bytes over the middle of `harness.sqlite`, `run --all`
tracebacked and appended a run row on every try, and report, runs, human export/serve and merge
tracebacked; a store truncated to half said "cannot create the results store". A full disk at a
store commit gave three chained tracebacks, exit 1, and left the run `running`; `human export` to
a full disk still recorded its items, and the Label Studio export left an empty folder.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import fakes
from harness.store import STORE_NAME, Store
from harness.store_health import GuardedConnection, StoreDamaged, check_store, translate

FAKE_HARNESS = Path(__file__).resolve().parent / "fake_harness.py"


def harness(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FAKE_HARNESS), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, list]:
    """A finished fake run (registry.toml + out/) and its JSON report, made once for the module."""
    folder = tmp_path_factory.mktemp("finished")
    registry = fakes.write_registry(folder / "registry.toml")
    done = harness("run", "--all", "-r", registry)
    assert done.returncode == 0, done.stderr
    report = harness("report", "--format", "json", "-r", registry)
    return folder, json.loads(report.stdout)


def copy_of(finished, tmp_path: Path) -> Path:
    """A copy of the finished experiment in ``tmp_path``: its registry.toml."""
    shutil.copytree(finished[0], tmp_path / "exp")
    return tmp_path / "exp" / "registry.toml"


def damage(store: Path, how: str) -> None:
    """16 KiB of random bytes over the middle of the file, or the file truncated to half (the issue's two cases)."""
    size = store.stat().st_size
    if how == "random-bytes":
        with store.open("r+b") as fh:
            fh.seek(size // 2 - 8192)
            fh.write(random.Random(17).randbytes(16384))
    else:
        os.truncate(store, size // 2)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and its sha256: what a refused command must leave as it was."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


COMMANDS = {
    "run": lambda reg, out, tmp: ("run", "--all", "-r", reg),
    "check": lambda reg, out, tmp: ("check", reg),
    "split": lambda reg, out, tmp: ("split", "-r", reg),
    "train": lambda reg, out, tmp: ("train", "-r", reg),
    "generate": lambda reg, out, tmp: ("generate", "-r", reg),
    "score": lambda reg, out, tmp: ("score", "-r", reg),
    "report": lambda reg, out, tmp: ("report", "-r", reg),
    "report --store": lambda reg, out, tmp: ("report", "--store", out),
    "runs": lambda reg, out, tmp: ("runs", "-r", reg),
    "analyze": lambda reg, out, tmp: ("analyze", "-r", reg),
    "human export": lambda reg, out, tmp: ("human", "export", "-o", tmp / "sheet.csv", "-r", reg),
    "human import": lambda reg, out, tmp: ("human", "import", tmp / "filled.csv", "-r", reg),
    "human serve": lambda reg, out, tmp: ("human", "serve", "--port", "0", "-r", reg),
    "merge (source)": lambda reg, out, tmp: ("merge", out, "-o", tmp / "merged"),
    "merge (target)": lambda reg, out, tmp: ("merge", tmp / "good" / "out", "-o", out),
}


@pytest.mark.parametrize("how", ["random-bytes", "truncated"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_refuses_a_damaged_store_and_writes_nothing(cli, finished, tmp_path, command, how) -> None:
    registry = copy_of(finished, tmp_path)
    out = registry.parent / "out"
    if command == "merge (target)":
        shutil.copytree(finished[0], tmp_path / "good")
    (tmp_path / "filled.csv").write_text("item_id,rating,annotator\nh0123456789,1,ann\n")
    store = out / STORE_NAME
    damage(store, how)
    before = snapshot(out)
    result = cli(*COMMANDS[command](registry, out, tmp_path))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message  # one message: the file, that it is damaged, what to do
    assert message.startswith(f"error: {store}: the results store is damaged (") and "nothing was written to it" in message
    assert "Restore the folder from a copy" in message and f"harness recover {out}" in message
    assert snapshot(out) == before  # not a byte written, no -wal or -shm left beside it
    assert not (tmp_path / "merged").exists() and not (tmp_path / "sheet.csv").exists()


@pytest.mark.parametrize("how", ["random-bytes", "truncated"])
def test_recover_copies_what_a_damaged_store_holds_and_a_run_recomputes_the_rest(cli, finished, tmp_path, how) -> None:
    registry = copy_of(finished, tmp_path)
    out = registry.parent / "out"
    damage(out / STORE_NAME, how)
    before = snapshot(out)
    fresh = tmp_path / "recovered"
    result = cli("recover", out, "-o", fresh)
    assert result.exit_code == 0, result.output
    assert "recovered into" in result.stderr and "could not read all of" in result.stderr
    assert snapshot(out) == before  # nothing written to the damaged folder
    # the copy is a sound store: it opens, and the experiment pointed at it recomputes only what was lost
    Store(fresh, create=False).close()
    registry.write_text(registry.read_text().replace('output_dir = "out"', f'output_dir = "{fresh}"'))
    fakes.reset()
    rerun = cli("run", "--all", "-r", registry)
    assert rerun.exit_code == 0, rerun.output
    assert fakes.FakeAdapter.train_calls == 0  # the adapter folder came along
    assert 0 < fakes.FakeEngine.generated < 2 * len(fakes.STUDY_CONFIGS) * 8
    report = cli("report", "--format", "json", "-r", registry)
    assert json.loads(report.stdout) == finished[1]
    # a folder that already holds a store is never recovered into
    again = cli("recover", out, "-o", fresh)
    assert again.exit_code == 2 and "already holds a results store" in again.stderr


def test_a_store_that_passed_is_not_read_whole_again_until_its_file_changes(finished, tmp_path, monkeypatch) -> None:
    import harness.store_health as health

    registry = copy_of(finished, tmp_path)
    out = registry.parent / "out"
    calls = []
    real = health.quick_check
    monkeypatch.setattr(health, "quick_check", lambda path: calls.append(path) or real(path))
    Store(out, create=False).close()
    Store(out, create=False).close()
    assert len(calls) == 1  # the second open found the file as the first left it
    damage(out / STORE_NAME, "random-bytes")  # bytes overwritten in place: another modification time
    with pytest.raises(StoreDamaged, match="is damaged"):
        Store(out, create=False)
    assert len(calls) == 2


def test_damage_met_while_reading_is_the_same_one_message() -> None:
    path = Path("/somewhere/out/harness.sqlite")
    found = translate(sqlite3.DatabaseError("database disk image is malformed"), path)
    assert isinstance(found, StoreDamaged) and str(path) in found.render()
    full = translate(sqlite3.OperationalError("database or disk is full"), path)
    assert "the disk is full" in full.render() and "/somewhere/out" in full.render()
    other = sqlite3.OperationalError("no such table: x")
    assert translate(other, path) is other


def test_a_new_or_empty_store_passes_the_check(tmp_path) -> None:
    check_store(tmp_path / STORE_NAME)
    (tmp_path / STORE_NAME).write_bytes(b"")
    check_store(tmp_path / STORE_NAME)
    Store(tmp_path).close()
    check_store(tmp_path / STORE_NAME)


# --------------------------------------------------------------------------- a full disk (item 3)


def _full_at_commit(monkeypatch, after: int) -> list[int]:
    """From the ``after``-th COMMIT on, the store's commit fails as SQLite fails on a full disk."""
    commits = []
    real = GuardedConnection.execute

    def execute(self, sql, *args):
        if sql == "COMMIT":
            commits.append(1)
            if len(commits) > after:
                raise self.translate(sqlite3.OperationalError("database or disk is full"))
        return real(self, sql, *args)

    monkeypatch.setattr(GuardedConnection, "execute", execute)
    return commits


def _full_by_page_limit(monkeypatch, pages: int) -> None:
    """A run's store may grow by only ``pages`` pages: SQLite itself then fails with "database or disk is full".

    Giving the run's reserve back frees its 256 KiB, as on a real disk: 64 more pages.
    """
    real = Store.keep_reserve

    def keep_reserve(self):
        real(self)
        db = self.db
        db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0] + pages}")
        reserve, give_back = db.reserve, db.reserve.release

        def release():
            give_back()
            db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0] + 64}")

        reserve.release = release

    monkeypatch.setattr(Store, "keep_reserve", keep_reserve)


@pytest.mark.parametrize("fault", ["commit", "page-limit"])
def test_a_full_disk_during_a_run_is_one_line_the_run_is_interrupted_and_a_rerun_resumes(cli, finished, tmp_path, monkeypatch, fault) -> None:
    registry = fakes.write_registry(tmp_path / "registry.toml")
    with monkeypatch.context() as patch:
        if fault == "commit":
            _full_at_commit(patch, after=8)
        else:
            _full_by_page_limit(patch, pages=6)
        result = cli("run", "--all", "-r", registry)
    assert result.exit_code == 2, result.output
    message = result.stderr.strip().splitlines()[-1]
    out = tmp_path / "out"
    assert message.startswith(f"error: {out}: the disk is full (") and "free at least" in message and "run the same command again" in message
    assert "Traceback" not in result.output and "database or disk is full" not in result.output
    con = sqlite3.connect(out / STORE_NAME)
    assert con.execute("SELECT status FROM runs").fetchall() == [("interrupted",)]
    kept = con.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    con.close()
    assert not (out / ".harness.reserve").exists()

    fakes.reset()
    again = cli("run", "--all", "-r", registry)
    assert again.exit_code == 0, again.output
    assert fakes.FakeEngine.generated == 2 * len(fakes.STUDY_CONFIGS) * 8 - kept  # resumed: what was stored is reused
    assert json.loads(cli("report", "--format", "json", "-r", registry).stdout) == finished[1]


@pytest.mark.parametrize("fmt", ["csv", "label-studio"])
@pytest.mark.parametrize("where", ["writing the sheet", "recording the items"])
def test_a_full_disk_during_human_export_leaves_no_sheet_no_folder_and_no_items(cli, finished, tmp_path, monkeypatch, fmt, where) -> None:
    registry = copy_of(finished, tmp_path)
    target = tmp_path / "sheet.csv" if fmt == "csv" else tmp_path / "new-folder" / "to-ls"
    with monkeypatch.context() as patch:
        if where == "writing the sheet":
            def no_space(fd):
                raise OSError(errno.ENOSPC, "No space left on device")

            patch.setattr(os, "fsync", no_space)
        else:
            _full_at_commit(patch, after=0)
        result = cli("human", "export", "--format", fmt, "-o", target, "-n", 2, "-r", registry)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert ("No space left on device" if where == "writing the sheet" else "the disk is full") in result.stderr
    assert not target.exists() and not (tmp_path / "new-folder").exists()  # no sheet, no empty folder
    con = sqlite3.connect(registry.parent / "out" / STORE_NAME)
    assert con.execute("SELECT COUNT(*) FROM human_items").fetchone()[0] == 0
    con.close()
    # with room again, the same export works
    assert cli("human", "export", "--format", fmt, "-o", target, "-n", 2, "-r", registry).exit_code == 0


def _can_mount_tmpfs() -> list[str] | None:
    """How to run a command in a mount namespace where a tmpfs can be mounted, or None (no unshare, no permission)."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (["unshare", "-m"], ["unshare", "-rm"]):
        probe = subprocess.run([*prefix, "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d && rmdir $d"],
                               capture_output=True)
        if probe.returncode == 0:
            return prefix
    return None


@pytest.mark.slow
def test_a_real_full_disk_on_a_small_tmpfs(finished, tmp_path) -> None:
    prefix = _can_mount_tmpfs()
    if prefix is None:
        pytest.skip("no tmpfs can be mounted here (no unshare, or mounts not allowed): the fault tests above cover it")
    registry = fakes.write_registry(tmp_path / "registry.toml")
    out = tmp_path / "out"
    out.mkdir()
    script = f"""
set -u
mount -t tmpfs -o size=600k tmpfs {out}
{sys.executable} {FAKE_HARNESS} run --all -r {registry} > {tmp_path}/first.out 2> {tmp_path}/first.err; echo $? > {tmp_path}/first.rc
{sys.executable} -c "import sqlite3; print(sqlite3.connect('{out}/{STORE_NAME}').execute('SELECT status FROM runs').fetchall())" > {tmp_path}/status
mount -o remount,size=16m {out}
{sys.executable} {FAKE_HARNESS} run --all -r {registry} > {tmp_path}/second.out 2> {tmp_path}/second.err; echo $? > {tmp_path}/second.rc
{sys.executable} {FAKE_HARNESS} report --format json -r {registry} > {tmp_path}/report.json
"""
    subprocess.run([*prefix, "sh", "-c", script], check=True, timeout=300)
    first = (tmp_path / "first.err").read_text()
    assert (tmp_path / "first.rc").read_text().strip() == "2", first
    assert f"error: {out}: the disk is full" in first and "free at least" in first and "Traceback" not in first
    assert (tmp_path / "status").read_text().strip() == "[('interrupted',)]"
    assert (tmp_path / "second.rc").read_text().strip() == "0", (tmp_path / "second.err").read_text()
    assert json.loads((tmp_path / "report.json").read_text()) == finished[1]
