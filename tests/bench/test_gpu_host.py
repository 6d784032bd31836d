"""deploy/gpu-host/: the scripts that bundle, install and run the GPU suite on a host without internet
access pass shellcheck, and what bundle.sh leaves to the host is really pinned (a typo would bundle a
package twice)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.deploy.test_manifests import tool
from tests.support import REPO

GPU_HOST = REPO / "deploy" / "gpu-host"


@pytest.mark.parametrize("script", sorted(p.name for p in GPU_HOST.glob("*.sh")))
def test_gpu_host_scripts_pass_shellcheck(script: str) -> None:
    result = subprocess.run(
        [tool("shellcheck"), "--severity=style", "-x", str(GPU_HOST / script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_package_left_to_the_host_is_one_of_the_pins() -> None:
    skip = re.search(r"^SKIP='\^\((.*)\)=='$", (GPU_HOST / "bundle.sh").read_text(), re.MULTILINE)
    assert skip, "bundle.sh's SKIP pattern moved"
    pins = [line.split("==")[0] for line in (REPO / "deploy/requirements/gpu.txt").read_text().splitlines()]
    for name in skip.group(1).split("|"):
        assert any(re.fullmatch(name, pin, re.IGNORECASE) for pin in pins), f"{name} is not pinned"
