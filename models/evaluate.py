"""`vitserve evaluate`: accuracy of a checkpoint folder or an ONNX artifact on the held-out digits.

Both kinds are fed what the service would feed them, uint8 (N, 28, 28, 3) RGB, so the figure for an
.onnx file is the figure the server would give. Held-out digits are white-on-black grayscale and are
fed as RGB by repeating the channel; `--variant photo` recolours, inverts and moves them first; a
model whose preprocessing asks for digit normalisation gets each 28x28 image normalised, as the
service would. `--variant wild` generates the wild evaluation (`vitserve.models.wild`) as encoded
files and decodes each with the service's `decode_image`; it reports accuracy per group.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vitserve.models import augment
from vitserve.models.mnist import Digits
from vitserve.models.wild import PER_GROUP as WILD_PER_GROUP
from vitserve.models.wild import wild_set
from vitserve.runtime.artifact import Preprocessing
from vitserve.runtime.session import CPU

HELDOUT_FILE = "heldout.npz"
# The committed held-out digits ship inside the package, so this works from any directory.
DEFAULT_HELDOUT = Path(__file__).parent / "digits-vit" / "heldout.npz"
PHOTO_SEED = 1234  # fixed so the photo-like figure in the model card is reproducible
VARIANTS = ("plain", "photo", "wild")
BATCH = 500


class EvaluationError(ValueError):
    """The model or the held-out file cannot be evaluated."""


def predict_logits(model: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) RGB -> float32 logits (N, C) from a PyTorch ViT (normalised here)."""
    model.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(pixels), BATCH):
            outputs.append(model(augment.pixels_to_input(pixels[start : start + BATCH])).numpy())
    return np.concatenate(outputs).astype(np.float32)


def predict_logits_onnx(path: Path, pixels: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) RGB -> logits from an ONNX artifact on ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    from vitserve.runtime.artifact import INPUT_NAME, OUTPUT_NAME

    session = ort.InferenceSession(str(path), providers=[CPU])
    outputs = [
        session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(pixels[start : start + BATCH])})[0]
        for start in range(0, len(pixels), BATCH)
    ]
    return np.concatenate(outputs).astype(np.float32)


def accuracy_report(logits: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
    """Overall and per-class accuracy of argmax(logits) against integer labels."""
    predicted = logits.argmax(axis=1)
    correct = predicted == labels
    per_class = {
        names[c]: round(float(correct[labels == c].mean()), 4)
        for c in range(len(names))
        if (labels == c).any()
    }
    return {"accuracy": round(float(correct.mean()), 4), "n": len(labels), "per_class": per_class}


def heldout_pixels(heldout: Digits, variant: str, pre: Preprocessing | None = None) -> np.ndarray:
    """The held-out digits as uint8 (N, 28, 28, 3) RGB in the requested variant, as served to `pre`."""
    if variant == "plain":
        pixels = augment.gray_to_pixels(heldout.images)
    elif variant == "photo":
        pixels = augment.photo_like(heldout.images, seed=PHOTO_SEED)
    else:
        raise EvaluationError(f"unknown variant {variant!r}; choose one of plain, photo")
    if pre is None or pre.digit_normalisation is None:
        return pixels
    from vitserve.runtime.digit_preprocess import normalise_digit

    return np.stack([normalise_digit(Image.fromarray(image), pre) for image in pixels])


def wild_pixels(
    heldout: Digits, pre: Preprocessing, per_group: int
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """The wild set decoded as the service decodes uploads: pixels, labels, groups, sources."""
    from vitserve.runtime.decode import DecodeLimits, decode_image

    images = wild_set(heldout, per_group)
    pixels = np.stack([decode_image(image.data, pre, DecodeLimits()) for image in images])
    labels = np.asarray([image.label for image in images], dtype=np.int64)
    return pixels, labels, [image.group for image in images], [image.source for image in images]


def evaluate(
    model_path: Path,
    heldout_path: Path | None = None,
    variant: str = "plain",
    per_group: int = WILD_PER_GROUP,
) -> dict[str, Any]:
    """Accuracy of a checkpoint folder or .onnx file; held-out defaults to the committed digits."""
    if not model_path.exists():
        raise EvaluationError(f"no model at {model_path}")
    if variant not in VARIANTS:
        raise EvaluationError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    heldout = Digits.load(heldout_path or DEFAULT_HELDOUT)
    if model_path.suffix == ".onnx":
        from vitserve.runtime.artifact import read_metadata

        metadata = read_metadata(model_path)
        labels, pre = metadata.labels, metadata.preprocessing

        def predict(pixels: np.ndarray) -> np.ndarray:
            return predict_logits_onnx(model_path, pixels)
    else:
        from vitserve.models.checkpoint import load_checkpoint

        loaded = load_checkpoint(model_path)
        labels, pre = loaded.labels, loaded.preprocessing

        def predict(pixels: np.ndarray) -> np.ndarray:
            return predict_logits(loaded.model, pixels)

    if variant == "wild":
        pixels, targets, groups, _ = wild_pixels(heldout, pre, per_group)
    else:
        pixels, targets, groups = heldout_pixels(heldout, variant, pre), heldout.labels, []
    logits = predict(pixels)
    if logits.shape != (len(pixels), len(labels)):
        raise EvaluationError(f"{model_path} gave logits {logits.shape}, want ({len(pixels)}, {len(labels)})")
    report = accuracy_report(logits, targets, labels)
    if groups:
        group_names = list(dict.fromkeys(groups))
        in_group = np.asarray(groups)
        report["groups"] = {
            name: accuracy_report(logits[in_group == name], targets[in_group == name], labels)
            for name in group_names
        }
    return {"model": str(model_path), "variant": variant} | report


def run(args: argparse.Namespace) -> int:
    heldout = Path(args.heldout) if args.heldout else None
    print(json.dumps(evaluate(Path(args.model), heldout, args.variant, args.per_group), indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="held-out accuracy of a checkpoint folder or .onnx file")
    parser.add_argument("model", help="checkpoint folder (PyTorch) or .onnx artifact")
    parser.add_argument(
        "--heldout", default=None, help="npz of digits (default: the committed held-out split)"
    )
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default="plain",
        help="photo: recoloured/inverted/moved; wild: photographed, printed, small, low-res (per group)",
    )
    parser.add_argument(
        "--per-group", type=int, default=WILD_PER_GROUP, help="wild images per group (default: all)"
    )
    parser.set_defaults(func=run)
