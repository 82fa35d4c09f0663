#!/bin/bash
# The 1M follow-ups of docs/benchmarks.md 14.6 on a kept bench_scale cache (SCALE: its --workdir; OUT: where
# the JSON goes): the prototype run and a no-op extract again, then compact after a scattered removal
# (every 10th video, so every shard has dead rows and is rewritten), then verify.
set -ex
cd "$(dirname "$0")/.."
export SCALE=${SCALE:-/tmp/scale} OUT=${OUT:-.}
N=$SCALE/1000000
rm -rf "$N/run_proto"
.venv/bin/python benchmarks/bench_scale.py --sizes 1000000 --workdir "$SCALE" --keep --reuse --timeout-s 900 \
    --commands extract_noop,train_prototype --json-out "$OUT/follow1.json"
.venv/bin/python benchmarks/bench_scale.py --sizes 1000000 --workdir "$SCALE" --keep --reuse --timeout-s 900 \
    --commands extract_noop,status --json-out "$OUT/follow2.json"
python3 - "$N" <<'PY'
import sys
size_dir = sys.argv[1]
rows = open(f"{size_dir}/manifest.csv").read().splitlines()[1:]
with open(f"{size_dir}/keep_scattered.csv", "w") as f:
    f.write("video_id,labels,split\n")
    for i, line in enumerate(rows):
        vid, _, label, split = line.split(",")
        if i % 10 != 5:
            f.write(f"{vid},{label},{split}\n")
PY
du -sb "$N/cache/shards"
/usr/bin/time -f "remove %e s %U user %S sys %M KiB" .venv/bin/python -m vidcache.cli remove --cache "$N/cache" \
    --not-in "$N/keep_scattered.csv" --json
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true  # cold reads where allowed
/usr/bin/time -f "compact %e s %U user %S sys %M KiB" .venv/bin/python -m vidcache.cli compact --cache "$N/cache" --json
du -sb "$N/cache/shards"
/usr/bin/time -f "verify %e s %U user %S sys %M KiB" .venv/bin/python -m vidcache.cli verify --cache "$N/cache" --json
uptime
