"""A corpus of malformed and adversarial uploads, built from scratch so no hostile file lives in the repo.

Each entry says what a well-behaved server answers: the status codes it may use (all 4xx, or 200
where the file is a real image in an unusual form) and, for a 4xx, the error codes it may name.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

ORIENTATION = 0x0112  # the EXIF tag


@dataclass(frozen=True)
class Hostile:
    name: str
    data: bytes
    filename: str
    content_type: str
    statuses: frozenset[int]
    codes: frozenset[str] = frozenset()  # the error codes a 4xx may carry; empty when 200 is expected


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_with_header(width: int, height: int, idat: bytes, bit_depth: int = 8, colour: int = 2) -> bytes:
    """A PNG whose IHDR claims width x height, whatever the IDAT really holds."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def png_bomb(side: int) -> bytes:
    """A real side x side greyscale PNG of zeros: ~side^2 bytes decoded from a few hundred KB."""
    rows = zlib.compressobj(9)
    row = b"\0" + b"\0" * side  # filter byte + one greyscale row
    body = b"".join(rows.compress(row) for _ in range(side)) + rows.flush()
    return png_with_header(side, side, body, bit_depth=8, colour=0)


def gif_canvas_bomb() -> bytes:
    """A 1x1 GIF whose one frame claims a 60000x60000 image descriptor."""
    header = b"GIF89a" + struct.pack("<HH", 1, 1) + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"," + struct.pack("<HHHH", 0, 0, 60000, 60000) + b"\x00"
    return header + descriptor + b"\x02\x02\x44\x01\x00;"


