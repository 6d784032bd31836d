"""What tests share beyond vitserve.harness: the repository root, the host's providers, a model's grid.

The server on a loopback port, its model and samples are vitserve.harness.servers', re-exported here
for the tests that import them from this module.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from vitserve.harness.servers import (
    DEFAULT_MODEL_DIR,
    SAMPLES_DIR,
    ServerProcess,
    free_port,
    running_server,
)

REPO = Path(__file__).resolve().parents[1]

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
