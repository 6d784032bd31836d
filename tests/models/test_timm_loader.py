"""timm `vit_*` state dicts: keys and shapes written down from timm's source, not from our model.

From huggingface/pytorch-image-models, timm/models/vision_transformer.py (VisionTransformer with its
defaults: class_token=True, global_pool='token', qkv_bias=True, no layer scale, final `norm`, no
fc_norm) and timm/layers/attention.py (Attention: qkv (3D, D) laid out [q; k; v] by head, proj),
timm/layers/norm.py (LayerNorm eps 1e-6). `timm_reference_logits` re-implements that forward
(the manual attention path) so the loaded model is checked against timm's maths, not against itself.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vitserve.models.checkpoint import CheckpointError, load_checkpoint, sha256_of
from vitserve.models.loaders.timm import load_timm_file
from vitserve.models.vit import PRESETS
from vitserve.runtime.artifact import Preprocessing

SMALL = {"dim": 48, "depth": 2, "heads": 4, "hidden": 96, "patch": 8, "image": 32, "classes": 5}
# The shipped preset's shape, read from PRESETS so that a retuned preset cannot leave this test behind.
_D = PRESETS["digits"]
DIGITS = {
    "dim": _D.dim,
    "depth": _D.depth,
    "heads": _D.num_heads,
    "hidden": int(_D.dim * _D.mlp_ratio),
    "patch": _D.patch_size,
    "image": _D.image_size,
    "classes": _D.num_classes,
}
# ViT-Ti/16 at 224 px, as a timm Hub folder holds it; used once, it is the slowest test here.
TINY_224 = {"dim": 192, "depth": 12, "heads": 3, "hidden": 768, "patch": 16, "image": 224, "classes": 4}


def timm_state_dict(dim: int, depth: int, hidden: int, patch: int, image: int, classes: int, **_: int):
    """A timm VisionTransformer state dict with random values, by timm's key names and shapes."""
    g = torch.Generator().manual_seed(0)
    n = (image // patch) ** 2

    def r(*shape: int) -> torch.Tensor:
        return 0.2 * torch.randn(*shape, generator=g)

    state = {
        "cls_token": r(1, 1, dim),
        "pos_embed": r(1, n + 1, dim),
        "patch_embed.proj.weight": r(dim, 3, patch, patch),
        "patch_embed.proj.bias": r(dim),
        "norm.weight": 1 + r(dim),
        "norm.bias": r(dim),
        "head.weight": r(classes, dim),
        "head.bias": r(classes),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        state |= {
            b + "norm1.weight": 1 + r(dim),
            b + "norm1.bias": r(dim),
            b + "attn.qkv.weight": r(3 * dim, dim),
            b + "attn.qkv.bias": r(3 * dim),
            b + "attn.proj.weight": r(dim, dim),
            b + "attn.proj.bias": r(dim),
            b + "norm2.weight": 1 + r(dim),
            b + "norm2.bias": r(dim),
            b + "mlp.fc1.weight": r(hidden, dim),
            b + "mlp.fc1.bias": r(hidden),
            b + "mlp.fc2.weight": r(dim, hidden),
            b + "mlp.fc2.bias": r(dim),
        }
    return state


def timm_reference_logits(state: dict[str, torch.Tensor], x: torch.Tensor, heads: int) -> torch.Tensor:
    """timm's VisionTransformer.forward (token pool, manual attention), written out functionally."""
    dim = state["cls_token"].shape[-1]
    patch = state["patch_embed.proj.weight"].shape[-1]

    def ln(t: torch.Tensor, key: str) -> torch.Tensor:
        return F.layer_norm(t, (dim,), state[key + ".weight"], state[key + ".bias"], eps=1e-6)

    def lin(t: torch.Tensor, key: str) -> torch.Tensor:
        return F.linear(t, state[key + ".weight"], state.get(key + ".bias"))

    t = F.conv2d(x, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=patch)
    t = t.flatten(2).transpose(1, 2)
    t = torch.cat([state["cls_token"].expand(t.shape[0], -1, -1), t], dim=1) + state["pos_embed"]
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    for i in range(depth):
        b = f"blocks.{i}."
        B, N, C = t.shape
        qkv = (
            lin(ln(t, b + "norm1"), b + "attn.qkv").reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
        )
        q, k, v = qkv.unbind(0)
        attn = ((q * (C // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        t = t + lin((attn @ v).transpose(1, 2).reshape(B, N, C), b + "attn.proj")
        t = t + lin(F.gelu(lin(ln(t, b + "norm2"), b + "mlp.fc1")), b + "mlp.fc2")
    return lin(ln(t, "norm")[:, 0], "head")


def _assert_matches_timm(loaded_model: torch.nn.Module, state: dict[str, torch.Tensor], spec: dict) -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 3, spec["image"], spec["image"])
    with torch.no_grad():
        got = loaded_model(x)
        expected = timm_reference_logits(state, x, spec["heads"])
    assert got.shape == (2, spec["classes"])
    assert (got - expected).abs().max().item() < 1e-4


def test_safetensors_with_num_heads_loads_and_matches_timm(tmp_path: Path) -> None:
    state = timm_state_dict(**SMALL)
    file = tmp_path / "vit_small_custom.safetensors"
    save_file(state, str(file))
    loaded = load_timm_file(file, num_heads=SMALL["heads"])
    _assert_matches_timm(loaded.model, state, SMALL)
    c = loaded.model.config
    assert (c.dim, c.depth, c.num_heads, c.patch_size, c.image_size) == (48, 2, 4, 8, 32)
    assert (c.mlp_ratio, c.layer_norm_eps, c.qkv_bias) == (2.0, 1e-6, True)
    assert loaded.labels == tuple(f"class_{i}" for i in range(5))
    assert loaded.name == "vit_small_custom"
    assert loaded.source_sha256 == sha256_of(file)
    # timm's vit_* augreg default: Inception mean/std, bicubic, crop_pct 0.9.
    assert loaded.preprocessing == Preprocessing(
        image_size=32, crop_pct=0.9, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3
    )


def test_preset_by_name_through_load_checkpoint(tmp_path: Path) -> None:
    state = timm_state_dict(**DIGITS)
    file = tmp_path / "digits.safetensors"
    save_file(state, str(file))
    loaded = load_checkpoint(file, preset="digits")
    assert loaded.model.config.num_heads == 4
    assert loaded.model.config.num_classes == 10
    _assert_matches_timm(loaded.model, state, DIGITS)


def test_heads_inferred_from_preset_with_same_dim_and_depth(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The digits preset's dim and depth with another patch size: heads come from "digits".
    other_patch = 4 if DIGITS["patch"] != 4 else 7
    spec = {**DIGITS, "patch": other_patch}
    state = timm_state_dict(**spec)
    file = tmp_path / "digits_p7.safetensors"
    save_file(state, str(file))
    with caplog.at_level(logging.INFO, logger="vitserve.models.loaders.timm"):
        loaded = load_timm_file(file)
    assert "num_heads=4 from preset digits" in caplog.text
    assert (loaded.model.config.patch_size, loaded.model.config.image_size) == (other_patch, 28)
    _assert_matches_timm(loaded.model, state, spec)


def test_unknown_heads_are_asked_for(tmp_path: Path) -> None:
    file = tmp_path / "custom.safetensors"
    save_file(timm_state_dict(**SMALL), str(file))
    with pytest.raises(CheckpointError, match=r"cannot tell the number of heads.*pass preset= or num_heads="):
        load_timm_file(file)


def test_preset_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "digits_p7.safetensors"
    misfit = 4 if DIGITS["patch"] != 4 else 7  # a patch size the preset does not have
    save_file(timm_state_dict(**{**DIGITS, "patch": misfit}), str(file))
    with pytest.raises(CheckpointError, match="preset digits is dim/depth/patch/image"):
        load_timm_file(file, preset="digits")
    with pytest.raises(CheckpointError, match="unknown preset 'vit_huge'"):
        load_timm_file(file, preset="vit_huge")


def test_pth_wrapped_in_state_dict_with_module_prefix_and_labels_txt(tmp_path: Path) -> None:
    state = timm_state_dict(**SMALL)
    file = tmp_path / "ddp.pth"
    wrapped = {f"module.{k}": v for k, v in state.items()}
    torch.save({"state_dict": wrapped, "epoch": 300}, file)
    (tmp_path / "labels.txt").write_text("ant\nbee\ncat\ndog\neel\n")
    loaded = load_timm_file(file, num_heads=4)
    assert loaded.labels == ("ant", "bee", "cat", "dog", "eel")
    _assert_matches_timm(loaded.model, state, SMALL)


def test_bin_wrapped_in_model_with_labels_json(tmp_path: Path) -> None:
    state = timm_state_dict(**SMALL)
    state["pre_logits.fc.weight"] = torch.zeros(48, 48)  # dropped, as timm's checkpoint_filter_fn does
    torch.save({"model": state}, tmp_path / "weights.bin")
    (tmp_path / "labels.json").write_text(json.dumps(["a", "b", "c", "d", "e"]))
    loaded = load_timm_file(tmp_path / "weights.bin", num_heads=4)
    assert loaded.labels == ("a", "b", "c", "d", "e")


def test_label_count_must_match_head(tmp_path: Path) -> None:
    save_file(timm_state_dict(**SMALL), str(tmp_path / "m.safetensors"))
    (tmp_path / "labels.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(CheckpointError, match="2 labels for a head with 5 classes"):
        load_timm_file(tmp_path / "m.safetensors", num_heads=4)


def test_timm_hub_folder_supplies_architecture_labels_and_preprocessing(tmp_path: Path) -> None:
    state = timm_state_dict(**TINY_224)
    folder = tmp_path / "vit_tiny_hub"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    hub = {
        "architecture": "vit_tiny_patch16_224",
        "num_classes": 4,
        "num_features": 192,
        "global_pool": "token",
        "label_names": ["w", "x", "y", "z"],
        "pretrained_cfg": {
            "tag": "augreg_in21k_ft_in1k",
            "input_size": [3, 224, 224],
            "interpolation": "bilinear",
            "crop_pct": 0.875,
            "crop_mode": "center",
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
    }
    (folder / "config.json").write_text(json.dumps(hub))
    loaded = load_checkpoint(folder)
    assert loaded.name == "vit_tiny_patch16_224"
    assert loaded.labels == ("w", "x", "y", "z")
    assert loaded.preprocessing == Preprocessing(
        image_size=224,
        crop_pct=0.875,
        interpolation="bilinear",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )
    _assert_matches_timm(loaded.model, state, TINY_224)


def _without(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(prefix)}


def _variant(name: str) -> dict[str, torch.Tensor]:
    """timm VisionTransformer options that change the forward, as they show in the state dict."""
    s = timm_state_dict(**SMALL)
    d, n = SMALL["dim"], (SMALL["image"] // SMALL["patch"]) ** 2
    if name == "fc_norm":  # global_pool='avg': norm becomes Identity, fc_norm after the pool
        return _without(s, "norm.") | {"fc_norm.weight": torch.ones(d), "fc_norm.bias": torch.zeros(d)}
    if name == "no_class_token":  # class_token=False, global_pool='avg'
        return _without(s, "cls_token") | {"pos_embed": torch.zeros(1, n, d)}
    if name == "reg_tokens":  # reg_tokens=4
        return s | {"reg_token": torch.zeros(1, 4, d)}
    if name == "layer_scale":  # init_values=1e-5: Block.ls1/ls2 = LayerScale(gamma)
        return s | {"blocks.0.ls1.gamma": torch.ones(d), "blocks.0.ls2.gamma": torch.ones(d)}
    if name == "qk_norm":  # qk_norm=True: Attention.q_norm / k_norm over head_dim
        return s | {
            "blocks.0.attn.q_norm.weight": torch.ones(d // 4),
            "blocks.0.attn.k_norm.weight": torch.ones(12),
        }
    if name == "norm_pre":  # pre_norm=True (CLIP): also no patch_embed bias
        return _without(s, "patch_embed.proj.bias") | {
            "norm_pre.weight": torch.ones(d),
            "norm_pre.bias": torch.ones(d),
        }
    if name == "no_embed_class":  # pos_embed without a class-token slot (DeiT-3, big_vision)
        return s | {"pos_embed": torch.zeros(1, n, d)}
    if name == "dist_token":  # DeiT distilled
        return s | {"dist_token": torch.zeros(1, 1, d)}
    if name == "feature_only":  # num_classes=0: head is Identity
        return _without(s, "head.")
    raise AssertionError(name)


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("fc_norm", "fc_norm: global average pooling"),
        ("no_class_token", "without a class token"),
        ("reg_tokens", "register tokens"),
        ("layer_scale", r"layer scale \(ls1.gamma"),
        ("qk_norm", "qk norm"),
        ("norm_pre", "norm_pre"),
        ("no_embed_class", "no class-token slot"),
        ("dist_token", "DeiT distillation token"),
        ("feature_only", "feature extractor"),
    ],
)
def test_unsupported_variants_are_refused_by_name(tmp_path: Path, variant: str, message: str) -> None:
    file = tmp_path / f"{variant}.safetensors"
    save_file(_variant(variant), str(file))
    with pytest.raises(CheckpointError, match=message):
        load_timm_file(file, num_heads=4)


def test_hub_config_with_avg_pool_is_refused(tmp_path: Path) -> None:
    save_file(timm_state_dict(**SMALL), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "vit_x", "global_pool": "avg"}))
    with pytest.raises(CheckpointError, match="global_pool='avg'"):
        load_timm_file(tmp_path / "model.safetensors", num_heads=4)


def test_missing_block_tensor_is_named(tmp_path: Path) -> None:
    state = timm_state_dict(**SMALL)
    del state["blocks.1.attn.proj.bias"]  # proj_bias=False variants look like this
    save_file(state, str(tmp_path / "m.safetensors"))
    with pytest.raises(CheckpointError, match=r"blocks\.1\.attn\.proj\.bias"):
        load_timm_file(tmp_path / "m.safetensors", num_heads=4)


def test_hugging_face_weights_file_points_to_its_folder(tmp_path: Path) -> None:
    save_file({"vit.embeddings.cls_token": torch.zeros(1, 1, 8)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="Hugging Face ViT state dict"):
        load_checkpoint(tmp_path / "model.safetensors")


def test_not_a_weights_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_checkpoint(bad)
    other = tmp_path / "weights.npz"
    other.write_bytes(b"")
    with pytest.raises(CheckpointError, match="unknown weights format"):
        load_checkpoint(other)
