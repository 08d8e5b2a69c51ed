#!/usr/bin/env bash
# Pack vLLM for the GPU machine (torch 2.11 image, no vLLM, at most 64 MiB a call) into parts.
#
#   bash scripts/gpu-vllm-wheels.sh OUTDIR [PART_MIB]
#
# vLLM 0.26.0 is the release whose wheel pins torch==2.11.0 (0.27.0 and later pin 2.13.0). Its wheel is
# 304 MB; the kernels a dense bf16 Llama on a Hopper GPU never loads are dropped (FlashAttention 2 —
# Hopper runs FlashAttention 3 —, the MoE kernels, the Rust front-end binary, DeepGEMM and the sm100
# FMHA sources), which leaves ~103 MB. With the dependencies the image lacks (found by importing
# vllm's offline LLM path with --no-deps installs, ~18 MB) it is tarred and split into OUTDIR/part-*
# of PART_MIB (default 58) MiB each: carry one part a call (each call copies its part to the machine's
# /tmp/parts, which persists while the machine stays warm), then on the last call:
#
#   cat /tmp/parts/vllm.tar.part-* | tar -x -C /tmp/vwh && python3 -m pip install -q --no-index --no-deps \
#       --target /tmp/site /tmp/vwh/*.whl && export PYTHONPATH=/tmp/site
set -euo pipefail
out=${1:?usage: gpu-vllm-wheels.sh OUTDIR [PART_MIB]}
part_mib=${2:-58}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip_dl() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 -d "$@"
}
mkdir -p "$work/full" "$work/wheels"
pip_dl "$work/full" vllm==0.26.0
# what the GPU image (see the device notes' package list) lacks for `from vllm import LLM` and its engine core
pip_dl "$work/wheels" annotated-types cachetools cbor2 dill "fastapi<0.137" httpx2 "llguidance<1.8,>=1.7" msgspec openai \
  openai-harmony opentelemetry-api partial-json-parser pybase64 pydantic pydantic-core sniffio starlette apache-tvm-ffi \
  typing-inspection "xgrammar<1.0" pyzmq depyf astor
python3 - "$work/full" "$work/wheels" <<'PY'
import sys, zipfile
from pathlib import Path
src = next(Path(sys.argv[1]).glob("vllm-*.whl"))
drop = ("vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so", "vllm/_moe_C_stable_libtorch.abi3.so", "vllm/vllm-rs")
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(Path(sys.argv[2]) / src.name, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    for info in zin.infolist():
        n = info.filename
        if n in drop or n.startswith(("vllm/third_party/deep_gemm/", "vllm/third_party/fmha_sm100/")):
            continue
        z.writestr(info, zin.read(n))
print(f"{src.name}: {src.stat().st_size / 2**20:.0f} MiB -> {(Path(sys.argv[2]) / src.name).stat().st_size / 2**20:.0f} MiB")
PY
mkdir -p "$out"
rm -f "$out"/vllm.tar.part-*
tar -C "$work/wheels" -cf - . | split -b "${part_mib}M" - "$out/vllm.tar.part-"
ls -l "$out"
