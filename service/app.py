"""The public BentoML service: wires settings, decoding, admission and the inference worker.

`bentoml serve vitserve.service.app:VitServe` (or `vitserve serve`) starts it. The HTTP routes live in
service/api.py; the batched ONNX session in service/inference.py, a separate BentoML service that this
one depends on, so that images from concurrent requests (and API workers) meet in one batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import anyio
import bentoml
import numpy as np

from vitserve.runtime.artifact import ArtifactMetadata, read_metadata
from vitserve.runtime.decode import DecodeError, DecodeLimits, decode_image
from vitserve.runtime.predictions import Prediction, top_k_predictions
from vitserve.runtime.session import ARTIFACT_FILES
from vitserve.service import front_door
from vitserve.service.admission import Admission
from vitserve.service.api import CLASSIFY_PATHS, overloaded_error
from vitserve.service.api import app as http_app
from vitserve.service.errors import ApiError, from_decode_error
from vitserve.service.explain import Explainer
from vitserve.service.heap import freeze_startup_heap
from vitserve.service.inference import API_SERVICE_NAME, SETTINGS, Inference, record_dtype
from vitserve.service.metrics import ServiceMetrics
from vitserve.service.shutdown import GracefulShutdown, after_delay

log = logging.getLogger(__name__)

INFER_ATTEMPTS = 3


def warm_up_bursts(max_batch_size: int) -> list[int]:
    """Concurrent calls per warm-up round: single calls first (the dispatcher's own training wants
    several), then doubling bursts up to the largest batch, each size twice."""
    bursts = [1] * 8
    n = 2
    while n < max_batch_size:
        bursts += [n, n]
        n *= 2
    return [*bursts, max_batch_size, max_batch_size]


@dataclass(frozen=True)
class ItemResult:
    """The outcome for one image of a request: a prediction or the error that image got."""

    prediction: Prediction | None = None
    error: ApiError | None = None


def artifact_metadata(model_dir: Path) -> ArtifactMetadata:
    """Labels and preprocessing are the same in every variant: read them from whichever exists."""
    for name in ARTIFACT_FILES.values():
        if (model_dir / name).is_file():
            return read_metadata(model_dir / name)
    raise FileNotFoundError(f"no vitserve artifact in {model_dir}; run `vitserve export` first")


@bentoml.service(
    name=API_SERVICE_NAME,
    workers=SETTINGS.api_workers,
    traffic={"timeout": SETTINGS.request_timeout_s},
)
@bentoml.asgi_app(http_app, path="/")
class VitServe:
    inference = bentoml.depends(Inference)

    def __init__(self) -> None:
        self.settings = SETTINGS
        self.metadata = artifact_metadata(SETTINGS.model_dir)
        self.metrics = ServiceMetrics.create()
        self.explainer = Explainer(SETTINGS.model_dir, self.metadata)  # loads its model on first use
        self.admission = Admission(SETTINGS.max_in_flight, self.metrics.in_flight_images)
        self.decode_limits = DecodeLimits(max_bytes=SETTINGS.max_body_bytes, max_pixels=SETTINGS.max_pixels)
        self.decode_limiter = anyio.CapacityLimiter(SETTINGS.decode_threads)
        self.record_dtype = record_dtype(self.metadata.preprocessing.image_size)
        self._model_info: dict[str, object] | None = None
        self._batching_warm = False
        self._warm_up_task: asyncio.Task[None] | None = None
        self.shutdown = GracefulShutdown(
            "API worker", after_delay(SETTINGS.shutdown_delay_s), deadline_s=SETTINGS.shutdown_delay_s
        )

    def __is_ready__(self) -> bool:
        # BentoML's readiness probe also asks the inference worker, which is ready after its own warm-up.
        # After SIGTERM it fails while the worker still serves (service/shutdown.py).
        return self._batching_warm and not self.shutdown.draining

    @bentoml.on_startup
    def _install_shutdown(self) -> None:
        self.shutdown.install()

    @bentoml.on_startup
    async def _start_batching_warm_up(self) -> None:
        self._warm_up_task = asyncio.create_task(self._warm_up_batching())

    async def _warm_up_batching(self) -> None:
        """Send bursts of 1, 2, 4, ... images through the batcher before declaring readiness.

        BentoML's dispatcher starts from a guessed cost model (max_latency / 15 seconds per image) and
        trains it on the first batches it sees; until then it holds requests for seconds to fill
        batches. Training it here keeps that out of the first users' latency.
        """
        size = self.metadata.preprocessing.image_size
        record = np.zeros(1, dtype=self.record_dtype)
        record["pixels"] = np.zeros((size, size, 3), dtype=np.uint8)
        deadline = time.monotonic() + self.settings.request_timeout_s * 5
        while True:
            try:
                for burst in warm_up_bursts(self.settings.max_batch_size):
                    record["sent_at"] = time.time()
                    await asyncio.gather(*(self.inference.to_async.infer(record) for _ in range(burst)))
                break
            except Exception as exc:  # the worker may still be starting: any failure retries
                if time.monotonic() > deadline:
                    log.error("batching warm-up failed for good: %r", exc)
                    raise
                log.info("inference worker not ready for warm-up yet (%r); retrying", exc)
                await asyncio.sleep(1.0)
        # Freeze before declaring readiness: everything alive now lives as long as the worker.
        freeze_startup_heap("API worker")
        self._batching_warm = True
        log.info("batching warm-up done")

    def _decode(self, data: bytes) -> np.ndarray:
        started = time.perf_counter()
        try:
            return decode_image(data, self.metadata.preprocessing, self.decode_limits)
        finally:
            self.metrics.decode_seconds.observe(time.perf_counter() - started)

    async def _decode_one(self, data: bytes) -> np.ndarray | ApiError:
        try:
            return await anyio.to_thread.run_sync(self._decode, data, limiter=self.decode_limiter)
        except DecodeError as exc:
            return from_decode_error(exc)

    async def classify_images(self, images: tuple[bytes, ...], top_k: int) -> list[ItemResult]:
        """Decode in parallel threads, then send every good image to the batcher in one call."""
        decoded = await asyncio.gather(*(self._decode_one(data) for data in images))
        good = [i for i, d in enumerate(decoded) if isinstance(d, np.ndarray)]
        results: list[ItemResult] = [
            ItemResult(error=d) if isinstance(d, ApiError) else ItemResult() for d in decoded
        ]
        if good:
            records = np.empty(len(good), dtype=self.record_dtype)
            for slot, i in enumerate(good):
                records[slot]["pixels"] = decoded[i]
            records["sent_at"] = time.time()
            logits = await self._infer(records)
            for i, prediction in zip(
                good, top_k_predictions(logits, self.metadata.labels, top_k), strict=True
            ):
                results[i] = ItemResult(prediction=prediction)
                self.metrics.images_classified.labels(label=prediction.label).inc()
        for result in results:
            if result.error is not None:
                self.metrics.requests_rejected.labels(reason=result.error.reason).inc()
        return results

    async def _infer(self, records: np.ndarray) -> np.ndarray:
        # Inference is pure, so a call that lost its pooled connection is safe to send again: the
        # worker closed an idle keep-alive connection as we reused it (uvicorn closes after 5 s idle,
        # aiohttp keeps them 15 s), which surfaces as a disconnect or, if it is noticed while the request
        # is written, as ClientOSError "Can not write request body"; or the worker died mid-call.
        for attempt in range(INFER_ATTEMPTS):
            try:
                return np.asarray(await self.inference.to_async.infer(records))
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if attempt + 1 < INFER_ATTEMPTS:
                    log.warning(
                        "inference connection dropped (%r), retrying (%d/%d)",
                        exc,
                        attempt + 1,
                        INFER_ATTEMPTS,
                    )
                    self.metrics.inference_retries.inc()
                    continue
                raise self._unavailable(
                    f"the inference worker dropped the connection ({type(exc).__name__})"
                ) from exc
            except bentoml.exceptions.BentoMLException as exc:
                status = getattr(getattr(exc, "error_code", None), "value", None)
                if status == 503:
                    raise ApiError(
                        "deadline_exceeded",
                        "the inference queue did not reach this request within max_latency_ms; retry later",
                        retry_after_s=self.settings.retry_after_s,
                    ) from exc
                raise self._unavailable(f"the inference worker failed: {exc}") from exc
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.warning("inference call failed: %r", exc)
                why = f"the inference worker is unreachable ({type(exc).__name__})"
                raise self._unavailable(why) from exc
        raise AssertionError("unreachable")

    def _unavailable(self, why: str) -> ApiError:
        return ApiError("unavailable", f"{why}; retry later", retry_after_s=self.settings.retry_after_s)

    async def model_info(self) -> dict[str, object]:
        if self._model_info is None:
            runtime = await self.inference.to_async.info()
            meta = self.metadata
            pre = meta.preprocessing
            self._model_info = {
                "name": meta.model_name,
                "version": meta.model_version,
                "labels": list(meta.labels),
                "input_size": [pre.image_size, pre.image_size],
                "preprocessing": {
                    "crop_pct": pre.crop_pct,
                    "interpolation": pre.interpolation,
                    "mean": list(pre.mean),
                    "std": list(pre.std),
                },
                "fused_attention": meta.fused_attention,
                "max_batch_images": self.settings.max_batch_images,
                **runtime,
            }
        return self._model_info


def _refuse_when_full(path: str, requests_in_progress: int) -> front_door.Refusal | None:
    """The front door's question, asked before BentoML's stack sees a classify request.

    Every request carries at least one image, so requests in progress count against the image limit
    too; admission then still bounds the images of the ones let in.
    """
    try:
        svc: VitServe = bentoml.get_current_service()
    except bentoml.exceptions.BentoMLException:
        return None  # no instance yet (start-up): the route itself answers
    if requests_in_progress < svc.admission.limit and not svc.admission.full():
        return None
    error = overloaded_error(svc)
    svc.metrics.requests_rejected.labels(reason=error.reason).inc()
    return front_door.Refusal(error.status, error.body(), error.headers())


front_door.install(VitServe, CLASSIFY_PATHS, _refuse_when_full)
