"""Load a Hugging Face `ViTForImageClassification` folder (config.json + weights) onto vitserve's ViT.

The mapping follows transformers' `modeling_vit.py`: pre-norm blocks with separate query/key/value
projections (fused here into one `qkv`), exact-erf GELU, a final LayerNorm, and a linear classifier
on the class token. ViTForImageClassification builds its ViTModel without the pooler, so pooler
weights (present in checkpoints saved from a bare ViTModel) never reach the logits and are ignored.
Position embeddings are used as stored: transformers only interpolates them when a caller passes
`interpolate_pos_encoding=True`, so the model is served at the checkpoint's own image size.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from vitserve.models.checkpoint import (
    CheckpointError,
    LoadedModel,
    find_weights,
    load_state_dict_strict,
    read_weights,
    sha256_of,
)
from vitserve.models.vit import ViT, ViTConfig
from vitserve.runtime.artifact import ArtifactError, Preprocessing

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"

# Pillow's resampling enum values, as transformers' image processors store them.
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}

# What ViTImageProcessor does when preprocessor_config.json is absent: IMAGENET_STANDARD_MEAN/STD
# (0.5) and bilinear resampling straight to the model's size (no crop).
DEFAULT_PREPROCESSING = {"crop_pct": 1.0, "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3}


def load_hf_folder(path: Path) -> LoadedModel:
    """Load a `ViTForImageClassification` folder saved by `save_pretrained` (or from the Hub)."""
    path = Path(path)
    config = _read_json(path / CONFIG_FILE)
    vit_config = vit_config_from_hf(config, path)
    weights_file = find_weights(path)
    state = map_hf_state_dict(read_weights(weights_file), vit_config.depth, vit_config.qkv_bias, path)

    num_classes = state["head.weight"].shape[0]
    vit_config = vit_config.with_classes(num_classes)
    model = ViT(vit_config)
    load_state_dict_strict(model, state)
    return LoadedModel(
        model=model.eval(),
        labels=labels_from_hf(config, num_classes, path),
        preprocessing=preprocessing_from_hf(path / PREPROCESSOR_FILE, vit_config.image_size),
        name=path.resolve().name,
        version=str(config.get("transformers_version", "1")),
        source_sha256=sha256_of(weights_file),
    )


def vit_config_from_hf(config: dict[str, Any], path: Path) -> ViTConfig:
    """Translate transformers' ViTConfig fields; refuse anything our ViT would compute differently."""
    if config.get("model_type") != "vit":
        raise CheckpointError(
            f"{path}: model_type is {config.get('model_type')!r}, expected 'vit' "
            "(only ViTForImageClassification folders are supported)"
        )
    try:
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        depth = int(config["num_hidden_layers"])
        intermediate = int(config["intermediate_size"])
        image_size = _square(config["image_size"], "image_size", path)
        patch_size = _square(config["patch_size"], "patch_size", path)
        channels = int(config.get("num_channels", 3))
        eps = float(config.get("layer_norm_eps", 1e-12))
        qkv_bias = bool(config.get("qkv_bias", True))
        act = config.get("hidden_act", "gelu")
    except KeyError as exc:
        raise CheckpointError(f"{path / CONFIG_FILE}: missing field {exc}") from exc
    # transformers' "gelu" is the exact erf GELU our MLP uses; gelu_new / gelu_fast / quick_gelu are
    # tanh or sigmoid approximations whose logits would drift.
    if act != "gelu":
        raise CheckpointError(f"{path}: hidden_act {act!r} is not supported (only exact 'gelu')")
    if channels != 3:
        raise CheckpointError(f"{path}: num_channels={channels}; vitserve artifacts take RGB (3 channels)")
    head_dim = config.get("head_dim")
    if head_dim is not None and int(head_dim) * heads != hidden:
        raise CheckpointError(f"{path}: head_dim {head_dim} x {heads} heads != hidden_size {hidden}")
    try:
        return ViTConfig(
            image_size=image_size,
            patch_size=patch_size,
            in_chans=channels,
            dim=hidden,
            depth=depth,
            num_heads=heads,
            mlp_ratio=intermediate / hidden,
            qkv_bias=qkv_bias,
            layer_norm_eps=eps,
        )
    except ValueError as exc:
        raise CheckpointError(f"{path}: unsupported config: {exc}") from exc


