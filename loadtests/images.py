"""The images the load test sends: generated in memory (seeded) or read from the repo, never downloaded.

Each set is built once per process (cached): Locust asks for them when it starts, before any load.

Three size classes, because they stress different parts of the service: small digits exercise batching
and per-request overhead, 500x375 photos are a typical web upload, and multi-megapixel photos make
decoding (not the model) the cost. Bad inputs each carry the status the API documents for them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO / "models" / "digits-vit" / "samples"
HELDOUT = REPO / "models" / "digits-vit" / "heldout.npz"  # the exporter's test digits, never trained on
HELDOUT_DIGITS = 32
SEED = 20260511


@dataclass(frozen=True)
class TestImage:
    name: str
    data: bytes
    content_type: str
    size: tuple[int, int]


@dataclass(frozen=True)
class BadInput:
    """A request the service must refuse with `expected_status`, never a 5xx and never a 200."""

    name: str
    data: bytes
    content_type: str
    expected_status: int
    top_k: str | None = None
    as_text_field: bool = False  # send `data` as a text form field (a URL), not as a file


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _synthetic_digit(digit: int, rng: np.random.Generator) -> Image.Image:
    """A white-on-black digit drawn with Pillow's default font, roughly where MNIST puts it."""
    canvas = Image.new("L", (28, 28), 0)
    draw = ImageDraw.Draw(canvas)
    draw.text((9 + int(rng.integers(-2, 3)), 6 + int(rng.integers(-2, 3))), str(digit), fill=255)
    return canvas.resize((28, 28)).convert("RGB")


@cache
def digit_images() -> tuple[TestImage, ...]:
    """Real digits as PNG: the shipped samples, else held-out test digits; ten drawn ones without either."""
    files = sorted(p for p in SAMPLES_DIR.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if files:
        return tuple(
            TestImage(
                p.name,
                p.read_bytes(),
                "image/png" if p.suffix.lower() == ".png" else "image/jpeg",
                Image.open(p).size,
            )
            for p in files
        )
    if HELDOUT.exists():
        with np.load(HELDOUT) as heldout:
            digits = heldout["images"][:HELDOUT_DIGITS]  # (N, 28, 28) uint8 greyscale
        return tuple(
            TestImage(f"heldout-{i}.png", encode(Image.fromarray(d), "PNG"), "image/png", (28, 28))
            for i, d in enumerate(digits)
        )
    rng = np.random.default_rng(SEED)
    return tuple(
        TestImage(f"digit-{d}.png", encode(_synthetic_digit(d, rng), "PNG"), "image/png", (28, 28))
        for d in range(10)
    )


def synthetic_photo(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """Smooth colour fields plus mild sensor noise: compresses like a photo, unlike pure noise."""
    coarse = rng.integers(0, 256, size=(max(2, height // 64), max(2, width // 64), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.int16)
    noise = rng.normal(0.0, 4.0, size=(height, width, 1)).astype(np.int16)
    return Image.fromarray(np.clip(smooth + noise, 0, 255).astype(np.uint8))


@cache
def web_photos() -> tuple[TestImage, ...]:
    """500x375 uploads in the formats browsers send: mostly JPEG, one PNG, one WebP."""
    rng = np.random.default_rng(SEED + 1)
    images = []
    for i in range(4):
        photo = synthetic_photo(500, 375, rng)
        images.append(TestImage(f"web-{i}.jpg", encode(photo, "JPEG", quality=85), "image/jpeg", photo.size))
    photo = synthetic_photo(500, 375, rng)
    images.append(TestImage("web-4.png", encode(photo, "PNG"), "image/png", photo.size))
    images.append(TestImage("web-5.webp", encode(photo, "WEBP", quality=80), "image/webp", photo.size))
    return tuple(images)


@cache
def camera_photos() -> tuple[TestImage, ...]:
    """Phone-camera sizes (6 and 12 megapixels, JPEG): decode-bound, a few MB each."""
    rng = np.random.default_rng(SEED + 2)
    images = []
    for width, height in ((3000, 2000), (4032, 3024)):
        photo = synthetic_photo(width, height, rng)
        data = encode(photo, "JPEG", quality=90)
        images.append(TestImage(f"camera-{width}x{height}.jpg", data, "image/jpeg", photo.size))
    return tuple(images)


def bad_inputs(valid: TestImage) -> list[BadInput]:
    """One of each client mistake the API has a status for; `valid` supplies a real image to corrupt."""
    rng = np.random.default_rng(SEED + 3)
    jpeg = encode(synthetic_photo(500, 375, rng), "JPEG", quality=85)
    # 48 MP claimed in a few kB: the header alone must get it refused (VITSERVE_MAX_PIXELS is 40 MP).
    bomb = encode(Image.new("1", (8000, 6000), 0), "PNG")
    return [
        BadInput("truncated-jpeg", jpeg[: len(jpeg) // 3], "image/jpeg", 400),
        BadInput("random-bytes", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "image/png", 415),
        BadInput("empty-body", b"", "image/png", 400),
        BadInput("text-body", b"a digit, honestly", "text/plain", 415),
        BadInput("top-k-zero", valid.data, valid.content_type, 422, top_k="0"),
        BadInput("url-not-file", b"http://169.254.169.254/latest/meta-data", "", 400, as_text_field=True),
        BadInput("pixel-bomb", bomb, "image/png", 413),
    ]
