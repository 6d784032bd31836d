"""Load a timm `vit_*` state dict (.safetensors, .pth, .bin) onto vitserve's ViT.

Our ViT uses timm's parameter names (patch_embed.proj, cls_token, pos_embed, blocks.N.norm1 /
attn.qkv / attn.proj / norm2 / mlp.fc1 / mlp.fc2, norm, head), so the mapping is the identity once
the file is unwrapped. What needs care is what the shapes cannot say (the number of heads) and the
timm variants whose forward differs from ours; those are refused by name rather than loaded wrong.
A timm Hub folder (config.json with "architecture" and "pretrained_cfg" beside model.safetensors)
also supplies the architecture name, labels and preprocessing.
"""

from __future__ import annotations

import json
import logging
import math
import re
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
from vitserve.models.vit import PRESETS, ViT, ViTConfig
from vitserve.runtime.artifact import ArtifactError, Preprocessing

logger = logging.getLogger(__name__)

LABEL_FILES = ("labels.json", "labels.txt")
HUB_CONFIG = "config.json"

# timm's VisionTransformer uses its own LayerNorm, whose default eps is 1e-6 (timm/layers/norm.py).
TIMM_LAYER_NORM_EPS = 1e-6

# timm's `_cfg` default for vit_* (augreg and orig weights): Inception mean/std (0.5), bicubic,
# crop_pct 0.9. Its 384px fine-tunes use crop_pct 1.0: pass `preprocessing=` (or ship the Hub
# config.json) when that matters.
DEFAULT_PREPROCESSING = {"crop_pct": 0.9, "interpolation": "bicubic", "mean": (0.5,) * 3, "std": (0.5,) * 3}

# Keys that mark a VisionTransformer variant whose forward differs from ours, and why.
UNSUPPORTED = (
    (r"^fc_norm\.", "fc_norm: global average pooling with the norm after the pool"),
    (r"^attn_pool\.", "attention-pool (MAP) head"),
    (r"^norm_pre\.", "norm_pre: a LayerNorm before the blocks (CLIP-style)"),
    (r"^reg_token$", "register tokens"),
    (r"^(dist_token$|head_dist\.)", "DeiT distillation token"),
    (r"\.(ls[12]\.gamma|gamma_[12])$", "layer scale (ls1.gamma / ls2.gamma)"),
    (r"\.attn\.[qk]_norm\.", "qk norm"),
    (r"\.attn\.norm\.|\.mlp\.norm\.", "scale norm inside attention/MLP"),
    (r"\.mlp\.(fc1_g|fc1_x|w12|w3)\.", "SwiGLU MLP"),
    (r"^(visual\.|mask_token$|encoder\.|trunk\.)", "an unconverted CLIP/DINOv2/I-JEPA checkpoint"),
    (r"^vit\.embeddings\.", "a Hugging Face ViT state dict (load its folder, with config.json, instead)"),
)


def load_timm_file(
    path: Path,
    preset: str | None = None,
    num_heads: int | None = None,
    preprocessing: Preprocessing | None = None,
) -> LoadedModel:
    """Load a timm ViT state dict; `preset` or `num_heads` name the head count the shapes cannot show."""
    path = Path(path)
    weights_file = find_weights(path) if path.is_dir() else path
    hub = _read_hub_config(weights_file.parent)
    state = unwrap_state_dict(read_weights(weights_file), weights_file)
    _refuse_variants(state, hub, weights_file)

    vit_config = infer_config(state, preset or _hub_preset(hub), num_heads, weights_file)
    model = ViT(vit_config)
    load_state_dict_strict(model, state)
    return LoadedModel(
        model=model.eval(),
        labels=_labels(weights_file, hub, vit_config.num_classes),
        preprocessing=preprocessing or _preprocessing(hub, vit_config.image_size, weights_file),
        name=_name(weights_file, preset, hub),
        version="1",
        source_sha256=sha256_of(weights_file),
    )


def unwrap_state_dict(raw: dict[str, Any], file: Path) -> dict[str, torch.Tensor]:
    """Undo the wrappers training scripts add: {"state_dict": ...}, {"model": ...}, "module." prefixes."""
    for wrapper in ("state_dict", "model"):
        if isinstance(raw.get(wrapper), dict):
            raw = raw[wrapper]
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{file}: {key!r} is a {type(value).__name__}, not a tensor")
        key = key.removeprefix("module.")  # DataParallel / DDP
        # timm's checkpoint_filter_fn drops the old pre-logits representation layer as well.
        if key.startswith("pre_logits."):
            continue
        state[key] = value.float()
    return state


