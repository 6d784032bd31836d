"""Image bytes -> the model's uint8 RGB pixels: decode, orient, convert, resize, centre-crop.

Runs in the request path (never inside the batch), so every limit is checked before the expensive
step it protects: the byte count before decoding, the pixel count before pixels are allocated.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vitserve.runtime.artifact import Preprocessing

# Formats a user can send. Anything else Pillow could open (EPS, ICO, PSD, ...) is refused: each extra
# decoder is attack surface, and EPS would even shell out to Ghostscript.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")

RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class DecodeError(ValueError):
    """The bytes are not an image this service accepts; `code` says which kind of problem."""

    code = "invalid_image"


class EmptyImage(DecodeError):
    code = "invalid_image"


class UnsupportedFormat(DecodeError):
    code = "unsupported_media_type"


class CorruptImage(DecodeError):
    code = "invalid_image"


class ImageTooLarge(DecodeError):
    code = "image_too_large"


@dataclass(frozen=True)
class DecodeLimits:
    max_bytes: int = 20 * 1024 * 1024
    # 40 MP covers any phone photo; a decompression bomb claims far more than that in its header.
    max_pixels: int = 40_000_000


def decode_image(data: bytes, pre: Preprocessing, limits: DecodeLimits) -> np.ndarray:
    """Decode one image to (image_size, image_size, 3) uint8 RGB, or raise a DecodeError."""
    if not data:
        raise EmptyImage("the image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"the image is {len(data)} bytes; the limit is {limits.max_bytes}")
    image = _open(data, limits)
    try:
        # draft() lets libjpeg decode at 1/2, 1/4 or 1/8 scale: a 12 MP photo bound for 224x224
        # never gets decoded at full size. Keep 2x headroom so the final resize still anti-aliases.
        if image.format == "JPEG":
            target = _resize_target(pre)
            image.draft("RGB", (target * 2, target * 2))
        image = ImageOps.exif_transpose(image) or image
        rgb = to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise CorruptImage(f"the image could not be decoded: {exc}") from exc
    return resize_and_crop(rgb, pre)


def _open(data: bytes, limits: DecodeLimits) -> Image.Image:
    with warnings.catch_warnings():
        # Our own pixel limit applies below; Pillow's warning would only be noise in the logs.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except UnidentifiedImageError as exc:
            raise UnsupportedFormat(
                f"not an image in a supported format ({', '.join(ALLOWED_FORMATS)})"
            ) from exc
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(str(exc)) from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise CorruptImage(f"the image header could not be read: {exc}") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise CorruptImage(f"the image has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise ImageTooLarge(f"the image is {width}x{height} pixels; the limit is {limits.max_pixels} pixels")
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparency is composited onto white, as a viewer shows it."""
    image.load()  # decode now, so truncated data fails here and not halfway through a resize
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: scale the real value range to 8 bits instead of clipping at 255.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    elif mode == "F":
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _resize_target(pre: Preprocessing) -> int:
    return int(round(pre.image_size / pre.crop_pct))


def resize_and_crop(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """Resize the shorter side to image_size / crop_pct, then centre-crop image_size square."""
    target = _resize_target(pre)
    width, height = image.size
    scale = target / min(width, height)
    new_size = (max(target, round(width * scale)), max(target, round(height * scale)))
    image = image.resize(new_size, RESAMPLING[pre.interpolation])
    left = (new_size[0] - pre.image_size) // 2
    top = (new_size[1] - pre.image_size) // 2
    image = image.crop((left, top, left + pre.image_size, top + pre.image_size))
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
