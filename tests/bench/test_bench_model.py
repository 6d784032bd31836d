"""`vitserve bench model` on a tiny checkpoint: every variant measured, ratios against PyTorch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vitserve.cli import main
from vitserve.models.checkpoint import save_checkpoint
from vitserve.models.vit import ViT, ViTConfig
from vitserve.runtime.artifact import Preprocessing


def test_bench_model_prints_a_row_per_variant_and_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, num_classes=3, dim=32, depth=2, num_heads=2)
    save_checkpoint(tmp_path, ViT(config), ["a", "b", "c"], Preprocessing(image_size=32), "tiny", "1")
    argv = ["bench", "model", "--models", str(tmp_path), "--batches", "1", "4", "--rounds", "1"]
    assert main([*argv, "--min-round-s", "0.01", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("command: vitserve bench model") and "CPU: " in out
    rows = [line for line in out.splitlines() if line.startswith("| tiny")]
    variants = ["pytorch", "ort-fp32-unfused", "ort-fp32-fused", "ort-fp32", "ort-int8", "ort-int8-dynamic"]
    assert [(r.split(" | ")[1], r.split(" | ")[2]) for r in rows] == [
        (b, v) for b in ("1", "4") for v in variants
    ]
    assert all(r.endswith(" | 1 |") for r in rows) and "| 1.00x |" in rows[0]
