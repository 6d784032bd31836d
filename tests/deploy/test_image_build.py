"""The way to the image, checked without a container engine: the project wheel builds from a clean
checkout in an isolated build environment at the declared setuptools floor, carries every file of the
package folders and nothing else, the build scripts need no development .venv, and `make image`, the
Dockerfile and the scripts agree on the default variant.

deploy/container-smoke.sh builds and runs the image itself (root, podman, minutes); these checks are
the fast part of it that CI can run. They need PyPI: pip downloads the build requirements.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DEPLOY_SCRIPTS = sorted(p.name for p in (REPO / "deploy").iterdir() if p.suffix in (".sh", ".py"))
DOCUMENTED_VARIANT = "cpu"  # the variant that builds and runs on any machine; docs/deploy.md says so


def checkout_entries() -> list[str]:
    """What a fresh clone of this working tree holds (tracked, or new and not ignored)."""
    result = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted(name for name in result.stdout.split("\0") if name and (REPO / name).exists())


def checkout_files() -> list[str]:
    return [name for name in checkout_entries() if not (REPO / name).is_symlink()]


@pytest.fixture(scope="module")
def clean_checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout without .venv, build/ or caches: what a new user starts from."""
    root = tmp_path_factory.mktemp("checkout")
    for name in checkout_entries():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_symlink():  # vitserve/<folder> -> ../<folder>, as git checks it out
            (root / name).symlink_to(os.readlink(REPO / name))
        else:
            shutil.copy2(REPO / name, root / name)
    return root


def floor_constraints() -> str:
    """[build-system] requires pinned to their declared floor: `setuptools>=77` -> `setuptools==77.*`."""
    lines = []
    for spec in PYPROJECT["build-system"]["requires"]:
        requirement = Requirement(spec)
        floors = [s.version for s in requirement.specifier if s.operator == ">="]
        assert floors, f"build requirement {spec!r} declares no floor: which versions build the wheel?"
        lines.append(f"{requirement.name}=={max(floors)}.*\n")
    return "".join(lines)


