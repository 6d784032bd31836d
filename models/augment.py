"""Batch augmentation that turns clean MNIST digits into what users actually upload.

MNIST is white ink on black; users photograph dark ink on light paper, in colour, slightly rotated,
shifted and scaled, a little blurred and noisy. Everything here works on whole batches in plain torch
and draws from an explicit `torch.Generator`, so a seed gives the same batch every time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vitserve.models.pixels import normalise_pixels

# The digits model's input normalisation (Preprocessing mean = std = 0.5 per channel).
MEAN = 0.5
STD = 0.5


@dataclass(frozen=True)
class AugmentConfig:
    # Share of samples left as plain grayscale white-on-black (still moved by the affine), so the
    # model stays sharp on the MNIST convention itself. Half: on the shipped preset 0.3 gave 0.976
    # plain / 0.9725 photo-like against 0.9835 / 0.981 for half (one GPU run each, tools/digits_sweep.py).
    p_plain: float = 0.5
    # Among the rest: share drawn as dark ink on light paper.
    p_invert: float = 0.5
    max_rotation_deg: float = 15.0
    max_shift_px: float = 3.0
    scale_range: tuple[float, float] = (0.85, 1.15)
    # Ink and paper are drawn per channel from these ranges (in [0, 1]); the gap between them
    # keeps at least 0.3 of contrast in every channel, which a readable photo has.
    dark_range: tuple[float, float] = (0.0, 0.35)
    light_range: tuple[float, float] = (0.65, 1.0)
    max_blur: float = 0.5  # weight of a 3x3 box blur mixed in
    max_noise_std: float = 0.05
    contrast_range: tuple[float, float] = (0.75, 1.25)
    max_brightness: float = 0.08
    # Stroke width: share of digits thickened / thinned by a 3x3 max-filter blended in at random.
    p_thicken: float = 0.0
    p_thin: float = 0.0
    # Elastic distortion: a smooth random displacement field of up to this many pixels (0 = none);
    # the classic MNIST augmentation (Simard et al. 2003), here as one coarse 4x4 field per digit.
    elastic_px: float = 0.0


# 2.0.0's recipe: raw MNIST, coloured and moved here. Kept for the photo-like evaluation variant.
TRAIN = AugmentConfig()
# The "photo-like" evaluation variant: every digit coloured, half inverted, all geometric jitter.
PHOTO = AugmentConfig(p_plain=0.0)
# 3.0.0's recipe: its digits are already what `normalise_digit` makes of a photo (white on black,
# fitted and centred), so the jitter is what that normalisation leaves: small moves, stroke width,
# shape, blur and noise; no colour, which the normalisation removes.
NORMALISED = AugmentConfig(
    p_plain=1.0,
    max_rotation_deg=10.0,
    max_shift_px=1.5,
    scale_range=(0.9, 1.1),
    p_thicken=0.25,
    p_thin=0.15,
    elastic_px=1.5,
)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def elastic_offsets(shape: torch.Size, pixels: float, generator: torch.Generator) -> torch.Tensor:
    """(B, H, W, 2) smooth random offsets in affine_grid's [-1, 1] units, up to `pixels` pixels."""
    B, _, H, W = shape
    coarse = torch.rand(B, 2, 4, 4, generator=generator) * 2.0 - 1.0
    field = F.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=True)  # (B, 2, H, W)
    scale = torch.tensor([2.0 / W, 2.0 / H]).view(1, 2, 1, 1) * pixels
    return (field * scale).permute(0, 2, 3, 1)


