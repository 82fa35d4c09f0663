# Two commands on a fresh machine: `make demo` and `make test` (each creates .venv if missing).
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.vidcache-installed

.PHONY: demo test test-fast lint bench bench-gpu

$(STAMP): constraints.txt setup.cfg pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,ray,hf,shots]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vidcache demo --out demo_out

# The reference decoder some tests compare with (ffmpeg/ffprobe, from Debian), installed when missing.
FFMPEG_STAMP := $(VENV)/.ffmpeg-checked
$(FFMPEG_STAMP): $(STAMP)
	command -v ffmpeg >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; } || { echo "make test needs the ffmpeg CLI (the tests' reference decoder): install Debian's ffmpeg" >&2; exit 2; }
	touch $(FFMPEG_STAMP)

# The browser the report test opens the HTML report in (Debian's chromium, driven by playwright), installed when missing.
CHROMIUM_STAMP := $(VENV)/.chromium-checked
$(CHROMIUM_STAMP): $(STAMP)
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || { echo "make test needs a headless browser for tests/test_report.py: install Debian's chromium" >&2; exit 2; }
	touch $(CHROMIUM_STAMP)

test: $(STAMP) $(FFMPEG_STAMP) $(CHROMIUM_STAMP)
	$(VENV)/bin/ruff check vidcache tests benchmarks
	$(VENV)/bin/lint-imports --no-logo
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider --durations=15 -n 2 --dist loadfile

# `make test` runs the test files on two pytest-xdist workers (one file stays on one worker: its module
# fixtures are built once); the suite is written to be robust to a busy machine (docs/reliability.md).

# The inner loop: everything but the tests marked slow (subprocesses, SIGKILL, long media, benchmarks).
test-fast: $(STAMP) $(FFMPEG_STAMP)
	$(VENV)/bin/ruff check vidcache tests benchmarks
	$(VENV)/bin/lint-imports --no-logo
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider -m "not slow"

# ruff, and the import contracts in pyproject.toml ([tool.importlinter]: layers, no view below the machinery)
lint: $(STAMP)
	$(VENV)/bin/ruff check vidcache tests benchmarks
	$(VENV)/bin/lint-imports --no-logo

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_decode.py
	$(VENV)/bin/python benchmarks/bench_extract.py
	$(VENV)/bin/python benchmarks/bench_views.py
	$(VENV)/bin/python benchmarks/bench_index.py
	$(VENV)/bin/python benchmarks/bench_heads.py

# The GPU check (benchmarks/bench_gpu.py): on a GPU machine without .venv it runs under python3, with the
# packages that machine lacks installed from .whl/ (benchmarks/gpu_wheels.sh). No install step: it must
# run as it is on a bare GPU image.
bench-gpu:
	PYTHON=$(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,python3) bash benchmarks/gpu_run.sh $(BENCH_GPU_ARGS)
