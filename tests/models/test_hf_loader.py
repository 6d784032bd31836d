"""Hugging Face ViT folders: real `save_pretrained` output loads with transformers' own logits.

Models are random-initialised from a ViTConfig (no downloads) and kept small so the suite is fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import ViTConfig as HFViTConfig
from transformers import ViTForImageClassification, ViTImageProcessorPil, ViTModel

from vitserve.models.checkpoint import CheckpointError, load_checkpoint, sha256_of
from vitserve.models.loaders.huggingface import load_hf_folder
from vitserve.runtime.artifact import Preprocessing

# Shaped like google/vit-base-patch16-224, scaled down: gelu, eps 1e-12, qkv bias, mlp ratio 4.
DEFAULT_STYLE: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "image_size": 32,
    "patch_size": 8,
    "num_labels": 3,
}
# Everything that can differ: size, patch, labels, eps, mlp ratio, no qkv bias.
NON_DEFAULT: dict[str, Any] = {
    "hidden_size": 96,
    "num_hidden_layers": 3,
    "num_attention_heads": 6,
    "intermediate_size": 192,
    "image_size": 384,
    "patch_size": 32,
    "layer_norm_eps": 1e-5,
    "qkv_bias": False,
    "id2label": {i: name for i, name in enumerate(["ant", "bee", "cat", "dog", "eel"])},
}


def _save_hf(folder: Path, fields: dict[str, Any], seed: int = 0) -> ViTForImageClassification:
    torch.manual_seed(seed)
    model = ViTForImageClassification(HFViTConfig(**fields)).eval()
    # transformers initialises LayerNorms to (1, 0) and linears at std 0.02; perturb every tensor so
    # that a swapped or mis-fused weight shows up in the logits.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    return model


def _logits_gap(folder: Path, hf_model: ViTForImageClassification, image_size: int) -> float:
    loaded = load_checkpoint(folder)
    torch.manual_seed(1)
    x = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        expected = hf_model(pixel_values=x).logits
        got = loaded.model(x)
    assert got.shape == expected.shape
    return (got - expected).abs().max().item()


def _to_pytorch_bin(folder: Path) -> None:
    """Rewrite as the pytorch_model.bin layout; transformers 5 saves only safetensors."""
    state = load_file(str(folder / "model.safetensors"))
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


def test_default_style_safetensors_matches_transformers(tmp_path: Path) -> None:
    folder = tmp_path / "vit-default"
    hf_model = _save_hf(folder, DEFAULT_STYLE)
    assert _logits_gap(folder, hf_model, 32) <= 1e-4

    loaded = load_hf_folder(folder)
    assert loaded.labels == ("LABEL_0", "LABEL_1", "LABEL_2")
    # No preprocessor_config.json: ViTImageProcessor's defaults.
    assert loaded.preprocessing == Preprocessing(
        image_size=32, crop_pct=1.0, interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3
    )
    assert loaded.name == "vit-default"
    assert loaded.version == json.loads((folder / "config.json").read_text())["transformers_version"]
    assert loaded.source_sha256 == sha256_of(folder / "model.safetensors")
    assert loaded.model.config.layer_norm_eps == 1e-12
    assert loaded.model.config.mlp_ratio == 4.0


def test_default_style_pytorch_bin_matches_transformers(tmp_path: Path) -> None:
    folder = tmp_path / "vit-bin"
    hf_model = _save_hf(folder, DEFAULT_STYLE, seed=2)
    _to_pytorch_bin(folder)
    assert _logits_gap(folder, hf_model, 32) <= 1e-4
    assert load_hf_folder(folder).source_sha256 == sha256_of(folder / "pytorch_model.bin")


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_non_default_config_and_preprocessor(tmp_path: Path, weights: str) -> None:
    folder = tmp_path / "vit-384"
    hf_model = _save_hf(folder, NON_DEFAULT, seed=3)
    ViTImageProcessorPil(
        size={"height": 384, "width": 384}, resample=3, image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6]
    ).save_pretrained(folder)
    if weights == "bin":
        _to_pytorch_bin(folder)
    assert _logits_gap(folder, hf_model, 384) <= 1e-4

    loaded = load_hf_folder(folder)
    assert loaded.labels == ("ant", "bee", "cat", "dog", "eel")
    assert loaded.preprocessing == Preprocessing(
        image_size=384, crop_pct=1.0, interpolation="bicubic", mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6)
    )
    config = loaded.model.config
    assert (config.patch_size, config.num_classes, config.layer_norm_eps) == (32, 5, 1e-5)
    assert config.qkv_bias is False
    assert config.mlp_ratio == 2.0


def test_center_crop_processor_sets_crop_pct(tmp_path: Path) -> None:
    folder = tmp_path / "vit-crop"
    _save_hf(folder, DEFAULT_STYLE)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "size": {"shortest_edge": 40},
                "do_center_crop": True,
                "crop_size": {"height": 32, "width": 32},
                "resample": 0,
            }
        )
    )
    prep = load_hf_folder(folder).preprocessing
    assert (prep.crop_pct, prep.interpolation) == (0.8, "nearest")


def test_gelu_new_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "vit-gelu-new"
    _save_hf(folder, {**DEFAULT_STYLE, "hidden_act": "gelu_new"})
    with pytest.raises(CheckpointError, match="hidden_act 'gelu_new'"):
        load_checkpoint(folder)


def test_non_square_image_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "vit-wide"
    _save_hf(folder, {**DEFAULT_STYLE, "image_size": [32, 48]})
    with pytest.raises(CheckpointError, match="only square images"):
        load_checkpoint(folder)


def test_processor_size_must_match_model(tmp_path: Path) -> None:
    folder = tmp_path / "vit-size"
    _save_hf(folder, DEFAULT_STYLE)
    ViTImageProcessorPil(size={"height": 224, "width": 224}).save_pretrained(folder)
    with pytest.raises(CheckpointError, match="224px but the model takes 32px"):
        load_checkpoint(folder)


def test_bare_vit_model_without_classifier_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "vit-bare"
    torch.manual_seed(0)
    ViTModel(HFViTConfig(**DEFAULT_STYLE)).save_pretrained(folder)
    with pytest.raises(CheckpointError, match=r"classifier\.weight"):
        load_checkpoint(folder)


def test_unexpected_weights_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "vit-extra"
    _save_hf(folder, DEFAULT_STYLE)
    state = load_file(str(folder / "model.safetensors"))
    state["vit.embeddings.mask_token"] = torch.zeros(1, 1, 64)
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"vit\.embeddings\.mask_token"):
        load_checkpoint(folder)


def test_folder_without_weights_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "vit-empty"
    _save_hf(folder, DEFAULT_STYLE)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights file"):
        load_checkpoint(folder)
