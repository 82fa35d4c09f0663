#!/usr/bin/env bash
# `make bench-gpu`: run the GPU check on this machine. On a bare GPU machine (Python with torch, no
# network) the packages it lacks travel as wheels in .whl/ (benchmarks/gpu_wheels.sh fetches them):
# they are installed into a private folder, never over the machine's own packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# the wheels are installed whenever one that this Python cannot import is there (pynvvideocodec from
# `gpu_wheels.sh nvdec` on a machine that has the rest)
if ! "$PY" -c "import av, open_clip, ftfy, faiss" 2>/dev/null \
  || { ls .whl/pynvvideocodec-*.whl >/dev/null 2>&1 && ! "$PY" -c "import PyNvVideoCodec" 2>/dev/null; }; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    site=${VIDCACHE_WHEEL_SITE:-/tmp/vidcache-site}
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
    export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "bench-gpu: av/open_clip/ftfy/faiss missing and no wheels in .whl/: run benchmarks/gpu_wheels.sh on a machine with pip access and carry .whl" >&2
  fi
fi
export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/bench_gpu.py --out "${OUT:-bench_out/gpu}" "$@"