def infer_config(
    state: dict[str, torch.Tensor], preset: str | None, num_heads: int | None, file: Path
) -> ViTConfig:
    """Read dim, depth, patch and image size, MLP width, qkv bias and classes from tensor shapes."""
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "head.weight"):
        if key not in state:
            raise CheckpointError(f"{file}: no {key!r}; {_why_missing(key)}")
    dim = state["cls_token"].shape[-1]
    proj = state["patch_embed.proj.weight"]  # (D, C, P, P)
    if proj.ndim != 4 or proj.shape[-1] != proj.shape[-2]:
        raise CheckpointError(
            f"{file}: patch_embed.proj.weight {tuple(proj.shape)} is not a square conv kernel"
        )
    patch, in_chans = proj.shape[-1], proj.shape[1]
    tokens = state["pos_embed"].shape[1]
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1:
        if math.isqrt(tokens) ** 2 == tokens:
            raise CheckpointError(
                f"{file}: pos_embed has no class-token slot (no_embed_class); not supported"
            )
        raise CheckpointError(f"{file}: pos_embed has {tokens} tokens, not a square grid plus a class token")
    depth = len({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    if depth == 0 or f"blocks.{depth - 1}.mlp.fc1.weight" not in state:
        raise CheckpointError(f"{file}: transformer blocks are missing or not numbered 0..N-1")
    hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    heads = _resolve_heads(dim, depth, patch, grid * patch, preset, num_heads, file)
    try:
        return ViTConfig(
            image_size=grid * patch,
            patch_size=patch,
            in_chans=in_chans,
            num_classes=state["head.weight"].shape[0],
            dim=dim,
            depth=depth,
            num_heads=heads,
            mlp_ratio=hidden / dim,
            qkv_bias="blocks.0.attn.qkv.bias" in state,
            layer_norm_eps=TIMM_LAYER_NORM_EPS,
        )
    except ValueError as exc:
        raise CheckpointError(f"{file}: unsupported shapes: {exc}") from exc


def _resolve_heads(
    dim: int, depth: int, patch: int, image_size: int, preset: str | None, num_heads: int | None, file: Path
) -> int:
    """Heads are invisible in the shapes (qkv is D x 3D for any split), so they come from a name."""
    if num_heads is not None:
        return num_heads
    if preset is not None:
        if preset not in PRESETS:
            raise CheckpointError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
        p = PRESETS[preset]
        got = (p.dim, p.depth, p.patch_size, p.image_size)
        if got != (dim, depth, patch, image_size):
            raise CheckpointError(
                f"{file}: preset {preset} is dim/depth/patch/image {got}, "
                f"but the weights are {(dim, depth, patch, image_size)}"
            )
        return p.num_heads
    matches = sorted(name for name, p in PRESETS.items() if (p.dim, p.depth) == (dim, depth))
    if len(matches) != 1:
        raise CheckpointError(
            f"{file}: cannot tell the number of heads for dim {dim}, depth {depth} "
            f"(matching presets: {matches}); pass preset= or num_heads="
        )
    logger.info(
        "%s: no preset given; using num_heads=%d from preset %s (same dim %d and depth %d)",
        file,
        PRESETS[matches[0]].num_heads,
        matches[0],
        dim,
        depth,
    )
    return PRESETS[matches[0]].num_heads


def _refuse_variants(state: dict[str, torch.Tensor], hub: dict[str, Any], file: Path) -> None:
    for pattern, what in UNSUPPORTED:
        hits = sorted(k for k in state if re.search(pattern, k))
        if hits:
            raise CheckpointError(f"{file}: not a plain timm ViT: {what} (found {hits[0]!r})")
    pool = hub.get("global_pool", "token")
    if pool not in ("token", None):
        raise CheckpointError(f"{file}: global_pool={pool!r} is not supported (class-token pooling only)")


def _why_missing(key: str) -> str:
    return {
        "cls_token": "models without a class token (global average pooling) are not supported",
        "head.weight": "a feature extractor (num_classes=0) cannot classify",
    }.get(key, "is this a timm VisionTransformer state dict?")


def _labels(weights_file: Path, hub: dict[str, Any], num_classes: int) -> tuple[str, ...]:
    labels: list[str] | None = None
    source: Path | str = "class_0.."
    for name in LABEL_FILES:
        file = weights_file.parent / name
        if file.is_file():
            source = file
            labels = _read_label_file(file)
            break
    else:
        if isinstance(hub.get("label_names"), list):
            source, labels = weights_file.parent / HUB_CONFIG, [str(v) for v in hub["label_names"]]
    if labels is None:
        return tuple(f"class_{i}" for i in range(num_classes))
    if len(labels) != num_classes:
        raise CheckpointError(f"{source}: {len(labels)} labels for a head with {num_classes} classes")
    return tuple(labels)


def _read_label_file(file: Path) -> list[str]:
    if file.suffix == ".txt":
        return [line.strip() for line in file.read_text().splitlines() if line.strip()]
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise CheckpointError(f"{file}: expected a JSON list of label names")
    return [str(v) for v in data]


def _preprocessing(hub: dict[str, Any], image_size: int, file: Path) -> Preprocessing:
    cfg = {
        **DEFAULT_PREPROCESSING,
        **{k: v for k, v in hub.get("pretrained_cfg", {}).items() if v is not None},
    }
    input_size = cfg.get("input_size")
    if input_size is not None and tuple(input_size[-2:]) != (image_size, image_size):
        raise CheckpointError(f"{file}: pretrained_cfg input_size {input_size} != weights' {image_size}px")
    if cfg.get("crop_mode", "center") != "center":
        raise CheckpointError(f"{file}: crop_mode {cfg['crop_mode']!r} is not supported (center only)")
    try:
        return Preprocessing(
            image_size=image_size,
            crop_pct=float(cfg["crop_pct"]),
            interpolation=str(cfg["interpolation"]),
            mean=tuple(float(v) for v in cfg["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in cfg["std"]),  # type: ignore[arg-type]
        )
    except ArtifactError as exc:
        raise CheckpointError(f"{file}: {exc}") from exc


def _hub_preset(hub: dict[str, Any]) -> str | None:
    """A timm Hub config names its architecture; use it when it is one of our presets."""
    arch = str(hub.get("architecture", "")).split(".")[0]
    return arch if arch in PRESETS else None


def _name(weights_file: Path, preset: str | None, hub: dict[str, Any]) -> str:
    if weights_file.stem not in ("model", "pytorch_model"):
        return weights_file.stem
    return str(hub.get("architecture") or preset or weights_file.parent.resolve().name)


def _read_hub_config(folder: Path) -> dict[str, Any]:
    file = folder / HUB_CONFIG
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file} is not valid JSON: {exc}") from exc
    # Only a timm Hub config counts; a Hugging Face or vitserve config.json beside the file is not ours.
    return data if isinstance(data, dict) and "architecture" in data else {}
