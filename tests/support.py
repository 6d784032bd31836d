"""What tests, load tests (loadtests/) and reliability scripts (reliability/) share: the shipped model,
its samples, and a real vitserve server on a free loopback port. Not shipped in the wheel.

The process handling itself (ports, readiness, stopping a BentoML process tree) is bench/processes.py's,
which `vitserve bench` needs in the wheel.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vitserve.bench import processes
from vitserve.bench.processes import free_port

REPO = Path(__file__).resolve().parents[1]
# The shipped default model; VITSERVE_TEST_MODEL_DIR points the suite at another export of the same shape.
DEFAULT_MODEL_DIR = Path(os.environ.get("VITSERVE_TEST_MODEL_DIR", REPO / "models" / "digits-vit"))
SAMPLES_DIR = DEFAULT_MODEL_DIR / "samples"

__all__ = [
    "DEFAULT_MODEL_DIR",
    "REPO",
    "SAMPLES_DIR",
    "ServerProcess",
    "free_port",
    "host_providers",
    "patch_grid",
    "running_server",
]


@functools.cache
def host_providers() -> list[str]:
    """The providers a session on this host really gets: CUDA first where a GPU is usable, else the CPU.

    Asked of ONNX Runtime with a probe session of its own, never assumed: the suite runs on CPU and GPU
    machines alike, and the service must report what the host has.
    """
    from vitserve.export.verify import cuda_usable  # imports torch: only the tests that ask pay for it

    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda_usable() else ["CPUExecutionProvider"]


def patch_grid(model_dir: Path = DEFAULT_MODEL_DIR) -> int:
    """Patches per side of a vitserve checkpoint folder: the side of its attention-rollout map."""
    vit = json.loads((model_dir / "config.json").read_text())["vit"]
    return int(vit["image_size"]) // int(vit["patch_size"])


class ServerProcess(processes.ServerProcess):
    """`vitserve serve` on the default test model unless told otherwise, with VITSERVE_* overrides."""

    def __init__(
        self, env: dict[str, str] | None = None, model_dir: Path | None = None, log_path: Path | None = None
    ) -> None:
        # A free gRPC port unless told otherwise: servers of parallel test runs must not meet on 8001.
        defaults = {
            "VITSERVE_MODEL_DIR": str(model_dir or DEFAULT_MODEL_DIR),
            "VITSERVE_GRPC_PORT": str(free_port()),
        }
        super().__init__(env={**defaults, **(env or {})}, log_path=log_path)


@contextmanager
def running_server(
    env: dict[str, str] | None = None, model_dir: Path | None = None, log_path: Path | None = None
) -> Iterator[ServerProcess]:
    with processes.running(ServerProcess(env, model_dir, log_path)) as server:
        yield server
