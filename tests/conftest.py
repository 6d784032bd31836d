"""Shared fixtures: a real vitserve server (BentoML, ONNX Runtime) on a free loopback port."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from vitserve.service.launcher import ServerProcess as _ServerProcess
from vitserve.service.launcher import free_port

REPO = Path(__file__).resolve().parents[1]
# The shipped default model; VITSERVE_TEST_MODEL_DIR points the suite at another export of the same shape.
DEFAULT_MODEL_DIR = Path(os.environ.get("VITSERVE_TEST_MODEL_DIR", REPO / "models" / "digits-vit"))
SAMPLES_DIR = DEFAULT_MODEL_DIR / "samples"


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


class ServerProcess(_ServerProcess):
    """A server on the default test model unless told otherwise."""

    def __init__(self, env: dict[str, str] | None = None, model_dir: Path | None = None) -> None:
        super().__init__(model_dir or DEFAULT_MODEL_DIR, env)


@contextmanager
def running_server(
    env: dict[str, str] | None = None, model_dir: Path | None = None
) -> Iterator[ServerProcess]:
    server = ServerProcess(env, model_dir)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vitserve_server() -> Iterator[str]:
    """Base URL of a real server on the shipped default model, shared by the whole session."""
    with running_server() as server:
        yield server.url
