"""deploy/device/: the scripts that stage and run the GPU suite on the device machine pass shellcheck,
and what stage.sh leaves to the device image is really pinned (a typo would carry a package twice)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.deploy.test_manifests import tool
from tests.support import REPO

DEVICE = REPO / "deploy" / "device"


@pytest.mark.parametrize("script", sorted(p.name for p in DEVICE.glob("*.sh")))
def test_device_scripts_pass_shellcheck(script: str) -> None:
    result = subprocess.run(
        [tool("shellcheck"), "--severity=style", "-x", str(DEVICE / script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_package_left_to_the_device_image_is_one_of_the_pins() -> None:
    skip = re.search(r"^SKIP='\^\((.*)\)=='$", (DEVICE / "stage.sh").read_text(), re.MULTILINE)
    assert skip, "stage.sh's SKIP pattern moved"
    pins = [line.split("==")[0] for line in (REPO / "deploy/requirements/gpu.txt").read_text().splitlines()]
    for name in skip.group(1).split("|"):
        assert any(re.fullmatch(name, pin, re.IGNORECASE) for pin in pins), f"{name} is not pinned"
