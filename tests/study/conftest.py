"""Study tests: the reference study's adapters (unsloth-llama, unsloth-mistral, peft-phi2) end to end
on toy-size checkpoints of the real architectures, on CPU.

They need unsloth, which lives in its own environment (its pins clash with the main one)::

    bash scripts/study-env.sh && .venv-study/bin/python -m pytest tests/study

Elsewhere (the main venv) every test in this folder is skipped at collection. unsloth is
detected with ``find_spec`` rather than imported here: importing it patches transformers,
PEFT and TRL globally, and the peft-phi2 tests run first, unpatched.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

# no hub here: fail fast instead of waiting for the network (read when huggingface_hub is imported)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

HAS_UNSLOTH = importlib.util.find_spec("unsloth") is not None
SKIP_REASON = "unsloth is not installed: bash scripts/study-env.sh, then .venv-study/bin/python -m pytest tests/study"


def pytest_configure(config):
    config.addinivalue_line("markers", "study: the reference study's adapters on toy checkpoints (needs .venv-study)")


def pytest_collection_modifyitems(config, items):
    if HAS_UNSLOTH:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """``checkpoints(arch)``: the folder of a toy llama/mistral/phi checkpoint, built once per session."""
    import toy

    root = tmp_path_factory.mktemp("toy-checkpoints")
    built: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in built:
            built[arch] = toy.build_checkpoint(arch, root / arch)
        return built[arch]

    return get