def hf_config_for(config: ViTConfig, **overrides: Any) -> Any:
    """The transformers.ViTConfig of the same architecture (`vit_config_from_hf`'s inverse), for
    building reference models; needs transformers (the test and export extras have it)."""
    import transformers

    return transformers.ViTConfig(  # type: ignore[call-arg]
        image_size=config.image_size,
        patch_size=config.patch_size,
        hidden_size=config.dim,
        num_hidden_layers=config.depth,
        num_attention_heads=config.num_heads,
        intermediate_size=int(config.dim * config.mlp_ratio),
        num_labels=config.num_classes,
        **overrides,
    )


def map_hf_state_dict(
    hf: dict[str, torch.Tensor], depth: int, qkv_bias: bool, path: Path
) -> dict[str, torch.Tensor]:
    """Rename transformers' ViT keys to ours and fuse query/key/value into one qkv projection."""
    remaining = {k: v.float() for k, v in hf.items() if not k.startswith("vit.pooler.")}
    out: dict[str, torch.Tensor] = {}
    missing: list[str] = []

    def take(key: str) -> torch.Tensor | None:
        if key not in remaining:
            missing.append(key)
            return None
        return remaining.pop(key)

    def move(src: str, dst: str) -> None:
        tensor = take(src)
        if tensor is not None:
            out[dst] = tensor

    emb = "vit.embeddings."
    move(emb + "cls_token", "cls_token")
    move(emb + "position_embeddings", "pos_embed")
    for p in ("weight", "bias"):
        move(f"{emb}patch_embeddings.projection.{p}", f"patch_embed.proj.{p}")
        move(f"vit.layernorm.{p}", f"norm.{p}")
        move(f"classifier.{p}", f"head.{p}")
    for i in range(depth):
        src, dst = f"vit.encoder.layer.{i}.", f"blocks.{i}."
        params = ("weight", "bias") if qkv_bias else ("weight",)
        for p in params:
            parts = [take(f"{src}attention.attention.{n}.{p}") for n in ("query", "key", "value")]
            if all(t is not None for t in parts):
                # timm's layout: rows [q; k; v], each split into heads in the same order as HF's.
                out[f"{dst}attn.qkv.{p}"] = torch.cat(parts, dim=0)  # type: ignore[arg-type]
        for p in ("weight", "bias"):
            move(f"{src}attention.output.dense.{p}", f"{dst}attn.proj.{p}")
            move(f"{src}layernorm_before.{p}", f"{dst}norm1.{p}")
            move(f"{src}layernorm_after.{p}", f"{dst}norm2.{p}")
            move(f"{src}intermediate.dense.{p}", f"{dst}mlp.fc1.{p}")
            move(f"{src}output.dense.{p}", f"{dst}mlp.fc2.{p}")
    if missing or remaining:
        raise CheckpointError(
            f"{path}: weights do not match a ViTForImageClassification with {depth} layers: "
            f"missing={missing[:8]} unexpected={sorted(remaining)[:8]}"
        )
    return out


def labels_from_hf(config: dict[str, Any], num_classes: int, path: Path) -> tuple[str, ...]:
    id2label = config.get("id2label")
    if not isinstance(id2label, dict):
        raise CheckpointError(f"{path / CONFIG_FILE}: no id2label mapping")
    try:
        by_index = {int(k): str(v) for k, v in id2label.items()}
    except ValueError as exc:
        raise CheckpointError(f"{path / CONFIG_FILE}: id2label keys must be integers: {exc}") from exc
    if sorted(by_index) != list(range(num_classes)):
        raise CheckpointError(
            f"{path / CONFIG_FILE}: id2label has indices {sorted(by_index)[:8]}..., "
            f"but the classifier has {num_classes} outputs"
        )
    return tuple(by_index[i] for i in range(num_classes))


