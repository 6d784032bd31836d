"""Run mypy over the installed layout: `vitserve.models` lives in models/, `vitserve.export` in export/...

mypy cannot follow setuptools' package-dir mapping, so this script mirrors it with symlinks under
build/typecheck/ and checks the `vitserve` package there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mirror(tree: Path) -> Path:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    if tree.exists():
        shutil.rmtree(tree)
    root_package = tree / "vitserve"
    root_package.mkdir(parents=True)
    # The root package gets a real folder holding links to its files (a link to the folder itself
    # would make the sub-package links below land inside the source tree).
    for source in (ROOT / mapping["vitserve"]).glob("*.py"):
        (root_package / source.name).symlink_to(source)
    for package, folder in mapping.items():
        parts = package.split(".")
        if len(parts) != 2:
            continue  # deeper packages are reached through their parent's link
        (root_package / parts[1]).symlink_to(ROOT / folder, target_is_directory=True)
    return root_package


def main() -> int:
    package = mirror(ROOT / "build" / "typecheck")
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), str(package)]
    return subprocess.call(command, cwd=package.parent)


if __name__ == "__main__":
    raise SystemExit(main())
