"""The wild evaluation: digits as a new user photographs them, as encoded image files, in four groups.

    vitserve evaluate models/digits-vit --variant wild          # per-group accuracy
    python -m vitserve.models.wild --out build/wild             # write the images to look at

Every image is generated here from a fixed seed and encoded (JPEG, PNG), and `vitserve evaluate`
decodes it with the service's own `decode_image`, so a figure is what the server would answer.

- handwriting: held-out MNIST digits (never trained on) written in dark pen on light paper and
  photographed: paper tint and grain, vignetting and a shadow, a tilted camera, blur, JPEG;
- printed: digits in the ten evaluation font families (`vitserve.models.fonts.EVAL_FONTS`, none
  used in training) printed in dark ink on coloured paper, photographed the same way;
- small: a handwritten or printed digit 12-25 % of the frame's height, anywhere in a 4:3 or square
  photo 240-420 pixels high;
- lowres: a handwritten or printed digit scanned at 14-24 pixels, blurred, noisy, saved as PNG
  or low-quality JPEG, half of them enlarged 4x by the "scanner" (nearest neighbour).

This generator shares no code with the training synthesiser (`vitserve.models.synth`): other
fonts, other drawing code (perspective warps, radial light, Gaussian grain), other ranges.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from vitserve.models import fonts
from vitserve.models.mnist import Digits

GROUPS = ("handwriting", "printed", "small", "lowres")
PER_GROUP = 500
SEED = 20_16  # fixed, so every run draws the same photos; one seed per group is derived from it

PAPERS = {
    "yellow": (250, 236, 130),
    "pink": (248, 200, 214),
    "blue": (190, 214, 244),
    "green": (204, 234, 190),
    "orange": (250, 204, 150),
    "lilac": (222, 206, 242),
    "salmon": (246, 180, 160),
    "mint": (180, 236, 220),
}
INKS = {
    "black": (20, 20, 24),
    "blue-black": (24, 30, 80),
    "ballpoint": (30, 50, 150),
    "brown": (70, 40, 25),
    "green": (20, 70, 40),
}


@dataclass(frozen=True)
class WildImage:
    group: str
    label: int
    data: bytes  # the encoded file, as a user would upload it
    ext: str
    source: str  # "mnist:<held-out index>" or "font:<font file>"


def pen_strokes(digit: np.ndarray, height: int) -> Image.Image:
    """A 28x28 MNIST digit -> "L" ink of `height` px: smooth, solid pen strokes (not a blurry blob)."""
    big = Image.fromarray(digit).resize((height, height), Image.Resampling.BICUBIC)
    ink = np.asarray(big, np.float32) / 255.0
    # MNIST's anti-aliased edge enlarged is a soft ramp; a pen line has a firm edge.
    solid = np.clip((ink - 0.25) / 0.35, 0.0, 1.0)
    return Image.fromarray((solid * solid * (3 - 2 * solid) * 255).astype(np.uint8))


def printed_glyph(font: fonts.FontFile, digit: int, height: int) -> Image.Image:
    """A font's digit as "L" ink, `height` px tall."""
    ink = fonts.render_glyph(font, digit, size=160)
    h, w = ink.shape
    return Image.fromarray(ink).resize((max(1, round(w * height / h)), height), Image.Resampling.LANCZOS)


