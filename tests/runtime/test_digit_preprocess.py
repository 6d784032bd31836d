"""The digit normalisation that digit artifacts ask for: finds, flips, fits and centres one digit."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFilter

from vitserve.runtime.artifact import DigitNormalisation, Preprocessing
from vitserve.runtime.decode import DecodeLimits, decode_image
from vitserve.runtime.digit_preprocess import noise_floor, normalise_digit

HELDOUT = Path(__file__).resolve().parents[2] / "models" / "digits-vit" / "heldout.npz"
PRE = Preprocessing(image_size=28, digit_normalisation=DigitNormalisation(box=20))


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    with np.load(HELDOUT) as data:
        return data["images"][:40], data["labels"][:40]


def on_paper(
    digit: np.ndarray, size: tuple[int, int], at: tuple[int, int], height: int, ink: tuple, paper: tuple
) -> Image.Image:
    """A white-on-black 28x28 digit drawn `height` px tall in `ink` on `paper`, top-left at `at`."""
    amount = np.zeros((size[1], size[0]), np.float32)
    big = Image.fromarray(digit).resize((height, height), Image.Resampling.BICUBIC)
    amount[at[1] : at[1] + height, at[0] : at[0] + height] = np.asarray(big, np.float32) / 255.0
    paper_rgb, ink_rgb = np.asarray(paper, np.float32), np.asarray(ink, np.float32)
    rgb = paper_rgb + (ink_rgb - paper_rgb) * amount[..., None]
    return Image.fromarray(rgb.round().astype(np.uint8))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two digits after a 2-px blur: a one-pixel shift of a thin stroke
    (resampling moves edges that much) should not count as a different digit."""

    def blurred(x: np.ndarray) -> np.ndarray:
        image = Image.fromarray(np.ascontiguousarray(x[..., 0]))
        return np.asarray(image.filter(ImageFilter.GaussianBlur(2)), float).ravel()

    return float(np.corrcoef(blurred(a), blurred(b))[0, 1])


def centre_of_mass(gray: np.ndarray) -> tuple[float, float]:
    ys, xs = np.mgrid[0 : gray.shape[0], 0 : gray.shape[1]]
    mass = gray.sum()
    return float((ys * gray).sum() / mass), float((xs * gray).sum() / mass)


def test_an_mnist_digit_comes_back_nearly_as_it_was(digits: tuple[np.ndarray, np.ndarray]) -> None:
    # MNIST digits are already white on black, fitted in 20x20 and centred by mass: the
    # normalisation must keep them recognisably the same image (it resamples, so not bit-exact).
    for image in digits[0]:
        out = normalise_digit(Image.fromarray(image).convert("RGB"), PRE)
        assert out.shape == (28, 28, 3) and out.dtype == np.uint8
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
        assert correlation(out, np.repeat(image[..., None], 3, -1)) > 0.8


