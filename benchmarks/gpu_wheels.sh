#!/usr/bin/env bash
# Download the wheels a bare GPU machine lacks (Python 3.12, manylinux x86-64) into .whl/ (git-ignored),
# at the versions pinned in constraints.txt. The GPU image has torch, torchvision, timm, h5py, pandas,
# pyarrow, rich, safetensors, click, matplotlib; these are what vidcache needs beside them
# (about 56 MiB: av 34, faiss-cpu 18, open_clip_torch 1.5, ftfy and wcwidth).
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES="av open_clip_torch ftfy wcwidth faiss-cpu"
mkdir -p .whl
for name in $PACKAGES; do
  pin=$(grep -i "^${name}==" constraints.txt || true)
  if [ -z "$pin" ]; then echo "gpu_wheels.sh: $name is not pinned in constraints.txt" >&2; exit 2; fi
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$pin"
done
du -sh .whl
