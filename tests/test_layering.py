"""The import contract: data flows one way, manifest → extract → cache → index → heads → CLI, so no
module imports from a layer downstream of it (function-level imports count too). Checked on the
source with `ast`, as import-linter's "forbidden" contracts would."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vidcache"
APPS = {"cli", "commands", "search", "htmlreport", "report", "demo", "finetune"}  # the top: may use everything
# layer → the layers it must never import (whatever is downstream of it, and its siblings' internals)
FORBIDDEN = {
    "shared": {"manifest", "cache", "extract", "index", "heads", *APPS},
    "manifest": {"cache", "extract", "index", "heads", *APPS},
    "cache": {"extract", "index", "heads", *APPS},
    "extract": {"index", "heads", *APPS},
    "index": {"extract", "heads", *APPS},
    "heads": {"extract", *APPS},
}
SHARED = {
    *("errors", "fields", "registry", "config", "device", "signals", "remote", "synth", "threads"),
    *("__init__", "__main__"),
}


def layer_of(module: str) -> str:
    """vidcache.<first part>: its layer name (shared helpers are one layer)."""
    top = module.split(".")[1] if module.count(".") else "__init__"
    return "shared" if top in SHARED else top


def imports_of(path: Path) -> list[tuple[int, str]]:
    module = "vidcache." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names = [target] + [f"{target}.{alias.name}" for alias in node.names] if node.module is None else [target]
            out += [(node.lineno, name) for name in names if name.startswith("vidcache.")]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("vidcache.")]
    return out


def test_no_module_imports_downstream():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = "vidcache." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        own = layer_of(module)
        for line, target in imports_of(path):
            if target == "vidcache":
                continue
            theirs = layer_of(target)
            if theirs != own and theirs in FORBIDDEN.get(own, set()):
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({own}) imports {target} ({theirs})")
    assert not problems, "imports against the data flow:\n" + "\n".join(problems)


def test_the_contract_sees_relative_and_function_level_imports(tmp_path):
    """The checker itself, on a known violation (a function-level relative import)."""
    fake = PACKAGE / "cache" / "_layering_probe.py"
    fake.write_text("def f():\n    from ..extract.views import VIEWS\n    return VIEWS\n")
    try:
        assert ("vidcache.extract.views" in [t for _, t in imports_of(fake)])
        assert layer_of("vidcache.extract.views") == "extract" and "extract" in FORBIDDEN["cache"]
    finally:
        fake.unlink()
