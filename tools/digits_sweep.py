"""Train several digits-ViT recipes side by side and score each on both of the default model's goals.

    python tools/digits_sweep.py --out build/sweep --device cuda --jobs 8 [--only NAME ...]

The default model has to be accurate (held-out accuracy >= 0.985, plain digits; >= 95 % in each
group of the wild evaluation, `vitserve.models.wild`) and its attention rollout has to point at the
digit (`vitserve.bench.rollout_sanity`: more rollout mass per stroke
pixel than per background pixel for most held-out digits). The two pulled apart once: 7x7-pixel
patches reached 0.975 but their 4x4 rollout grid leaned on the border patches. This script is how
the recipe was chosen: every candidate is trained with `vitserve.models.train` (the same code as
`vitserve train`), then scored plain, photo-like, per wild group and on the rollout check (on the
held-out digits as stored), computed from the
PyTorch model's reference attention path (the explanation artifact gives the same logits).

Each candidate runs in its own process; results.json lists every figure, and each checkpoint
folder is kept under --out so the chosen one can be exported as it is.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from vitserve.bench.rollout_sanity import STROKE_THRESHOLD, measure_maps
from vitserve.models import augment
from vitserve.models.checkpoint import load_checkpoint
from vitserve.models.evaluate import (
    HELDOUT_FILE,
    accuracy_report,
    heldout_pixels,
    predict_logits,
    wild_pixels,
)
from vitserve.models.mnist import Digits
from vitserve.models.train import DEFAULT_CYCLES, LABELS, PREPROCESSING, Cycle, TrainConfig, train
from vitserve.models.vit import PRESETS, ViT, ViTConfig
from vitserve.runtime.rollout import HEAD_FUSIONS, rollout_map

DIGITS = PRESETS["digits"]


@dataclass(frozen=True)
class Candidate:
    name: str
    model: ViTConfig
    cycles: tuple[Cycle, ...] = DEFAULT_CYCLES
    seed: int = 0
    augment: augment.AugmentConfig = field(default_factory=lambda: augment.NORMALISED)


# 3.1.0's recipe and its neighbours (earlier candidates are in git history and the model card).
CANDIDATES = (
    Candidate("3.1.0", DIGITS),
    Candidate("3.1.0-rerun", DIGITS),  # same seed: is the device deterministic?
    Candidate("3.1.0-seed1", DIGITS, seed=1),
    Candidate("3.1.0-44ep", DIGITS, cycles=(Cycle(44, 3e-3),)),
    Candidate("3.1.0-no-elastic", DIGITS, augment=replace(augment.NORMALISED, elastic_px=0.0)),
    Candidate("3.1.0-d96", replace(DIGITS, dim=96)),
)


def attention_maps(model: ViT, pixels: np.ndarray, batch: int = 250) -> dict[str, list[np.ndarray]]:
    """Rollout maps of uint8 (N, H, W, 3) images from the model's manual attention path, per fusion."""
    maps: dict[str, list[np.ndarray]] = {fusion: [] for fusion in HEAD_FUSIONS}
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(pixels), batch):
            x = augment.pixels_to_input(pixels[start : start + batch])
            _, attentions = model.forward_features(x, fused=False)
            stacked = torch.stack(attentions, dim=1).numpy()  # (B, L, H, T, T)
            for fusion in HEAD_FUSIONS:
                maps[fusion].extend(rollout_map(one, fusion) for one in stacked)
    return maps


def run_candidate(candidate: Candidate, out: Path, device: str, smoke: bool) -> dict[str, object]:
    folder = out / candidate.name
    config = TrainConfig(
        out=folder,
        seed=candidate.seed,
        cycles=(Cycle(1, 2e-3),) if smoke else candidate.cycles,
        limit=256 if smoke else 0,
        model=candidate.model,
        augment=candidate.augment,
        device=device,
    )
    result = train(config)
    model = load_checkpoint(folder).model
    heldout = Digits.load(folder / HELDOUT_FILE)
    figures: dict[str, object] = {
        "name": candidate.name,
        "model": candidate.model.to_dict(),
        "cycles": [asdict(c) for c in candidate.cycles],
        "seed": candidate.seed,
        "p_plain": candidate.augment.p_plain,
        "device": device,
        "train_seconds": round(result.seconds, 1),
        "final_loss": result.final_loss,
    }
    for variant in ("plain", "photo"):
        logits = predict_logits(model, heldout_pixels(heldout, variant, PREPROCESSING))
        figures[f"accuracy_{variant}"] = accuracy_report(logits, heldout.labels, LABELS)["accuracy"]
    pixels, labels, groups, _ = wild_pixels(heldout, PREPROCESSING, per_group=100 if smoke else 500)
    logits = predict_logits(model, pixels)
    for group in dict.fromkeys(groups):
        chosen = np.asarray(groups) == group
        figures[f"wild_{group}"] = accuracy_report(logits[chosen], labels[chosen], LABELS)["accuracy"]
    maps = attention_maps(model, heldout_pixels(heldout, "plain"))
    for fusion in HEAD_FUSIONS:
        sanity = measure_maps(maps[fusion], heldout.images, fusion, STROKE_THRESHOLD)
        figures[f"rollout_{fusion}"] = asdict(sanity)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/digits_sweep.py", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("build/sweep"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help="candidate names (default: all)")
    parser.add_argument("--smoke", action="store_true", help="one epoch on 256 digits: does it run?")
    args = parser.parse_args(argv)
    chosen = [c for c in CANDIDATES if args.only is None or c.name in args.only]
    args.out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, object]] = []
    started = time.perf_counter()
    # spawn: CUDA cannot be initialised again in a forked child.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        futures = {pool.submit(run_candidate, c, args.out, args.device, args.smoke): c.name for c in chosen}
        for future in as_completed(futures):
            try:
                figures = future.result()
            except Exception as exc:  # one broken recipe must not lose the others' figures
                figures = {"name": futures[future], "error": repr(exc)}
            figures["finished_after_s"] = round(time.perf_counter() - started, 1)
            results.append(figures)
            print(json.dumps(figures), flush=True)
            (args.out / "results.json").write_text(json.dumps(results, indent=2))
    groups = ("handwriting", "printed", "small", "lowres")
    print("| recipe | plain | photo | " + " | ".join(groups) + " | rollout mean | max | min | train s |")
    print("| --- " * (7 + len(groups)) + "|")
    for r in sorted(results, key=lambda r: str(r["name"])):
        if "error" in r:
            print(f"| {r['name']} | error: {r['error']} |")
            continue
        wins = [r[f"rollout_{f}"]["inside_wins"] for f in HEAD_FUSIONS]  # type: ignore[index]
        print(
            f"| {r['name']} | {r['accuracy_plain']:.4f} | {r['accuracy_photo']:.4f} | "
            + " | ".join(f"{r[f'wild_{g}']:.3f}" for g in groups)
            + " | "
            + " | ".join(f"{w:.1%}" for w in wins)
            + f" | {r['train_seconds']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