@pytest.fixture(scope="module")
def wheel_build(clean_checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """deploy/build-wheel.sh run in the clean checkout, its build requirements held at their floor."""
    out = tmp_path_factory.mktemp("wheelhouse")
    constraints = out.parent / "build-constraints.txt"
    constraints.write_text(floor_constraints())
    env = {**os.environ, "PIP_BUILD_CONSTRAINT": str(constraints)}
    result = subprocess.run(
        [str(clean_checkout / "deploy" / "build-wheel.sh"), str(out)],
        cwd=clean_checkout,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"the wheel does not build from a clean checkout:\n{result.stderr}"
    assert not (clean_checkout / ".venv").exists()
    return Path(result.stdout.strip().splitlines()[-1]), result.stderr


def test_wheel_builds_at_the_declared_build_floor_without_warnings(wheel_build: tuple[Path, str]) -> None:
    wheel, stderr = wheel_build
    warnings = [line for line in stderr.splitlines() if re.search(r"[A-Za-z]+Warning: ", line)]
    assert not warnings, "the build backend warns:\n" + "\n".join(warnings)
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA")))
    assert b"\nLicense-Expression: MIT\n" in metadata


# Top-level packages that stay out of the wheel: the test suite and the long-running tools beside it.
NOT_SHIPPED = frozenset({"tests", "reliability", "loadtests"})


def package_folders(checkout: Path) -> dict[str, Path]:
    """The vitserve package's folders: vitserve/ itself, and the top-level folder each link in it names."""
    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    assert find["include"] == ["vitserve*"], "the wheel is no longer vitserve/ and its links: update this"
    root = checkout / "vitserve"
    folders = {"vitserve": root}
    folders.update({f"vitserve.{link.name}": link.resolve() for link in root.iterdir() if link.is_symlink()})
    return folders


def test_every_top_level_package_is_linked_into_vitserve(clean_checkout: Path) -> None:
    """A new top-level package folder that vitserve/ does not link to would silently miss the wheel."""
    linked = {folder.name for folder in package_folders(clean_checkout).values()} - {"vitserve"}
    packages = {p.parent.name for p in clean_checkout.glob("*/__init__.py")} - {"vitserve"}
    assert packages - NOT_SHIPPED == linked, f"link each of {sorted(packages - NOT_SHIPPED - linked)}"


def test_wheel_carries_every_file_of_the_package_folders(
    clean_checkout: Path, wheel_build: tuple[Path, str]
) -> None:
    """A module in a folder missing from `packages`, or a data file package-data misses, fails here."""
    folders = package_folders(clean_checkout)
    expected, left_out = set(), []
    for name in checkout_files():
        path = clean_checkout / name
        owners = [(package, f) for package, f in folders.items() if path.is_relative_to(f)]
        if not owners:
            continue
        package, owner = max(owners, key=lambda item: len(item[1].parts))
        if path.suffix == ".md" and path.parent == owner:
            left_out.append(name)  # a developer's README beside the modules, not package data
            continue
        expected.add("/".join([*package.split("."), *path.relative_to(owner).parts]))
    with zipfile.ZipFile(wheel_build[0]) as archive:
        shipped = {n for n in archive.namelist() if ".dist-info/" not in n}
    assert not expected - shipped, f"the wheel lacks {sorted(expected - shipped)}"
    assert not shipped - expected, (
        f"the wheel carries files from outside the checkout: {sorted(shipped - expected)}"
    )
    assert any(name.startswith("vitserve/models/digits-vit/") for name in shipped), "no shipped model"


def code_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


@pytest.mark.parametrize("script", DEPLOY_SCRIPTS)
def test_deploy_scripts_do_not_use_the_development_venv(script: str) -> None:
    """A fresh clone has no .venv: deploy/build-env.sh makes the build environment instead."""
    assert ".venv" not in code_lines((REPO / "deploy" / script).read_text())


def test_make_image_and_lock_do_not_make_the_development_venv(clean_checkout: Path) -> None:
    result = subprocess.run(
        ["make", "--dry-run", "image", "lock"],
        cwd=clean_checkout,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "deploy/build-image.sh" in result.stdout and "deploy/lock_requirements.py" in result.stdout
    assert ".venv" not in result.stdout, result.stdout


def test_every_way_to_build_defaults_to_the_documented_variant() -> None:
    """`docker build .`, `make image` and the scripts build the same variant when none is named."""
    dockerfile = (REPO / "Dockerfile").read_text()
    stages = len(re.findall(r"^FROM ", dockerfile, re.MULTILINE))
    assert re.findall(r"^ARG VARIANT=(\S+)$", dockerfile, re.MULTILINE) == [DOCUMENTED_VARIANT] * stages
    assert re.findall(r"^VARIANT \?= (\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE) == [
        DOCUMENTED_VARIANT
    ]
    for script in ("build-image.sh", "wheelhouse.sh", "container-smoke.sh"):
        defaults = re.findall(
            r"^VARIANT=\$\{(?:1|VARIANT):-(\w+)\}$", (REPO / "deploy" / script).read_text(), re.M
        )
        assert defaults == [DOCUMENTED_VARIANT], f"deploy/{script} defaults to {defaults}"


def test_docs_build_the_image_with_make_image() -> None:
    for doc in ("README.md", "docs/deploy.md"):
        text = (REPO / doc).read_text()
        assert "make image" in text, f"{doc} does not show `make image`"
        assert not re.search(r"wheelhouse\.sh \w+ && docker build", text), (
            f"{doc} shows the old two-step build"
        )
    assert "make image VARIANT=gpu" in (REPO / "docs" / "deploy.md").read_text()


def test_the_image_makes_its_working_directory() -> None:
    """WORKDIR alone leaves the folder to the engine: buildah does not put it in the image."""
    final_stage = (REPO / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1]
    (workdir,) = re.findall(r"^WORKDIR (\S+)$", final_stage, re.MULTILINE)
    before = final_stage.split(f"\nWORKDIR {workdir}\n")[0]
    runs = re.findall(r"^RUN (.*?)(?<!\\)$", before, re.MULTILINE | re.DOTALL)
    assert any(re.search(rf"mkdir [^&]*{re.escape(workdir)}\b", run) for run in runs), (
        f"no RUN makes {workdir} before WORKDIR"
    )
