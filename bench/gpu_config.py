"""The GPU suite's settings: one frozen object, written to the work folder for every stage's process."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

STAGES = ("export", "model", "serve")
# Seconds per stage. The full run's fit ~8 minutes, so that install and run on a GPU host take under
# ten (docs/gpu.md). A stage past its budget is stopped and keeps what it measured.
FULL_BUDGETS_S = {"export": 170.0, "model": 180.0, "serve": 140.0}
SMOKE_BUDGETS_S = {"export": 150.0, "model": 60.0, "serve": 120.0}
# Dense FP16 tensor-core peak of an H100/H200 SXM (no sparsity), the MFU denominator.
H100_FP16_DENSE_TFLOPS = 989.0


@dataclass(frozen=True)
class SuiteConfig:
    out: str  # results.json, summary.md and the stage logs: small files only (they travel back)
    work: str  # checkpoints and ONNX artifacts (hundreds of MB for ViT-B): never under out
    device: str  # cuda | cpu, resolved before any stage starts
    smoke: bool
    stages: tuple[str, ...]
    budgets_s: dict[str, float]
    # "base": ViT-B/16 at 224 (the model); "tiny": a 2-block ViT at 224 for the smoke run.
    vit: str
    heldout_images: int  # images the ViT's FP16 gate and parity run on
    digits_heldout_images: int  # of the digits model's real held-out set (2000 images)
    batches: tuple[int, ...]
    rounds: int
    min_round_s: float
    compile_backend: str  # torch.compile backend: inductor on a GPU; the smoke run's is eager (fast)
    concurrencies: tuple[int, ...]
    duration_s: float
    warmup_s: float
    api_workers: int
    max_batch_size: int  # the service's VITSERVE_MAX_BATCH_SIZE in the serve stage
    peak_tflops: float
    threads: int  # CPU threads for the gates' PyTorch reference and ORT CPU sessions

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> SuiteConfig:
        data: dict[str, Any] = json.loads(path.read_text())
        for f in fields(cls):
            if isinstance(data.get(f.name), list):
                data[f.name] = tuple(data[f.name])
        return cls(**data)

    @property
    def work_dir(self) -> Path:
        return Path(self.work)

    @property
    def out_dir(self) -> Path:
        return Path(self.out)
