"""The model behind the classify flow: the ONNX Runtime session in this process, behind the batcher.

`LocalModel` runs the ONNX Runtime session inside the API worker, behind the greedy batcher
(runtime/batcher.py): the images of concurrent requests meet in one batch with no process hop, no
second HTTP stack and no serialisation.

How the CPUs run the model is chosen at start-up unless VITSERVE_BATCH_RUNNERS says. A model whose
batch of one takes 2 ms or more on one thread bounds throughput; on the CPU it gets one
single-threaded batch runner per CPU, side by side on one session, because the threads of one run
meet at a barrier after every operator and wait whenever a decoding thread or the event loop takes
one of their cores. It also gets a second session with every CPU for a batch that runs alone, so a
lone request at light load is not left on one thread; for a large artifact the two sessions share one
copy of the weights (runtime/shared_weights.py). A cheap model (the event loop and decoding are
its cost, as for the default digits model, which two runners made slower) or one on a GPU gets one
runner with every CPU. docs/benchmarks.md ("Batch runners sized to the model") has the commands; runners were
measured on 2 cores only, and on a larger CPU each takes max_batch_size / CPUs images.
"""

from __future__ import annotations

import logging
import statistics
import time

import numpy as np

from vitserve.runtime.batcher import Batcher, BatchObserver, RunBatch, warm_up_sizes
from vitserve.runtime.cpus import cpu_budget
from vitserve.runtime.memory import MIB, release_free_heap, resident_mib
from vitserve.runtime.predictions import softmax
from vitserve.runtime.session import (
    ModelLoadError,
    OnnxClassifier,
    SessionOptions,
    choose_artifact,
    wants_cuda,
)
from vitserve.runtime.shared_weights import SharedWeights
from vitserve.service.model.gil import CHEAP_MODEL_MS
from vitserve.service.settings import Settings

log = logging.getLogger(__name__)

# Sharing costs the onnx package in the worker and, on a small model, speed at one client
# (docs/latency.md): a smaller artifact keeps a copy per session.
SHARE_WEIGHTS_MIN_MIB = 64.0


