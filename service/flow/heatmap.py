"""Rollout map + the pixels the model saw -> a PNG heatmap overlay, with Pillow and numpy only.

The overlay is drawn on the model's own input (after resize and centre crop), because that is the
image the map's grid refers to; it is upscaled so that a 28x28 digit is still visible in a browser.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Anchor colours of matplotlib's "inferno" (perceptually uniform, dark -> bright), sampled at
# 0, 1/6, ..., 1; intermediate values are interpolated linearly. Enough for a heatmap legend-free view.
INFERNO_ANCHORS = np.array(
    [
        [0, 0, 4],
        [40, 11, 84],
        [101, 21, 110],
        [159, 42, 99],
        [212, 72, 66],
        [245, 125, 21],
        [252, 255, 164],
    ],
    dtype=np.float64,
)
# The overlay's side in pixels at least: small model inputs are upscaled to this.
MIN_OVERLAY_SIDE = 224
# Weight of the heatmap against the image; 0.5 keeps the digit's strokes readable under the colour.
OVERLAY_ALPHA = 0.5


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1], any shape -> uint8 RGB of shape (..., 3) on the inferno scale."""
    clipped = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)
    position = clipped * (len(INFERNO_ANCHORS) - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, len(INFERNO_ANCHORS) - 1)
    frac = (position - low)[..., None]
    rgb = INFERNO_ANCHORS[low] * (1.0 - frac) + INFERNO_ANCHORS[high] * frac
    return np.round(rgb).astype(np.uint8)


def scale_for_display(heatmap: np.ndarray) -> np.ndarray:
    """A map summing to 1 -> [0, 1] relative to its largest cell (a flat map shows as all 1)."""
    top = float(heatmap.max())
    if top <= 0:
        return np.zeros_like(heatmap, dtype=np.float64)
    return heatmap.astype(np.float64) / top


def overlay(pixels: np.ndarray, heatmap: np.ndarray, alpha: float = OVERLAY_ALPHA) -> Image.Image:
    """(H, W, 3) uint8 image and a (g, g) map -> RGB image of side max(H, MIN_OVERLAY_SIDE)."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3) pixels, got {pixels.dtype} {pixels.shape}")
    if heatmap.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {heatmap.shape}")
    height, width = pixels.shape[:2]
    factor = max(1, -(-MIN_OVERLAY_SIDE // max(height, width)))  # ceil division
    size = (width * factor, height * factor)
    # Nearest for the image (crisp pixels), bilinear for the map (patch borders are not meaningful).
    base = Image.fromarray(pixels, "RGB").resize(size, Image.Resampling.NEAREST)
    levels = Image.fromarray(np.round(scale_for_display(heatmap) * 255).astype(np.uint8), "L")
    levels = levels.resize(size, Image.Resampling.BILINEAR)
    colours = Image.fromarray(colormap(np.asarray(levels, dtype=np.float64) / 255.0), "RGB")
    return Image.blend(base, colours, alpha)


def overlay_png(pixels: np.ndarray, heatmap: np.ndarray, alpha: float = OVERLAY_ALPHA) -> bytes:
    """The overlay encoded as PNG bytes."""
    buffer = io.BytesIO()
    overlay(pixels, heatmap, alpha).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
