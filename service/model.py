"""The model behind the classify flow: the ONNX Runtime session in this process, behind the batcher.

`LocalModel` runs the ONNX Runtime session inside the API worker, behind the greedy batcher
(runtime/batcher.py): the images of concurrent requests meet in one batch with no process hop, no
second HTTP stack and no serialisation.
"""

from __future__ import annotations

import logging
import statistics
import time

import numpy as np

from vitserve.runtime.batcher import Batcher, BatchObserver, warm_up_sizes
from vitserve.runtime.cpus import cpu_budget
from vitserve.runtime.predictions import softmax
from vitserve.runtime.session import OnnxClassifier, SessionOptions
from vitserve.service.settings import Settings

log = logging.getLogger(__name__)


class LocalModel:
    """One ORT session in this process, loaded and warmed up at every batch size before it serves.

    It is what service/classify.py calls a Model.
    """

    def __init__(self, settings: Settings, observer: BatchObserver | None = None) -> None:
        self.settings = settings
        self.classifier = OnnxClassifier(
            settings.model_dir,
            SessionOptions(
                precision=settings.precision,
                device=settings.device,
                intra_op_threads=settings.intra_op_pool_size(cpu_budget()),
                spin=settings.ort_spin,
            ),
        )
        self.metadata = self.classifier.metadata
        self.batcher = Batcher(
            self._probabilities,
            max_batch_size=settings.max_batch_size,
            deadline_s=settings.max_latency_ms / 1000,
            max_wait_s=settings.batch_wait_ms / 1000,
            observer=observer,
            runners=settings.batch_runners,
        )
        started = time.perf_counter()
        self.batcher.warm_up(warm_up_sizes(settings.max_batch_size), self.classifier.input_shape)
        log.info("warm-up took %.2f s", time.perf_counter() - started)
        self.batch_one_ms = self._time_batch_of_one()

    def _time_batch_of_one(self, runs: int = 5, budget_s: float = 1.0) -> float:
        """Median ms of one image through the session: what the worker's thread switching follows.

        Up to `runs` runs, fewer once `budget_s` is spent: a ViT-B on a CPU takes most of a second
        per image, and start-up need not wait five of them to learn it is far above 2 ms.
        """
        pixels = np.zeros((1, *self.classifier.input_shape), dtype=np.uint8)
        times: list[float] = []
        first = time.perf_counter()
        while len(times) < runs and (not times or time.perf_counter() - first < budget_s):
            started = time.perf_counter()
            self.classifier.predict_batch(pixels)
            times.append(1000 * (time.perf_counter() - started))
        return statistics.median(times)

    def _probabilities(self, pixels: np.ndarray) -> np.ndarray:
        # In the model's thread, once per batch: the event loop only ranks (runtime/predictions.py).
        return softmax(self.classifier.predict_batch(pixels))

    async def infer(self, pixels: np.ndarray) -> np.ndarray:
        return await self.batcher.infer(pixels)

    def info(self) -> dict[str, object]:
        return {
            "artifact": self.classifier.path.name,
            "precision": self.metadata.precision,
            "providers": list(self.classifier.providers),
            "intra_op_threads": self.classifier.intra_op_threads,
            "batch_runners": self.batcher.runners,
            "max_batch_size": self.settings.max_batch_size,
            "max_latency_ms": self.settings.max_latency_ms,
            "batch_one_ms": round(self.batch_one_ms, 3),
        }

    def close(self) -> None:
        self.batcher.close()
