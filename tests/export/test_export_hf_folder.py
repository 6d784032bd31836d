"""A Hugging Face ViTForImageClassification folder, non-default config, exports and matches transformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vitserve.export.pipeline import export_checkpoint
from vitserve.export.verify import make_session
from vitserve.runtime.artifact import INPUT_NAME, read_metadata

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hf-vit")
    config = transformers.ViTConfig(
        image_size=64,
        patch_size=32,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=5,
        id2label={i: f"hf{i}" for i in range(5)},
        label2id={f"hf{i}": i for i in range(5)},
    )
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).eval().save_pretrained(folder)
    return folder


def test_hf_folder_exports_and_matches_transformers(hf_folder: Path, tmp_path: Path) -> None:
    (variant,) = export_checkpoint(hf_folder, tmp_path)
    meta = read_metadata(variant.path)
    assert meta.labels == tuple(f"hf{i}" for i in range(5))
    assert (meta.preprocessing.image_size, meta.depth, meta.fused_attention) == (64, 2, 2)

    pixels = np.random.default_rng(0).integers(0, 256, size=(4, 64, 64, 3), dtype=np.uint8)
    (logits,) = make_session(variant.path.read_bytes(), "CPUExecutionProvider", 1).run(
        None, {INPUT_NAME: pixels}
    )
    mean = np.array(meta.preprocessing.mean, dtype=np.float32)
    std = np.array(meta.preprocessing.std, dtype=np.float32)
    normalised = ((pixels.astype(np.float32) / 255.0 - mean) / std).transpose(0, 3, 1, 2)
    model = transformers.ViTForImageClassification.from_pretrained(hf_folder).eval()
    with torch.inference_mode():
        expected = model(pixel_values=torch.from_numpy(np.ascontiguousarray(normalised))).logits.numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-3, rtol=0)
