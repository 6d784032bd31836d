"""The batch runners' work on Python sessions against sessions on shared weights, in one process.

    python tools/ab_shared_weights.py vit-base --batch 4 --runs 2 --rounds 6

A costly model's layout on the CPU, built both ways in this process: a single-threaded session and one
with every CPU, each a Python `InferenceSession` with its own copy of the weights, and the same two on
one copy (runtime/shared_weights.py). Each round, two threads (the runners on 2 CPUs) each run `--runs`
batches of `--batch` images on the single-threaded session of one layout, then of the other (order
alternating). It prints CPU ms and wall ms per image of each round, their medians, and the median of
the paired ratios (shared / Python): what the shared weights cost the runners, without HTTP, decoding
or the batcher around them. Both sessions' answers are checked equal first.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np

from vitserve.bench import workloads
from vitserve.runtime.artifact import ARTIFACT_FILES
from vitserve.runtime.cpus import cpu_budget
from vitserve.runtime.session import OnnxClassifier, SessionOptions
from vitserve.runtime.shared_weights import SharedWeights

RUNNERS = 2


def per_image(classifier: OnnxClassifier, pixels: np.ndarray, runs: int) -> tuple[float, float]:
    """CPU ms and wall ms per image while RUNNERS threads each run `runs` batches on the session."""

    def work() -> None:
        for _ in range(runs):
            classifier.predict_batch(pixels)

    threads = [threading.Thread(target=work) for _ in range(RUNNERS)]
    wall, cpu = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    images = RUNNERS * runs * len(pixels)
    return 1000 * (time.process_time() - cpu) / images, 1000 * (time.perf_counter() - wall) / images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=["vit-tiny", "vit-base"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    model_dir = workloads.WORKLOADS[args.workload]().model_dir
    one = SessionOptions(device="cpu", precision="fp32", intra_op_threads=1)
    every = SessionOptions(device="cpu", precision="fp32", intra_op_threads=cpu_budget())
    python = [OnnxClassifier(model_dir, one), OnnxClassifier(model_dir, every)]
    weights = SharedWeights(model_dir / ARTIFACT_FILES["fp32"])
    shared = [OnnxClassifier(model_dir, one, weights), OnnxClassifier(model_dir, every, weights)]
    size = python[0].input_shape
    pixels = np.random.default_rng(0).integers(0, 256, size=(args.batch, *size), dtype=np.uint8)
    for a, b in zip(python, shared, strict=True):
        if not np.array_equal(a.predict_batch(pixels), b.predict_batch(pixels)):
            raise SystemExit("the shared sessions' logits differ from the Python sessions'")
    weights.drop_resident_raw()  # as the service leaves them at rest
    layouts = {"python": python[0], "shared": shared[0]}
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in layouts}
    for round_ in range(args.rounds):
        order = list(layouts) if round_ % 2 == 0 else list(reversed(layouts))
        for name in order:
            figures[name].append(per_image(layouts[name], pixels, args.runs))
        print(
            f"round {round_ + 1}: "
            + ", ".join(f"{n} cpu {figures[n][-1][0]:.1f} wall {figures[n][-1][1]:.1f}" for n in layouts)
        )
    for name, points in figures.items():
        cpu = statistics.median(c for c, _ in points)
        wall = statistics.median(w for _, w in points)
        print(f"{name}: CPU ms/img median {cpu:.1f}, wall ms/img median {wall:.1f} ({args.rounds} rounds)")
    for index, what in ((0, "CPU"), (1, "wall")):
        ratios = [s[index] / p[index] for s, p in zip(figures["shared"], figures["python"], strict=True)]
        print(
            f"shared / python {what} per image: median {statistics.median(ratios):.3f} "
            f"({min(ratios):.3f}-{max(ratios):.3f})"
        )


if __name__ == "__main__":
    main()
