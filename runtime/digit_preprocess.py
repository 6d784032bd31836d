"""MNIST's own preparation, applied to a user's photo: find the digit, white on black, fit, centre.

MNIST's digits were size-normalised to fit a 20x20 box (aspect ratio kept, anti-aliased) and placed
in a 28x28 image with their centre of mass at the centre. A model trained on them reads a photo far
better after the same preparation than after a plain resize: a small digit off-centre in a large
photo, dark ink on light paper, coloured paper or a thin printed font all arrive looking like MNIST.

Steps, on a decoded RGB image of any size:
1. A gray thumbnail (longer side `LOCATE_SIDE`) to search in. The paper's level is the median of
   its outer ring; "ink" is each pixel's distance from that level, whatever the polarity.
2. The digit's box: ink (3x3 box-blurred) above half-way between the paper's noise floor and the
   strongest ink, then the run of rows and columns holding most of that ink (specks, dust and
   a second mark farther away than a small gap are left out).
3. That box, cut from the full image, resized into `box` x `box` keeping its aspect ratio; ink
   measured again there and stretched so the strokes reach 255 and the paper is 0.
4. Pasted into an image_size square so that its centre of mass is at the centre; the gray digit
   repeated to RGB (the model's input convention).

Only numpy and Pillow: this runs in the service's request path, which carries no torch.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from vitserve.runtime.artifact import Preprocessing

# The thumbnail the digit is searched in. 64 px still gives a digit 1/8 of a photo's height ~6 px,
# enough for a box; the box itself is then cut from the full-resolution image.
LOCATE_SIDE = 64
# JPEG decode size for digit models: libjpeg may decode at 1/2-1/8 scale (draft), but no smaller
# than this, so a digit an eighth of a 640x480 photo's height still spans ~15 pixels when it is cut out.
DIGIT_DECODE_SIDE = 64
# Ink must reach this fraction of the way from the paper's noise floor to the strongest ink.
INK_LEVEL = 0.5
# Ink weaker than this (gray levels) is no digit at all: a blank or uniform image.
MIN_CONTRAST = 8.0
# Runs of ink closer than this fraction of the thumbnail's longer side belong to one digit.
GAP_FRACTION = 0.06
# In the fitted digit, the strokes are stretched so this percentile of the ink becomes 255.
STROKE_PERCENTILE = 97.0


def normalise_digit(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """An RGB image of any size -> uint8 (image_size, image_size, 3): one digit, MNIST-style."""
    spec = pre.digit_normalisation
    if spec is None:
        raise ValueError("this model's preprocessing does not ask for digit normalisation")
    width, height = image.size
    scale = min(1.0, LOCATE_SIDE / max(width, height))
    thumb = image
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        thumb = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    # A 3x3 box blur first, so that one noisy pixel cannot outshine a stroke.
    gray = np.asarray(thumb.convert("L").filter(ImageFilter.BoxBlur(1)), dtype=np.float32)  # (h, w)
    paper = paper_level(gray)
    ink = np.abs(gray - paper)
    floor = noise_floor(ink)
    left, top, right, bottom = digit_box(ink, floor)
    # Thumbnail box -> full-resolution box, with half a thumbnail pixel for the anti-aliased edge.
    margin = 0.5
    box = (
        max(0.0, (left - margin) / scale),
        max(0.0, (top - margin) / scale),
        min(float(width), (right + margin) / scale),
        min(float(height), (bottom + margin) / scale),
    )
    fitted = fit_in_box(image, box, spec.box, paper, floor)
    canvas = centre_by_mass(fitted, pre.image_size)
    return np.repeat(canvas[..., None], 3, axis=-1)


def _kth_smallest(values: np.ndarray, k: int) -> float:
    """The k-th smallest (0-based) of whole numbers in [0, 255], as np.partition would find it."""
    # Every array this module ranks holds whole gray levels or distances between them, so a
    # 256-bin histogram finds the same element several times faster than a partition.
    counts = np.bincount(values.ravel().astype(np.intp), minlength=256)
    return float(np.searchsorted(np.cumsum(counts), k, side="right"))


def _median(values: np.ndarray) -> float:
    return _kth_smallest(values, values.size // 2)


def paper_level(gray: np.ndarray) -> float:
    """Median of the outer ring of pixels: a digit rarely touches the edges, the paper always does."""
    ring = np.concatenate((gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]))
    return _median(ring)


def noise_floor(ink: np.ndarray) -> float:
    """How far plain paper strays from its own level: the median plus three median deviations."""
    flat = ink.ravel()
    median = _median(flat)
    return median + 3.0 * _median(np.abs(flat - median))


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
    return left, top, right, bottom


def fit_in_box(
    image: Image.Image, box: tuple[float, float, float, float], side: int, paper: float, floor: float
) -> np.ndarray:
    """Cut `box` from the image into at most side x side (aspect kept); float32 ink in [0, 255]."""
    box_w, box_h = box[2] - box[0], box[3] - box[1]
    longer = max(box_w, box_h, 1e-6)
    size = (max(1, round(side * box_w / longer)), max(1, round(side * box_h / longer)))
    cut = image.resize(size, Image.Resampling.BILINEAR, box=box).convert("L")
    ink = np.abs(np.asarray(cut, dtype=np.float32) - paper)
    rank = min(ink.size - 1, int(ink.size * STROKE_PERCENTILE / 100))
    top = max(_kth_smallest(ink, rank), floor + MIN_CONTRAST)
    return np.clip((ink - floor) * (255.0 / (top - floor)), 0.0, 255.0)


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
