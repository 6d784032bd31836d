"""A contact sheet of the wild images a model gets wrong: the upload, what the model saw, the answer.

    python -m vitserve.models.failures models/digits-vit --out models/digits-vit/failures.png

One row per wild group (`vitserve.models.wild`), its first `--per-group` mistakes in the set's
order: each as the uploaded image (scaled into a square), the 28x28 pixels the service fed the
model (after any digit normalisation), and "label > answer". The model card shows it.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vitserve.models import fonts
from vitserve.models.checkpoint import load_checkpoint
from vitserve.models.evaluate import DEFAULT_HELDOUT, predict_logits
from vitserve.models.mnist import Digits
from vitserve.models.wild import GROUPS, PER_GROUP, wild_set
from vitserve.runtime.decode import DecodeLimits, decode_image

TILE = 80
CAPTION = 30
LABEL_FONT = fonts.TRAIN_FONTS[0]  # DejaVu Sans


def tile(data: bytes, seen: np.ndarray, caption: str, face: ImageFont.FreeTypeFont) -> Image.Image:
    """Upload and model input side by side over a caption."""
    out = Image.new("RGB", (2 * TILE + 4, TILE + CAPTION), (255, 255, 255))
    with Image.open(io.BytesIO(data)) as upload:
        shown = upload.convert("RGB")
        shown.thumbnail((TILE, TILE))
        out.paste(shown, ((TILE - shown.width) // 2, (TILE - shown.height) // 2))
    out.paste(Image.fromarray(seen).resize((TILE, TILE), Image.Resampling.NEAREST), (TILE + 4, 0))
    ImageDraw.Draw(out).multiline_text((2, TILE + 1), caption, fill=(0, 0, 0), font=face, spacing=1)
    return out


def failure_sheet(model_dir: Path, per_group: int, wild_per_group: int = PER_GROUP) -> Image.Image:
    loaded = load_checkpoint(model_dir)
    images = wild_set(Digits.load(DEFAULT_HELDOUT), wild_per_group)
    pixels = np.stack([decode_image(i.data, loaded.preprocessing, DecodeLimits()) for i in images])
    answers = predict_logits(loaded.model, pixels).argmax(axis=1)
    face = ImageFont.truetype(str(fonts.font_path(LABEL_FONT)), 12)
    rows = []
    for group in GROUPS:
        wrong = [n for n, i in enumerate(images) if i.group == group and answers[n] != i.label][:per_group]
        row = Image.new("RGB", (per_group * (2 * TILE + 12), TILE + CAPTION + 18), (235, 235, 235))
        ImageDraw.Draw(row).text((4, 2), f"{group}: {len(wrong)} shown", fill=(0, 0, 0), font=face)
        for k, n in enumerate(wrong):
            caption = f"{images[n].label} > {answers[n]}\n{images[n].source}"
            row.paste(tile(images[n].data, pixels[n], caption, face), (k * (2 * TILE + 12), 18))
        rows.append(row)
    sheet = Image.new("RGB", (rows[0].width, sum(r.height for r in rows)), (255, 255, 255))
    for k, row in enumerate(rows):
        sheet.paste(row, (0, k * rows[0].height))
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitserve.models.failures", description=__doc__)
    parser.add_argument("model_dir", type=Path, help="checkpoint folder")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--per-group", type=int, default=6)
    args = parser.parse_args(argv)
    failure_sheet(args.model_dir, args.per_group).save(args.out, optimize=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
