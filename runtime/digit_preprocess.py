"""MNIST's own preparation, applied to a user's photo: find the digit, white on black, fit, centre.

MNIST's digits were size-normalised to fit a 20x20 box (aspect ratio kept, anti-aliased) and placed
in a 28x28 image with their centre of mass at the centre. A model trained on them reads a photo far
better after the same preparation than after a plain resize: a small digit off-centre in a large
photo, dark ink on light paper, coloured paper or a thin printed font all arrive looking like MNIST.

Steps, on a decoded RGB image of any size:
1. Gray once. A thumbnail to search in: longer side at most `LOCATE_SIDE`, and a scan tinier
   than `MIN_LOCATE_SIDE` enlarged to it. The paper's level is the median of its outer ring;
   "ink" is each pixel's distance from that level (a 256-entry table), whatever the polarity.
2. The digit's box, by hysteresis: ink (3x3 box-blurred) above half-way between the paper's noise
   floor and the strongest ink seeds it, as the run of rows and columns holding most of that
   ink (specks, dust and a second mark farther away than a small gap are left out); then the
   box grows once over fainter ink (`WEAK_LEVEL`) within that gap of it, so a thin or blurred
   stroke the half-way level cut off (the top of a "0", the tail of a "9") comes back.
3. That box, cut from the full gray image, resized into `box` x `box` keeping its aspect ratio;
   ink measured again there and stretched so the strokes reach 255 and the paper is 0 (again
   by table: every step depends on a pixel's gray level alone).
4. Pasted into an image_size square so that its centre of mass is at the centre; the gray digit
   repeated to RGB (the model's input convention).

Only numpy and Pillow: this runs in the service's request path, which carries no torch.
"""

from __future__ import annotations

import bisect

import numpy as np
from PIL import Image, ImageFilter

from vitserve.runtime.artifact import Preprocessing

# The thumbnail the digit is searched in. At 96 px a digit 1/8 of a photo's height spans ~12 px,
# enough for a box that keeps its thin strokes (at 64 px, 3.0.0 cut them short); the box itself
# is then cut from the full-resolution image.
LOCATE_SIDE = 96
# A smaller image is searched at its own size, but a scan tinier than MNIST's own 28 px is
# enlarged to it first, so that the blur and the gap below span a fraction of a stroke.
MIN_LOCATE_SIDE = 28
# JPEG decode size for digit models: libjpeg may decode at 1/2-1/8 scale (draft), but no smaller
# than this, so a digit an eighth of a 640x480 photo's height still spans ~15 pixels when it is cut out.
DIGIT_DECODE_SIDE = 64
# Ink must reach this fraction of the way from the paper's noise floor to the strongest ink.
INK_LEVEL = 0.5
# Ink weaker than this (gray levels) is no digit at all: a blank or uniform image.
MIN_CONTRAST = 8.0
# The box grows over ink above this fraction of the same way (hysteresis's low threshold).
WEAK_LEVEL = 0.25
# Runs of ink closer than this fraction of the thumbnail's longer side belong to one digit.
GAP_FRACTION = 0.06
# In the fitted digit, the strokes are stretched so this percentile of the ink becomes 255.
STROKE_PERCENTILE = 97.0


def normalise_digit(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """An RGB image of any size -> uint8 (image_size, image_size, 3): one digit, MNIST-style."""
    spec = pre.digit_normalisation
    if spec is None:
        raise ValueError("this model's preprocessing does not ask for digit normalisation")
    # Gray first: every step below reads luminance only, and one channel resizes 3x faster.
    gray_image = image.convert("L")
    width, height = image.size
    longer = max(width, height)
    scale = min(LOCATE_SIDE, max(longer, MIN_LOCATE_SIDE)) / longer
    thumb = gray_image
    if scale != 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        thumb = gray_image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0 if scale < 1 else None)
    # A 3x3 box blur first, so that one noisy pixel cannot outshine a stroke.
    gray = np.asarray(thumb.filter(ImageFilter.BoxBlur(1)))  # uint8 (h, w)
    paper = paper_level(gray)
    # Ink by table: each gray level's distance from the paper's (whole levels, 0-255).
    ink_of_level = np.abs(_LEVELS - int(paper)).astype(np.uint8)  # (256,)
    ink = ink_of_level[gray]
    floor = noise_floor(ink)
    left, top, right, bottom = digit_box(ink, floor)
    # Thumbnail box -> full-resolution box. No margin: the grown box already holds the pixel
    # the 3x3 blur smeared each stroke's edge into (3.0.0 added half a pixel to its half-way box).
    box = (
        max(0.0, left / scale),
        max(0.0, top / scale),
        min(float(width), right / scale),
        min(float(height), bottom / scale),
    )
    fitted = fit_in_box(gray_image, box, spec.box, ink_of_level, floor)
    canvas = centre_by_mass(fitted, pre.image_size)
    return np.repeat(canvas[..., None], 3, axis=-1)


# Every array this module ranks holds whole gray levels or distances between them (uint8), so a
# 256-bin histogram finds the same element as np.partition, several times faster.
_LEVELS = np.arange(256)


def _kth_in_histogram(counts: np.ndarray, k: int) -> float:
    """The k-th smallest (0-based) level of a 256-bin histogram."""
    return float(np.searchsorted(np.cumsum(counts), k, side="right"))


def _kth_smallest(values: np.ndarray, k: int) -> float:
    """The k-th smallest (0-based) of uint8 values, as np.partition would find it."""
    return _kth_in_histogram(np.bincount(values.ravel(), minlength=256), k)


def _median(values: np.ndarray) -> float:
    return _kth_smallest(values, values.size // 2)


def paper_level(gray: np.ndarray) -> float:
    """Median of the outer ring of pixels: a digit rarely touches the edges, the paper always does."""
    ring = np.concatenate((gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]))
    return _median(ring)


