#!/usr/bin/env bash
# issue 23 on the GPU machine: installs what bench/gpu_ray_multi_prepare.sh packed (the parts copied to
# /tmp/parts by earlier calls, the last one carried in .gpuwheels/raymulti/N), the harness from this tree,
# then runs bench/gpu_ray_multi.py with ARGS (e.g. `--only local`); results into $OUT.
#
#   bash bench/gpu_ray_multi.sh [ARGS...]
set -uo pipefail
mkdir -p /tmp/parts
last=$(ls -d .gpuwheels/raymulti/*/ 2>/dev/null | sort -V | tail -n 1)
[ -n "$last" ] && cp "$last"* /tmp/parts/
if [ ! -f /tmp/site/.installed ]; then
  cat /tmp/parts/part-* > /tmp/raymulti.tar
  echo "$(cat /tmp/parts/raymulti.sha256)  /tmp/raymulti.tar" | sha256sum -c - || { echo "parts missing or damaged: $(ls /tmp/parts)"; exit 1; }
  rm -rf /tmp/wheels && mkdir -p /tmp/wheels && tar -xf /tmp/raymulti.tar -C /tmp/wheels
  # only the packages this image does not have: nothing of it is shadowed
  missing=$(python3 - /tmp/wheels <<'PY'
import importlib.metadata as m, pathlib, sys
for w in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    name = w.name.split("-")[0]
    try:
        m.version(name)
    except m.PackageNotFoundError:
        print(w)
PY
)
  echo "installing: $(echo $missing | tr ' ' '\n' | xargs -n1 basename 2>/dev/null | tr '\n' ' ')"
  if [ -n "$missing" ]; then python3 -m pip install -q --no-index --no-deps --target /tmp/site $missing || exit 1; fi
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/harness . || exit 1
  touch /tmp/site/.installed
fi
export PYTHONPATH=/tmp/harness:/tmp/site${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 HARNESS_CACHE=/tmp/harness-cache
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpus.txt"
python3 -c "import ray, trl, datasets, pynvml; print('ray', ray.__version__, 'trl', trl.__version__, 'datasets', datasets.__version__)" || exit 1
python3 bench/gpu_ray_multi.py --work /tmp/gpu-ray-multi --out "$OUT/gpu_ray_multi.json" --no-write "$@"
rc=$?
for side in local ray; do cp /tmp/gpu-ray-multi/$side/run.err "$OUT/$side.err" 2>/dev/null; done
exit $rc
