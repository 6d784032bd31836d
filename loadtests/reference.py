"""The gate's yardstick, measured on the machine the gate runs on: the model alone, with no server, and
the server's capacity beside it.

A load test's targets cannot be absolute numbers: the same tree serves ten times more on one host than
on another. Before the ramp the runner alternates rounds of ONNX Runtime alone (the served model, this
host, no server) with rounds of h2load (C) holding `at_users` connections on the server, and the SLOs
are ratios of the former (loadtests/slo.toml): a service that becomes twice as slow around the same
model misses them, on any host. Alternating pairs keeps a shared host's swings out of the ratio; h2load
keeps the load generator from being what is measured (Locust, in Python, runs out of CPU first).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vitserve.bench.h2load import run_h2load
from vitserve.bench.wrk import Upload
from vitserve.runtime.session import OnnxClassifier, SessionOptions

REFERENCE = "reference.json"


class ReferenceError(ValueError):
    """The results folder has no reference measurement, or a malformed one."""


@dataclass(frozen=True)
class Reference:
    images_per_s: float  # ONNX Runtime alone, median of the timed rounds
    rounds: tuple[float, ...]  # images/s of each round of the model alone
    batch: int
    threads: int
    artifact: str
    providers: tuple[str, ...]
    # The server's capacity beside it: /classify digits answered 200 per second with `connections`
    # h2load connections resending at once, and its ratio to the model alone's round just before,
    # per pair; the median ratio is what the gate judges.
    connections: int = 0
    served_rounds: tuple[float, ...] = ()
    capacity_ratios: tuple[float, ...] = ()

    @property
    def capacity_ratio(self) -> float:
        return statistics.median(self.capacity_ratios) if self.capacity_ratios else float("nan")

    def ideal_ms(self, users: int) -> float:
        """Latency with `users` requests always outstanding, were the server as fast as the model
        alone (Little's law: outstanding / throughput)."""
        return 1000 * users / self.images_per_s

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> Reference:
        try:
            raw = json.loads(path.read_text())
            return cls(
                images_per_s=float(raw["images_per_s"]),
                rounds=tuple(float(r) for r in raw.get("rounds", ())),
                batch=int(raw["batch"]),
                threads=int(raw["threads"]),
                artifact=str(raw["artifact"]),
                providers=tuple(raw["providers"]),
                connections=int(raw.get("connections", 0)),
                served_rounds=tuple(float(r) for r in raw.get("served_rounds", ())),
                capacity_ratios=tuple(float(r) for r in raw.get("capacity_ratios", ())),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReferenceError(f"{path}: no model-only reference measurement: {exc}") from exc


class ModelAlone:
    """The served artifact's session at the server's largest batch (its default max_batch_size), on the
    server's default device and CPU budget. The pixels are zeros: a ViT's speed does not depend on what
    the image shows."""

    def __init__(self, model_dir: Path, batch: int = 32) -> None:
        self.classifier = OnnxClassifier(model_dir, SessionOptions())
        self.batch = batch
        self.pixels = np.zeros((batch, *self.classifier.input_shape), dtype=np.uint8)
        self.classifier.warm_up([batch])
        self.rates: list[float] = []

    def measure(self, seconds: float, rounds: int = 5) -> None:
        """Add `rounds` timed rounds (images/s) lasting `seconds` in all."""
        for _ in range(rounds):
            done, started = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - started) < seconds / rounds:
                self.classifier.predict_batch(self.pixels)
                done += self.batch
            self.rates.append(done / elapsed)


def measure_reference(
    model_dir: Path, url: str, image: bytes, connections: int, pairs: int = 5, seconds: float = 3.0
) -> Reference:
    """`pairs` x (the model alone for seconds/3, then h2load on the server for 2 x seconds/3)."""
    model = ModelAlone(model_dir)
    upload = Upload(image, "image/png")
    run_h2load(f"{url}/classify", upload, connections, 1.0)  # warm-up: the batching cost model's start
    served, ratios = [], []
    for _ in range(pairs):
        model.measure(seconds / 3, rounds=1)
        result = run_h2load(f"{url}/classify", upload, connections, 2 * seconds / 3)
        served.append(len(result.latencies_ms(200)) / result.duration_s)
        ratios.append(served[-1] / model.rates[-1])
    return Reference(
        images_per_s=statistics.median(model.rates),
        rounds=tuple(round(r, 1) for r in model.rates),
        batch=model.batch,
        threads=model.classifier.intra_op_threads,
        artifact=model.classifier.path.name,
        providers=model.classifier.providers,
        connections=connections,
        served_rounds=tuple(round(s, 1) for s in served),
        capacity_ratios=tuple(round(r, 4) for r in ratios),
    )
