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
    for package, folder in sorted(mapping.items(), key=lambda item: item[0].count(".")):
        target = tree.joinpath(*package.split("."))
        if target.exists():
            continue  # a sub-package already reached through its parent's link
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(ROOT / folder, target_is_directory=True)
    return tree / "vitserve"


def main() -> int:
    package = mirror(ROOT / "build" / "typecheck")
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), str(package)]
    return subprocess.call(command, cwd=package.parent)


if __name__ == "__main__":
    raise SystemExit(main())
