"""Issue 22 with real processes: a `harness tune` killed mid-trial resumes the same study from the stored generations;
two tune processes share one study and one store; `run` and `tune` exclude each other on an output folder.

Processes run tests/fake_harness.py (the harness with the fake plugins), as in tests/test_faults.py.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

import fakes
from stores import query
from test_faults import spawn, wait_for
from harness.locks import run_lock

optuna = pytest.importorskip("optuna", reason="the 'tune' extra is not installed")

TS = optuna.trial.TrialState


def _registry(folder: Path, trials: int) -> Path:
    text = fakes.registry_toml(dataset={"source": "fake-data", "n": 60, "test_size": 20, "train_size": 0, "seed": 42}, models=[fakes.DEFAULT_MODELS[0]])
    path = folder / "registry.toml"
    # chunk 7: one pruning decision per trial (the fakes' many ties make each a permutation test)
    path.write_text(text + f"\n[tune]\nmetric = 'fake-len'\ntrials = {trials}\nchunk = 7\n[tune.space]\ntemperature = [0.1, 1.5]\ntop_k = [5, 60]\n")
    return path


def _study(folder: Path):
    storage = f"sqlite:///{folder / 'out' / 'tune.db'}"
    return optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)


@pytest.mark.slow
def test_a_tune_killed_mid_trial_resumes_the_same_study_from_the_stored_generations(tmp_path) -> None:
    registry = _registry(tmp_path, 4)
    proc = spawn(registry, "tune", env={"FAKE_BATCH_SECONDS": "1.0"})
    db = tmp_path / "out" / "tune.db"

    def running() -> list[tuple[int, str]]:
        """(number, config) of the trials running now, read straight from Optuna's tables (cheap to poll)."""
        if not db.exists():
            return []
        import sqlite3

        con = sqlite3.connect(db, timeout=5)
        try:
            return con.execute(
                "SELECT t.number, a.value_json FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                "WHERE t.state = 'RUNNING' AND a.key = 'config'"
            ).fetchall()
        except sqlite3.Error:
            return []
        finally:
            con.close()

    # kill it once trial 1 or later is under way: some of its generations stored, the trial not finished
    def mid_trial() -> bool:
        found = [(n, c) for n, c in running() if n >= 1]
        return bool(found) and bool(query(registry, f"SELECT COUNT(*) FROM generations WHERE config = {found[0][1].replace(chr(34), chr(39))}")[0][0])

    wait_for(mid_trial, timeout=300)
    killed = next(t for t in _study(tmp_path).get_trials() if t.state == TS.RUNNING)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    config = killed.user_attrs["config"]
    before = query(registry, f"SELECT gen_key, created FROM generations WHERE config = '{config}'")
    assert before and query(registry, "SELECT status FROM runs") == [("running",)]

    again = spawn(registry, "tune")
    code, out, err = again.wait(240), again.stdout.read(), again.stderr.read()
    assert code == 0, err
    assert f"trial {killed.number} had stopped with its process: redone" in err
    assert "run 1 had stopped without finishing: marked interrupted" in err
    assert query(registry, "SELECT run_id, status FROM runs ORDER BY run_id") == [(1, "interrupted"), (2, "ok")]
    trials = _study(tmp_path).get_trials()
    assert [t.state for t in trials if t.number == killed.number] == [TS.FAIL]
    redone = [t for t in trials if t.user_attrs.get("config") == config and t.state in (TS.COMPLETE, TS.PRUNED)]
    assert redone, "the killed trial's parameters were tried again"
    assert sum(1 for t in trials if t.state in (TS.COMPLETE, TS.PRUNED)) == 4
    # the generations made before the kill were reused, not made again
    after = dict(query(registry, f"SELECT gen_key, created FROM generations WHERE config = '{config}'"))
    assert all(after[k] == created for k, created in before)
    assert "Ship:" in out


@pytest.mark.slow
def test_two_tune_processes_share_one_study_and_one_store(tmp_path) -> None:
    registry = _registry(tmp_path, 6)
    env = {"FAKE_BATCH_SECONDS": "0.05"}
    a = spawn(registry, "tune", env=env)
    time.sleep(1.0)  # let the first create the store and the study; the second joins them
    b = spawn(registry, "tune", env=env)
    results = [(p.wait(300), p.stdout.read(), p.stderr.read()) for p in (a, b)]
    assert [code for code, _, _ in results] == [0, 0], results
    trials = _study(tmp_path).get_trials()
    assert sorted(t.number for t in trials) == list(range(6)) and {t.state for t in trials} <= {TS.COMPLETE, TS.PRUNED}
    owners = {t.user_attrs["owner"]["pid"] for t in trials}
    assert owners == {a.pid, b.pid}, "both processes ran trials"
    assert query(registry, "SELECT status, COUNT(*) FROM runs GROUP BY status") == [("ok", 2)]
    # the last to finish confirmed the finalists; the store holds every trial's cell exactly once
    assert any("Ship:" in out for _, out, _ in results), [(out, [line for line in err.splitlines() if not line.startswith("generating")]) for _, out, err in results]
    assert len({t.user_attrs["config"] for t in trials}) >= 5, "the workers' samplers do not draw the same parameters"
    cells = {c for (c,) in query(registry, "SELECT DISTINCT config FROM cell_examples")}
    assert {t.user_attrs["config"] for t in trials} <= cells


def test_run_and_tune_exclude_each_other_and_tune_workers_share(tmp_path, cli) -> None:
    registry = _registry(tmp_path, 2)
    out = tmp_path / "out"
    out.mkdir()
    with run_lock(out, "harness tune (a worker)", shared=True):
        with run_lock(out, "harness tune (another worker)", shared=True):  # workers share
            refused = cli("run", "--all", "-r", registry)
            assert refused.exit_code == 2 and "another run is using this experiment's output folder" in refused.stderr
            assert "harness tune (a worker)" in refused.stderr and "harness tune (another worker)" in refused.stderr
    with run_lock(out, "harness run --all (a run)"):
        refused = cli("tune", "-r", registry)
        assert refused.exit_code == 2 and "harness run --all (a run)" in refused.stderr
    assert not (out / "tune.db").exists()
