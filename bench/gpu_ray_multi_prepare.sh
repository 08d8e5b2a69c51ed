#!/usr/bin/env bash
# Packs what bench/gpu_ray_multi.sh needs on the GPU machine and its image lacks (no network there, at most
# 64 MiB carried a call): ray 2.60.0 (a 79 MB wheel), trl and datasets for the fine-tunes, rouge-score for
# `--metrics bleu,rouge_l`, and the small packages these import that the image may lack. Python 3.12
# manylinux wheels at the versions of this checkout's .venv, tarred and split into .gpuwheels/raymulti/N/
# (58 MiB each; .gpuwheels/ is git-ignored). On the machine only the wheels of packages it does not
# have are installed (bench/gpu_ray_multi.sh), so nothing of the image is shadowed.
#
#   bash bench/gpu_ray_multi_prepare.sh
# then with the device tool, on a multi-GPU kind, while the machine stays warm:
#   run(command="mkdir -p /tmp/parts && cp .gpuwheels/raymulti/1/* /tmp/parts/", carry=[".gpuwheels/raymulti/1"], kind=...)
#   run(command="bash bench/gpu_ray_multi.sh", carry=[".gpuwheels/raymulti/2"])      # the last part: installs and runs
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
out=.gpuwheels/raymulti
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
version() { $PY -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
pins=()
for p in ray trl datasets dill multiprocess xxhash fsspec jsonschema jsonschema-specifications referencing rpds-py attrs \
         absl-py nltk joblib regex six filelock pyyaml requests msgpack; do
  pins+=("$p==$(version "$p")")
done
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  -d "$work/wheels" "${pins[@]}"
# published as a source archive only (pure Python): built into a wheel here
$PY -m pip wheel -q --no-deps -w "$work/wheels" "rouge-score==$(version rouge-score)"
rm -rf "$out" && mkdir -p "$out"
tar -C "$work/wheels" -cf "$work/raymulti.tar" .
split -b 58M -d -a 1 "$work/raymulti.tar" "$work/part-"
for part in "$work"/part-*; do
  n=$(( ${part##*-} + 1 ))
  mkdir -p "$out/$n" && mv "$part" "$out/$n/"
done
sha256sum "$work/raymulti.tar" | cut -c1-64 > "$out/$n/raymulti.sha256"
ls -l "$work/wheels" "$out"/*
echo "parts: $(ls -d "$out"/*/ | wc -l) (carry one per call; bench/gpu_ray_multi.sh runs with the last)"
