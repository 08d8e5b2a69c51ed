"""The ``ray`` executor (issue 10): unit tests, a cluster started by hand with ``ray start`` (issue 23),
then a real two-node Ray cluster on this machine.

The cluster tests start ``ray.cluster_utils.Cluster`` (a head node with the dashboard, for
Ray's state API, and a second node; one CPU each) on the loopback interface, and run the
real ``harness`` command against it in a subprocess, so that a worker or the driver can be
killed. Workers build their plugins from the installed entry points; the fakes of
tests/fakes.py reach them as a plugin package would: a ``harness.plugins`` entry point in a
folder on ``PYTHONPATH`` (set for the cluster's nodes and the ``harness`` processes only).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import fakes
from stores import query, tiny_default
from harness.errors import MissingDependency, UserError
from harness.store import STORE_NAME

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
HARNESS = Path(sys.executable).parent / "harness"


# --------------------------------------------------------------------------- without a cluster


def test_without_ray_installed_the_executor_is_one_clear_error(monkeypatch, fake_plugins, tmp_path) -> None:
    import importlib.util

    import harness_executors.ray_executor as rx

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(MissingDependency) as info:
        rx.RayExecutor({})
    assert "pip install 'llm-decoding-harness[ray]'" in str(info.value) and "ray executor" in str(info.value)


def test_through_the_cli_a_missing_ray_exits_2_before_anything_is_written(monkeypatch, fake_plugins, tmp_path) -> None:
    import importlib.util

    from click.testing import CliRunner

    import harness.cli
    import harness.cli.common
    import harness_executors.ray_executor as rx
    from harness.plugins import build_plugins

    plugins = build_plugins(entry_points=False, extra=[*_extra(), rx])
    monkeypatch.setattr(harness.cli.common, "build_plugins", lambda **kwargs: plugins)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    registry = _with_executor(fakes.write_registry(tmp_path / "registry.toml"), {"name": "ray"})
    result = CliRunner().invoke(harness.cli.main, ["run", "--all", "-r", str(registry)])
    assert result.exit_code == 2, result.output
    assert "the package 'ray' is not installed" in result.stderr and "pip install 'llm-decoding-harness[ray]'" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / STORE_NAME).exists()


def test_a_bad_address_is_a_user_error() -> None:
    pytest.importorskip("ray")
    import harness_executors.ray_executor as rx

    with pytest.raises(UserError, match="executor.address.*not a Ray address"):
        rx.RayExecutor({"address": "my-cluster"})
    for good in ("auto", "10.0.0.5:6379", "ray://head.example:10001"):
        rx.RayExecutor({"address": good})  # checked, not connected


def test_an_address_where_nothing_listens_is_one_clear_error_at_once() -> None:
    pytest.importorskip("ray")
    import harness_executors.ray_executor as rx

    port = _free_port()  # closed again: nothing listens there
    started = time.perf_counter()
    with pytest.raises(UserError) as info:
        rx.RayExecutor({"address": f"127.0.0.1:{port}"}).connect()
    assert str(info.value) == (f"executor.address: cannot join the Ray cluster at '127.0.0.1:{port}': nothing is listening there (connection refused): "
                               f"start the cluster's head on 127.0.0.1 with `ray start --head --port={port}`, or correct the address")
    assert time.perf_counter() - started < 5  # Ray itself retries for minutes
    with pytest.raises(UserError, match="the host 'no-such-host.invalid' is not known"):
        rx.RayExecutor({"address": "no-such-host.invalid:6379"}).connect()


def test_a_token_file_that_cannot_be_read_is_named_before_ray_starts(monkeypatch, tmp_path) -> None:
    import harness_executors.ray_join as join

    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "nope"))
    assert join.check_token_file() == (f"RAY_AUTH_TOKEN_PATH names {tmp_path / 'nope'}, which cannot be read (No such file or directory): "
                                       "put the cluster's token there (`ray get-auth-token` on the head prints it)")
    (tmp_path / "nope").write_text("\n")
    assert "which is empty" in join.check_token_file()
    (tmp_path / "nope").write_text("ab12\n")
    assert join.check_token_file() is None
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # not read at all then
    (tmp_path / "nope").unlink()
    assert join.check_token_file() is None


def test_why_ray_init_failed_is_said_from_rays_exceptions(monkeypatch, tmp_path) -> None:
    """The messages of Ray 2.60's own exceptions (as wrapped by ray.init) mapped to the likely cause."""
    import harness_executors.ray_join as join

    def wrapped(inner: Exception) -> Exception:
        try:
            try:
                raise inner
            except Exception as e:
                raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379") from e
        except Exception as outer:
            return outer

    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    refused = wrapped(RuntimeError("Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n ... "
                                   "ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: Authentication token is missing or incorrect."))
    assert join.explain(refused).startswith("the cluster uses token authentication and this process sent no token: RAY_AUTH_MODE is unset here, "
                                            "and Ray sends a token to an explicit address only with RAY_AUTH_MODE=token. Set RAY_AUTH_MODE=token")
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("ab" * 32)
    assert "; this machine has one in ~/.ray/auth_token. Set" in join.explain(refused)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert join.explain(refused).startswith("the cluster refused the token this process sent (from ~/.ray/auth_token): it is not the cluster's token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "x")
    assert "(from the RAY_AUTH_TOKEN variable)" in join.explain(refused)

    class AuthenticationError(Exception):  # ray.exceptions.AuthenticationError, raised before connecting
        pass

    assert join.explain(AuthenticationError("Token authentication is enabled but no authentication token was found. Ensure ...")).startswith(
        "RAY_AUTH_MODE is 'token' but this process has no token: put the cluster's token in ~/.ray/auth_token")
    mismatch = RuntimeError("Version mismatch: The cluster was started with:\n    Ray: 2.59.0\n    Python: 3.11.7\n"
                            "This process on node 10.0.0.7 was started with:\n    Ray: 2.60.0\n    Python: 3.11.7\n")
    assert join.explain(mismatch) == ("the cluster runs Ray 2.59.0 on Python 3.11.7, this process Ray 2.60.0 on Python 3.11.7: the driver and "
                                      "every node need the same Ray and Python versions (and the same harness and plugin packages)")
    assert join.explain(ConnectionError("Could not find any running Ray instance. Please specify ...")).startswith("no Ray cluster runs on this machine")
    assert join.explain(wrapped(ValueError("something new\nmore"))) == "ConnectionError: Failed to connect to Ray cluster at 10.0.0.5:6379"


def test_the_token_is_never_forwarded_to_the_jobs() -> None:
    pytest.importorskip("ray")
    import harness_executors.ray_executor as rx

    with pytest.raises(UserError, match="executor.forward_env: RAY_AUTH_TOKEN is not forwarded: Ray shows forwarded variables in its dashboard"):
        rx.RayExecutor({"forward_env": ["HF_TOKEN", "RAY_AUTH_TOKEN"]})


def test_the_worker_progress_sends_at_most_once_a_second_and_always_the_end() -> None:
    import harness_executors.ray_executor as rx

    sent = []

    class Box:
        class update:  # noqa: N801 - mimics an actor method
            @staticmethod
            def remote(*args):
                sent.append(args)

    now = [0.0]
    progress = rx.WorkerProgress(Box, "generate/m", "a1", clock=lambda: now[0])
    progress.note("m · greedy")
    advance = progress.task("generating", 10)
    for _ in range(9):
        now[0] += 0.3
        advance(1, tok_s=5.0)
    advance(1)
    assert sent[0][2:6] == ("generating", "m · greedy", 0, 10)
    assert [s[4] for s in sent] == [0, 4, 8, 10]  # t=1.2, 2.4, then the end
    assert sent[-1][6] == {"tok_s": 5.0}


def test_the_board_counts_jobs_per_node_and_gpu() -> None:
    import harness_executors.ray_executor as rx

    lines, shown = [], []

    class Display:
        def line(self, text, console=False):
            lines.append(text)

        def task(self, description, total):
            shown.append(("task", description, total))
            return lambda n=1, **fields: shown.append(("advance", n, fields))

    class J:
        def __init__(self, id):
            self.id, self.label = id, id.replace("/", " ")

    board = rx.Board(Display())
    a, b, c = J("train/m"), J("generate/m"), J("generate/n")
    board.add(3)
    board.started(a, "10.0.0.1 node aa · GPU 0")
    board.started(c, "10.0.0.2 node bb · GPU 1")
    board.progressed("generate/n", "generating 4/8")
    assert shown[-1][2] == {"queued": 1, "running": 2, "done": 0, "10.0.0.1 node aa · GPU 0": "train m, 0 done",
                            "10.0.0.2 node bb · GPU 1": "generate n generating 4/8, 0 done"}
    board.ended(a, "10.0.0.1 node aa · GPU 0", "done in 3.0 s")
    board.started(b, "10.0.0.1 node aa · GPU 0")
    board.started(b, "10.0.0.2 node bb · GPU 1", retry=True)
    assert shown[-1][2]["queued"] == 0 and shown[-1][2]["running"] == 2 and shown[-1][2]["done"] == 1
    board.add(1)  # a follow-up: a new bar for the jobs not finished yet
    assert shown[-2][:3] == ("task", "ray jobs", 3)
    assert "ray: generate m: retried on 10.0.0.2 node bb · GPU 1" in lines


# --------------------------------------------------------------------------- a real two-node cluster


def _extra():
    import harness_datasets.alpaca
    import harness_datasets.synthetic
    import harness_decoders.standard
    import harness_executors.local
    import harness_ratings.csv_format
    import harness_reporters.builtin

    return [fakes, harness_decoders.standard, harness_reporters.builtin, harness_ratings.csv_format, harness_executors.local,
            harness_datasets.synthetic, harness_datasets.alpaca]


def _toml(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def _with_executor(registry: Path, settings: dict) -> Path:
    text = registry.read_text() + "\n[executor]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in settings.items())
    registry.write_text(text)
    return registry


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two Ray nodes on 127.0.0.1 (1 CPU each; the head has the dashboard for the state API), the fakes installed as entry points."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    site = tmp_path_factory.mktemp("fake-plugin-package")
    info = site / "harness_test_fakes-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-test-fakes\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[harness.plugins]\nfakes = fakes\n")
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", os.pathsep.join([str(site), str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]))
    mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray then keeps every node on the loopback interface
    mp.setenv("RAY_AUTH_MODE", "disabled")
    mp.delenv("RAY_ADDRESS", raising=False)
    started = time.perf_counter()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": True, "dashboard_port": _free_port()})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    c.start_seconds = time.perf_counter() - started
    try:
        yield c
    finally:
        c.shutdown()
        mp.undo()


def spawn(registry: Path, *args: str, env: dict[str, str] | None = None, inherit: bool = True) -> subprocess.Popen:
    """``harness ARGS -r registry``; ``env`` added to this process's environment, or the whole environment with ``inherit=False``."""
    return subprocess.Popen(
        [str(HARNESS), *args, "-r", str(registry)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**(os.environ if inherit else {}), "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def harness(registry: Path, *args: str, env: dict[str, str] | None = None, inherit: bool = True, timeout: float = 300) -> tuple[int, str, str]:
    proc = spawn(registry, *args, env=env, inherit=inherit)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def report(registry: Path) -> list[dict]:
    code, out, err = harness(registry, "report", "--format", "json")
    assert code == 0, err
    return json.loads(out)


def adapters_stored(registry: Path) -> bool:
    try:
        return query(registry, "SELECT COUNT(*) FROM adapters")[0][0] == 1
    except sqlite3.Error:  # not created yet
        return False


def wait_for(predicate, timeout: float = 60.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def nodes_used(stderr: str) -> set[str]:
    return set(re.findall(r"started on \S+ node (\w+)", stderr))


def local_reference(cli, tmp_path: Path, name: str, **registry_kwargs) -> tuple[Path, list[dict]]:
    """The same experiment run by the local executor in this process (the fakes are deterministic)."""
    folder = tmp_path / name
    folder.mkdir()
    registry = fakes.write_registry(folder / "registry.toml", **registry_kwargs)
    cli("run", "--all", "-r", registry)
    result = cli("report", "--format", "json", "-r", registry)
    assert result.exit_code == 0, result.output
    return registry, json.loads(result.stdout)


def ray_registry(tmp_path: Path, cluster, name: str, **registry_kwargs) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    registry = fakes.write_registry(folder / "registry.toml", **registry_kwargs)
    return _with_executor(registry, {"name": "ray", "address": cluster.address, "forward_env": ["FAKE_BATCH_SECONDS", "FAKE_TRAIN_SECONDS"], "poll_seconds": 0.1})


# --------------------------------------------------------------------------- a cluster started by hand (before the cluster above starts)
#
# docs/distributed.md, "By hand": `ray start` for a head and one more node (scripts/ray-local-cluster.sh, as
# the docs tell a user), token authentication on as Ray 2.60 has it when a token exists, the driver joining
# with address = "127.0.0.1:PORT". HOME is a folder of the test's: the script's `ray get-auth-token
# --generate` writes the token to its ~/.ray/auth_token, as on a user's machine, and the real one is never touched.

SCRIPT = ROOT / "scripts" / "ray-local-cluster.sh"


@pytest.fixture(scope="module")
def tiny_local(tmp_path_factory) -> Path:
    """The embedded default at a tiny budget (real SmolLM2), run by the local executor: what every ray run must report."""
    local = tiny_default(tmp_path_factory.mktemp("tiny-local"))
    code, _, err = harness(local, "run", "--all", timeout=600)
    assert code == 0, err
    return local


@pytest.fixture(scope="class")
def by_hand(tmp_path_factory):
    """Two nodes (1 CPU each) started with `ray start` by scripts/ray-local-cluster.sh; stopped however the tests end,
    and before the cluster_utils tests start (class scope)."""
    pytest.importorskip("ray")
    if shutil.which("setsid") is None:
        pytest.skip("scripts/ray-local-cluster.sh needs setsid (util-linux)")
    home = tmp_path_factory.mktemp("home")
    folder = Path(tempfile.mkdtemp(prefix="rlc-", dir="/tmp"))  # short: Ray's socket paths in it must stay under 107 characters
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # no test cluster's RAY_AUTH_MODE=disabled and such
    env |= {
        "HOME": str(home),
        "PATH": os.pathsep.join([str(HARNESS.parent), os.environ.get("PATH", "")]),
        "HARNESS_CACHE": os.environ.get("HARNESS_CACHE", str(Path.home() / ".cache" / "harness")),  # the converted SmolLM2, shared
    }
    try:
        start = subprocess.run(["bash", str(SCRIPT), "start", str(port), str(folder)], env=env, capture_output=True, text=True, timeout=300)
        assert start.returncode == 0, start.stdout + start.stderr
        yield SimpleNamespace(address=f"127.0.0.1:{port}", env=env | {"RAY_AUTH_MODE": "token"}, home=home, folder=folder)
    finally:
        stop = subprocess.run(["bash", str(SCRIPT), "stop", str(port), str(folder)], env=env, capture_output=True, text=True, timeout=180)
        shutil.rmtree(folder, ignore_errors=True)
        assert stop.returncode == 0, stop.stdout + stop.stderr


@pytest.mark.slow
class TestAClusterStartedByHand:
    def test_with_a_token_it_runs_the_default_as_the_local_executor_does(self, by_hand, tiny_local, tmp_path) -> None:
        assert len((by_hand.home / ".ray" / "auth_token").read_text().strip()) == 64  # the token the script had Ray generate
        on_ray = tiny_default(tmp_path / "ray", extra=f'[executor]\nname = "ray"\naddress = "{by_hand.address}"\n')
        code, _, err = harness(on_ray, "run", "--all", env=by_hand.env, inherit=False, timeout=600)
        assert code == 0, err
        assert "trained 1 (reused 0), generated 12 (cached 0), scored 36 (cached 0)" in err, err
        assert len(nodes_used(err)) == 2, err  # jobs ran on both nodes
        assert report(on_ray) == report(tiny_local)
        texts = "SELECT model, config, example_id, text FROM generations ORDER BY 1, 2, 3"
        assert query(on_ray, texts) == query(tiny_local, texts)

    def test_a_driver_without_the_clusters_token_is_told_why_it_cannot_join(self, by_hand, tmp_path) -> None:
        registries = {name: tiny_default(tmp_path / name, extra=f'[executor]\nname = "ray"\naddress = "{by_hand.address}"\n') for name in ("missing", "wrong")}
        no_mode = {k: v for k, v in by_hand.env.items() if k != "RAY_AUTH_MODE"}  # the case: a token on the machine, RAY_AUTH_MODE unset
        envs = {"missing": no_mode, "wrong": by_hand.env | {"RAY_AUTH_TOKEN": "0" * 64}}
        procs = {name: spawn(registries[name], "run", "--all", env=envs[name], inherit=False) for name in registries}  # Ray retries 20 s: both at once
        errs = {}
        for name, proc in procs.items():
            _, errs[name] = proc.communicate(timeout=180)
            assert proc.returncode == 2, errs[name]
            assert "Traceback" not in errs[name]
            assert query(registries[name], "SELECT COUNT(*) FROM generations") == [(0,)]
        prefix = f"executor.address: cannot join the Ray cluster at '{by_hand.address}': "
        assert prefix + "the cluster uses token authentication and this process sent no token: RAY_AUTH_MODE is unset here" in errs["missing"]
        assert "this machine has one in ~/.ray/auth_token. Set RAY_AUTH_MODE=token" in errs["missing"]
        assert prefix + "the cluster refused the token this process sent (from the RAY_AUTH_TOKEN variable): it is not the cluster's token" in errs["wrong"]


N_GENERATIONS = 2 * len(fakes.STUDY_CONFIGS) * 8


@pytest.mark.slow
def test_a_worker_killed_mid_job_is_retried_and_the_results_equal_the_local_run(cluster, cli, tmp_path) -> None:
    from ray.util.state import list_tasks

    _, expected = local_reference(cli, tmp_path, "local")
    registry = ray_registry(tmp_path, cluster, "ray")
    # 48 batches of 0.25 s per generation job: time to find its worker and kill it
    proc = spawn(registry, "run", "--all", env={"FAKE_BATCH_SECONDS": "0.25"})

    def running_generation():
        tasks = list_tasks(address=cluster.address, filters=[("name", "=", "generate/fake-base"), ("state", "=", "RUNNING")], detail=True)
        return [t for t in tasks if t.worker_pid]

    (task,) = wait_for(running_generation, 120, "generate/fake-base to run")
    time.sleep(1.0)  # some batches into the job
    os.kill(task.worker_pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "ray: generate fake-base: retried on" in err, err
    attempts = list_tasks(address=cluster.address, filters=[("name", "=", "generate/fake-base"), ("job_id", "=", task.job_id)], detail=True)
    assert sorted(t.attempt_number for t in attempts) == [0, 1] and {t.state for t in attempts} == {"FAILED", "FINISHED"}
    # every row once: the run's own counts, and the store
    assert f"generated {N_GENERATIONS} (cached 0), scored {2 * N_GENERATIONS} (cached 0)" in err, err
    assert query(registry, "SELECT COUNT(*) FROM generations") == [(N_GENERATIONS,)]
    assert query(registry, "SELECT COUNT(*) FROM scores") == [(2 * N_GENERATIONS,)]
    assert query(registry, "SELECT COUNT(*) FROM failures") == [(0,)]
    stats = json.loads(query(registry, "SELECT metadata FROM runs")[0][0])["stats"]
    assert stats["generated"] == N_GENERATIONS and stats["scored"] == 2 * N_GENERATIONS and stats["trained"] == 1
    assert report(registry) == expected
    assert len(nodes_used(err)) == 2, err  # jobs ran on both nodes


@pytest.mark.slow
def test_a_job_that_raises_fails_its_cells_and_the_jobs_that_need_it_the_rest_goes_on(cluster, cli, tmp_path) -> None:
    models = [dict(m) for m in fakes.DEFAULT_MODELS]
    models[1]["fail_train"] = True  # the fine-tune raises on the worker: its generation cannot run
    kwargs = {"models": models, "engine": {"name": "fake-engine", "batch_size": 4, "fail_num_beams": 3}}  # and one cell of the other fails
    local_registry, expected = local_reference(cli, tmp_path, "local", **kwargs)
    registry = ray_registry(tmp_path, cluster, "ray", **kwargs)
    code, out, err = harness(registry, "run", "--all")
    assert code == 1, err
    failures = query(registry, "SELECT cell, stage, error FROM failures ORDER BY cell")
    assert [(c, s) for c, s, _ in failures] == [(c, s) for c, s, _ in _failures(local_registry)]
    by_cell = {c: e for c, _, e in failures}
    assert by_cell["train/fake-tuned"] == "RuntimeError: fake training failure"
    assert by_cell["generate/fake-tuned/top_k_10_num_beams_1_temp_0.8"].startswith("fine-tuning failed: RuntimeError: fake training failure")
    assert "fake engine failure for num_beams=3" in by_cell["generate/fake-base/top_k_50_num_beams_3_temp_0.8"]
    trace = query(registry, "SELECT traceback FROM failures WHERE cell = 'train/fake-tuned'")[0][0]
    assert "fakes.py" in trace and "in train" in trace  # the worker's traceback travelled
    assert query(registry, "SELECT COUNT(*) FROM generations") == [(11 * 8,)]  # the other model's 11 good cells
    assert report(registry) == expected


def _failures(registry: Path):
    con = sqlite3.connect(registry.parent / "out" / STORE_NAME)
    try:
        return con.execute("SELECT cell, stage, error FROM failures ORDER BY cell").fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_a_job_asking_for_more_than_any_node_has_is_refused_before_anything_runs(cluster, tmp_path) -> None:
    registry = ray_registry(tmp_path, cluster, "ray")
    _with_executor_keys(registry, {"num_gpus_generate": 1.0})
    code, out, err = harness(registry, "run", "--all")
    assert code == 2, err
    assert "a generate job asks for 1 CPU and 1 GPU, more than any node of the cluster has (1 CPU / 0 GPU, 1 CPU / 0 GPU)" in err
    assert "Traceback" not in err
    assert query(registry, "SELECT COUNT(*) FROM generations") == [(0,)]


def _with_executor_keys(registry: Path, settings: dict) -> None:
    registry.write_text(registry.read_text() + "".join(f"{k} = {_toml(v)}\n" for k, v in settings.items()))


@pytest.mark.slow
def test_a_driver_stopped_with_sigterm_cancels_its_tasks_and_the_next_run_resumes(cluster, cli, tmp_path) -> None:
    from ray.util.state import list_tasks

    _, expected = local_reference(cli, tmp_path, "local")
    registry = ray_registry(tmp_path, cluster, "ray")
    proc = spawn(registry, "run", "--all", env={"FAKE_BATCH_SECONDS": "0.2"})
    # the fine-tune (fast) is committed, the generation jobs (about 10 s each) are running
    wait_for(lambda: adapters_stored(registry), 120, "the adapter")
    running = wait_for(lambda: list_tasks(address=cluster.address, filters=[("state", "=", "RUNNING")], detail=True), 60, "running tasks")
    job_id = running[0].job_id
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(60)
    err = proc.stderr.read()
    assert code == 143, err
    assert "stopped (SIGTERM)" in err and "Traceback" not in err
    assert query(registry, "SELECT status FROM runs") == [("interrupted",)]
    # nothing of the stopped driver's job runs on on the cluster
    wait_for(lambda: not [t for t in list_tasks(address=cluster.address, filters=[("job_id", "=", job_id)], detail=True) if t.state == "RUNNING"], 30, "its tasks to stop")
    assert query(registry, "SELECT COUNT(*) FROM generations")[0][0] < N_GENERATIONS

    code, out, err = harness(registry, "run", "--all")
    assert code == 0, err
    assert "trained 0 (reused 1)" in err and f"scored {2 * N_GENERATIONS}" in err
    assert query(registry, "SELECT COUNT(*) FROM generations") == [(N_GENERATIONS,)]
    assert query(registry, "SELECT run_id, status FROM runs ORDER BY run_id") == [(1, "interrupted"), (2, "ok")]
    assert report(registry) == expected


@pytest.mark.slow
def test_ctrl_c_shuts_down_the_local_instance_the_executor_started(tmp_path) -> None:
    """``address`` unset: the executor starts Ray on this machine, and a Ctrl-C leaves none of its processes behind."""
    pytest.importorskip("ray")
    from harness.pipeline.procs import descendants

    registry = _with_executor(fakes.write_registry(tmp_path / "registry.toml"), {"name": "ray", "poll_seconds": 0.1})
    site = tmp_path / "site" / "harness_test_fakes-0.0.dist-info"
    site.mkdir(parents=True)
    (site / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-test-fakes\nVersion: 0.0\n")
    (site / "entry_points.txt").write_text("[harness.plugins]\nfakes = fakes\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site.parent), str(TESTS)]), "FAKE_BATCH_SECONDS": "0.2", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    proc = spawn(registry, "run", "--all", env=env)
    wait_for(lambda: adapters_stored(registry), 120, "the adapter")
    ray_procs = descendants(proc.pid)
    assert ray_procs  # Ray's GCS, raylet and workers
    proc.send_signal(signal.SIGINT)
    code = proc.wait(60)
    err = proc.stderr.read()
    assert code == 130, err
    assert "interrupted" in err and "Traceback" not in err
    wait_for(lambda: not [p for p in ray_procs if _alive(p)], 30, "Ray's processes to exit")
    assert query(registry, "SELECT status FROM runs") == [("interrupted",)]
    assert "storage" not in err
    # the adapter was written into the output folder directly (one machine: no files travelled)
    assert list((registry.parent / "out" / "adapters").glob("fake-tuned-*/adapter_model.safetensors"))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


# --------------------------------------------------------------------------- the embedded default, real model


@pytest.mark.slow
def test_the_embedded_default_on_two_nodes_reports_exactly_what_the_local_executor_does(cluster, tiny_local, tmp_path) -> None:
    local = tiny_local
    on_ray = tiny_default(tmp_path / "ray", extra=f'[executor]\nname = "ray"\naddress = "{cluster.address}"\n')
    code, _, err = harness(on_ray, "run", "--all", timeout=600)
    assert code == 0, err
    assert "trained 1 (reused 0), generated 12 (cached 0), scored 36 (cached 0)" in err, err
    assert len(nodes_used(err)) == 2, err
    rows = report(on_ray)
    assert {r["config"] for r in rows if r["metric"] != "human"} == {"top_k_50_num_beams_1_temp_0.0", "top_k_50_num_beams_1_temp_1.0"}
    assert rows == report(local)
    texts = "SELECT model, config, example_id, text FROM generations ORDER BY 1, 2, 3"
    assert query(on_ray, texts) == query(local, texts)
    # the adapter's files travelled back to the driver's output folder (the nodes share no folder here)
    (path, sha), = query(on_ray, "SELECT path, adapter_sha256 FROM adapters")
    assert path.startswith("adapters/") and (on_ray.parent / "out" / path / "adapter_model.safetensors").is_file()
