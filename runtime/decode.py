"""Image bytes -> the model's uint8 RGB pixels: decode, orient, convert, resize, centre-crop.

Runs in the request path (never inside the batch), so every limit is checked before the expensive
step it protects: the byte count before decoding, the pixel count before pixels are allocated.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vitserve.runtime.artifact import INTERPOLATIONS, Preprocessing
from vitserve.runtime.digit_preprocess import DIGIT_DECODE_SIDE, normalise_digit

# Formats a user can send. Anything else Pillow could open (EPS, ICO, PSD, ...) is refused: each extra
# decoder is attack surface, and EPS would even shell out to Ghostscript.
# Each one's media type is what the HTTP API documents as a raw request body.
MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "GIF": "image/gif",
    "TIFF": "image/tiff",
}
ALLOWED_FORMATS = tuple(MEDIA_TYPES)

RESAMPLING = {name: Image.Resampling[name.upper()] for name in INTERPOLATIONS}

# What Pillow raises on malformed input: it has no single error type, and a corrupt header, tag or
# tile surfaces as any of these (TypeError from a TIFF strip offset of the wrong tag type, struct.error
# and EOFError from short reads, ZeroDivisionError from zero-sized fields). tests/runtime/test_decode.py
# fuzzes every format to keep this list honest.
DECODER_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    TypeError,
    IndexError,
    KeyError,
    EOFError,
    ArithmeticError,
    struct.error,
)


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
    return decode_opened(open_image(data, limits), pre)


def open_image(data: bytes, limits: DecodeLimits) -> Image.Image:
    """The image's header, read and checked against the limits; no pixels are decoded yet."""
    if not data:
        raise EmptyImage("the image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"the image is {len(data)} bytes; the limit is {limits.max_bytes}")
    return _open(data, limits)


def decode_opened(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """An image from `open_image` -> (image_size, image_size, 3) uint8 RGB, or a DecodeError."""
    try:
        # draft() lets libjpeg decode at 1/2, 1/4 or 1/8 scale: a 12 MP photo bound for 224x224
        # never gets decoded at full size. Keep 2x headroom so the final resize still anti-aliases.
        # Pillow reports a JPEG with a multi-picture (MPO) header, as many phone cameras write, as MPO.
        if image.format in ("JPEG", "MPO"):
            target = DIGIT_DECODE_SIDE if pre.digit_normalisation else _resize_target(pre) * 2
            # The digit normalisation reads luminance only: libjpeg then skips the colour planes.
            image.draft("L" if pre.digit_normalisation else "RGB", (target, target))
        image = ImageOps.exif_transpose(image) or image
        rgb = to_rgb(image)
    except Image.DecompressionBombError as exc:
        # A GIF frame may extend its canvas past the size the header declared.
        raise ImageTooLarge(str(exc)) from exc
    except DECODER_ERRORS as exc:
        raise CorruptImage(f"the image could not be decoded: {exc}") from exc
    if pre.digit_normalisation is not None:
        # The whole frame, not a centre crop: the digit may be anywhere in it.
        return normalise_digit(rgb, pre)
    return resize_and_crop(rgb, pre)


def _open(data: bytes, limits: DecodeLimits) -> Image.Image:
    # No warnings.catch_warnings() around this: it swaps the process-wide filter list and is not
    # thread-safe, and decoding runs in a thread pool. Pillow's DecompressionBombWarning only fires for
    # images far above our own pixel limit, which rejects them just below.
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError as exc:
        raise UnsupportedFormat(f"not an image in a supported format ({', '.join(ALLOWED_FORMATS)})") from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from exc
    except DECODER_ERRORS as exc:
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
    if image.mode == "P" or (image.mode in ("1", "L", "RGB") and "transparency" in image.info):
        # Palette transparency, or a PNG tRNS colour key on a greyscale/RGB image.
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _resize_target(pre: Preprocessing) -> int:
    return round(pre.image_size / pre.crop_pct)


def resize_and_crop(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """Resize the shorter side to image_size / crop_pct, then centre-crop image_size square."""
    target = _resize_target(pre)
    width, height = image.size
    scale = target / min(width, height)
    new_width, new_height = max(target, round(width * scale)), max(target, round(height * scale))
    left = (new_width - pre.image_size) // 2
    top = (new_height - pre.image_size) // 2
    # Resize only the source box that becomes the crop: the same pixels as resizing to (new_width,
    # new_height) and cropping (Pillow's filter still reads the pixels around the box), without
    # materialising the resized long side, which for an 85-byte 4000x1 PNG at image_size 224 would be
    # 200 M pixels (14 s, 800 MB).
    sx, sy = new_width / width, new_height / height
    box = (left / sx, top / sy, (left + pre.image_size) / sx, (top + pre.image_size) / sy)
    image = image.resize((pre.image_size, pre.image_size), RESAMPLING[pre.interpolation], box=box)
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
