#!/usr/bin/env bash
# Build .venv-study: the environment the study adapters (unsloth-llama, unsloth-mistral,
# peft-phi2 with 4-bit) are tested in on CPU:  .venv-study/bin/python -m pytest tests/study
#
# A separate venv because unsloth's pins (transformers <= 5.17, trl <= 1.15, datasets < 5,
# torch < 2.15, xformers, triton) would otherwise dictate the main environment's.
#
# CPU build: torch 2.13.0+cpu (a wheel on this machine's disk, see STUDY_TORCH) instead of
# the CUDA torch 2.14.1 that an unpinned install pulls (a ~6 GB venv). unsloth requires
# torchvision, but the only torchvision on PyPI is built for CUDA torch: its compiled
# operators do not load beside CPU torch and unsloth's import check then refuses to start.
# Nothing the text adapters do needs torchvision, so it is uninstalled after the install.
#
# Idempotent (scripts/lib/venv.sh): a stamp file records the hash of the requirement set (this script, the library,
# pyproject.toml, the Python version); when it matches, the script exits at once. When
# it differs, the same venv is updated in place (pip only installs what changed).
#
#   STUDY_VENV   where to build (default: <repo>/.venv-study)
#   STUDY_PYTHON the interpreter (default: python3.11)
#   STUDY_TORCH  the torch requirement (default: torch==2.13.0+cpu; on a GPU machine
#                e.g. "torch==2.14.1", and then torchvision is kept)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${STUDY_VENV:-$ROOT/.venv-study}"
PYTHON="${STUDY_PYTHON:-python3.11}"
TORCH="${STUDY_TORCH:-torch==2.13.0+cpu}"
STAMP="$VENV/.study-env.stamp"

# The requirement set. The project itself comes in editable with the extras the study
# tests use; the versions below are the ones known to run unsloth on CPU.
REQUIREMENTS=(
  "$TORCH"
  "unsloth==2026.10.9"
  "unsloth_zoo==2026.10.9"
  "bitsandbytes==0.50.2"
  "transformers==5.17.0"
  "trl==1.15.0"
  "datasets>=3.4.1,<5"
  "rouge-score>=0.1.2"
  # the study's other metrics, for its end-to-end run at toy size (bench/gpu_study.py --smoke, tests/study)
  "sacrebleu>=2.4"
  "bert-score>=0.3.13"
  "pytest>=8"
)

NAME=study-env
# shellcheck source=lib/venv.sh
source "$ROOT/scripts/lib/venv.sh"
venv_skip_if_current "${BASH_SOURCE[0]}"
venv_install "unsloth,qlora,test"
pip=("${PIP[@]}")

case "$TORCH" in
  *+cpu*)
    # the PyPI torchvision is a CUDA build: unsloth's import check rejects it beside CPU torch
    "${pip[@]}" uninstall --quiet --yes torchvision 2>/dev/null || true
    ;;
esac

# smoke test: unsloth starts and the plugins are registered through the installed entry points
HF_HUB_OFFLINE=1 "$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
import unsloth  # noqa: F401
names = {ep.name for ep in md.entry_points(group="harness.plugins")}
missing = {"unsloth_adapters", "phi2", "peft_lora"} - names
assert not missing, f"entry points missing: {missing}"
print("study-env: unsloth", md.version("unsloth"), "| torch", md.version("torch"), "| transformers", md.version("transformers"))
EOF

venv_done
