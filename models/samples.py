"""Writes a checkpoint folder's `samples/`: one held-out digit per class, saved in real image formats.

The samples show the formats and polarities the service accepts (PNG, JPEG, WebP, BMP; light ink on
dark and dark ink on light; colour; larger than 28x28; a small digit off-centre in a larger photo);
they are not an accuracy measure. For each class we take the first held-out digit that the model,
reading the *written file* back the way the service does (`decode_image` with the model's
preprocessing), classifies correctly with probability >= `MIN_PROB`.

    python -m vitserve.models.samples models/digits-vit
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vitserve.models.augment import pixels_to_input
from vitserve.models.checkpoint import load_checkpoint
from vitserve.models.evaluate import HELDOUT_FILE
from vitserve.models.mnist import Digits
from vitserve.runtime.artifact import Preprocessing
from vitserve.runtime.decode import DecodeLimits, decode_image

SAMPLES_DIR = "samples"
LABELS_FILE = "labels.json"
# Label smoothing 0.1 keeps the top probability near 0.9-0.93 even on easy digits, so 0.9 is high.
MIN_PROB = 0.9


class SampleError(RuntimeError):
    """No held-out digit of some class qualifies as a sample."""


@dataclass(frozen=True)
class Style:
    """How one class's sample is drawn and written."""

    ext: str
    size: int
    ink: tuple[int, int, int]
    paper: tuple[int, int, int]
    # Written as a one-channel file (as scanners do) when ink and paper are both gray.
    grayscale: bool = False
    # A larger photo (width, height) with the digit, `size` px, near its top-right corner.
    frame: tuple[int, int] | None = None


WHITE_ON_BLACK = Style("png", 28, (255, 255, 255), (0, 0, 0), grayscale=True)
PAPER_JPEG = Style("jpg", 280, (20, 20, 20), (245, 245, 240))
BLUE_ON_CREAM_WEBP = Style("webp", 112, (25, 40, 150), (250, 240, 215))
PAPER_BMP = Style("bmp", 56, (10, 10, 10), (235, 235, 235), grayscale=True)
# Since 3.0.0 the service finds the digit for the model: a small one off-centre in a photo, on coloured paper.
SMALL_IN_PHOTO_JPEG = Style("jpg", 64, (30, 30, 90), (250, 236, 130), frame=(320, 240))
# Class -> style: every format and both polarities appear among the ten files.
STYLES: dict[int, Style] = {
    0: WHITE_ON_BLACK,
    1: WHITE_ON_BLACK,
    2: WHITE_ON_BLACK,
    3: WHITE_ON_BLACK,
    4: PAPER_JPEG,
    5: PAPER_JPEG,
    6: SMALL_IN_PHOTO_JPEG,
    7: WHITE_ON_BLACK,
    8: BLUE_ON_CREAM_WEBP,
    9: PAPER_BMP,
}


def render(digit: np.ndarray, style: Style) -> Image.Image:
    """uint8 (28, 28) white-on-black ink -> an image in the style's colours, size and mode."""
    ink = digit.astype(np.float32)[..., None] / 255.0  # (28, 28, 1)
    paper, pen = np.asarray(style.paper, np.float32), np.asarray(style.ink, np.float32)
    rgb = (paper + (pen - paper) * ink).round().clip(0, 255).astype(np.uint8)  # (28, 28, 3)
    image = Image.fromarray(rgb, mode="RGB")
    if style.size != digit.shape[0]:
        image = image.resize((style.size, style.size), Image.Resampling.BICUBIC)
    if style.frame is not None:
        photo = Image.new("RGB", style.frame, style.paper)
        photo.paste(image, (style.frame[0] - style.size - style.frame[0] // 10, style.frame[1] // 10))
        image = photo
    return image.convert("L") if style.grayscale else image


def read_back(path: Path, pre: Preprocessing) -> np.ndarray:
    """The service's view of a file: uint8 (S, S, 3) RGB, exactly as `POST /classify` decodes it."""
    return decode_image(path.read_bytes(), pre, DecodeLimits())


def write_samples(checkpoint: Path) -> dict[str, str]:
    """Write `samples/` (images + labels.json) into `checkpoint`, replacing any previous one."""
    loaded = load_checkpoint(checkpoint)
    model = loaded.model.eval()
    heldout = Digits.load(checkpoint / HELDOUT_FILE)
    final = checkpoint / SAMPLES_DIR
    # Build in a sibling temp dir and swap it in, so readers never see a half-written folder.
    staging = Path(tempfile.mkdtemp(prefix=".samples-", dir=checkpoint))
    labels: dict[str, str] = {}
    for cls, style in STYLES.items():
        for index in np.flatnonzero(heldout.labels == cls):
            name = f"{cls}_{index:04d}.{style.ext}"
            path = staging / name
            render(heldout.images[index], style).save(path)
            with torch.inference_mode():
                logits = model(pixels_to_input(read_back(path, loaded.preprocessing)[None]))
            probs = logits.softmax(dim=1)[0]
            if int(probs.argmax()) == cls and float(probs[cls]) >= MIN_PROB:
                labels[name] = loaded.labels[cls]
                break
            path.unlink()
        else:
            raise SampleError(f"no held-out {cls} is classified correctly with probability >= {MIN_PROB}")
    (staging / LABELS_FILE).write_text(json.dumps(labels, indent=2) + "\n")
    staging.chmod(0o755)
    if final.exists():
        retired = Path(tempfile.mkdtemp(prefix=".samples-old-", dir=checkpoint))
        final.rename(retired / SAMPLES_DIR)
        staging.rename(final)
        for old in (retired / SAMPLES_DIR).iterdir():
            old.unlink()
        (retired / SAMPLES_DIR).rmdir()
        retired.rmdir()
    else:
        staging.rename(final)
    return labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="checkpoint folder holding heldout.npz")
    args = parser.parse_args(argv)
    print(json.dumps(write_samples(args.checkpoint), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
