# Two commands on a fresh machine: `make demo` and `make test` (each creates .venv if missing).
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.vidcache-installed

.PHONY: demo test lint bench

$(STAMP): constraints.txt setup.cfg pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vidcache demo --out demo_out

test: $(STAMP)
	$(VENV)/bin/ruff check vidcache tests benchmarks
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check vidcache tests benchmarks

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_decode.py
	$(VENV)/bin/python benchmarks/bench_extract.py
	$(VENV)/bin/python benchmarks/bench_views.py
	$(VENV)/bin/python benchmarks/bench_index.py
	$(VENV)/bin/python benchmarks/bench_heads.py
