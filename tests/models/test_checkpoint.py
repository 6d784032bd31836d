"""vitserve's own checkpoint format: a round trip keeps logits; a damaged checkpoint names the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vitserve.models.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    sha256_of,
)
from vitserve.models.vit import ViT, ViTConfig
from vitserve.runtime.artifact import Preprocessing

CONFIG = ViTConfig(image_size=16, patch_size=4, num_classes=3, dim=32, depth=2, num_heads=4, mlp_ratio=2.0)
LABELS = ("cat", "dog", "bird")
PREPROCESSING = Preprocessing(image_size=16, crop_pct=0.875, interpolation="bicubic", mean=(0.4, 0.5, 0.6))


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, ViT]:
    torch.manual_seed(0)
    model = ViT(CONFIG).eval()
    out = tmp_path / "ckpt"
    save_checkpoint(out, model, LABELS, PREPROCESSING, name="tiny", version="7")
    return out, model


def test_round_trip_gives_identical_logits(saved: tuple[Path, ViT]) -> None:
    path, model = saved
    loaded = load_checkpoint(path)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    assert loaded.model.config == CONFIG
    assert loaded.labels == LABELS
    assert loaded.preprocessing == PREPROCESSING
    assert (loaded.name, loaded.version) == ("tiny", "7")
    assert loaded.source_sha256 == sha256_of(path / WEIGHTS_FILE)
    assert not loaded.model.training


def test_mismatched_tensor_is_named(saved: tuple[Path, ViT]) -> None:
    path, _ = saved
    state = load_file(str(path / WEIGHTS_FILE))
    state["blocks.1.mlp.fc1.weight"] = torch.zeros(5, 32)
    save_file(state, str(path / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match=r"blocks\.1\.mlp\.fc1\.weight"):
        load_checkpoint(path)


def test_missing_tensor_is_named(saved: tuple[Path, ViT]) -> None:
    path, _ = saved
    state = load_file(str(path / WEIGHTS_FILE))
    del state["norm.bias"]
    save_file(state, str(path / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match=r"missing=\['norm\.bias'\]"):
        load_checkpoint(path)


def test_corrupted_weights_file_raises_checkpoint_error(saved: tuple[Path, ViT]) -> None:
    path, _ = saved
    data = (path / WEIGHTS_FILE).read_bytes()
    (path / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=WEIGHTS_FILE):
        load_checkpoint(path)


def test_label_count_must_match_classes(saved: tuple[Path, ViT]) -> None:
    path, _ = saved
    config = json.loads((path / CONFIG_FILE).read_text())
    config["labels"] = ["cat", "dog"]
    (path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="2 labels for 3 classes"):
        load_checkpoint(path)


def test_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nope")