def stroke_width(ink: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Thicken or thin some digits of (B, 1, H, W): a 3x3 max (or min) filter blended in at random."""
    B = ink.shape[0]
    draw = torch.rand(B, generator=generator)
    amount = torch.rand(B, generator=generator).view(B, 1, 1, 1)
    thick = F.max_pool2d(ink, 3, stride=1, padding=1)
    thin = -F.max_pool2d(-ink, 3, stride=1, padding=1)
    thicken = (draw < config.p_thicken).view(B, 1, 1, 1)
    thinned = ((draw >= config.p_thicken) & (draw < config.p_thicken + config.p_thin)).view(B, 1, 1, 1)
    out = torch.where(thicken, ink + (thick - ink) * amount, ink)
    return torch.where(thinned, ink + (thin - ink) * amount, out)


def random_affine(ink: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Rotate, scale and shift each image of (B, C, H, W) by its own random amount."""
    B, _, H, W = ink.shape
    angle = _uniform(B, -1.0, 1.0, generator) * math.radians(config.max_rotation_deg)
    scale = _uniform(B, *config.scale_range, generator)
    # affine_grid works in [-1, 1] coordinates, where one pixel is 2 / size.
    shift_x = _uniform(B, -1.0, 1.0, generator) * config.max_shift_px * 2.0 / W
    shift_y = _uniform(B, -1.0, 1.0, generator) * config.max_shift_px * 2.0 / H
    # theta maps output coordinates to input ones, so dividing by scale enlarges the digit.
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], dim=1), torch.stack([sin, cos, shift_y], dim=1)], dim=1
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, list(ink.shape), align_corners=False)
    if config.elastic_px > 0:
        grid = grid + elastic_offsets(ink.shape, config.elastic_px, generator)
    # Zero padding is "no ink", which is right for white-on-black input before colouring.
    return F.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def colourize(ink: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """(B, 1, H, W) ink amount -> (B, 3, H, W) RGB: random ink and paper colours, random polarity."""
    B = ink.shape[0]
    dark = _uniform(B * 3, *config.dark_range, generator).view(B, 3, 1, 1)
    light = _uniform(B * 3, *config.light_range, generator).view(B, 3, 1, 1)
    invert = (torch.rand(B, generator=generator) < config.p_invert).view(B, 1, 1, 1)
    paper = torch.where(invert, light, dark)
    pen = torch.where(invert, dark, light)
    coloured = paper + (pen - paper) * ink  # (B, 3, H, W)
    plain = (torch.rand(B, generator=generator) < config.p_plain).view(B, 1, 1, 1)
    return torch.where(plain, ink.expand(-1, 3, -1, -1), coloured)


def degrade(rgb: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Mild camera effects on (B, 3, H, W) in [0, 1]: blur, contrast, brightness, noise."""
    B = rgb.shape[0]
    blurred = F.avg_pool2d(F.pad(rgb, (1, 1, 1, 1), mode="replicate"), kernel_size=3, stride=1)
    blur = _uniform(B, 0.0, config.max_blur, generator).view(B, 1, 1, 1)
    x = rgb + (blurred - rgb) * blur
    contrast = _uniform(B, *config.contrast_range, generator).view(B, 1, 1, 1)
    brightness = _uniform(B, -config.max_brightness, config.max_brightness, generator).view(B, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (x - mean) * contrast + brightness
    noise_std = _uniform(B, 0.0, config.max_noise_std, generator).view(B, 1, 1, 1)
    x = x + noise_std * torch.randn(x.shape, generator=generator)
    return x.clamp(0.0, 1.0)


def augment(ink: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """(B, 1, H, W) white-on-black in [0, 1] -> (B, 3, H, W) augmented RGB in [0, 1]."""
    if ink.ndim != 4 or ink.shape[1] != 1:
        raise ValueError(f"augment wants (B, 1, H, W) grayscale, got {tuple(ink.shape)}")
    if config.p_thicken or config.p_thin:
        ink = stroke_width(ink, config, generator)
    return degrade(colourize(random_affine(ink, config, generator), config, generator), config, generator)


def normalise(rgb: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB -> the model's input range."""
    return (rgb - MEAN) / STD


def gray_to_unit(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W) grayscale -> float (B, 1, H, W) in [0, 1]."""
    tensor = torch.as_tensor(images)
    return tensor.unsqueeze(1).float() / 255.0


def pixels_to_input(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) RGB, the service's pixel convention -> normalised (B, 3, H, W)."""
    # A copy: arrays from Pillow are read-only, which torch.as_tensor warns about.
    tensor = torch.tensor(pixels) if isinstance(pixels, np.ndarray) else pixels
    return normalise_pixels(tensor, MEAN, STD)


def gray_to_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 (B, H, W) grayscale -> uint8 (B, H, W, 3) RGB by repeating the channel."""
    return np.repeat(images[..., None], 3, axis=-1)


def photo_like(images: np.ndarray, seed: int, config: AugmentConfig = PHOTO) -> np.ndarray:
    """uint8 (B, H, W) white-on-black digits -> uint8 (B, H, W, 3) photo-like RGB, fixed by seed."""
    generator = torch.Generator().manual_seed(seed)
    rgb = augment(gray_to_unit(images), config, generator)
    return (rgb * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
