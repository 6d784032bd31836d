"""vitserve's own Prometheus metrics, beside BentoML's request metrics on the same /metrics.

Histograms, not summaries, so that quantiles aggregate across workers and pods. prometheus_client is
imported inside `ServiceMetrics.create`: BentoML sets PROMETHEUS_MULTIPROC_DIR only when a worker
starts, and a client imported earlier would count into a registry that /metrics never reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from vitserve.service.flow.errors import REJECT_REASONS, RejectReason

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

Labelled = TypeVar("Labelled", "Counter", "Histogram")

# Seconds: decoding ranges from ~0.1 ms (a 28x28 PNG) to ~1 s (a 40 MP TIFF).
TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class ServiceMetrics:
    decode_seconds: Histogram
    queue_wait_seconds: Histogram
    inference_seconds: Histogram
    batch_size: Histogram
    images_classified: Counter
    requests_rejected: Counter
    in_flight_images: Gauge
    model_info: Gauge
    inference_retries: Counter
    inference_worker_starts: Counter
    requests: Counter
    request_seconds: Histogram
    explain_seconds: Histogram
    # Child series by label value, looked up once: `labels()` hashes its arguments on every call.
    _children: dict[tuple[str, ...], Any] = field(default_factory=dict, compare=False)

    @classmethod
    def create(cls) -> ServiceMetrics:
        import prometheus_client as prom

        metrics = cls(
            decode_seconds=prom.Histogram(
                "vitserve_decode_seconds",
                "Time to decode, orient and resize one image, in the request path; where: on the event "
                "loop (small images) or in the decoding pool.",
                ["where"],
                buckets=TIME_BUCKETS,
            ),
            queue_wait_seconds=prom.Histogram(
                "vitserve_queue_wait_seconds",
                "Time an image waited between joining the batch queue and its batch starting.",
                buckets=TIME_BUCKETS,
            ),
            inference_seconds=prom.Histogram(
                "vitserve_inference_seconds",
                "ONNX Runtime time for one batch.",
                buckets=TIME_BUCKETS,
            ),
            batch_size=prom.Histogram(
                "vitserve_batch_size", "Images per inference batch.", buckets=BATCH_BUCKETS
            ),
            images_classified=prom.Counter(
                "vitserve_images_classified", "Images classified, by predicted label.", ["label"]
            ),
            requests_rejected=prom.Counter(
                "vitserve_requests_rejected", "Requests refused, by reason.", ["reason"]
            ),
            in_flight_images=prom.Gauge(
                "vitserve_in_flight_images",
                "Images admitted and not yet answered (decoding, queued or in a batch).",
                multiprocess_mode="livesum",
            ),
            # With several API workers: a dropped connection to the model server (it died) is retried;
            # a rate above zero with a steady load means it is restarting.
            inference_retries=prom.Counter(
                "vitserve_inference_retries", "Inference calls sent again after the worker dropped them."
            ),
            # Counted by each process that loads the model (the API worker, or the model server) as it
            # comes up; the multiprocess sum keeps dead ones' counts, so increase() shows restarts.
            # The name predates the model moving into the API worker: dashboards and alerts use it.
            inference_worker_starts=prom.Counter(
                "vitserve_inference_worker_starts", "Processes that loaded the model, first and restarted."
            ),
            # The front door answers /classify and /classify_batch in front of BentoML's middlewares
            # (service/web/door.py), so BentoML's bentoml_service_request_* never see them: these do.
            requests=prom.Counter(
                "vitserve_requests",
                "Classify requests answered, by route and status code.",
                ["route", "code"],
            ),
            request_seconds=prom.Histogram(
                "vitserve_request_seconds",
                "Time from a classify request reaching the front door to its last response byte.",
                ["route"],
                buckets=TIME_BUCKETS,
            ),
            explain_seconds=prom.Histogram(
                "vitserve_explain_seconds",
                "Time to answer one /explain request: decode, explanation graph, rollout and PNG.",
                buckets=TIME_BUCKETS,
            ),
            model_info=prom.Gauge(
                "vitserve_model_info",
                "The model being served; the value is always 1.",
                ["name", "version", "provider", "precision"],
                multiprocess_mode="liveall",
            ),
        )
        # Create every reason's series at 0, so rate() and alerts see them before the first rejection.
        for reason in REJECT_REASONS:
            metrics.requests_rejected.labels(reason=reason)
        return metrics

    def _child(self, metric: Labelled, *labels: str) -> Labelled:
        key = (str(id(metric)), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def record_model(self, model: Any) -> None:
        """vitserve_model_info for a loaded model (service/model/local.py's LocalModel)."""
        meta = model.metadata
        self.model_info.labels(
            name=meta.model_name,
            version=meta.model_version,
            provider=model.info()["providers"][0],
            precision=meta.precision,
        ).set(1)

    def classified(self, label: str) -> None:
        self._child(self.images_classified, label).inc()

    def rejected(self, reason: RejectReason) -> None:
        self._child(self.requests_rejected, reason).inc()

    def request_done(self, route: str, status: int, seconds: float) -> None:
        self._child(self.requests, route, str(status)).inc()
        self._child(self.request_seconds, route).observe(seconds)

    def batch_done(self, size: int, run_s: float, queue_waits_s: Sequence[float]) -> None:
        """runtime.batcher's observer: one batch of `size` images ran for run_s."""
        self.inference_seconds.observe(run_s)
        self.batch_size.observe(size)
        for wait in queue_waits_s:
            self.queue_wait_seconds.observe(wait)
