#!/usr/bin/env bash
# The reference study on the GPU machine (issue 21): install the carried wheels, then bench/gpu_study.py "$@".
#
#   bash bench/gpu_study.sh [gpu_study.py options]      # e.g. --models phi-2 mistral-7b --out $OUT/study_1.json
#
# Wheels: the parts bench/gpu_study_prepare.sh wrote into .gpuwheels/study (carry that folder) are joined,
# checked against their sha256 and installed into /tmp/site once per machine (a warm machine keeps /tmp);
# vLLM's parts (scripts/gpu-vllm-wheels.sh), when an earlier call copied all of them into /tmp/parts, likewise.
# The calls to make, in order, are in bench/gpu_study.py's docstring.
set -uo pipefail
cd "$(dirname "$0")/.."
SITE=${GPU_STUDY_SITE:-/tmp/site}
mkdir -p "$SITE"
install_parts() {  # NAME PARTS... : join, check, unpack, install --no-deps into $SITE
  local name=$1; shift
  local dir=/tmp/wheels-$name
  rm -rf "$dir" && mkdir -p "$dir"
  cat "$@" > "/tmp/$name.tar" || return 1
  if [ -f ".gpuwheels/$name/$name.sha256" ]; then
    echo "$(cat ".gpuwheels/$name/$name.sha256")  /tmp/$name.tar" | sha256sum -c --quiet - || { echo "gpu_study: $name parts corrupt" >&2; return 1; }
  fi
  tar -xf "/tmp/$name.tar" -C "$dir" || return 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$dir"/*.whl || return 1
  rm -rf "$dir" "/tmp/$name.tar"
  touch "$SITE/.installed-$name"
  echo "gpu_study: installed $name wheels into $SITE"
}
if [ ! -f "$SITE/.installed-study" ]; then
  ls .gpuwheels/study/study.tar.part-* >/dev/null 2>&1 || { echo "gpu_study: carry .gpuwheels/study (bench/gpu_study_prepare.sh)" >&2; exit 2; }
  install_parts study .gpuwheels/study/study.tar.part-* || exit 1
fi
if [ ! -f "$SITE/.installed-vllm" ] && ls /tmp/parts/vllm.tar.part-ab >/dev/null 2>&1; then
  install_parts vllm /tmp/parts/vllm.tar.part-* || echo "gpu_study: vLLM not installed" >&2
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
python3 - <<'PY'
import importlib.metadata as md
def version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "missing"
print("gpu_study:", ", ".join(f"{d} {version(d)}" for d in ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "bitsandbytes",
      "unsloth", "unsloth_zoo", "torchao", "rouge-score", "bert-score", "sacrebleu", "vllm")))
PY
exec python3 bench/gpu_study.py "$@"
