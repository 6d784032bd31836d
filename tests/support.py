"""What tests share beyond vitserve.harness: the repository root, the host's providers, a model's grid.

The server on a loopback port, its model and samples are vitserve.harness.servers', re-exported here
for the tests that import them from this module.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING

from vitserve.harness.servers import (
    DEFAULT_MODEL_DIR,
    SAMPLES_DIR,
    ServerProcess,
    free_port,
    running_server,
)

if TYPE_CHECKING:
    from vitserve.models.vit import ViTConfig

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


def write_random_vit(config: ViTConfig, folder: Path, name: str) -> Path:
    """A random-weight ViT exported as an fp32 artifact into `folder` (the export's own path)."""
    import torch

    from vitserve.export.convert import export_onnx
    from vitserve.export.write import with_metadata, write_atomic
    from vitserve.models.vit import ViT
    from vitserve.runtime.artifact import ARTIFACT_FILES, ArtifactMetadata, Preprocessing

    torch.manual_seed(0)
    preprocessing = Preprocessing(image_size=config.image_size)
    metadata = ArtifactMetadata(
        model_name=name,
        model_version="0.0.1",
        labels=tuple(f"class{i}" for i in range(config.num_classes)),
        preprocessing=preprocessing,
        precision="fp32",
        fused_attention=config.depth,
        depth=config.depth,
        source_sha256="0" * 64,
        exporter_version="test",
    )
    write_atomic(
        with_metadata(export_onnx(ViT(config).eval(), preprocessing), metadata),
        folder / ARTIFACT_FILES["fp32"],
    )
    return folder
