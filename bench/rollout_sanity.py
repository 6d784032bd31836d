"""Do the rollout maps mean something? Rollout mass per pixel on the digit's strokes vs the background.

    python -m vitserve.bench.rollout_sanity [--model-dir models/digits-vit] [--limit 2000]

For each held-out digit, the (grid, grid) map is spread evenly over each patch's pixels, then the
mean mass per stroke pixel (value > threshold) is compared with the mean mass per background pixel.
The figure is the fraction of digits whose strokes get more mass per pixel. A model whose artifact
asks for digit normalisation is shown each digit as the service would show it (normalised), and its
strokes are taken from that normalised image. The second figure
compares totals: the map's mass on the patches holding any stroke pixel against the mass on the
patches of pure background. A control with the same maps' cells shuffled (so same values, no spatial
relation) shows what chance gives for each.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vitserve.runtime.digit_preprocess import normalise_digit
from vitserve.runtime.explain_session import ExplainSession
from vitserve.runtime.rollout import HEAD_FUSIONS, rollout_map
from vitserve.service.settings import DEFAULT_MODEL_DIR

# MNIST strokes are near 255 and the background 0; half-way splits the anti-aliased edge evenly.
STROKE_THRESHOLD = 127


@dataclass(frozen=True)
class SanityResult:
    head_fusion: str
    digits: int
    inside_wins: float  # fraction of digits with more mass per stroke pixel than per background pixel
    shuffled_inside_wins: float  # the same with the map's cells shuffled: the chance level
    median_ratio: float  # median over digits of (mass per stroke pixel) / (mass per background pixel)
    # The literal reading, totals instead of densities: fraction of digits whose patches holding any
    # stroke pixel carry more of the map's mass than the patches of pure background.
    stroke_patches_win: float
    shuffled_stroke_patches_win: float
    median_stroke_patch_mass: float  # median share of the map on stroke patches


def patch_shape(heatmap: np.ndarray, image: np.ndarray) -> tuple[int, int]:
    """(patch height, patch width) in pixels of a (grid, grid) map laid over a (H, W) image."""
    height, width = image.shape
    rows, cols = heatmap.shape
    if height % rows or width % cols:
        raise ValueError(f"a {rows}x{cols} map does not tile a {height}x{width} image")
    return height // rows, width // cols


def per_pixel_masses(heatmap: np.ndarray, image: np.ndarray, threshold: int) -> tuple[float, float]:
    """(mass per stroke pixel, mass per background pixel) of a map over a (H, W) grayscale image."""
    patch = patch_shape(heatmap, image)
    # Each patch's mass spread evenly over its pixels: (H, W) map that still sums to the map's sum.
    pixels = np.kron(heatmap, np.ones(patch)) / (patch[0] * patch[1])
    stroke = image > threshold
    if stroke.all() or not stroke.any():
        raise ValueError("the image has no stroke or no background pixels at this threshold")
    return float(pixels[stroke].mean()), float(pixels[~stroke].mean())


def stroke_patch_mass(heatmap: np.ndarray, image: np.ndarray, threshold: int) -> float:
    """Share of the map's mass on the patches that hold at least one stroke pixel."""
    (rows, cols), (patch_h, patch_w) = heatmap.shape, patch_shape(heatmap, image)
    blocks = image.reshape(rows, patch_h, cols, patch_w)
    holds_stroke = (blocks > threshold).any(axis=(1, 3))  # (rows, cols)
    return float(heatmap[holds_stroke].sum() / heatmap.sum())


def measure_maps(
    maps: Iterable[np.ndarray], images: np.ndarray, head_fusion: str, threshold: int, seed: int = 0
) -> SanityResult:
    """The figure for ready-made (grid, grid) maps, one per (H, W) image, in the same order."""
    rng = np.random.default_rng(seed)
    wins, shuffled_wins, ratios = 0, 0, []
    patch_wins, shuffled_patch_wins, shares = 0, 0, []
    for heatmap, image in zip(maps, images, strict=True):
        inside, outside = per_pixel_masses(heatmap, image, threshold)
        wins += inside > outside
        ratios.append(inside / outside)
        share = stroke_patch_mass(heatmap, image, threshold)
        patch_wins += share > 0.5
        shares.append(share)
        shuffled = rng.permutation(heatmap.ravel()).reshape(heatmap.shape)
        s_inside, s_outside = per_pixel_masses(shuffled, image, threshold)
        shuffled_wins += s_inside > s_outside
        shuffled_patch_wins += stroke_patch_mass(shuffled, image, threshold) > 0.5
    count = len(images)
    return SanityResult(
        head_fusion,
        count,
        wins / count,
        shuffled_wins / count,
        float(np.median(ratios)),
        patch_wins / count,
        shuffled_patch_wins / count,
        float(np.median(shares)),
    )


def rollout_maps(session: ExplainSession, images: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Each (H, W) grayscale image explained once, its map under every head fusion."""
    maps: dict[str, list[np.ndarray]] = {fusion: [] for fusion in HEAD_FUSIONS}
    for image in images:
        attentions = session.explain(np.repeat(image[..., None], 3, axis=-1)).attentions
        for fusion in HEAD_FUSIONS:
            maps[fusion].append(rollout_map(attentions, fusion))
    return maps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitserve.bench.rollout_sanity", description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--heldout", type=Path, default=None, help="default: heldout.npz in --model-dir")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--threshold", type=int, default=STROKE_THRESHOLD)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    parser.add_argument(
        "--raw", action="store_true", help="feed the held-out digits as they are, even to a normalising model"
    )
    args = parser.parse_args(argv)
    session = ExplainSession(args.model_dir, intra_op_threads=1)
    with np.load(args.heldout or args.model_dir / "heldout.npz") as data:
        images = data["images"][: args.limit]
    if images.ndim != 3 or images.shape[1:] != session.input_shape[:2]:
        parser.error(f"want grayscale held-out images of {session.input_shape[:2]}, got {images.shape[1:]}")
    pre = session.metadata.preprocessing
    if pre.digit_normalisation is not None and not args.raw:
        # What POST /explain would explain: the digit as the normalisation hands it to the model.
        images = np.stack(
            [normalise_digit(Image.fromarray(image).convert("RGB"), pre)[..., 0] for image in images]
        )
    maps = rollout_maps(session, images)
    results = [measure_maps(maps[fusion], images, fusion, args.threshold) for fusion in HEAD_FUSIONS]
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return 0
    shown = "as stored" if pre.digit_normalisation is None or args.raw else "digit-normalised, as served"
    print(
        f"model {session.metadata.model_name} {session.metadata.model_version}, {len(images)} held-out digits"
        f" ({shown})"
    )
    print(
        "| head fusion | stroke > background (per pixel) | shuffled control | median ratio "
        "| stroke patches > background patches (total) | shuffled control | median stroke-patch share |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r.head_fusion} | {r.inside_wins:.1%} | {r.shuffled_inside_wins:.1%} | {r.median_ratio:.2f} "
            f"| {r.stroke_patches_win:.1%} | {r.shuffled_stroke_patches_win:.1%} "
            f"| {r.median_stroke_patch_mass:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