def preprocessing_from_hf(file: Path, image_size: int) -> Preprocessing:
    """Read an image processor's settings; the defaults are ViTImageProcessor's.

    ViTImageProcessor resizes straight to (height, width); vitserve resizes the shorter side and
    centre-crops, which is the same for square images and keeps the aspect ratio for others.
    """
    if not file.is_file():
        return Preprocessing(image_size=image_size, **DEFAULT_PREPROCESSING)  # type: ignore[arg-type]
    cfg = _read_json(file)
    if cfg.get("do_resize", True) is False:
        raise CheckpointError(f"{file}: do_resize=false is not supported (vitserve always resizes)")
    if cfg.get("do_rescale", True):
        factor = float(cfg.get("rescale_factor", 1 / 255))
        if not math.isclose(factor, 1 / 255, rel_tol=1e-6):
            raise CheckpointError(f"{file}: rescale_factor {factor} is not 1/255")
    else:
        raise CheckpointError(f"{file}: do_rescale=false is not supported (pixels are scaled by 1/255)")

    crop_pct, output = _resize_and_crop(cfg, file)
    if output != image_size:
        raise CheckpointError(f"{file}: processor outputs {output}px but the model takes {image_size}px")
    if cfg.get("do_normalize", True):
        mean = _three(cfg.get("image_mean", DEFAULT_PREPROCESSING["mean"]), "image_mean", file)
        std = _three(cfg.get("image_std", DEFAULT_PREPROCESSING["std"]), "image_std", file)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    try:
        return Preprocessing(
            image_size=image_size,
            crop_pct=crop_pct,
            interpolation=_interpolation(cfg.get("resample", 2), file),
            mean=mean,
            std=std,
        )
    except ArtifactError as exc:
        raise CheckpointError(f"{file}: {exc}") from exc


def _resize_and_crop(cfg: dict[str, Any], file: Path) -> tuple[float, int]:
    """(crop_pct, output side) from `size`, `crop_size`/`do_center_crop` or `crop_pct`."""
    size = cfg.get("size", {"height": 224, "width": 224})
    if isinstance(size, int):
        resized = size
    elif isinstance(size, dict) and "height" in size:
        resized = _square([size["height"], size["width"]], "size", file)
    elif isinstance(size, dict) and "shortest_edge" in size:
        resized = int(size["shortest_edge"])
    else:
        raise CheckpointError(f"{file}: unsupported size {size!r}")
    if "crop_pct" in cfg and cfg["crop_pct"] is not None:
        # ConvNeXT-style processors: resize to size / crop_pct, then crop `size`.
        return float(cfg["crop_pct"]), resized
    if cfg.get("do_center_crop", False):
        crop = cfg.get("crop_size", resized)
        crop_side = (
            crop if isinstance(crop, int) else _square([crop["height"], crop["width"]], "crop_size", file)
        )
        if crop_side > resized:
            raise CheckpointError(f"{file}: crop_size {crop_side} is larger than the resize {resized}")
        return crop_side / resized, crop_side
    return 1.0, resized


def _interpolation(resample: Any, file: Path) -> str:
    if isinstance(resample, str) and resample in PIL_RESAMPLE.values():
        return resample
    if isinstance(resample, int) and resample in PIL_RESAMPLE:
        return PIL_RESAMPLE[resample]
    raise CheckpointError(f"{file}: resample {resample!r} is not one of {PIL_RESAMPLE}")


def _three(value: Any, field: str, file: Path) -> tuple[float, float, float]:
    values = [float(value)] * 3 if isinstance(value, int | float) else [float(v) for v in value]
    if len(values) != 3:
        raise CheckpointError(f"{file}: {field} needs 3 values, got {value!r}")
    return values[0], values[1], values[2]


def _square(value: Any, field: str, path: Path) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, list | tuple) and len(value) == 2 and int(value[0]) == int(value[1]):
        return int(value[0])
    raise CheckpointError(f"{path}: {field}={value!r}; only square images are supported")


def _read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"{file} not found; is this a Hugging Face model folder?") from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected a JSON object")
    return data
