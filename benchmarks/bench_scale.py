"""Scale benchmark (issue 29): every cache-side command, as a whole CLI process, on synthetic caches
of N videos × 8 rows × D (512) float16, 20 labels, 60/20/20 splits.

Per size N (`--sizes 10000,100000,1000000`), in `--workdir/N/`:

1. one real generated video is extracted with a random-init CLIP (`--model`, default ViT-B-32 with
   `--clip-pretrained none`: D = 512; `vidcache-tiny` gives D = 64 for tests), so the cache holds a
   real view identity, a finished run (what makes a re-run a no-op) and `embed-text` can embed the
   labels with the same text tower;
2. N synthetic videos are written through the cache's own writer (`write_view_arrays`, the path
   `vidcache import` uses) with that identity: rows drawn around 1,000 cluster centres, the label of a
   video is its cluster's (mod 20), splits 60/20/20, and every `--dup-every`-th video is a planted
   near-duplicate of the previous one (so `mine duplicates` has something to find);
3. each command below runs as its own process (`python -m vidcache.cli ...`); wall time and the
   peak RSS (`os.wait4`'s ru_maxrss: the largest process of the tree) are recorded:
   status, extract (no-op re-run against the (N+1)-row manifest), search --video, search --text,
   index build, search --video with the index, search --text again (its text memo), mine
   hard-negatives / hard-negative-videos / neighbours / duplicates (K = 10), train linear /
   prototype / pool at defaults, eval, predict, report, remove --not-in (10 % removed), compact,
   verify; `import` of min(N, `--import-max`) plain `.npy` files into a fresh cache is timed
   separately (videos/s).

The growth exponent of each command between consecutive sizes is log(t2/t1) / log(N2/N1).

    .venv/bin/python benchmarks/bench_scale.py --sizes 10000,100000 --json-out scale.json
    .venv/bin/python benchmarks/bench_scale.py --sizes 300 --model vidcache-tiny --json   # seconds

Disk: about 8.5 KiB per video at D = 512 (1M videos: ~9 GB with the import copy capped). The
machine's load matters (other processes share the CPUs): the JSON records `os.getloadavg()`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROWS_PER_VIDEO = 8
N_LABELS = 20
N_CLUSTERS = 1000
K = 10
# text queries no earlier run asked (a query seen before comes from the cache's text memo)
RUN_TOKEN = time.strftime("%Y%m%dT%H%M%S")
BATCH_QUERIES = 20
COMMANDS = (
    "status",
    "extract_noop",
    "search_video",
    "search_text",
    "index_build",
    "search_video_indexed",
    "search_text_new",
    "search_text_again",
    "search_text_batch",
    "mine_hard_negatives",
    "mine_hard_negative_videos",
    "mine_neighbours",
    "mine_duplicates",
    "train_linear",
    "train_prototype",
    "train_pool",
    "eval",
    "predict",
    "report",
    "remove_not_in",
    "compact",
    "verify",
    "import",
)


def _log(message: str) -> None:
    print(f"[bench_scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _tree(pid: int) -> list[int]:
    """pid and its descendants, from /proc/PID/task/*/children."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in children.read_text().split())
            except OSError:
                pass
    return out


def _rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a live process in KiB; (0, 0) once it is gone."""
    rss = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def run_timed(args: list[str], *, cwd: Path, timeout_s: float) -> dict:
    """Run `python -m vidcache.cli ARGS`: wall seconds, exit code, last lines of stderr and the peak
    RSS in MiB, polled every 20 ms from /proc: the largest of the main process's high-water mark
    and the summed RSS of the process tree (wait4's ru_maxrss would include the RSS this benchmark
    process had when it forked: Linux keeps the pre-exec high-water mark)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    err_path = cwd / "last_stderr.txt"
    peak_kib = 0
    with open(err_path, "w") as err, open(cwd / "last_stdout.txt", "w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "vidcache.cli", *args], stdout=out, stderr=err, env=env)
        while True:  # reaped with wait4: its rusage gives the CPU seconds (the wall time is the load's too)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            tree = _tree(proc.pid)
            readings = [_rss_kib(p) for p in tree]
            if readings:
                peak_kib = max(peak_kib, sum(r for r, _ in readings), readings[0][1])
            if time.perf_counter() - started > timeout_s:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    tail = err_path.read_text(errors="replace").strip().splitlines()[-3:]
    return {
        "seconds": round(seconds, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),  # its own and its waited-for children's
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "exit_code": proc.returncode,
        "stderr_tail": tail,
    }


def synthetic_rows(n: int, dim: int, *, seed: int, dup_every: int):
    """(video_id, rows [8, dim] float16, timestamps, label, split) per video, in blocks (never all rows)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((N_CLUSTERS, dim), dtype=np.float32) * 2.0
    times = np.arange(ROWS_PER_VIDEO, dtype=np.float64)
    previous = None
    for i in range(n):
        cluster = i % N_CLUSTERS if previous is None or dup_every <= 0 or i % dup_every else previous[1]
        if dup_every > 0 and i % dup_every == 0 and previous is not None:
            rows = (previous[0] + 0.02 * rng.standard_normal(previous[0].shape, dtype=np.float32)).astype(np.float16)
        else:
            rows = (centres[cluster] + rng.standard_normal((ROWS_PER_VIDEO, dim), dtype=np.float32)).astype(np.float16)
        previous = (rows.astype(np.float32), cluster)
        split = ("train", "train", "train", "val", "test")[(i // N_LABELS) % 5]  # every label in every split
        yield f"v{i:07d}", rows, times, f"label{cluster % N_LABELS:02d}", split


def _write_manifests(size_dir: Path, entries: list, real_video: Path) -> None:
    with open(size_dir / "manifest.csv", "w") as f:
        f.write("video_id,path,labels,split\n")
        f.write(f"real,{real_video},label00,train\n")
        for e in entries:
            f.write(f"{e.video_id},{e.path},{e.labels[0]},{e.split}\n")
    with open(size_dir / "keep90.csv", "w") as f:  # remove --not-in: the last 10 % go
        f.write("video_id,labels,split\n")
        for e in entries[: int(len(entries) * 0.9)]:
            f.write(f"{e.video_id},{e.labels[0]},{e.split}\n")


def write_videos(size_dir: Path, identity: dict, videos) -> list:
    """Write `synthetic_rows` videos into `size_dir/cache` through the cache's own writer, then their
    manifest entries (after the rows: the writer takes entries up front, and they are known only once
    drawn); returns the entries."""
    from vidcache.cache.arrays import write_view_arrays
    from vidcache.cache.catalog import Catalog
    from vidcache.manifest import VideoEntry

    entries = []

    def with_entries():
        for vid, feats, times, label, split in videos:
            entries.append(VideoEntry(vid, str(size_dir / "absent" / f"{vid}.mp4"), (label,), split))
            yield vid, feats, times

    cache = size_dir / "cache"
    write_view_arrays(cache, view="clip", rows=with_entries(), entries=[], identity=identity, command="bench_scale")
    catalog = Catalog.open(cache, create=True)
    try:
        catalog.upsert_entries(entries)
    finally:
        catalog.close()
    return entries


def build_cache(size_dir: Path, n: int, *, model: str, dim: int, dup_every: int, seed: int) -> dict:
    """The cache of step 1 and 2 (see the module docstring); returns how long each part took."""
    from vidcache.cache.reader import Cache
    from vidcache.synth import write_video

    cache = size_dir / "cache"
    real = size_dir / "real.mp4"
    write_video(real, 4, fps=2, width=64, height=48)
    (size_dir / "real.csv").write_text(f"video_id,path,labels,split\nreal,{real},label00,train\n")
    took = {}
    extract_args = ["--views", "clip", "--clip-model", model, "--clip-pretrained", "none", "--fps", "1"]
    took["extract_real"] = run_timed(
        ["extract", str(size_dir / "real.csv"), "--cache", str(cache), *extract_args, "--json"],
        cwd=size_dir,
        timeout_s=900,
    )
    if took["extract_real"]["exit_code"] != 0:
        raise SystemExit(f"extract of the real video failed: {took['extract_real']}")
    with Cache(cache) as opened:
        identity = opened.view_info("clip")
    if identity["feature_dim"] != dim:
        raise SystemExit(f"--model {model} gives rows of {identity['feature_dim']}, not --dim {dim}")
    started = time.perf_counter()
    entries = write_videos(size_dir, identity, synthetic_rows(n, dim, seed=seed, dup_every=dup_every))
    _write_manifests(size_dir, entries, real)
    took["write_seconds"] = round(time.perf_counter() - started, 2)
    took["write_videos_per_s"] = round(n / max(took["write_seconds"], 1e-9), 1)
    took["embed_text"] = run_timed(["embed-text", "--cache", str(cache), "--json"], cwd=size_dir, timeout_s=900)
    took["cache_bytes"] = sum(p.stat().st_size for p in (cache / "shards").glob("*.h5"))
    return took


def import_files(size_dir: Path, n: int, dim: int, seed: int) -> tuple[Path, Path]:
    """min(N, --import-max) plain `.npy` files and their manifest, for `vidcache import`."""
    features = size_dir / "npy"
    features.mkdir(exist_ok=True)
    with open(size_dir / "import.csv", "w") as f:
        f.write("video_id,labels,split\n")
        for vid, rows, _, label, split in synthetic_rows(n, dim, seed=seed + 1, dup_every=0):
            np.save(features / f"{vid}.npy", rows)
            f.write(f"{vid},{label},{split}\n")
    return features, size_dir / "import.csv"


def command_lines(size_dir: Path, model: str, threshold: float, *, quick: bool = False) -> dict[str, list[str]]:
    """The timed command lines; `quick` (tests) trains one epoch at a fixed lr instead of the defaults."""
    train = ["--epochs", "1", "--lr", "0.001", "--weight-decay", "0.0001"] if quick else []
    cache = str(size_dir / "cache")
    run = str(size_dir / "run_linear")
    extract = ["--views", "clip", "--clip-model", model, "--clip-pretrained", "none", "--fps", "1"]
    text = f"label03 {RUN_TOKEN}"
    batch = size_dir / "text_queries.txt"
    batch.write_text("".join(f"label{i % 20:02d} batch {RUN_TOKEN} {i}\n" for i in range(BATCH_QUERIES)))
    return {
        "status": ["status", "--cache", cache, "--json"],
        "extract_noop": ["extract", str(size_dir / "manifest.csv"), "--cache", cache, *extract, "--json"],
        "search_video": ["search", "--cache", cache, "--video", "v0000001", "--json"],
        "search_text": ["search", "--cache", cache, "--text", text, "--json"],
        "index_build": ["index", "build", "--cache", cache, "--view", "clip", "--json"],
        "search_video_indexed": ["search", "--cache", cache, "--video", "v0000001", "--json"],
        # a text never asked, the index stored: on a CPU the text tower exported by `search_text` (NumPy, no torch)
        "search_text_new": ["search", "--cache", cache, "--text", f"label07 {RUN_TOKEN} new", "--json"],
        # the same text again: its prompts' embeddings come from the cache's text memo (no model)
        "search_text_again": ["search", "--cache", cache, "--text", text, "--json"],
        # 20 new texts in one process: the model is loaded once (one JSON line per query)
        "search_text_batch": ["search", "--cache", cache, "--text-file", str(batch), "--json"],
        "mine_hard_negatives": ["mine", "hard-negatives", "--cache", cache, "--k", str(K), "--json"],
        "mine_hard_negative_videos": ["mine", "hard-negative-videos", "--cache", cache, "--k", str(K), "--json"],
        "mine_neighbours": ["mine", "neighbours", "--cache", cache, "--view", "clip", "--k", str(K), "--json"],
        "mine_duplicates": [
            "mine",
            "duplicates",
            "--cache",
            cache,
            "--view",
            "clip",
            "--threshold",
            str(threshold),
            "--json",
        ],
        "train_linear": ["train", "--cache", cache, "--out", run, "--head", "linear", *train, "--json"],
        "train_prototype": [
            "train",
            "--cache",
            cache,
            "--out",
            str(size_dir / "run_proto"),
            "--head",
            "prototype",
            *train,
            "--json",
        ],
        "train_pool": [
            "train",
            "--cache",
            cache,
            "--out",
            str(size_dir / "run_pool"),
            "--head",
            "pool",
            *train,
            "--json",
        ],
        "eval": ["eval", "--run", run, "--cache", cache, "--json"],
        "predict": ["predict", "--run", run, "--cache", cache, "--out", str(size_dir / "pred.parquet"), "--json"],
        "report": ["report", "--cache", cache, "--out", str(size_dir / "report.html"), "--json"],
        "remove_not_in": ["remove", "--cache", cache, "--not-in", str(size_dir / "keep90.csv"), "--json"],
        "compact": ["compact", "--cache", cache, "--json"],
        "verify": ["verify", "--cache", cache, "--json"],
    }


def bench_size(n: int, args: argparse.Namespace, result: dict | None = None, save=lambda: None) -> dict:
    """Build the cache of N videos and time every command on it; `save()` runs after each command
    (the result dict is filled in place), so a run that is stopped keeps what it measured."""
    size_dir = Path(args.workdir) / str(n)
    result = {} if result is None else result
    result["videos"] = n
    build_json = size_dir / "build.json"
    if args.reuse and build_json.exists():  # a cache an earlier run of the same size built (--keep)
        _log(f"N={n}: reusing {size_dir / 'cache'}")
        result["build"] = {**json.loads(build_json.read_text()), "reused": True}
    else:
        if size_dir.exists():
            shutil.rmtree(size_dir)
        size_dir.mkdir(parents=True)
        _log(f"N={n}: building the cache")
        result["build"] = build_cache(
            size_dir, n, model=args.model, dim=args.dim, dup_every=args.dup_every, seed=args.seed
        )
        build_json.write_text(json.dumps(result["build"]))
    commands: dict[str, dict] = {}
    result["commands"] = commands
    save()
    wanted = args.commands.split(",") if args.commands else list(COMMANDS)
    lines = command_lines(size_dir, args.model, args.dup_threshold, quick=args.quick)
    for name in wanted:  # in the order asked: at 1M a run may be stopped before the last ones
        if name not in lines:
            continue
        line = lines[name]
        if name.startswith("train_"):  # a run kept from an earlier --reuse run: train refuses a full --out
            shutil.rmtree(line[line.index("--out") + 1], ignore_errors=True)
        _log(f"N={n}: {name}")
        commands[name] = run_timed(line, cwd=size_dir, timeout_s=args.timeout_s)
        commands[name]["load_avg_1m"] = round(os.getloadavg()[0], 2)
        if name == "report":
            out = size_dir / "report.html"
            commands[name]["output_mib"] = round(out.stat().st_size / 2**20, 3) if out.exists() else None
        if name == "verify":
            commands[name]["shard_mb_per_s"] = round(
                result["build"]["cache_bytes"] / 1e6 / max(commands[name]["seconds"], 1e-9), 1
            )
        if name == "compact":  # it rewrites only the shards a removal left small: MB/s of the rows it moved
            commands[name].update(_compact_rates(size_dir / "last_stdout.txt", args.dim, commands[name]["seconds"]))
        _log(
            f"N={n}: {name}: {commands[name]['seconds']} s, {commands[name]['peak_rss_mib']} MiB, "
            f"exit {commands[name]['exit_code']}"
        )
        save()
    if "import" in wanted:
        n_import = min(n, args.import_max)
        features, manifest = import_files(size_dir, n_import, args.dim, args.seed)
        line = [
            "import",
            str(features),
            "--manifest",
            str(manifest),
            "--cache",
            str(size_dir / "imported"),
            "--view",
            "clip",
            "--layout",
            "plain",
            "--json",
        ]
        _log(f"N={n}: import of {n_import} files")
        commands["import"] = {**run_timed(line, cwd=size_dir, timeout_s=args.timeout_s), "videos": n_import}
        commands["import"]["videos_per_s"] = round(n_import / max(commands["import"]["seconds"], 1e-9), 1)
        shutil.rmtree(features)
    save()
    if not args.keep:
        shutil.rmtree(size_dir, ignore_errors=True)
    return result


def _compact_rates(stdout: Path, dim: int, seconds: float) -> dict:
    """What `compact --json` said it did, and the MB/s of the rows it copied (float16 rows of `dim`)."""
    try:
        summary = json.loads(stdout.read_text())
    except (OSError, ValueError):
        return {}
    moved_mb = summary.get("rows_moved", 0) * dim * 2 / 1e6
    return {
        "compact": {k: summary.get(k) for k in ("shards_rewritten", "rows_moved", "bytes_before", "bytes_after")},
        "moved_mb": round(moved_mb, 1),
        "moved_mb_per_s": round(moved_mb / max(seconds, 1e-9), 1),
    }


def growth(results: list[dict]) -> dict[str, list[float | None]]:
    """Per command, log(t2/t1)/log(N2/N1) between consecutive sizes (import: per imported video)."""
    out: dict[str, list[float | None]] = {}
    for a, b in itertools.pairwise(results):
        for name, cb in b["commands"].items():
            ca = a["commands"].get(name)
            na, nb = (ca or {}).get("videos", a["videos"]), cb.get("videos", b["videos"])
            ok = ca and ca["seconds"] > 0 and cb["seconds"] > 0 and nb != na
            value = math.log(cb["seconds"] / ca["seconds"]) / math.log(nb / na) if ok else None
            out.setdefault(name, []).append(None if value is None else round(value, 2))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="Comma-separated numbers of videos.")
    parser.add_argument("--workdir", default="/tmp/bench_scale")
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture of the view (random init).")
    parser.add_argument("--dim", type=int, default=512, help="Its embedding size (ViT-B-32: 512, vidcache-tiny: 64).")
    parser.add_argument("--dup-every", type=int, default=50, help="Every Nth video duplicates the previous one.")
    parser.add_argument("--dup-threshold", type=float, default=0.98, help="mine duplicates --threshold.")
    parser.add_argument("--import-max", type=int, default=100_000, help="Videos imported as .npy files, at most.")
    parser.add_argument("--commands", default="", help="Comma-separated subset of: " + ",".join(COMMANDS))
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="Per command.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="train: 1 epoch at a fixed lr, not the defaults (tests).")
    parser.add_argument("--keep", action="store_true", help="Keep the caches in --workdir.")
    parser.add_argument("--reuse", action="store_true", help="Time the commands on a cache kept by an earlier run.")
    parser.add_argument("--json", action="store_true", help="Print the JSON result on stdout.")
    parser.add_argument("--json-out", default=None, help="Also write the JSON result to this file.")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    results = []
    document: dict = {"load_avg_start": os.getloadavg(), "cpus": os.cpu_count(), "args": vars(args), "sizes": results}

    def save() -> None:
        document["growth_exponents"] = growth([r for r in results if "commands" in r])
        if args.json_out:  # after each command, so a long run that is stopped keeps what it measured
            Path(args.json_out).write_text(json.dumps(document, indent=2))

    for n in sizes:
        partial: dict = {"videos": n}
        results.append(partial)
        bench_size(n, args, partial, save)
        save()
    document["load_avg_end"] = os.getloadavg()
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(document, indent=2))
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        header = f"{'command':<28}" + "".join(f"{n:>20}" for n in sizes) + "   growth"
        print(header)
        for name in COMMANDS:
            cells = []
            for r in results:
                c = r["commands"].get(name)
                cells.append(f"{c['seconds']:>9.2f}s {c['peak_rss_mib']:>6.0f}MiB" if c else f"{'-':>20}")
            exps = document["growth_exponents"].get(name, [])
            print(f"{name:<28}" + "".join(f"{c:>20}" for c in cells) + "   " + " ".join(f"N^{e}" for e in exps if e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