def paper_texture(size: tuple[int, int], colour: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float paper: its colour, a gentle blotchy tone and fine grain."""
    w, h = size
    low = rng.standard_normal((6, 6), dtype=np.float32)
    blotch = np.asarray(Image.fromarray(low).resize((w, h), Image.Resampling.BILINEAR))
    tone = 1.0 + 0.03 * blotch
    grain = rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(rng.uniform(1.5, 5.0))
    return np.asarray(colour, np.float32) * tone[..., None] + grain


def lighting(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(H, W, 1) multiplicative light: a radial fall-off and a soft shadow from one side."""
    w, h = size
    ys, xs = np.ogrid[0:h, 0:w]
    fx, fy = xs.astype(np.float32) / w, ys.astype(np.float32) / h  # (1, W), (H, 1)
    cx, cy = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
    light = 1.0 - np.float32(rng.uniform(0.0, 0.25)) * ((fx - cx) ** 2 + (fy - cy) ** 2)
    side = rng.integers(4)
    edge = [fx, 1 - fx, fy, 1 - fy][side]
    light = light * (1.0 - np.float32(rng.uniform(0.0, 0.18)) * np.clip(1.0 - 2.5 * edge, 0.0, 1.0))
    return light[..., None]


def compose(
    ink: Image.Image,
    frame: tuple[int, int],
    at: tuple[int, int],
    paper: tuple[int, ...],
    pen: tuple[int, ...],
    rng: np.random.Generator,
) -> Image.Image:
    """Ink placed at `at` on textured, unevenly lit paper of size `frame`."""
    amount = Image.new("L", frame, 0)
    amount.paste(ink, at)
    a = np.asarray(amount, np.float32)[..., None] / 255.0
    base = paper_texture(frame, paper, rng)
    rgb = base + (np.asarray(pen, np.float32) - base) * a * rng.uniform(0.8, 1.0)
    rgb *= lighting(frame, rng)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def camera(
    image: Image.Image, rng: np.random.Generator, tilt: float, blur: tuple[float, float]
) -> Image.Image:
    """A hand-held phone: slight perspective and rotation, focus blur, sensor noise."""
    w, h = image.size
    # Perspective: each corner moved inwards by up to `tilt` of the frame, then all four turned
    # about the centre by up to 8 degrees; one warp, filled with the paper's colour at the corner.
    dx, dy = tilt * w, tilt * h
    corners = np.asarray(
        [
            (rng.uniform(0, dx), rng.uniform(0, dy)),
            (w - rng.uniform(0, dx), rng.uniform(0, dy)),
            (w - rng.uniform(0, dx), h - rng.uniform(0, dy)),
            (rng.uniform(0, dx), h - rng.uniform(0, dy)),
        ]
    )
    angle = np.radians(rng.uniform(-8, 8))
    turn = np.asarray([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.asarray([w / 2, h / 2])
    corners = (corners - centre) @ turn.T + centre
    coeffs = perspective_coefficients([(0, 0), (w, 0), (w, h), (0, h)], [tuple(c) for c in corners])
    fill = tuple(int(v) for v in np.asarray(image)[0:4, 0:4].reshape(-1, 3).mean(axis=0))
    image = image.transform(
        (w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR, fillcolor=fill
    )
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*blur) * max(w, h) / 300))
    sigma = np.float32(rng.uniform(1, 6))
    noisy = np.asarray(image, np.float32) + rng.standard_normal((h, w, 3), dtype=np.float32) * sigma
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def perspective_coefficients(
    target: list[tuple[float, float]], source: list[tuple[float, float]]
) -> tuple[float, ...]:
    """The 8 coefficients Pillow's PERSPECTIVE transform wants to map `target` corners to `source`."""
    rows = []
    for (x, y), (u, v) in zip(target, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    a = np.asarray(rows, np.float64)
    b = np.asarray(source, np.float64).reshape(8)
    return tuple(np.linalg.solve(a, b))


def encode(image: Image.Image, fmt: str, rng: np.random.Generator, quality: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, format="JPEG", quality=int(rng.integers(*quality)))
    else:
        image.save(buffer, format=fmt)
    return buffer.getvalue()


def white_paper(rng: np.random.Generator) -> tuple[int, ...]:
    """White to off-white paper, a little warm or cool."""
    base = rng.uniform(225, 252)
    return tuple(int(np.clip(base + rng.uniform(-8, 8), 0, 255)) for _ in range(3))


def handwriting(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    frame_h = int(rng.integers(160, 361))
    frame = (int(frame_h * rng.choice([0.75, 1.0, 1.33])), frame_h)
    height = int(frame_h * rng.uniform(0.45, 0.8))
    ink = pen_strokes(digit, height)
    at = centred_with_jitter(ink.size, frame, rng, 0.1)
    pen = INKS[str(rng.choice(["black", "blue-black", "ballpoint"]))]
    photo = compose(ink, frame, at, white_paper(rng), pen, rng)
    return camera(photo, rng, tilt=0.06, blur=(0.3, 1.5))


def printed(font: fonts.FontFile, digit: int, rng: np.random.Generator) -> Image.Image:
    frame_h = int(rng.integers(160, 361))
    frame = (int(frame_h * rng.choice([0.75, 1.0, 1.33])), frame_h)
    ink = printed_glyph(font, digit, int(frame_h * rng.uniform(0.4, 0.75)))
    at = centred_with_jitter(ink.size, frame, rng, 0.1)
    paper = PAPERS[str(rng.choice(list(PAPERS)))]
    pen = INKS[str(rng.choice(["black", "blue-black", "brown", "green"]))]
    photo = compose(ink, frame, at, paper, pen, rng)
    return camera(photo, rng, tilt=0.06, blur=(0.3, 1.5))


def centred_with_jitter(
    size: tuple[int, int], frame: tuple[int, int], rng: np.random.Generator, jitter: float
) -> tuple[int, int]:
    x = (frame[0] - size[0]) / 2 + rng.uniform(-jitter, jitter) * frame[0]
    y = (frame[1] - size[1]) / 2 + rng.uniform(-jitter, jitter) * frame[1]
    return int(np.clip(x, 0, frame[0] - size[0])), int(np.clip(y, 0, frame[1] - size[1]))


def small(ink: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A digit 12-25 % of the frame's height, anywhere in it."""
    frame_h = int(rng.integers(240, 421))
    frame = (int(frame_h * rng.choice([1.0, 1.33])), frame_h)
    height = int(frame_h * rng.uniform(0.12, 0.25))
    ink = ink.resize((max(1, round(ink.size[0] * height / ink.size[1])), height), Image.Resampling.LANCZOS)
    at = (int(rng.integers(0, frame[0] - ink.size[0])), int(rng.integers(0, frame[1] - ink.size[1])))
    paper = white_paper(rng) if rng.random() < 0.5 else PAPERS[str(rng.choice(list(PAPERS)))]
    pen = INKS[str(rng.choice(list(INKS)))]
    photo = compose(ink, frame, at, paper, pen, rng)
    return camera(photo, rng, tilt=0.04, blur=(0.2, 0.8))


def lowres(ink: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, bool]:
    """A scan at 14-24 px, blurred and noisy; True when the scanner enlarged it 4x afterwards."""
    side = int(rng.integers(14, 25))
    height = max(6, round(side * rng.uniform(0.6, 0.85)))
    ink = ink.resize((max(1, round(ink.size[0] * height / ink.size[1])), height), Image.Resampling.BOX)
    frame = (side, side)
    at = ((side - ink.size[0]) // 2, (side - ink.size[1]) // 2)
    gray = int(rng.uniform(195, 245))
    scan = compose(ink, frame, at, (gray, gray, gray), INKS["black"], rng)
    scan = scan.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.0)))
    noise = rng.standard_normal((side, side, 3), dtype=np.float32) * np.float32(rng.uniform(2, 8))
    noisy = np.asarray(scan, np.float32) + noise
    scan = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).convert("L")
    enlarged = bool(rng.random() < 0.5)
    if enlarged:
        scan = scan.resize((side * 4, side * 4), Image.Resampling.NEAREST)
    return scan, enlarged


def wild_set(
    heldout: Digits, per_group: int = PER_GROUP, groups: tuple[str, ...] = GROUPS
) -> list[WildImage]:
    """The whole evaluation set, the same bytes on every call (per library versions)."""
    images: list[WildImage] = []
    for number, group in enumerate(GROUPS):
        if group not in groups:
            continue
        rng = np.random.default_rng([SEED, number])
        order = rng.permutation(len(heldout))
        for i in range(per_group):
            label = i % 10
            images.append(GENERATORS[group](heldout, order, i, label, rng))
    return images


def _pick_mnist(heldout: Digits, order: np.ndarray, i: int, label: int) -> int:
    """The i-th held-out digit of `label` in this group's shuffled order."""
    of_label = order[heldout.labels[order] == label]
    return int(of_label[(i // 10) % len(of_label)])


def _pick_font(i: int) -> fonts.FontFile:
    return fonts.EVAL_FONTS[(i // 10) % len(fonts.EVAL_FONTS)]


def _handwriting(
    heldout: Digits, order: np.ndarray, i: int, label: int, rng: np.random.Generator
) -> WildImage:
    index = _pick_mnist(heldout, order, i, label)
    photo = handwriting(heldout.images[index], rng)
    return WildImage("handwriting", label, encode(photo, "JPEG", rng, (60, 93)), "jpg", f"mnist:{index}")


def _printed(heldout: Digits, order: np.ndarray, i: int, label: int, rng: np.random.Generator) -> WildImage:
    font = _pick_font(i)
    photo = printed(font, label, rng)
    return WildImage("printed", label, encode(photo, "JPEG", rng, (60, 93)), "jpg", f"font:{font.name}")


def _ink_for(
    heldout: Digits, order: np.ndarray, i: int, label: int, rng: np.random.Generator
) -> tuple[Image.Image, str]:
    """In each run of twenty images, ten held-out handwritten digits, then ten printed ones."""
    if i % 20 < 10:
        index = _pick_mnist(heldout, order, i, label)
        return pen_strokes(heldout.images[index], 112), f"mnist:{index}"
    font = _pick_font(i)
    return printed_glyph(font, label, 112), f"font:{font.name}"


def _small(heldout: Digits, order: np.ndarray, i: int, label: int, rng: np.random.Generator) -> WildImage:
    ink, source = _ink_for(heldout, order, i, label, rng)
    return WildImage("small", label, encode(small(ink, rng), "JPEG", rng, (70, 93)), "jpg", source)


def _lowres(heldout: Digits, order: np.ndarray, i: int, label: int, rng: np.random.Generator) -> WildImage:
    ink, source = _ink_for(heldout, order, i, label, rng)
    scan, _ = lowres(ink, rng)
    fmt = "PNG" if rng.random() < 0.5 else "JPEG"
    return WildImage(
        "lowres", label, encode(scan, fmt, rng, (50, 86)), fmt.lower().replace("jpeg", "jpg"), source
    )


GENERATORS: dict[str, Callable[..., WildImage]] = {
    "handwriting": _handwriting,
    "printed": _printed,
    "small": _small,
    "lowres": _lowres,
}


def write_folder(images: list[WildImage], out: Path) -> None:
    """Each image as `<group>/<n>_<label>.<ext>`, plus labels.json (file -> label, group, source)."""
    index = {}
    for n, image in enumerate(images):
        name = f"{image.group}/{n:04d}_{image.label}.{image.ext}"
        (out / image.group).mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(image.data)
        index[name] = {"label": str(image.label), "group": image.group, "source": image.source}
    (out / "labels.json").write_text(json.dumps(index, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    from vitserve.models.evaluate import DEFAULT_HELDOUT

    parser = argparse.ArgumentParser(
        prog="python -m vitserve.models.wild", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-group", type=int, default=PER_GROUP)
    args = parser.parse_args(argv)
    write_folder(wild_set(Digits.load(DEFAULT_HELDOUT), args.per_group), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
