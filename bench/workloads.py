"""The bench's workloads: the shipped digits model, a ViT-Ti/16 and a ViT-B/16 at 224.

digits     models/digits-vit (INT8 on the CPU), a 28x28 PNG sample: serving overhead dominates.
vit-tiny   ViT-Ti/16 at 224 with random weights (speed does not depend on them), exported FP32 by
           the project's own pipeline into a gitignored cache on first use (needs the export extra),
           sent a 500x375 JPEG: the model and the decode dominate.
vit-base   the same for ViT-B/16 (86 M parameters, 330 MiB of FP32 weights): a costly model, where
           memory per copy of the weights matters.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
DIGITS_DIR = REPO / "models" / "digits-vit"
CACHE_DIR = REPO / ".cache" / "bench"
VIT_TINY = "vit_tiny_patch16_224"
VIT_BASE = "vit_base_patch16_224"


@dataclass(frozen=True)
class Workload:
    name: str
    model_dir: Path
    image: bytes
    media_type: str
    description: str


def digits() -> Workload:
    sample = DIGITS_DIR / "samples" / "0_0000.png"
    return Workload("digits", DIGITS_DIR, sample.read_bytes(), "image/png", f"28x28 PNG, {sample.name}")


def photo_jpeg(width: int = 500, height: int = 375, seed: int = 0) -> bytes:
    """A photo-sized JPEG with photo-like content: smooth gradients, shapes and sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 200 + 30, y / height * 180 + 40, (x + y) / (width + height) * 160 + 60], -1)
    for _ in range(12):  # soft blobs: edges and texture for the decoder, like objects in a scene
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(20, 90)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
        base = base * (1 - blob) + rng.uniform(0, 255, 3) * blob
    pixels = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def vit_tiny(cache_dir: Path = CACHE_DIR) -> Workload:
    return random_vit("vit-tiny", VIT_TINY, cache_dir)


def vit_base(cache_dir: Path = CACHE_DIR) -> Workload:
    return random_vit("vit-base", VIT_BASE, cache_dir)


def random_vit(name: str, preset: str, cache_dir: Path) -> Workload:
    model_dir = cache_dir / preset
    if not (model_dir / "model.onnx").is_file():
        export_random_vit(preset, model_dir)
    image = photo_jpeg()
    return Workload(name, model_dir, image, "image/jpeg", f"500x375 JPEG, {len(image) // 1024} KiB")


def export_random_vit(preset: str, model_dir: Path) -> None:
    """Random-weight ViT preset -> verified FP32 artifact, as `vitserve bench model` builds it."""
    from vitserve.bench.model import load_model  # torch: the export extra
    from vitserve.export.config import ExportConfig
    from vitserve.export.pipeline import export_loaded

    _, loaded = load_model(preset)
    model_dir.mkdir(parents=True, exist_ok=True)
    export_loaded(loaded, model_dir, ExportConfig(precisions=("fp32",)))


WORKLOADS = {"digits": digits, "vit-tiny": vit_tiny, "vit-base": vit_base}
