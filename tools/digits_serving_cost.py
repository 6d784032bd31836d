"""CPU cost per image of serving digit models: decode (with any digit normalisation) + model, side by side.

    python tools/digits_serving_cost.py --models /tmp/digits-vit-2.0.0 models/digits-vit

`vitserve bench model` times the graph alone; a model whose artifact asks for digit normalisation
also costs its share of every request's decoding. This times what an inference worker and an API
worker spend on one image together: `decode_image` with the model's own preprocessing on the same
encoded files, then the ONNX model on the decoded pixels in batches. Every model runs once per
round, rounds interleaved, so drifting machine load hits all alike; medians per model, and each
model's ratio to the first one. Two image mixes: the 2.0.0 samples (small files: PNG 28 px, BMP
56 px, WebP 112 px, JPEG 280 px) and the wild evaluation set (photos of 14-560 px, mostly JPEG).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vitserve.bench.model import cpu_model
from vitserve.models.evaluate import DEFAULT_HELDOUT
from vitserve.models.mnist import Digits
from vitserve.models.wild import wild_set
from vitserve.runtime.artifact import INPUT_NAME, read_metadata
from vitserve.runtime.decode import DecodeLimits, decode_image
from vitserve.runtime.session import CPU

IMAGE_SUFFIXES = (".png", ".jpg", ".webp", ".bmp")


def sample_files(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in IMAGE_SUFFIXES]


def cost_per_image(model: Path, images: list[bytes], batch: int, threads: int) -> tuple[float, float]:
    """(decode seconds, model seconds) per image for one pass over `images`."""
    meta = read_metadata(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=[CPU])
    limits = DecodeLimits()
    started = time.perf_counter()
    pixels = np.stack([decode_image(data, meta.preprocessing, limits) for data in images])
    decoded = time.perf_counter()
    for start in range(0, len(pixels), batch):
        session.run(None, {INPUT_NAME: pixels[start : start + batch]})
    done = time.perf_counter()
    return (decoded - started) / len(images), (done - decoded) / len(images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/digits_serving_cost.py", description=__doc__)
    parser.add_argument("--models", nargs="+", type=Path, required=True, help="model folders")
    parser.add_argument("--artifact", default="model.onnx", help="file in each folder (what the CPU serves)")
    parser.add_argument("--samples", type=Path, default=None, help="default: the first model's samples/")
    parser.add_argument("--wild-per-group", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=20, help="passes over the samples per round")
    args = parser.parse_args(argv)
    mixes = {
        "samples": sample_files(args.samples or args.models[0] / "samples") * args.repeat,
        "wild": [image.data for image in wild_set(Digits.load(DEFAULT_HELDOUT), args.wild_per_group)],
    }
    print(f"command: python tools/digits_serving_cost.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"cpu: {cpu_model()}; ORT threads {args.threads}, batch {args.batch}, {args.rounds} rounds")
    print()
    print("| images | model | decode us/img | model us/img | total us/img | vs first |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for mix, images in mixes.items():
        runs: dict[Path, list[tuple[float, float]]] = {m: [] for m in args.models}
        for model in args.models:  # warm-up: first-call allocations, ORT kernel choice
            cost_per_image(model / args.artifact, images[:64], args.batch, args.threads)
        for _ in range(args.rounds):
            for model in args.models:
                runs[model].append(cost_per_image(model / args.artifact, images, args.batch, args.threads))
        first = statistics.median(d + m for d, m in runs[args.models[0]])
        for model in args.models:
            decode = statistics.median(d for d, _ in runs[model])
            infer = statistics.median(m for _, m in runs[model])
            total = statistics.median(d + m for d, m in runs[model])
            print(
                f"| {mix} ({len(images)}) | {model} | {decode * 1e6:.0f} | {infer * 1e6:.0f} "
                f"| {total * 1e6:.0f} | {total / first:.2f}x |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
