#!/usr/bin/env bash
# Download the wheels a bare GPU machine lacks (Python 3.12, manylinux x86-64) into .whl/ (git-ignored),
# at the versions pinned in constraints.txt. The GPU image has torch, torchvision, timm, h5py, pandas,
# pyarrow, rich, safetensors, click, matplotlib; these are what vidcache needs beside them. Everything
# does not fit the 64 MiB a device run carries, so there are two sets:
#   benchmarks/gpu_wheels.sh          every section but nvdec (~56 MiB: av 34, faiss-cpu 18, open_clip_torch 1.5,
#                                     ftfy, wcwidth)
#   benchmarks/gpu_wheels.sh nvdec    the nvdec section and the model/extract ones it builds on (~62 MiB:
#                                     pynvvideocodec 26 in place of faiss-cpu, which only the mining section uses);
#                                     then: make bench-gpu BENCH_GPU_ARGS="--sections nvdec"
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES="av open_clip_torch ftfy wcwidth faiss-cpu pynvvideocodec"
LIMIT_MIB=64
case "${1:-all}" in
  all) DROP="pynvvideocodec" ;;
  nvdec) DROP="faiss-cpu" ;;
  *) echo "gpu_wheels.sh: unknown set '$1' (all or nvdec)" >&2; exit 2 ;;
esac
rm -rf .whl && mkdir -p .whl
for name in $PACKAGES; do
  [ "$name" = "$DROP" ] && continue
  pin=$(grep -i "^${name}==" constraints.txt || true)
  if [ -z "$pin" ]; then echo "gpu_wheels.sh: $name is not pinned in constraints.txt" >&2; exit 2; fi
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$pin"
done
total_mib=$(( ($(du -sb .whl | cut -f1) + 1048575) / 1048576 ))
echo "gpu_wheels.sh: .whl holds ${total_mib} MiB (${1:-all}; the carry limit is ${LIMIT_MIB} MiB)"
if [ "$total_mib" -gt "$LIMIT_MIB" ]; then echo "gpu_wheels.sh: over the ${LIMIT_MIB} MiB carry limit" >&2; exit 2; fi
