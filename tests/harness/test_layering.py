"""Who may import what: nothing outside tests/ imports `tests`, the wheel imports no script folder, and
vitserve.harness needs only the serving install (its fuzzing strategy aside)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

from tests.support import REPO

# Folders that ship in the wheel as vitserve.*; the others (loadtests/, reliability/, tools/) are
# scripts run from a checkout.
WHEEL = ("bench", "client", "export", "harness", "models", "runtime", "service")
SCRIPTS = ("loadtests", "reliability", "tools")
SKIP = {".venv", "build", "tests", ".git", "node_modules"}
# Needs `hypothesis` (the test extra): only the fuzzers import it.
TEST_EXTRA_MODULES = {"harness/mutations.py"}


def sources() -> Iterator[Path]:
    for path in sorted(REPO.rglob("*.py")):
        parts = path.relative_to(REPO).parts
        if parts[0] in SKIP or (parts[0] == "vitserve" and len(parts) > 1 and parts[1] in WHEEL):
            continue  # vitserve/<folder> links to <folder>: each file is read once
        yield path


def imported(path: Path) -> set[str]:
    """Top-level names of every absolute import in a module, lazy ones inside functions included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def top(name: str) -> str:
    return name.split(".")[0]


def test_only_tests_import_tests() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(n for n in imported(path) if top(n) == "tests")
        for path in sources()
    }
    assert not {k: v for k, v in offenders.items() if v}, "non-test modules importing tests"


def test_the_wheel_imports_no_script_folder() -> None:
    offenders: dict[str, list[str]] = {}
    for path in sources():
        rel = path.relative_to(REPO)
        if rel.parts[0] in WHEEL:
            bad = sorted(n for n in imported(path) if top(n) in SCRIPTS)
            if bad:
                offenders[str(rel)] = bad
    assert not offenders, f"wheel modules importing script folders: {offenders}"


def serving_distributions() -> set[str]:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0].lower().replace("_", "-") for spec in declared}


def test_harness_needs_only_the_serving_install() -> None:
    serving = serving_distributions()
    providers = importlib.metadata.packages_distributions()
    offenders: dict[str, list[str]] = {}
    for path in sorted((REPO / "harness").glob("*.py")):
        rel = str(path.relative_to(REPO))
        if rel in TEST_EXTRA_MODULES:
            continue
        for name in imported(path):
            module = top(name)
            if module in sys.stdlib_module_names or module in ("vitserve", "__future__"):
                continue
            dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
            if not dists & serving:
                offenders.setdefault(rel, []).append(f"{module} ({', '.join(sorted(dists)) or 'unknown'})")
    assert not offenders, f"harness modules needing more than the serving install: {offenders}"


def test_the_checks_see_an_offender(tmp_path: Path) -> None:
    """The import reader finds lazy and dotted imports of tests: the checks above can fail."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from tests.support import REPO\n    import tests.metrics\n")
    assert {top(n) for n in imported(module)} == {"tests"}
