"""decode_image on real files in every accepted format: correct pixels, enforced limits, typed errors only."""

from __future__ import annotations

import functools
import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vitserve.runtime.artifact import Preprocessing
from vitserve.runtime.decode import (
    CorruptImage,
    DecodeError,
    DecodeLimits,
    EmptyImage,
    ImageTooLarge,
    UnsupportedFormat,
    decode_image,
    resize_and_crop,
)

SIZE = 32
PRE = Preprocessing(image_size=SIZE)
LIMITS = DecodeLimits()
ORIENTATION = 0x0112  # the EXIF tag

RED, GREEN, BLUE, YELLOW, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 255, 255)

# Pillow warns about the corrupt EXIF/TIFF tags the malformed inputs below are made of.
pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning:PIL", "ignore::PIL.Image.DecompressionBombWarning"
)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def decode(data: bytes, pre: Preprocessing = PRE, limits: DecodeLimits = LIMITS) -> np.ndarray:
    out = decode_image(data, pre, limits)
    assert out.shape == (pre.image_size, pre.image_size, 3) and out.dtype == np.uint8
    return out


def peak_rss_growth_kib(data: bytes, image_size: int, expect: str = "") -> int:
    """How much decoding `data` raised peak RSS, in a fresh interpreter: its peak is this decode's alone.

    `expect` names the DecodeError the decode must raise; by default it must succeed. The peak is
    VmHWM, not ru_maxrss: the latter carries over the forking parent's peak into the child.
    """
    script = (
        "import sys\n"
        "from vitserve.runtime import decode\n"
        "from vitserve.runtime.artifact import Preprocessing\n"
        "def peak():\n"
        "    status = open('/proc/self/status').read()\n"
        "    return int(status.split('VmHWM:')[1].split()[0])\n"
        "data = sys.stdin.buffer.read()\n"
        "before = peak()\n"
        "try:\n"
        f"    decode.decode_image(data, Preprocessing(image_size={image_size}), decode.DecodeLimits())\n"
        f"except decode.{expect or 'DecodeError'}:\n"
        f"    assert {bool(expect)}, 'the decode failed'\n"
        "else:\n"
        f"    assert {not expect}, 'the decode did not fail'\n"
        "print(peak() - before)\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script], input=data, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()
    return int(result.stdout.decode().strip())


def quadrants(width: int, height: int) -> np.ndarray:
    """Red, green / blue, yellow quadrants: every rotation and mirror of it looks different."""
    arr = np.empty((height, width, 3), dtype=np.uint8)
    top, bottom, left, right = (
        slice(0, height // 2),
        slice(height // 2, None),
        slice(0, width // 2),
        slice(width // 2, None),
    )
    arr[top, left], arr[top, right], arr[bottom, left], arr[bottom, right] = RED, GREEN, BLUE, YELLOW
    return arr


def smooth(width: int, height: int) -> np.ndarray:
    """Low-frequency content, so lossy codecs and downscaling change it little."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = (np.sin(6 * x) * 100 + 128, np.cos(5 * y) * 100 + 128, (x + y) * 120 + 10)
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def quadrant_colours(out: np.ndarray) -> list[tuple[int, ...]]:
    """The colour at the centre of each quadrant of a decoded image: TL, TR, BL, BR."""
    q, h = SIZE // 4, 3 * SIZE // 4
    return [tuple(int(v) for v in out[y, x]) for y, x in ((q, q), (q, h), (h, q), (h, h))]


def assert_close(actual: np.ndarray, expected: np.ndarray, mean_tol: float, max_tol: int = 255) -> None:
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    assert diff.mean() <= mean_tol and diff.max() <= max_tol, f"mean {diff.mean():.2f}, max {diff.max()}"


def assert_colour(pixel: tuple[int, ...] | np.ndarray, expected: tuple[int, int, int], tol: int) -> None:
    assert np.abs(np.asarray(pixel, dtype=np.int16) - np.asarray(expected)).max() <= tol, (
        tuple(pixel),
        expected,
    )


# --- every accepted format, correct pixels -------------------------------------------------------------

LOSSLESS: dict[str, dict[str, object]] = {
    "PNG": {},
    "WEBP": {"lossless": True},
    "BMP": {},
    "TIFF": {},
    "TIFF-LZW": {"compression": "tiff_lzw"},
    "GIF": {},  # four colours fit its palette exactly
}


@pytest.mark.parametrize("name", sorted(LOSSLESS))
def test_lossless_formats_decode_to_the_exact_pixels(name: str) -> None:
    upright = quadrants(64, 48)
    data = encode(Image.fromarray(upright), name.split("-")[0], **LOSSLESS[name])
    expected = resize_and_crop(Image.fromarray(upright), PRE)
    np.testing.assert_array_equal(decode(data), expected)
    # The centre crop of a 64x48 image keeps all four quadrants, split at the middle.
    assert quadrant_colours(expected) == [RED, GREEN, BLUE, YELLOW]


@pytest.mark.parametrize(("fmt", "params"), [("JPEG", {"quality": 90}), ("WEBP", {"quality": 90})])
def test_lossy_formats_decode_close_to_the_source(fmt: str, params: dict[str, object]) -> None:
    source = smooth(64, 48)
    out = decode(encode(Image.fromarray(source), fmt, **params))
    assert_close(out, resize_and_crop(Image.fromarray(source), PRE), mean_tol=3)


def test_an_image_already_at_model_size_passes_through_unchanged() -> None:
    source = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode(encode(Image.fromarray(source), "PNG")), source)


# --- EXIF orientation ----------------------------------------------------------------------------------

# How a camera stores an upright picture for each EXIF orientation: the inverse of the transform a viewer
# applies (written with numpy, independently of Pillow's exif_transpose table).
STORED_AS = {
    2: np.fliplr,  # viewer mirrors horizontally
    3: lambda a: np.rot90(a, 2),  # viewer rotates 180
    4: np.flipud,  # viewer mirrors vertically
    6: lambda a: np.rot90(a, 1),  # viewer rotates 90 clockwise, so it was stored 90 counter-clockwise
    8: lambda a: np.rot90(a, -1),  # viewer rotates 90 counter-clockwise
}


def with_orientation(upright: np.ndarray, orientation: int, fmt: str, **params: object) -> bytes:
    stored = Image.fromarray(np.ascontiguousarray(STORED_AS[orientation](upright)))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return encode(stored, fmt, exif=exif, **params)


@pytest.mark.parametrize("orientation", sorted(STORED_AS))
def test_exif_orientation_is_applied_to_jpeg(orientation: int) -> None:
    upright = quadrants(64, 48)  # non-square: a 90-degree mistake would also change the crop
    data = with_orientation(upright, orientation, "JPEG", quality=95, subsampling=0)
    out = decode(data)
    expected = resize_and_crop(Image.fromarray(upright), PRE)
    assert_close(out, expected, mean_tol=4)
    for got, want in zip(quadrant_colours(out), [RED, GREEN, BLUE, YELLOW], strict=True):
        assert_colour(got, want, tol=12)


@pytest.mark.parametrize(("fmt", "params"), [("PNG", {}), ("WEBP", {"lossless": True}), ("TIFF", {})])
def test_exif_orientation_is_applied_to_other_formats(fmt: str, params: dict[str, object]) -> None:
    upright = quadrants(64, 48)
    out = decode(with_orientation(upright, 6, fmt, **params))
    np.testing.assert_array_equal(out, resize_and_crop(Image.fromarray(upright), PRE))


# --- colour modes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_greyscale_maps_its_full_range_to_0_255(fmt: str) -> None:
    ramp = np.linspace(0, 65535, SIZE).round().astype(np.uint16)
    source = Image.fromarray(np.tile(ramp, (SIZE, 1)))
    assert source.mode == "I;16"
    data = encode(source, fmt)
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    out = decode(data)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    row = out[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255, "the range is scaled, not clipped at 255"
    np.testing.assert_allclose(row, ramp / 65535 * 255, atol=1)


def test_dark_16_bit_image_stays_dark() -> None:
    """Values 0..255 in a 16-bit image are 0.4 % of full scale, not full white."""
    source = Image.fromarray(np.full((SIZE, SIZE), 255, dtype=np.uint16))
    assert decode(encode(source, "PNG")).max() <= 1


@pytest.mark.parametrize(("fmt", "params"), [("PNG", {}), ("WEBP", {"lossless": True}), ("TIFF", {})])
def test_transparent_background_is_composited_on_white(fmt: str, params: dict[str, object]) -> None:
    rgba = np.zeros((SIZE, SIZE, 4), dtype=np.uint8)  # fully transparent black
    rgba[8:24, 8:24] = (255, 0, 0, 255)  # an opaque red square
    rgba[0:4, 0:4] = (0, 0, 255, 128)  # half-transparent blue
    out = decode(encode(Image.fromarray(rgba, "RGBA"), fmt, **params))
    assert_colour(out[SIZE - 1, SIZE - 1], WHITE, tol=0)
    assert_colour(out[SIZE // 2, SIZE // 2], RED, tol=0)
    assert_colour(out[1, 1], (127, 127, 255), tol=2)


def test_greyscale_with_alpha_is_composited_on_white() -> None:
    la = Image.fromarray(
        np.dstack([np.zeros((SIZE, SIZE), np.uint8), np.zeros((SIZE, SIZE), np.uint8)]), "LA"
    )
    assert_colour(decode(encode(la, "PNG"))[5, 5], WHITE, tol=0)


@pytest.mark.parametrize("mode", ["L", "RGB", "P"])
def test_png_transparency_key_is_composited_on_white(mode: str) -> None:
    image = Image.new(mode, (SIZE, SIZE), 0)  # black, and black is the transparent colour
    image.paste(Image.new(mode, (8, 8), 200 if mode != "RGB" else (200, 200, 200)), (12, 12))
    if mode == "P":
        image.putpalette([0, 0, 0] + [200, 200, 200] * 255)
    key = (0, 0, 0) if mode == "RGB" else 0
    out = decode(encode(image, "PNG", transparency=key))
    assert_colour(out[0, 0], WHITE, tol=0)
    assert_colour(out[15, 15], (200, 200, 200), tol=0)


@pytest.mark.parametrize(
    ("cmyk", "rgb"),
    [
        ((255, 0, 0, 0), (0, 255, 255)),  # cyan
        ((0, 255, 0, 0), (255, 0, 255)),  # magenta
        ((0, 0, 255, 0), (255, 255, 0)),  # yellow
        ((0, 0, 0, 255), (0, 0, 0)),  # black
        ((0, 0, 0, 0), (255, 255, 255)),  # paper
        ((0, 128, 255, 0), (255, 127, 0)),  # orange
    ],
)
@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_converts_to_the_right_rgb(fmt: str, cmyk: tuple[int, ...], rgb: tuple[int, int, int]) -> None:
    data = encode(Image.new("CMYK", (48, 40), cmyk), fmt)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode(data)
    assert_colour(out.reshape(-1, 3).mean(axis=0).round(), rgb, tol=4)
    assert_colour(out.reshape(-1, 3).min(axis=0), rgb, tol=6)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "JPEG"])
def test_greyscale_becomes_equal_rgb_channels(fmt: str) -> None:
    ramp = np.tile(np.linspace(0, 255, SIZE).round().astype(np.uint8), (SIZE, 1))
    out = decode(encode(Image.fromarray(ramp, "L"), fmt))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert_close(out[..., 0], ramp, mean_tol=1.5 if fmt == "JPEG" else 0)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "GIF"])
def test_bilevel_images_become_black_and_white(fmt: str) -> None:
    checker = (np.indices((SIZE, SIZE)).sum(axis=0) // 4 % 2 * 255).astype(np.uint8)
    out = decode(encode(Image.fromarray(checker, "L").convert("1"), fmt))
    np.testing.assert_array_equal(out, np.repeat(checker[..., None], 3, axis=-1))


def test_animated_gif_decodes_its_first_frame() -> None:
    first = Image.fromarray(quadrants(SIZE, SIZE)).convert("P")
    later = [Image.new("RGB", (SIZE, SIZE), colour).convert("P") for colour in (BLUE, WHITE)]
    data = encode(first, "GIF", save_all=True, append_images=later, duration=50, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    assert quadrant_colours(decode(data)) == [RED, GREEN, BLUE, YELLOW]


def test_mpo_multi_picture_jpeg_decodes_its_first_picture() -> None:
    first, second = Image.new("RGB", (400, 300), RED), Image.new("RGB", (400, 300), BLUE)
    data = encode(first, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert_colour(decode(data).reshape(-1, 3).mean(axis=0), RED, tol=6)


# --- resize and centre-crop geometry -------------------------------------------------------------------


def thirds(width: int, height: int, axis: int) -> np.ndarray:
    """Red, green, blue bands along the long side; the centre crop must keep only green."""
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    n = arr.shape[axis]
    for i, colour in enumerate((RED, GREEN, BLUE)):
        index = [slice(None), slice(None)]
        index[axis] = slice(i * n // 3, (i + 1) * n // 3)
        arr[tuple(index)] = colour
    return arr


@pytest.mark.parametrize(("width", "height", "axis"), [(96, 32, 1), (32, 96, 0), (400, 100, 1)])
def test_non_square_image_is_centre_cropped(width: int, height: int, axis: int) -> None:
    out = decode(encode(Image.fromarray(thirds(width, height, axis)), "PNG"))
    assert (out == GREEN).all()


def test_crop_pct_crops_the_centre() -> None:
    framed = np.zeros((40, 40, 3), dtype=np.uint8)
    framed[:] = BLUE
    framed[4:36, 4:36] = GREEN  # a 4-pixel blue frame around a 32x32 green centre
    data = encode(Image.fromarray(framed), "PNG")
    # crop_pct 0.8: the shorter side is resized to 32 / 0.8 = 40 (unchanged), then the centre 32 is kept.
    assert (decode(data, Preprocessing(image_size=SIZE, crop_pct=0.8)) == GREEN).all()
    # crop_pct 1: the whole image is scaled into 32x32, frame included.
    full = decode(data, Preprocessing(image_size=SIZE, crop_pct=1.0))
    assert tuple(full[0, 0]) == BLUE and tuple(full[SIZE // 2, SIZE // 2]) == GREEN


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos"])
@pytest.mark.parametrize(("width", "height", "crop_pct"), [(640, 480, 1.0), (300, 500, 0.875), (57, 43, 0.9)])
def test_resize_matches_resize_then_crop(
    width: int, height: int, crop_pct: float, interpolation: str
) -> None:
    """The documented geometry done the obvious, memory-hungry way: shorter side to S / crop_pct, centre S."""
    source = Image.fromarray(smooth(width, height))
    pre = Preprocessing(image_size=SIZE, crop_pct=crop_pct, interpolation=interpolation)
    target = round(SIZE / crop_pct)
    scale = target / min(width, height)
    new_w, new_h = max(target, round(width * scale)), max(target, round(height * scale))
    resized = source.resize((new_w, new_h), getattr(Image.Resampling, interpolation.upper()))
    left, top = (new_w - SIZE) // 2, (new_h - SIZE) // 2
    expected = np.asarray(resized.crop((left, top, left + SIZE, top + SIZE)))
    assert_close(decode(encode(source, "PNG"), pre), expected, mean_tol=0.1, max_tol=2)


@pytest.mark.parametrize(("width", "height"), [(4000, 1), (1, 4000)])
def test_extreme_aspect_ratio_is_cheap(width: int, height: int) -> None:
    """An 85-byte 4000x1 PNG once made a 200 M-pixel intermediate at image_size 224 (14 s, 800 MB)."""
    data = encode(Image.new("L", (width, height), 90), "PNG")
    assert (decode(data, Preprocessing(image_size=224)) == 90).all()
    # Memory, not time: the old path's intermediate was 200 M pixels, this one's is 224x224.
    grown_kib = peak_rss_growth_kib(data, 224)
    assert grown_kib < 20 * 1024, f"peak RSS grew by {grown_kib} KiB decoding a {width}x{height} image"


def test_jpeg_draft_decode_matches_a_full_decode() -> None:
    """A large JPEG is decoded at reduced scale by libjpeg; the result must match decoding it in full."""
    source = smooth(2400, 1800)
    data = encode(Image.fromarray(source), "JPEG", quality=92)
    pre = Preprocessing(image_size=224, crop_pct=0.875, interpolation="bicubic")
    full = Image.open(io.BytesIO(data))
    full.load()
    assert full.size == (2400, 1800)  # no draft here
    assert_close(decode(data, pre), resize_and_crop(full.convert("RGB"), pre), mean_tol=1.0, max_tol=12)


# --- limits --------------------------------------------------------------------------------------------


def test_byte_limit() -> None:
    data = encode(Image.fromarray(smooth(64, 48)), "PNG")
    decode(data, limits=DecodeLimits(max_bytes=len(data)))
    with pytest.raises(ImageTooLarge, match="bytes"):
        decode_image(data, PRE, DecodeLimits(max_bytes=len(data) - 1))


def test_pixel_limit() -> None:
    data = encode(Image.new("RGB", (40, 25)), "PNG")  # 1000 pixels
    decode(data, limits=DecodeLimits(max_pixels=1000))
    with pytest.raises(ImageTooLarge, match="40x25"):
        decode_image(data, PRE, DecodeLimits(max_pixels=999))


def png_with_declared_size(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR claims width x height (CRC fixed up): a bomb that is all header."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (8000, 6000),  # above our 40 MP limit, below Pillow's own warning threshold
        (10000, 10000),  # above Pillow's warning threshold
        (100000, 100000),  # above Pillow's error threshold: its DecompressionBombError is translated
    ],
)
def test_declared_dimensions_over_the_limit_are_refused(width: int, height: int) -> None:
    with pytest.raises(ImageTooLarge):
        decode_image(png_with_declared_size(width, height), PRE, LIMITS)


def test_gif_frame_larger_than_its_canvas_is_refused() -> None:
    data = bytearray(encode(Image.new("L", (10, 10)).convert("P"), "GIF"))
    descriptor = data.index(b"\x2c\x00\x00\x00\x00")  # image separator, frame at (0, 0)
    data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", 7000, 7000)  # 49 MP frame on a 10x10 canvas
    with pytest.raises(ImageTooLarge):
        decode_image(bytes(data), PRE, LIMITS)


def test_pixel_bomb_is_refused_before_its_pixels_are_allocated() -> None:
    """A 12 KB 1-bit PNG of 10000x10000: decoding it would take 100 MB, converting it to RGB 300 MB."""
    data = encode(Image.new("1", (10000, 10000)), "PNG")
    assert len(data) < 20_000
    grown_kib = peak_rss_growth_kib(data, 224, expect="ImageTooLarge")
    assert grown_kib < 20 * 1024, f"peak RSS grew by {grown_kib} KiB while refusing the bomb"


# --- typed errors for everything else ------------------------------------------------------------------


def test_empty_input() -> None:
    with pytest.raises(EmptyImage):
        decode_image(b"", PRE, LIMITS)


def psd(width: int, height: int) -> bytes:
    """A minimal 8-bit RGB Photoshop file (Pillow reads PSD but cannot write it)."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    sections = struct.pack(">III", 0, 0, 0)  # colour mode data, image resources, layers: all empty
    return header + sections + struct.pack(">H", 0) + bytes(3 * width * height)


def other_format(fmt: str) -> bytes:
    if fmt == "PSD":
        return psd(16, 16)
    return encode(Image.fromarray(quadrants(16, 16)), fmt)


@pytest.mark.parametrize("fmt", ["EPS", "ICO", "PSD", "PPM", "TGA", "PCX", "SGI", "QOI", "JPEG2000", "DDS"])
def test_formats_pillow_knows_but_we_do_not_accept(fmt: str) -> None:
    data = other_format(fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # a real file of that format, which Pillow would open
    with pytest.raises(UnsupportedFormat) as info:
        decode_image(data, PRE, LIMITS)
    assert info.value.code == "unsupported_media_type"


@pytest.mark.parametrize(
    "data",
    [
        b"hello world",
        b"<html><body>not an image</body></html>",
        b"%PDF-1.7\n%\xe2\xe3",
        b"\x00" * 64,
        b"\x89PNG",
    ],
)
def test_non_images_are_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedFormat):
        decode_image(data, PRE, LIMITS)


def tiff_with_float_strip_offsets() -> bytes:
    """StripOffsets stored as a DOUBLE: Pillow once let a TypeError escape while seeking to it."""
    data = bytearray(encode(Image.fromarray(quadrants(60, 40)), "TIFF"))
    assert data[:4] == b"II*\x00"
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        if struct.unpack_from("<H", data, entry)[0] == 273:  # StripOffsets
            struct.pack_into("<H", data, entry + 2, 12)  # type DOUBLE
            return bytes(data)
    raise AssertionError("no StripOffsets tag")


def test_corrupt_tiff_tag_type_is_a_corrupt_image() -> None:
    with pytest.raises(CorruptImage):
        decode_image(tiff_with_float_strip_offsets(), PRE, LIMITS)


@functools.cache
def corpus() -> dict[str, bytes]:
    """Valid files in every accepted format and mode, built once; the malformed inputs derive from them."""
    rgb = Image.fromarray(smooth(60, 40))
    rgba = Image.fromarray(np.dstack([smooth(60, 40), np.tile(np.arange(60, dtype=np.uint8) * 4, (40, 1))]))
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    animated = {"save_all": True, "append_images": [rgb.rotate(90).convert("P")], "duration": 50}
    return {
        "jpeg": encode(rgb, "JPEG", exif=exif),
        "jpeg-progressive": encode(rgb, "JPEG", progressive=True),
        "jpeg-cmyk": encode(rgb.convert("CMYK"), "JPEG"),
        "jpeg-grey": encode(rgb.convert("L"), "JPEG"),
        "png": encode(rgb, "PNG", exif=exif),
        "png-rgba": encode(rgba, "PNG"),
        "png-16bit": encode(Image.fromarray(smooth(60, 40)[..., 0].astype(np.uint16) * 257), "PNG"),
        "png-palette": encode(rgb.convert("P"), "PNG", transparency=0),
        "webp": encode(rgb, "WEBP"),
        "webp-lossless-rgba": encode(rgba, "WEBP", lossless=True),
        "bmp": encode(rgb, "BMP"),
        "gif-animated": encode(rgb.convert("P"), "GIF", **animated),
        "tiff": encode(rgb, "TIFF", exif=exif),
        "tiff-lzw": encode(rgb, "TIFF", compression="tiff_lzw"),
        "tiff-deflate-cmyk": encode(rgb.convert("CMYK"), "TIFF", compression="tiff_adobe_deflate"),
        "tiff-16bit": encode(Image.fromarray(smooth(60, 40)[..., 1].astype(np.uint16) * 257), "TIFF"),
    }


def decodes_or_raises_typed_error(data: bytes) -> None:
    """The contract for any input: a (S, S, 3) uint8 image or a DecodeError; any other exception fails."""
    try:
        out = decode_image(data, PRE, LIMITS)
    except DecodeError:
        return
    assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("name", sorted(corpus()))
def test_corpus_files_are_valid(name: str) -> None:
    decode(corpus()[name])


@pytest.mark.parametrize("name", sorted(corpus()))
def test_truncations_at_many_offsets_raise_typed_errors(name: str) -> None:
    data = corpus()[name]
    offsets = sorted(
        {*range(0, min(len(data), 64)), *np.linspace(64, len(data) - 1, 64).astype(int).tolist()}
    )
    truncated_errors = set()
    for offset in offsets:
        try:
            decode_image(data[:offset], PRE, LIMITS)
        except DecodeError as exc:
            truncated_errors.add(type(exc))
    assert truncated_errors <= {EmptyImage, UnsupportedFormat, CorruptImage}
    # Cutting off the second half is always noticed: as corrupt pixel data, or as a missing header where
    # the format keeps it at the end (libtiff writes a compressed TIFF's directory last).
    with pytest.raises((CorruptImage, UnsupportedFormat)):
        decode_image(data[: len(data) // 2 + 16], PRE, LIMITS)


@st.composite
def malformed(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(["truncate", "flip-header", "flip-anywhere", "overwrite", "splice", "random"])
    )
    if kind == "random":
        return draw(st.binary(min_size=1, max_size=4096))
    data = bytearray(corpus()[draw(st.sampled_from(sorted(corpus())))])
    if kind == "truncate":
        return bytes(data[: draw(st.integers(1, len(data) - 1))])
    if kind == "splice":  # a run of bytes replaced by random ones, e.g. a chunk length or a whole tag
        start = draw(st.integers(0, len(data) - 1))
        run = draw(st.binary(min_size=1, max_size=32))
        return bytes(data[:start] + run + data[start + len(run) :])
    # Headers are where the surprising exceptions hide, so half the flips land in the first 256 bytes.
    limit = min(len(data), 256) if kind == "flip-header" else len(data)
    for position in draw(st.lists(st.integers(0, limit - 1), min_size=1, max_size=8)):
        if kind == "overwrite":
            data[position] = draw(st.integers(0, 255))
        else:
            data[position] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed())
def test_malformed_inputs_only_raise_decode_errors(data: bytes) -> None:
    decodes_or_raises_typed_error(data)
