"""The import contracts, checked by import-linter (pyproject.toml's [tool.importlinter], also run by
`make test` as `lint-imports`) and grimp, the import graph it is built on: data flows one way (core →
cache → extract | index → heads | search → apps → commands → cli), the extract machinery imports no
view, and the package has no import cycle at all (function-level imports count)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
from importlinter.cli import lint_imports

from tests.conftest import HANG_GUARD_S

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return cycles


def test_import_contracts_hold():
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0


def test_no_import_cycles():
    graph = grimp.build_graph("vidcache", cache_dir=None)
    assert len(graph.modules) > 100  # the whole package was read
    assert import_cycles(graph) == []


def test_cycle_finder_on_a_known_cycle(tmp_path):
    """The cycle finder itself, on a three-module package with one circle and one module outside it."""
    package = tmp_path / "circle"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def f():\n    from .c import x\n    return x\n")
    (package / "c.py").write_text("from .a import b\nx = 1\n")
    (package / "d.py").write_text("from . import a\n")
    sys.path.insert(0, str(tmp_path))
    try:
        graph = grimp.build_graph("circle", cache_dir=None)
    finally:
        sys.path.remove(str(tmp_path))
    assert import_cycles(graph) == [["circle.a", "circle.b", "circle.c"]]


def test_the_contracts_catch_an_upstream_import_in_an_init(tmp_path):
    """The hand-written checker this replaces misread relative imports in `__init__.py` files: a
    function-level `from ..extract.views import VIEWS` in cache/__init__.py, in a copy of the package,
    breaks the layers and the cache ↛ extract contracts, and naming the line."""
    shutil.copytree(ROOT / "vidcache", tmp_path / "vidcache", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    init = tmp_path / "vidcache" / "cache" / "__init__.py"
    init.write_text(init.read_text() + "\n\ndef _probe():\n    from ..extract.views import VIEWS\n\n    return VIEWS\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}  # the copy, not the package under test
    run = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert re.search(r"Contracts: \d+ kept, 2 broken\.", run.stdout), run.stdout  # the layers and cache ↛ extract
    assert "vidcache.cache -> vidcache.extract.views" in run.stdout
