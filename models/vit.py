"""A Vision Transformer in plain PyTorch, readable top to bottom.

PatchEmbed -> Attention -> MLP -> Block -> ViTConfig -> ViT. The layout and parameter names follow
timm's `vision_transformer.py` so that standard checkpoints map onto it with a thin renaming.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    """Cuts the image into non-overlapping patches and projects each to a token."""

    def __init__(self, image_size: int, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.grid = image_size // patch_size
        self.num_patches = self.grid * self.grid
        # A strided convolution is the same as a Linear on each flattened patch, and cheaper.
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, H/P, W/P)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)


class Attention(nn.Module):
    """Multi-head scaled dot-product self-attention.

    `fused=True` calls torch's SDPA, which the ONNX exporter lowers to one fused Attention node;
    `fused=False` computes the same softmax(QK^T / sqrt(d)) V step by step and also returns the
    attention probabilities, which the tests use as the reference and attention maps need. The choice
    is an argument of each call, never state, so exporting one graph cannot change another's.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, fused: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, N, D) -> (B, N, D), and the (B, nh, N, N) attention probabilities on the manual path."""
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, N, hd)
        probs: torch.Tensor | None = None
        if fused:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, nh, N, N)
            probs = scores.softmax(dim=-1)
            y = probs @ v  # (B, nh, N, hd)
        y = y.transpose(1, 2).reshape(B, N, D)
        return self.proj(y), probs


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Exact (erf) GELU, as in the original ViT; the tanh approximation drifts from checkpoints.
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, fused: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        y, probs = self.attn(self.norm1(x), fused)
        x = x + y
        x = x + self.mlp(self.norm2(x))
        return x, probs


@dataclass(frozen=True)
class ViTConfig:
    image_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    # timm uses 1e-6; Hugging Face checkpoints carry their own value in config.json.
    layer_norm_eps: float = 1e-6

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViTConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ViTConfig fields: {sorted(unknown)}")
        return cls(**data)

    def with_classes(self, num_classes: int) -> ViTConfig:
        return replace(self, num_classes=num_classes)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


PRESETS: dict[str, ViTConfig] = {
    "vit_tiny_patch16_224": ViTConfig(dim=192, depth=12, num_heads=3),
    "vit_small_patch16_224": ViTConfig(dim=384, depth=12, num_heads=6),
    "vit_base_patch16_224": ViTConfig(dim=768, depth=12, num_heads=12),
    "vit_large_patch16_224": ViTConfig(dim=1024, depth=24, num_heads=16),
    # The shipped default: 28x28 digits in 4x4 patches (a 7x7 grid, 49 tokens + class token), 6
    # blocks of width 64. 7x7 patches trained 3x faster to the same accuracy, but their 4x4 grid
    # is too coarse for attention maps: the rollout leaned on the border patches
    # (tools/digits_sweep.py measures both goals side by side).
    "digits": ViTConfig(
        image_size=28, patch_size=4, num_classes=10, dim=64, depth=6, num_heads=4, mlp_ratio=2.0
    ),
}


class ViT(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.patch_embed = PatchEmbed(c.image_size, c.patch_size, c.in_chans, c.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, c.num_patches + 1, c.dim))
        self.blocks = nn.ModuleList(
            Block(c.dim, c.num_heads, c.mlp_ratio, c.qkv_bias, c.layer_norm_eps) for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.dim, eps=c.layer_norm_eps)
        self.head = nn.Linear(c.dim, c.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # Small truncated-normal init, as in the ViT paper's reference code; zero biases.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(
        self, x: torch.Tensor, fused: bool = True
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, C, H, W) normalised pixels -> (B, N+1, D) final-normed tokens, plus per-layer attention
        probabilities when `fused=False` (an empty list when fused: SDPA never materialises them)."""
        x = self.patch_embed(x)  # (B, N, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # (B, N+1, D)
        attentions: list[torch.Tensor] = []
        for block in self.blocks:
            x, probs = block(x, fused)
            if probs is not None:
                attentions.append(probs)  # (B, nh, N+1, N+1)
        return self.norm(x), attentions

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(tokens[:, 0])  # class token -> (B, num_classes)

    def forward(self, x: torch.Tensor, fused: bool = True) -> torch.Tensor:
        tokens, _ = self.forward_features(x, fused)
        return self.forward_head(tokens)
