"""Train several digits-ViT recipes side by side and score each on both of the default model's goals.

    python tools/digits_sweep.py --out build/sweep --device cuda --jobs 8 [--only NAME ...]

The default model has to be accurate (held-out accuracy >= 0.97, plain digits) and its attention
rollout has to point at the digit (`vitserve.bench.rollout_sanity`: more rollout mass per stroke
pixel than per background pixel for most held-out digits). The two pulled apart once: 7x7-pixel
patches reached 0.975 but their 4x4 rollout grid leaned on the border patches. This script is how
the recipe was chosen: every candidate is trained with `vitserve.models.train` (the same code as
`vitserve train`), then scored plain, photo-like and on the rollout check, computed from the
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
from vitserve.models.evaluate import HELDOUT_FILE, accuracy_report, heldout_pixels, predict_logits
from vitserve.models.mnist import Digits
from vitserve.models.train import LABELS, Cycle, TrainConfig, train
from vitserve.models.vit import PRESETS, ViT, ViTConfig
from vitserve.runtime.rollout import HEAD_FUSIONS, rollout_map

DIGITS = PRESETS["digits"]
PATCH4 = replace(DIGITS, patch_size=4)


@dataclass(frozen=True)
class Candidate:
    name: str
    model: ViTConfig
    cycles: tuple[Cycle, ...] = (Cycle(80, 2e-3),)
    seed: int = 0
    augment: augment.AugmentConfig = field(default_factory=lambda: augment.TRAIN)


CANDIDATES = (
    # The shipped recipe, as a control: its rollout check is the one that failed.
    Candidate("p7-d64-L6", DIGITS),
    Candidate("p4-d64-L6", PATCH4),
    Candidate("p4-d64-L6-rerun", PATCH4),  # same seed: is the device deterministic?
    Candidate("p4-d64-L6-seed1", PATCH4, seed=1),
    Candidate("p4-d64-L6-120ep", PATCH4, cycles=(Cycle(120, 2e-3),)),
    Candidate("p4-d64-L4", replace(PATCH4, depth=4)),
    Candidate("p4-d96-L6", replace(PATCH4, dim=96)),
    Candidate("p4-d64-L6-plain0.3", PATCH4, augment=replace(augment.TRAIN, p_plain=0.3)),
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
        logits = predict_logits(model, heldout_pixels(heldout, variant))
        figures[f"accuracy_{variant}"] = accuracy_report(logits, heldout.labels, LABELS)["accuracy"]
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
    print("| recipe | plain | photo | rollout mean | max | min | train s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in sorted(results, key=lambda r: str(r["name"])):
        if "error" in r:
            print(f"| {r['name']} | error: {r['error']} |")
            continue
        wins = [r[f"rollout_{f}"]["inside_wins"] for f in HEAD_FUSIONS]  # type: ignore[index]
        print(
            f"| {r['name']} | {r['accuracy_plain']:.4f} | {r['accuracy_photo']:.4f} | "
            + " | ".join(f"{w:.1%}" for w in wins)
            + f" | {r['train_seconds']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
