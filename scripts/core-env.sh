#!/usr/bin/env bash
# Build .venv-core: the harness with only its core dependencies (no torch, no transformers, no
# metric libraries), as on an analysis laptop. Tests read copied results stores with it
# (tests/test_portable.py): reading commands must need nothing else.
#
# Idempotent (scripts/lib/venv.sh): skipped when nothing it depends on changed.
#   CORE_VENV    where to build (default: <repo>/.venv-core)
#   CORE_PYTHON  the interpreter (default: python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CORE_VENV:-$ROOT/.venv-core}"
PYTHON="${CORE_PYTHON:-python3}"
STAMP="$VENV/.core-env.stamp"
REQUIREMENTS=(pip)

NAME=core-env
# shellcheck source=lib/venv.sh
source "$ROOT/scripts/lib/venv.sh"
venv_skip_if_current "${BASH_SOURCE[0]}"
venv_install ""
if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "$NAME: torch is importable in $VENV; the core install must not pull it" >&2
  exit 1
fi
venv_done
