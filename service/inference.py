"""The inference worker: one ONNX Runtime session behind BentoML's adaptive batching.

It runs as its own BentoML service (its own process), so decoding in the API workers never competes
with a batch for the GIL, and it only ever sees uint8 pixel records, never request bytes.
"""

from __future__ import annotations

import logging
import time

import bentoml
import numpy as np

from vitserve.runtime.session import OnnxClassifier, SessionOptions
from vitserve.service.batching import cap_batching_wait
from vitserve.service.heap import freeze_startup_heap
from vitserve.service.metrics import ServiceMetrics
from vitserve.service.request_timeout import cancel_request_timers
from vitserve.service.settings import Settings
from vitserve.service.shutdown import GracefulShutdown, api_workers_gone

log = logging.getLogger(__name__)

SETTINGS = Settings.from_env()
API_SERVICE_NAME = "vitserve"  # the public service's name (service/app.py), how its workers are found
cap_batching_wait(SETTINGS.batch_wait_ms / 1000)
cancel_request_timers()  # both services' workers import this module before building their app


def record_dtype(image_size: int) -> np.dtype:
    """One queued image: its pixels and the wall-clock time its API worker sent it (for queue wait)."""
    return np.dtype([("pixels", np.uint8, (image_size, image_size, 3)), ("sent_at", np.float64)])


def warm_up_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, ... up to max_batch_size: the shapes adaptive batching will produce most."""
    sizes, n = [], 1
    while n < max_batch_size:
        sizes.append(n)
        n *= 2
    return [*sizes, max_batch_size]


# BentoML's client to this service closes its whole connection pool every `max_requests` calls and every
# `max_age` seconds (defaults 100 and 300 s), aborting the calls still in flight on it: under load that
# failed accepted requests with "inference connection dropped" 503s. The worker is local (a Unix
# socket), so there is nothing to rebalance: keep one pool for the worker's life.
KEEP_POOL = {"max_requests": 2**62, "max_age": float(2**62)}


@bentoml.service(
    name="vitserve-inference",
    workers=1,
    traffic={"timeout": SETTINGS.request_timeout_s},
    runner_connection=KEEP_POOL,
    # Every /infer call is one or more public requests that the API worker's access log already
    # records; logging them again here cost this worker's event loop a line per call.
    logging={"access": {"enabled": False}},
)
class Inference:
    def __init__(self) -> None:
        self.metrics = ServiceMetrics.create()
        self.metrics.inference_worker_starts.inc()
        self.classifier = OnnxClassifier(
            SETTINGS.model_dir,
            SessionOptions(
                precision=SETTINGS.precision,
                device=SETTINGS.device,
                intra_op_threads=SETTINGS.intra_op_threads,
            ),
        )
        started = time.perf_counter()
        self.classifier.warm_up(warm_up_sizes(SETTINGS.max_batch_size))
        log.info("warm-up took %.2f s", time.perf_counter() - started)
        meta = self.classifier.metadata
        self.metrics.model_info.labels(
            name=meta.model_name,
            version=meta.model_version,
            provider=self.classifier.providers[0],
            precision=meta.precision,
        ).set(1)
        self.dtype = record_dtype(meta.preprocessing.image_size)
        self.ready = True
        # Serve until the API workers have drained: they still send the images they admitted.
        self.shutdown = GracefulShutdown(
            "inference worker",
            api_workers_gone(API_SERVICE_NAME),
            deadline_s=SETTINGS.shutdown_delay_s + SETTINGS.request_timeout_s + 5,
        )

    @bentoml.on_startup
    def _install_shutdown(self) -> None:
        self.shutdown.install()

    @bentoml.on_startup
    def _freeze_heap(self) -> None:
        freeze_startup_heap("inference worker")  # __init__ has loaded the model and warmed its session

    def __is_ready__(self) -> bool:
        return self.ready

    # VITSERVE_MAX_BATCH_SIZE=1 turns batching off: BentoML refuses a batchable API with a maximum
    # of 1, so the method is then an ordinary API and each request runs alone.
    @bentoml.api(
        batchable=SETTINGS.max_batch_size > 1,
        batch_dim=0,
        max_batch_size=max(2, SETTINGS.max_batch_size),
        max_latency_ms=SETTINGS.max_latency_ms,
    )
    def infer(self, records: np.ndarray) -> np.ndarray:
        """(N,) pixel records -> (N, num_classes) float32 logits, N formed by adaptive batching."""
        started_wall = time.time()
        records = records.view(self.dtype) if records.dtype != self.dtype else records
        for sent_at in records["sent_at"]:
            self.metrics.queue_wait_seconds.observe(max(0.0, started_wall - float(sent_at)))
        started = time.perf_counter()
        logits = self.classifier.predict_batch(np.ascontiguousarray(records["pixels"]))
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(records))
        return logits

    @bentoml.api
    def info(self) -> dict[str, object]:
        """What the session really runs on, for GET /model."""
        meta = self.classifier.metadata
        return {
            "artifact": self.classifier.path.name,
            "precision": meta.precision,
            "providers": list(self.classifier.providers),
            "intra_op_threads": self.classifier.intra_op_threads,
            "max_batch_size": SETTINGS.max_batch_size,
            "max_latency_ms": SETTINGS.max_latency_ms,
        }