def noise_floor(ink: np.ndarray) -> float:
    """How far plain paper strays from its own level: the median plus three median deviations."""
    counts = np.bincount(ink.ravel(), minlength=256)
    median = _kth_in_histogram(counts, ink.size // 2)
    # The deviations' histogram from the levels' one: |level - median| weighted by each count.
    deviations = np.bincount(np.abs(_LEVELS - int(median)), weights=counts, minlength=256)
    return median + 3.0 * _kth_in_histogram(deviations, ink.size // 2)


def main_run(profile: np.ndarray, gap: int) -> tuple[int, int]:
    """[start, end) of the run of nonzero entries (gaps up to `gap` bridged) with the most mass."""
    nonzero = np.flatnonzero(profile)
    if nonzero.size == 0:
        return 0, len(profile)
    # A new run starts wherever the distance to the previous nonzero entry exceeds the gap.
    breaks = np.flatnonzero(np.diff(nonzero) > gap + 1)
    if breaks.size == 0:
        return int(nonzero[0]), int(nonzero[-1]) + 1
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [nonzero.size - 1]))
    cumulative = np.concatenate(([0.0], np.cumsum(profile[nonzero])))
    best = int(np.argmax(cumulative[ends + 1] - cumulative[starts]))
    return int(nonzero[starts[best]]), int(nonzero[ends[best]]) + 1


def grow_run(profile: np.ndarray, start: int, end: int, gap: int) -> tuple[int, int]:
    """[start, end) widened over nonzero entries of `profile` each within `gap` of the run so far."""
    # Plain ints: a profile is at most LOCATE_SIDE long, and numpy scalars are slow to loop over.
    nonzero = np.flatnonzero(profile).tolist()
    split = bisect.bisect_left(nonzero, start)
    for i in reversed(nonzero[:split]):  # nearest first
        if start - i > gap + 1:
            break
        start = i
    for i in nonzero[bisect.bisect_left(nonzero, end, lo=split) :]:
        if i - (end - 1) > gap + 1:
            break
        end = i + 1
    return start, end


def digit_box(ink: np.ndarray, floor: float) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the digit in the ink map; the whole map when there is none."""
    h, w = ink.shape
    peak = float(ink.max())
    if peak - floor < MIN_CONTRAST:
        return 0, 0, w, h
    strong = ink * (ink > floor + INK_LEVEL * (peak - floor))
    gap = max(1, round(GAP_FRACTION * max(h, w)))
    # Columns, then rows within them, then columns again within those rows: a speck that shares
    # the digit's columns but not its rows is dropped on the second pass.
    left, right = main_run(strong.sum(axis=0), gap)
    top, bottom = main_run(strong[:, left:right].sum(axis=1), gap)
    left, right = main_run(strong[top:bottom].sum(axis=0), gap)
    # Hysteresis: widen the box over fainter ink next to it, columns first (looking a gap beyond
    # its rows, for a stroke that leaves it diagonally), then rows within those columns.
    weak = ink > floor + WEAK_LEVEL * (peak - floor)
    left, right = grow_run(np.asarray(weak[max(0, top - gap) : bottom + gap].any(axis=0)), left, right, gap)
    top, bottom = grow_run(
        np.asarray(weak[:, max(0, left - gap) : right + gap].any(axis=1)), top, bottom, gap
    )
    return left, top, right, bottom


def fit_in_box(
    image: Image.Image,
    box: tuple[float, float, float, float],
    side: int,
    ink_of_level: np.ndarray,
    floor: float,
) -> np.ndarray:
    """Cut `box` from the gray image into at most side x side (aspect kept); float32 ink in [0, 255]."""
    box_w, box_h = box[2] - box[0], box[3] - box[1]
    longer = max(box_w, box_h, 1e-6)
    size = (max(1, round(side * box_w / longer)), max(1, round(side * box_h / longer)))
    cut = np.asarray(image.resize(size, Image.Resampling.BILINEAR, box=box))  # uint8 gray
    # Everything below depends on a pixel's gray level alone: rank and stretch the 256 levels
    # (weighted by how often each occurs), then look every pixel up.
    levels = np.bincount(cut.ravel(), minlength=256)
    ink_counts = np.bincount(ink_of_level, weights=levels, minlength=256)
    rank = min(cut.size - 1, int(cut.size * STROKE_PERCENTILE / 100))
    top = max(_kth_in_histogram(ink_counts, rank), floor + MIN_CONTRAST)
    stretch = np.clip((ink_of_level.astype(np.float32) - floor) * (255.0 / (top - floor)), 0.0, 255.0)
    return stretch[cut]


def centre_by_mass(digit: np.ndarray, side: int) -> np.ndarray:
    """Paste (h, w) ink into a side x side black square, its centre of mass on the square's centre."""
    h, w = digit.shape
    rows, cols = digit.sum(axis=1), digit.sum(axis=0)
    mass = float(rows.sum())
    if mass > 0:
        cy = float(rows @ np.arange(h)) / mass
        cx = float(cols @ np.arange(w)) / mass
    else:
        cy, cx = (h - 1) / 2, (w - 1) / 2
    centre = (side - 1) / 2
    oy, ox = round(centre - cy), round(centre - cx)
    canvas = np.zeros((side, side), dtype=np.uint8)
    # Clip where the shift pushes part of the digit past the square's edge (as MNIST's own did).
    y0, x0 = max(0, oy), max(0, ox)
    y1, x1 = min(side, oy + h), min(side, ox + w)
    if y1 > y0 and x1 > x0:
        canvas[y0:y1, x0:x1] = digit[y0 - oy : y1 - oy, x0 - ox : x1 - ox] + 0.5  # round on the cast
    return canvas
