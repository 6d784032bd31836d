"""Attention rollout (Abnar & Zuidema 2020): which patches the class token drew on, from attention probs.

Plain numpy, because the serving side has no torch. Per layer the heads are fused (mean, max or
min), the identity is added for the residual connection, and each row is re-normalised so the
layer stays row-stochastic; the layers are then multiplied in order. The class token's row of the
product, over the patch columns, reshaped to the patch grid, is the map.

The widely copied public implementation divides by `a.sum(dim=-1)` without keepdim, which
broadcasts the row sums along the wrong axis (it normalises columns by row sums); here every row
sum keeps its axis, and tests/runtime/test_rollout.py pins the result on hand-computed matrices.
"""

from __future__ import annotations

import math

import numpy as np

HEAD_FUSIONS = ("mean", "max", "min")


class RolloutError(ValueError):
    """The attention tensor does not have the shape or values a rollout needs."""


def fuse_heads(attention: np.ndarray, head_fusion: str) -> np.ndarray:
    """(..., H, T, T) per-head probabilities -> (..., T, T) one matrix per layer."""
    if head_fusion == "mean":
        return attention.mean(axis=-3)  # type: ignore[no-any-return]
    if head_fusion == "max":
        return attention.max(axis=-3)  # type: ignore[no-any-return]
    if head_fusion == "min":
        return attention.min(axis=-3)  # type: ignore[no-any-return]
    raise RolloutError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}, not {head_fusion!r}")


def rollout(attentions: np.ndarray, head_fusion: str = "mean") -> np.ndarray:
    """(L, H, T, T) attention probs of one image -> (T, T) rolled-out attention, row-stochastic.

    Row i of the result says how much token i at the output draws on each input token through all
    layers, counting the residual path as half of every layer (A + I, re-normalised).
    """
    if attentions.ndim != 4 or attentions.shape[-1] != attentions.shape[-2]:
        raise RolloutError(f"expected (layers, heads, tokens, tokens), got shape {attentions.shape}")
    if not np.all(np.isfinite(attentions)):
        raise RolloutError("the attention probabilities contain NaN or infinity")
    tokens = attentions.shape[-1]
    # float64: a product of many layers of 0.0x weights loses digits in float32.
    fused = fuse_heads(attentions.astype(np.float64), head_fusion)  # (L, T, T)
    identity = np.eye(tokens)
    result = identity
    for layer in fused:
        with_residual = layer + identity
        # keepdims: each row divided by its own sum (the public implementation's bug is right here).
        with_residual = with_residual / with_residual.sum(axis=-1, keepdims=True)
        # Later layers act on the output of earlier ones: joint = A_l @ ... @ A_1.
        result = with_residual @ result
    return result


def class_token_map(rolled: np.ndarray, grid: int | None = None) -> np.ndarray:
    """(T, T) rollout -> (grid, grid) class-token map over the patches, summing to 1.

    Token 0 is the class token; the class token's own share (its attention to itself) is left
    out and the patch weights are re-normalised, so the map is a distribution over the image.
    """
    patches = rolled.shape[-1] - 1
    side = grid if grid is not None else math.isqrt(patches)
    if side * side != patches:
        raise RolloutError(f"{patches} patch tokens do not form a square grid")
    row = rolled[0, 1:]  # (N,)
    total = row.sum()
    if total <= 0:
        raise RolloutError("the class token puts no weight on any patch")
    return (row / total).reshape(side, side)


def rollout_map(attentions: np.ndarray, head_fusion: str = "mean") -> np.ndarray:
    """(L, H, T, T) attention probs of one image -> (grid, grid) float64 map that sums to 1."""
    return class_token_map(rollout(attentions, head_fusion))