class LocalModel:
    """One ORT session in this process, loaded and warmed up at every batch size before it serves.

    It is what service/flow/classify.py calls a Model.
    """

    def __init__(
        self, settings: Settings, observer: BatchObserver | None = None, costly_ms: float = CHEAP_MODEL_MS
    ) -> None:
        self.settings = settings
        self.costly_ms = costly_ms  # a batch of one on one runner's threads at least this: runners
        self.probe_ms: float | None = None  # one runner's batch of one, where it chose the runners
        # A session with every CPU for a batch that runs alone, beside the runners' single-threaded one.
        self.alone: OnnxClassifier | None = None
        before_mib = resident_mib()
        cpus = cpu_budget()
        timed_ms: float | None = None  # the serving session's batch of one, where the probe timed it
        # The weights the runners' and the alone session share, where there are both (CPU only).
        self.weights: SharedWeights | None = None
        if settings.batch_runners:
            runners = settings.batch_runners
            self.classifier = self._load(settings.intra_op_pool_size(cpus, runners))
        else:
            self.classifier, runners, timed_ms = self._choose_runners(cpus)
            if runners > 1 and not settings.intra_op_threads:
                self._load_alone(cpus)
        self.metadata = self.classifier.metadata
        self.batcher = Batcher(
            probabilities(self.classifier),
            max_batch_size=settings.max_batch_size,
            deadline_s=settings.max_latency_ms / 1000,
            max_wait_s=settings.batch_wait_ms / 1000,
            observer=observer,
            runners=runners,
            run_alone=None if self.alone is None else probabilities(self.alone),
        )
        started = time.perf_counter()
        self.batcher.warm_up(warm_up_sizes(self.batcher.run_size), self.classifier.input_shape)
        log.info("warm-up took %.2f s", time.perf_counter() - started)
        # Timing the probe's session again would repeat up to a second of start-up (a ViT-B on a CPU).
        self.batch_one_ms = timed_ms if timed_ms is not None else time_batch_of_one(self.classifier)
        # At rest only what a lone request needs stays resident: the arena that warm-up's large batches
        # grew, and what loading freed into the C heap, go back to the system (docs/latency.md).
        for session in (self.classifier, self.alone):
            if session is not None:
                session.release_arena()
        if self.weights is not None:
            self.weights.drop_resident_raw()
        release_free_heap()
        after_mib = resident_mib()
        # What loading and warming up the sessions cost this process: weights, pre-packed copies, arena.
        self.memory_mib = None if before_mib is None or after_mib is None else after_mib - before_mib
        log.info(
            "%d batch runner(s) of %d intra-op thread(s), up to %d images each",
            runners,
            self.classifier.intra_op_threads,
            self.batcher.run_size,
        )

    def _load(self, intra_op_threads: int, weights: SharedWeights | None = None) -> OnnxClassifier:
        options = SessionOptions(
            precision=self.settings.precision,
            device=self.settings.device,
            intra_op_threads=intra_op_threads,
            spin=self.settings.ort_spin,
        )
        return OnnxClassifier(self.settings.model_dir, options, weights)

    def _load_alone(self, cpus: int) -> None:
        """The session with every CPU beside the runners' one; a large model's two share its weights."""
        if self.weights is not None:
            # The runners' session has packed them: the raw pages come back from the file as this one
            # packs, not all at once.
            self.weights.drop_resident_raw()
            release_free_heap()
        self.alone = self._load(cpus, self.weights)

    def _shared_weights(self) -> SharedWeights | None:
        """A large CPU artifact's weights in one copy that every session of it reads, from the probe
        on: none of its sessions is then built through ONNX Runtime's Python module."""
        path = choose_artifact(self.settings.model_dir, self.settings.precision, use_cuda=False)
        if not self.settings.share_weights or path.stat().st_size / MIB < SHARE_WEIGHTS_MIN_MIB:
            return None
        try:
            return SharedWeights(path)
        except (OSError, ModelLoadError) as exc:  # e.g. no room in TMPDIR for the raw weights' file
            log.warning("each session of %s holds its own copy of the weights: %s", path.name, exc)
            return None

    def _choose_runners(self, cpus: int) -> tuple[OnnxClassifier, int, float | None]:
        """The session, its batch runners and (if the probe was that session) its batch of one in
        ms when VITSERVE_BATCH_RUNNERS is 0 (the module docstring says why): loaded with one
        runner's threads and timed on a batch of one, on the CPU."""
        per_run = self.settings.intra_op_threads or 1
        if wants_cuda(self.settings.device) or cpus // per_run < 2:
            return self._load(self.settings.intra_op_pool_size(cpus, 1)), 1, None
        self.weights = self._shared_weights()
        probe = self._load(per_run, self.weights)
        self.probe_ms = time_batch_of_one(probe)
        runners = runners_for(self.probe_ms, cpus, per_run, self.costly_ms)
        if runners > 1 or self.settings.intra_op_threads:
            return probe, runners, self.probe_ms
        del probe  # one runner, which gets every CPU: loaded again with them
        return self._load(self.settings.intra_op_pool_size(cpus, 1), self.weights), 1, None

    async def infer(self, pixels: np.ndarray) -> np.ndarray:
        return await self.batcher.infer(pixels)

    def info(self) -> dict[str, object]:
        return {
            "artifact": self.classifier.path.name,
            "artifact_choice": self.classifier.choice,
            # 0.0: an image's scores are bitwise the same alone or beside any others (export gate).
            "batch_max_abs_logit": self.metadata.batch_max_abs_logit,
            "precision": self.metadata.precision,
            "providers": list(self.classifier.providers),
            "intra_op_threads": self.classifier.intra_op_threads,
            "batch_runners": self.batcher.runners,
            "alone_intra_op_threads": None if self.alone is None else self.alone.intra_op_threads,
            # The runners' and the alone session read one copy of the weights (runtime/shared_weights.py).
            "weights_shared": self.weights is not None,
            "artifact_mib": round(self.classifier.path.stat().st_size / MIB, 1),
            "memory_mib": None if self.memory_mib is None else round(self.memory_mib, 1),
            "max_batch_size": self.settings.max_batch_size,
            "max_latency_ms": self.settings.max_latency_ms,
            "batch_one_ms": round(self.batch_one_ms, 3),
            "runners_probe_ms": None if self.probe_ms is None else round(self.probe_ms, 3),
        }

    def close(self) -> None:
        self.batcher.close()


def probabilities(classifier: OnnxClassifier) -> RunBatch:
    """The batcher's model call on one session: pixels -> class probabilities."""

    def run(pixels: np.ndarray) -> np.ndarray:
        # In the model's thread, once per batch: the event loop only ranks (runtime/predictions.py).
        return softmax(classifier.predict_batch(pixels))

    return run


def runners_for(probe_ms: float, cpus: int, threads_per_run: int, costly_ms: float = CHEAP_MODEL_MS) -> int:
    """Batch runners for a model on the CPU whose batch of one took probe_ms on threads_per_run threads:
    one per share of the CPUs for a costly model, else one."""
    if probe_ms < costly_ms:
        return 1
    return max(1, cpus // threads_per_run)


def time_batch_of_one(classifier: OnnxClassifier, runs: int = 5, budget_s: float = 1.0) -> float:
    """Median ms of one image through the session: what the runners and thread switching follow.

    Up to `runs` runs, fewer once `budget_s` is spent: a ViT-B on a CPU takes most of a second per
    image, and start-up need not wait five of them to learn it is far above 2 ms.
    """
    pixels = np.zeros((1, *classifier.input_shape), dtype=np.uint8)
    classifier.predict_batch(pixels)  # the first run of a fresh session allocates: not counted
    times: list[float] = []
    first = time.perf_counter()
    while len(times) < runs and (not times or time.perf_counter() - first < budget_s):
        started = time.perf_counter()
        classifier.predict_batch(pixels)
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)
