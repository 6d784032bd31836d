"""Training digits as users photograph them, then prepared the way the served model will see them.

`photograph` turns white-on-black ink (an MNIST training digit or a training-font glyph) into an
RGB photo: ink and paper colours of either polarity, paper grain and uneven light, the digit
anywhere from filling the frame to small and off-centre, rotated, blurred, shrunk to a low
resolution (then sometimes enlarged again, blocky, by nearest neighbour), noisy and
JPEG-compressed. `prepared` passes each photo through the artifact's own
`normalise_digit`, so training sees exactly what the service will feed the model, artefacts
included. Numpy and Pillow from one seeded `np.random.Generator`: a seed gives the same images.

This is deliberately a different generator from `vitserve.models.wild` (the evaluation), which
draws with other code, fonts and ranges, so the wild figures are not a test of this file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from vitserve.models import fonts
from vitserve.runtime.artifact import Preprocessing
from vitserve.runtime.digit_preprocess import normalise_digit


@dataclass(frozen=True)
class PhotoConfig:
    p_dark_on_light: float = 0.7  # the rest: light ink on a dark board or screen
    p_small: float = 0.3  # digit 12-35 % of the frame's shorter side, anywhere in it
    p_low_res: float = 0.3  # frame shrunk to 10-28 px before blur and compression
    # Of those, the share a viewer or scanner then enlarged 2-5x by nearest neighbour (blocky).
    p_blocky: float = 0.4
    low_res_blur_px: tuple[float, float] = (0.2, 1.2)  # Gaussian radius at the low resolution
    max_rotation_deg: float = 12.0
    max_blur_px: float = 1.6  # Gaussian radius at the final resolution
    max_noise: float = 14.0  # pixel-level Gaussian noise sigma, 0-255 scale
    max_gradient: float = 0.25  # brightness change across the frame from uneven light
    jpeg_quality: tuple[int, int] = (25, 95)


PHOTO = PhotoConfig()


def _colour(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    return rng.uniform(low, high, size=3)


def ink_and_paper(rng: np.random.Generator, config: PhotoConfig) -> tuple[np.ndarray, np.ndarray]:
    """Two RGB colours (0-255) with at least ~90 levels of luminance between them."""
    if rng.random() < config.p_dark_on_light:
        # White, cream, gray or coloured paper; black, blue, red, green or pencil-gray ink.
        paper = _colour(rng, 150, 255) if rng.random() < 0.5 else np.full(3, rng.uniform(170, 255))
        ink = _colour(rng, 0, 90) if rng.random() < 0.8 else np.full(3, rng.uniform(40, 110))
    else:
        paper = _colour(rng, 0, 80)
        ink = _colour(rng, 170, 255)
    return ink, paper


def place(ink: np.ndarray, small: bool, rng: np.random.Generator, config: PhotoConfig) -> np.ndarray:
    """White-on-black ink -> float32 (H, W) ink on a frame of random size, digit placed somewhere."""
    glyph = Image.fromarray(ink)
    angle = rng.uniform(-config.max_rotation_deg, config.max_rotation_deg)
    glyph = glyph.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    gw, gh = glyph.size
    frame_w, frame_h = int(rng.integers(64, 161)), int(rng.integers(64, 161))
    share = rng.uniform(0.12, 0.35) if small else rng.uniform(0.5, 0.95)
    scale = share * min(frame_w, frame_h) / max(gw, gh)
    size = (max(1, round(gw * scale * rng.uniform(0.8, 1.2))), max(1, round(gh * scale)))
    glyph = glyph.resize(size, Image.Resampling.BICUBIC)
    frame = Image.new("L", (max(frame_w, size[0]), max(frame_h, size[1])), 0)
    x = int(rng.integers(0, frame.size[0] - size[0] + 1))
    y = int(rng.integers(0, frame.size[1] - size[1] + 1))
    frame.paste(glyph, (x, y))
    return np.asarray(frame, dtype=np.float32) / 255.0


def colour_and_light(amount: np.ndarray, rng: np.random.Generator, config: PhotoConfig) -> np.ndarray:
    """(H, W) ink amount -> float32 (H, W, 3) RGB photo with paper grain and a lighting gradient."""
    h, w = amount.shape
    ink, paper = (c.astype(np.float32) for c in ink_and_paper(rng, config))
    # Grain: coarse blotches (upsampled small noise) plus fine fibre noise; float32 throughout,
    # since this runs for every synthesised digit.
    blotches = Image.fromarray(rng.standard_normal((4, 4), dtype=np.float32))
    coarse = np.asarray(blotches.resize((w, h), Image.Resampling.BICUBIC))
    grain = coarse * rng.uniform(0, 6) + rng.standard_normal((h, w), dtype=np.float32) * rng.uniform(0, 4)
    # Light falling off across the frame in a random direction.
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * np.arange(w, dtype=np.float32) / w)[None, :] + (
        np.sin(angle) * np.arange(h, dtype=np.float32) / h
    )[:, None]
    light = 1.0 + np.float32(rng.uniform(0, config.max_gradient)) * (ramp - 0.5)
    rgb = (paper + (ink - paper) * amount[..., None] + grain[..., None]) * light[..., None]
    return rgb.astype(np.float32)


def degrade(rgb: np.ndarray, low_res: bool, rng: np.random.Generator, config: PhotoConfig) -> Image.Image:
    """Low resolution, blur, sensor noise and JPEG compression."""
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    if low_res:
        side = int(rng.integers(10, 29))
        w, h = image.size
        shrink = side / min(w, h)
        image = image.resize((max(4, round(w * shrink)), max(4, round(h * shrink))), Image.Resampling.BOX)
        # A scan's optics blur at its own resolution, where a pixel is a large part of a stroke.
        radius = rng.uniform(*config.low_res_blur_px)
    else:
        radius = rng.uniform(0, config.max_blur_px) * min(1.0, min(image.size) / 64)
    if radius > 0.2:
        image = image.filter(ImageFilter.GaussianBlur(radius))
    sigma = np.float32(rng.uniform(0, config.max_noise))
    noisy = (
        np.asarray(image, np.float32) + rng.standard_normal((*image.size[::-1], 3), dtype=np.float32) * sigma
    )
    image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    if low_res and rng.random() < config.p_blocky:
        factor = int(rng.integers(2, 6))
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    if rng.random() < 0.7:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(*config.jpeg_quality)))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def photograph(ink: np.ndarray, rng: np.random.Generator, config: PhotoConfig = PHOTO) -> Image.Image:
    """uint8 (h, w) white-on-black ink -> an RGB photo of it."""
    # A small digit in a low-resolution frame would be a few pixels: no one can read that.
    small = rng.random() < config.p_small
    low_res = not small and rng.random() < config.p_low_res
    amount = place(ink, small, rng, config)
    return degrade(colour_and_light(amount, rng, config), low_res, rng, config)


def clean_print(ink: np.ndarray, rng: np.random.Generator, config: PhotoConfig = PHOTO) -> Image.Image:
    """uint8 (h, w) white-on-black ink -> a clean RGB render, only rotated, resized and placed."""
    amount = place(ink, False, rng, config)
    return Image.fromarray((amount * 255.0).round().astype(np.uint8)).convert("RGB")


def prepared(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """What the service feeds the model for this image, as uint8 (S, S) white-on-black gray."""
    return normalise_digit(image, pre)[..., 0]


def font_glyphs(size: int = 64) -> tuple[list[np.ndarray], np.ndarray]:
    """Every training font's digits: ink arrays (h, w) and their int64 labels."""
    glyphs, labels = [], []
    for font in fonts.TRAIN_FONTS:
        for digit in range(10):
            glyphs.append(fonts.render_glyph(font, digit, size))
            labels.append(digit)
    return glyphs, np.asarray(labels, dtype=np.int64)


def synthesise(
    inks: list[np.ndarray], labels: np.ndarray, count: int, pre: Preprocessing, seed: int, photo: bool
) -> tuple[np.ndarray, np.ndarray]:
    """`count` prepared digits drawn from `inks`, photographed or clean: uint8 (N, S, S) and labels."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(inks), size=count)
    out = np.empty((count, pre.image_size, pre.image_size), dtype=np.uint8)
    draw = photograph if photo else clean_print
    for i, pick in enumerate(picks):
        out[i] = prepared(draw(inks[pick], rng, PHOTO), pre)
    return out, labels[picks]


def prepare_all(images: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """uint8 (N, h, w) white-on-black digits, each passed through the service's normalisation."""
    return np.stack([prepared(Image.fromarray(image).convert("RGB"), pre) for image in images])