def jpeg_with_dimensions(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF0 marker is rewritten to claim width x height."""
    data = bytearray(encode(noise(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    return encode(noise(40, 24), "JPEG", exif=exif.tobytes())


def animated_gif() -> bytes:
    frames = [noise(32, 32, seed).convert("P") for seed in range(5)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def multipage_tiff() -> bytes:
    pages = [noise(32, 32, seed) for seed in range(3)]
    return encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def sixteen_bit_png() -> bytes:
    return encode(Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16), "PNG")


def polyglot_png_zip() -> bytes:
    """A valid PNG with a ZIP archive appended: decodes as the PNG, the payload is never touched."""
    archive = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("payload.sh", "#!/bin/sh\necho owned\n")
    return encode(noise(28, 28), "PNG") + archive.getvalue()


def polyglot_html_gif() -> bytes:
    """GIF89a magic followed by HTML: the classic GIF/JS polyglot, not a decodable image."""
    return b"GIF89a/*<html><script>alert(1)</script></html>*/=1;"


def svg_with_external_ref() -> bytes:
    return (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" '
        b'xmlns:xlink="http://www.w3.org/1999/xlink"><image xlink:href="http://127.0.0.1:9/x.png"/></svg>'
    )


def eps_ghostscript() -> bytes:
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n(%pipe%id) (w) file\n"


def truncated(data: bytes, keep: float) -> bytes:
    return data[: max(1, int(len(data) * keep))]


def flip_bytes(data: bytes, every: int) -> bytes:
    out = bytearray(data)
    for i in range(16, len(out), every):  # keep the magic number, so the decoder really starts
        out[i] ^= 0xFF
    return bytes(out)


OK = frozenset({200})
INVALID = frozenset({"invalid_image"})
UNSUPPORTED = frozenset({"unsupported_media_type"})
TOO_LARGE = frozenset({"image_too_large"})
BROKEN = INVALID | UNSUPPORTED  # a damaged header may no longer identify as any format


def corpus() -> list[Hostile]:
    """Every hostile upload, built on demand (a few MB in all)."""
    good_png = encode(noise(64, 64), "PNG")
    good_jpeg = encode(noise(64, 64), "JPEG", quality=90)
    progressive = encode(noise(64, 64), "JPEG", progressive=True)
    entries: list[tuple[str, Callable[[], bytes], str, frozenset[int], frozenset[str]]] = [
        # damaged files
        ("zero-bytes", lambda: b"", "image/png", frozenset({400}), INVALID),
        ("one-byte", lambda: b"\x89", "image/png", frozenset({415}), UNSUPPORTED),
        ("png-magic-only", lambda: b"\x89PNG\r\n\x1a\n", "image/png", frozenset({400, 415}), BROKEN),
        ("png-truncated-half", lambda: truncated(good_png, 0.5), "image/png", frozenset({400}), INVALID),
        ("png-truncated-90", lambda: truncated(good_png, 0.9), "image/png", frozenset({400}), INVALID),
        ("png-corrupt-crc", lambda: flip_bytes(good_png, 97), "image/png", frozenset({400, 415}), BROKEN),
        (
            "jpeg-truncated-half",
            lambda: truncated(good_jpeg, 0.5),
            "image/jpeg",
            frozenset({200, 400}),
            INVALID,
        ),
        ("jpeg-header-only", lambda: truncated(good_jpeg, 0.05), "image/jpeg", frozenset({400, 415}), BROKEN),
        (
            "jpeg-bit-flipped",
            lambda: flip_bytes(good_jpeg, 53),
            "image/jpeg",
            frozenset({200, 400, 415}),
            BROKEN,
        ),
        (
            "jpeg-progressive-truncated",
            lambda: truncated(progressive, 0.3),
            "image/jpeg",
            frozenset({200, 400}),
            INVALID,
        ),
        # absurd dimensions and decompression bombs
        (
            "png-claims-0x0",
            lambda: png_with_header(0, 0, zlib.compress(b"")),
            "image/png",
            frozenset({400, 415}),
            BROKEN,
        ),
        (
            "png-claims-1x1e9",
            lambda: png_with_header(1, 10**9, zlib.compress(b"\0\0\0\0")),
            "image/png",
            frozenset({413}),
            TOO_LARGE,
        ),
        (
            "png-claims-2^31-wide",
            lambda: png_with_header(2**31 - 1, 1, zlib.compress(b"\0")),
            "image/png",
            frozenset({400, 413}),
            TOO_LARGE | INVALID,
        ),
        ("png-bomb-10k", lambda: png_bomb(10_000), "image/png", frozenset({413}), TOO_LARGE),
        (
            "png-1bit-claims-30k^2",
            lambda: png_with_header(30_000, 30_000, zlib.compress(bytes(3751 * 64)), bit_depth=1, colour=0),
            "image/png",
            frozenset({413}),
            TOO_LARGE,
        ),
        (
            "jpeg-claims-65500^2",
            lambda: jpeg_with_dimensions(65500, 65500),
            "image/jpeg",
            frozenset({413}),
            TOO_LARGE,
        ),
        ("gif-frame-canvas-bomb", gif_canvas_bomb, "image/gif", frozenset({400, 413}), TOO_LARGE | INVALID),
        ("png-4000x1-sliver", lambda: encode(Image.new("L", (4000, 1)), "PNG"), "image/png", OK, frozenset()),
        # unusual but legitimate images: served, not refused
        ("gif-animated", animated_gif, "image/gif", OK, frozenset()),
        ("tiff-multipage", multipage_tiff, "image/tiff", OK, frozenset()),
        ("png-16-bit", sixteen_bit_png, "image/png", OK, frozenset()),
        ("jpeg-cmyk", lambda: encode(noise(32, 32).convert("CMYK"), "JPEG"), "image/jpeg", OK, frozenset()),
        ("png-palette", lambda: encode(noise(32, 32).convert("P"), "PNG"), "image/png", OK, frozenset()),
        ("png-rgba", lambda: encode(noise(32, 32).convert("RGBA"), "PNG"), "image/png", OK, frozenset()),
        (
            "webp-lossless-alpha",
            lambda: encode(noise(32, 32).convert("RGBA"), "WEBP", lossless=True),
            "image/webp",
            OK,
            frozenset(),
        ),
        ("jpeg-exif-rotated", exif_rotated_jpeg, "image/jpeg", OK, frozenset()),
        ("png-zip-polyglot", polyglot_png_zip, "image/png", OK, frozenset()),
        # not images, under image names
        ("html-gif-polyglot", polyglot_html_gif, "image/gif", frozenset({400, 415}), BROKEN),
        ("svg-external-ref", svg_with_external_ref, "image/png", frozenset({415}), UNSUPPORTED),
        ("eps-ghostscript", eps_ghostscript, "image/jpeg", frozenset({415}), UNSUPPORTED),
        (
            "pdf-as-png",
            lambda: b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
            "image/png",
            frozenset({415}),
            UNSUPPORTED,
        ),
        (
            "elf-as-jpeg",
            lambda: b"\x7fELF\x02\x01\x01" + bytes(200),
            "image/jpeg",
            frozenset({415}),
            UNSUPPORTED,
        ),
        (
            "zip-as-png",
            lambda: polyglot_png_zip()[len(encode(noise(28, 28), "PNG")) :],
            "image/png",
            frozenset({415}),
            UNSUPPORTED,
        ),
        (
            "text-as-webp",
            lambda: b"hello, I am definitely a picture",
            "image/webp",
            frozenset({415}),
            UNSUPPORTED,
        ),
        (
            "url-as-png",
            lambda: b"http://169.254.169.254/latest/meta-data/",
            "image/png",
            frozenset({415}),
            UNSUPPORTED,
        ),
        ("ico-not-allowed", lambda: encode(noise(32, 32), "ICO"), "image/png", frozenset({415}), UNSUPPORTED),
        ("psd-like-magic", lambda: b"8BPS\x00\x01" + bytes(100), "image/png", frozenset({415}), UNSUPPORTED),
        (
            "random-bytes-1MiB",
            lambda: np.random.default_rng(7).bytes(1 << 20),
            "image/jpeg",
            frozenset({415}),
            UNSUPPORTED,
        ),
        ("nul-bytes-5MiB", lambda: bytes(5 << 20), "image/png", frozenset({415}), UNSUPPORTED),
    ]
    return [
        Hostile(name, build(), f"{name}.{content_type.split('/')[1]}", content_type, statuses, codes)
        for name, build, content_type, statuses, codes in entries
    ]


# One small real image per accepted format: mutations of these reach each decoder's inner code.
SEEDS = (
    encode(noise(28, 28), "PNG"),
    encode(noise(28, 28), "JPEG"),
    encode(noise(28, 28).convert("P"), "GIF"),
    encode(noise(28, 28), "WEBP"),
    encode(noise(28, 28), "BMP"),
    encode(noise(28, 28), "TIFF", compression="tiff_deflate"),
)