def test_dark_ink_on_coloured_paper_matches_the_same_digit_white_on_black(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    digit = digits[0][3]
    reference = normalise_digit(Image.fromarray(digit).convert("RGB"), PRE)
    photo = on_paper(digit, (280, 280), (0, 0), 280, ink=(20, 30, 120), paper=(250, 235, 130))
    out = normalise_digit(photo, PRE)
    assert out[0, 0, 0] == 0 and out.max() == 255  # white strokes on black, full contrast
    assert correlation(out, reference) > 0.9


def test_a_small_digit_off_centre_in_a_large_photo_is_found_and_centred(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    digit = digits[0][5]
    reference = normalise_digit(Image.fromarray(digit).convert("RGB"), PRE)
    photo = on_paper(digit, (640, 480), (470, 40), 90, ink=(10, 10, 10), paper=(235, 235, 230))
    out = normalise_digit(photo, PRE)
    assert correlation(out, reference) > 0.85
    cy, cx = centre_of_mass(out[..., 0].astype(float))
    assert abs(cy - 13.5) < 1.0 and abs(cx - 13.5) < 1.0
    # Fitted in the 20x20 box: nothing lit outside the middle 24x24.
    assert max(lit_span(out)) <= 21


def test_a_speck_far_from_the_digit_is_left_out(digits: tuple[np.ndarray, np.ndarray]) -> None:
    digit = digits[0][7]
    clean = on_paper(digit, (400, 300), (40, 60), 150, ink=(0, 0, 0), paper=(240, 240, 240))
    specked = np.asarray(clean).copy()
    specked[250:262, 330:342] = 0  # a dark fleck well away from the digit
    out = normalise_digit(Image.fromarray(specked), PRE)
    assert correlation(out, normalise_digit(clean, PRE)) > 0.97


def lit_span(out: np.ndarray) -> tuple[int, int]:
    """(rows, columns) spanned by the lit pixels of a normalised digit."""
    lit = out[..., 0] > 64
    rows, cols = np.flatnonzero(lit.any(axis=1)), np.flatnonzero(lit.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def test_a_zero_with_faint_arcs_in_a_tiny_scan_is_found_whole() -> None:
    # A 20-px scan of a "0" whose sides are dark and whose one-pixel top and bottom arcs print at
    # half the sides' contrast, less once blurred: the half-way level sees two separate strokes, too
    # far apart to join; the box grows over the faint arcs to the whole digit, a ring, not one bar.
    scan = np.full((20, 20), 225, np.uint8)
    scan[3:17, 5:7] = scan[3:17, 13:15] = 40  # the sides
    scan[3, 7:13] = scan[16, 7:13] = 130  # the faint arcs
    out = normalise_digit(Image.fromarray(scan).convert("RGB"), PRE)
    height, width = lit_span(out)
    assert height >= 18 and width >= 12
    # Both sides lit, the middle dark: the "0" came out as a ring.
    middle_row = out[14, :, 0]
    lit = np.flatnonzero(middle_row > 128)
    assert lit.size and lit[-1] - lit[0] >= 8 and middle_row[13:15].max() < 64


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(1, 60), st.integers(0, 2**32 - 1), st.integers(1, 255))
def test_the_noise_floor_is_the_median_plus_three_median_deviations(
    height: int, width: int, seed: int, spread: int
) -> None:
    # Ranked from 256-bin histograms; must equal the plain definition (upper median for even counts).
    ink = np.random.default_rng(seed).integers(0, spread + 1, (height, width)).astype(np.uint8)
    flat = np.sort(ink.ravel().astype(float))
    median = flat[flat.size // 2]
    deviation = np.sort(np.abs(flat - median))[flat.size // 2]
    assert noise_floor(ink) == median + 3.0 * deviation


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (120, 200, 40)])
def test_a_blank_image_gives_a_black_square(colour: tuple[int, int, int]) -> None:
    out = normalise_digit(Image.new("RGB", (50, 30), colour), PRE)
    assert out.shape == (28, 28, 3) and int(out.max()) == 0


def test_decode_image_normalises_only_when_the_model_asks(digits: tuple[np.ndarray, np.ndarray]) -> None:
    # A wide photo with the digit at its right end: a plain centre crop never sees the digit.
    photo = on_paper(digits[0][1], (300, 100), (220, 10), 80, ink=(0, 0, 0), paper=(255, 255, 255))
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    data = buffer.getvalue()
    plain = decode_image(data, Preprocessing(image_size=28), DecodeLimits())
    normalised = decode_image(data, PRE, DecodeLimits())
    assert plain.min() > 200  # white paper only
    np.testing.assert_array_equal(normalised, normalise_digit(photo, PRE))
    assert normalised.max() == 255 and normalised[0, 0, 0] == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(1, 90),
    height=st.integers(1, 90),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_image_gives_a_square_uint8_digit(width: int, height: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if rng.random() < 0.5:  # mostly flat, with a few strong pixels
        pixels = np.where(rng.random((height, width, 1)) < 0.05, pixels, np.uint8(rng.integers(0, 256)))
    out = normalise_digit(Image.fromarray(pixels), PRE)
    assert out.shape == (28, 28, 3) and out.dtype == np.uint8


def test_a_model_without_digit_normalisation_cannot_be_normalised() -> None:
    with pytest.raises(ValueError, match="does not ask"):
        normalise_digit(Image.new("RGB", (28, 28)), Preprocessing(image_size=28))
