#!/usr/bin/env bash
# Pack the wheels the reference study needs and the GPU image lacks (issue 21) into parts a device call can carry.
#
#   bash bench/gpu_study_prepare.sh [OUTDIR] [PART_MIB]        # default .gpuwheels/study, 58 MiB a part
#   bash bench/gpu_study_prepare.sh --check PYTHON [OUTDIR]    # also install the parts --no-deps beside PYTHON's
#                                                              # packages and import what the study imports
#
# The image (Python 3.12, torch 2.11.0+cu130, transformers 5.17.0, peft, accelerate, pyarrow, pandas …;
# the device notes' package list) lacks unsloth, bitsandbytes, xformers, torchao, trl, datasets, rouge_score,
# bert_score and gguf. The versions below are unsloth 2026.10.9's (it pins transformers <= 5.17.0, trl <= 1.15,
# datasets < 5, torch < 2.15; bitsandbytes 0.50.2, trl 1.15.0, datasets 4.8.5 ran unsloth on an H100 in
# issue 3), plus what those need that the image lacks — found by importing them after `--no-deps` installs of
# exactly these wheels into a Python 3.12 beside torch 2.11 (the CUDA build from PyPI, on a CPU), the image's
# other packages and nothing more (docs/study.md, "The wheels"):
#   datasets: dill, multiprocess;  unsloth_zoo: tyro (docstring-parser, typeguard), msgspec, cut_cross_entropy,
#   torchao (0.18.0: the first for torch 2.11);  rouge-score 0.1.2 (PyPI has only its sdist: built here) with
#   nltk (defusedxml).
# Not carried: xformers. unsloth imports it only if present; the one wheel for torch >= 2.10 (0.0.35) is built
# for torch 2.10 + CUDA 12.8 and cannot load its kernels beside torch 2.11 + CUDA 13, and unsloth then uses
# PyTorch's attention (SDPA) — which is what it uses without xformers too. hf_transfer and diffusers (unsloth's
# declared dependencies) are never imported on this path.
# Dropped from the wheels, never loaded by a CUDA 13 run of the study: bitsandbytes' libraries for other
# CUDA/ROCm versions (cuda130 and the CPU one kept), unsloth's "studio" web app, torchao's tests.
# The slimmed wheels are tarred and split into OUTDIR/study.tar.part-* (one part when they fit in PART_MIB).
# On the GPU machine bench/gpu_study.sh joins, checks (sha256) and installs them into /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/.."
check=""
if [ "${1:-}" = "--check" ]; then check=${2:?--check needs a python}; shift 2; fi
out=${1:-.gpuwheels/study}
part_mib=${2:-58}
WHEELS=(
  unsloth==2026.10.9 unsloth_zoo==2026.10.9 bitsandbytes==0.50.2 torchao==0.18.0
  trl==1.15.0 datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19
  tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1 msgspec==0.23.0 cut_cross_entropy==25.1.1
  nltk==3.10.4 defusedxml==0.7.1 bert_score==0.3.13 gguf==0.19.0
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/full" "$work/wheels"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$work/full" "${WHEELS[@]}"
python3 -m pip wheel -q --no-deps "rouge-score==0.1.2" -w "$work/full"   # pure Python; PyPI has no wheel
python3 - "$work/full" "$work/wheels" <<'PY'
import sys, zipfile
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
KEEP_BNB = ("bitsandbytes/libbitsandbytes_cuda130.so", "bitsandbytes/libbitsandbytes_cpu.so")
def dropped(name: str) -> bool:
    if name.startswith("bitsandbytes/libbitsandbytes_") and name.endswith(".so"):
        return name not in KEEP_BNB
    return name.startswith(("studio/", "test/"))
for whl in sorted(src.glob("*.whl")):
    target = dst / whl.name
    with zipfile.ZipFile(whl) as zin:
        names = [i for i in zin.infolist() if not dropped(i.filename)]
        if len(names) == len(zin.infolist()):
            target.write_bytes(whl.read_bytes())
            continue
        # RECORD still lists the dropped files: pip installs what is there (it verifies hashes of present files only)
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
            for info in names:
                zout.writestr(info, zin.read(info.filename))
    print(f"{whl.name}: {whl.stat().st_size / 2**20:.1f} -> {target.stat().st_size / 2**20:.1f} MiB")
PY
mkdir -p "$out"
rm -f "$out"/study.tar.part-* "$out"/study.sha256
tar -C "$work/wheels" -cf "$work/study.tar" .
sha256sum "$work/study.tar" | cut -c1-64 > "$out/study.sha256"
split -b "${part_mib}M" "$work/study.tar" "$out/study.tar.part-"
ls -l "$out"
if [ -n "$check" ]; then
  site=$(mktemp -d)
  "$check" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$work"/wheels/*.whl
  UNSLOTH_DISABLE_STATISTICS=1 HF_HUB_OFFLINE=1 PYTHONPATH="$site" "$check" -c "
import importlib
for name in ('trl', 'datasets', 'bitsandbytes', 'torchao', 'rouge_score.rouge_scorer', 'bert_score', 'gguf', 'unsloth'):
    importlib.import_module(name)
    print('imported', name)
from rouge_score import rouge_scorer
print('rouge-L', rouge_scorer.RougeScorer(['rougeL'], use_stemmer=True).score('the cats sat', 'the cat sat')['rougeL'].fmeasure)
"
  rm -rf "$site"
fi
