#!/usr/bin/env bash
# issue 12: `harness run --all` of the GPU experiment with the harness before this session (909545a, engine v1)
# and after (this tree, engine v2), same machine, same call; generation seconds from each run's store.
set -uo pipefail
W=.gpuwheels/run12b  # prepared by bench/gpu_run_all_prepare.sh
mkdir -p /tmp/run12
cat /tmp/run12/gguf.part1 $W/gguf.part2 > /tmp/run12/SmolLM2-135M-Instruct.Q4_1.gguf
echo "$(cat $W/gguf.sha256)  /tmp/run12/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c - || exit 1
python3 -m pip install -q --no-index --no-deps --target /tmp/site $W/gguf-*.whl
mkdir -p /tmp/oldsrc && tar -xf $W/old.tar -C /tmp/oldsrc
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/old /tmp/oldsrc
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/new .
export HARNESS_CACHE=/tmp/run12/cache HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PYTHONPATH=/tmp/new:/tmp/site python3 -c "
from pathlib import Path; from harness_models import loading
print('converted', loading.resolve('/tmp/run12/SmolLM2-135M-Instruct.Q4_1.gguf', Path('.')))"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/gpu.txt
for v in old new; do
  mkdir -p /tmp/run12/$v; sed "s/@V@/$v/" bench/gpu_run_all.toml > /tmp/run12/$v/registry.toml
  start=$(date +%s.%N)
  (cd /tmp/run12/$v && PYTHONPATH=/tmp/$v:/tmp/site python3 -c "from harness.cli import main; main()" run --all -r registry.toml > $OUT/$v.out 2> $OUT/$v.err)
  echo "$v exit $? wall $(python3 -c "import time;print(round(time.time()-$start,1))")" | tee -a $OUT/summary.txt
  python3 - "$v" >> $OUT/summary.txt <<'PY'
import json, sqlite3, sys
v = sys.argv[1]
db = sqlite3.connect(f"/tmp/run12/{v}/out/harness.sqlite")
meta = json.loads(db.execute("SELECT metadata FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()[0])
per = db.execute("SELECT config, COUNT(*), SUM(seconds), AVG(new_tokens) FROM generations GROUP BY config ORDER BY config").fetchall()
out = {"version": v, "stage_seconds": meta.get("stats", {}).get("stage_seconds"), "seconds": meta.get("seconds"),
       "torch": meta.get("versions", {}).get("torch"), "transformers": meta.get("versions", {}).get("transformers"),
       "per_config": [{"config": c, "n": n, "seconds": round(s, 2), "mean_new_tokens": round(t, 1)} for c, n, s, t in per]}
json.dump(out, open(f"/tmp/run12/{v}.json", "w"), indent=1)
print(json.dumps({k: out[k] for k in ("version", "stage_seconds", "seconds")}))
PY
  cp /tmp/run12/$v.json $OUT/ 2>/dev/null
done
