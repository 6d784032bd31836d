"""The service's pixel convention into a ViT's input, in one place for training, evaluation and export.

The service hands the model uint8 (N, H, W, 3) RGB at the model's input size; scaling to [0, 1] and
the per-channel mean/std happen inside the model (inside the exported ONNX graph), so that a model
trained here and the same model served see exactly the same numbers.
"""

from __future__ import annotations

import torch


def normalise_pixels(
    pixels: torch.Tensor, mean: torch.Tensor | float, std: torch.Tensor | float
) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB -> float32 (N, 3, H, W): x / 255, then (x - mean) / std per channel.

    `mean` and `std` broadcast against (N, 3, H, W): a scalar, or a (1, 3, 1, 1) tensor.
    """
    x = pixels.to(torch.float32).permute(0, 3, 1, 2) / 255.0
    return (x - mean) / std
