#!/usr/bin/env bash
# Build .venv-labelstudio: the environment the Label Studio round trip is tested in:
#   .venv-labelstudio/bin/python -m pytest tests/labelstudio
#
# A separate venv because Label Studio (a Django server) pins dozens of packages (Django 5.2,
# djangorestframework, boto3, google-cloud-*, pyarrow 24, pytz < 2023, redis 5.2 ...) that the
# harness itself does not need and should not be dictated by. The harness is installed into
# it (editable, core dependencies only) so the test reads the server's exports with the real
# `label-studio` rating format plugin.
#
# Idempotent (scripts/lib/venv.sh): a stamp file records the hash of the requirement set (this
# script, the library, pyproject.toml, the Python version); when it matches, the script exits at
# once. When it differs, the same venv is updated in place (pip only installs what changed).
#
#   LABELSTUDIO_VENV    where to build (default: <repo>/.venv-labelstudio)
#   LABELSTUDIO_PYTHON  the interpreter (default: python3.11)
#   LABELSTUDIO_SPEC    the server requirement (default: label-studio==1.23.2)
#   LABELSTUDIO_SDK     the SDK requirement (default: label-studio-sdk==2.1.2)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LABELSTUDIO_VENV:-$ROOT/.venv-labelstudio}"
PYTHON="${LABELSTUDIO_PYTHON:-python3.11}"
STAMP="$VENV/.labelstudio-env.stamp"

REQUIREMENTS=(
  "${LABELSTUDIO_SPEC:-label-studio==1.23.2}"
  "${LABELSTUDIO_SDK:-label-studio-sdk==2.1.2}"
  "pytest>=8"
)

NAME=labelstudio-env
# shellcheck source=lib/venv.sh
source "$ROOT/scripts/lib/venv.sh"
venv_skip_if_current "${BASH_SOURCE[0]}"
venv_install "test"

# smoke test: the server and the SDK import, and the harness sees the rating format through its entry point
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import label_studio  # noqa: F401
import label_studio_sdk  # noqa: F401
names = {ep.name for ep in md.entry_points(group="harness.plugins")}
assert "label_studio_ratings" in names, f"entry point label_studio_ratings missing: {sorted(names)}"
print("labelstudio-env: label-studio", md.version("label-studio"), "| label-studio-sdk", md.version("label-studio-sdk"), "| Django", md.version("Django"))
PY

venv_done
