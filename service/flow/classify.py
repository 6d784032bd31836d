"""The classify flow, in the order an image takes it: admit → decode → batch → predictions.

`ClassifyFlow` owns every step between a parsed request (image bytes, top_k) and its results, and the
refusals and error answers on the way (service/flow/admission.py); nothing about ASGI or BentoML. The
front door and the classify endpoint (service/web/) are handed one at start-up, and a test can drive
it with a real model and no server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image

from vitserve.runtime.artifact import ArtifactMetadata
from vitserve.runtime.batcher import BatcherClosed, DeadlineExceeded
from vitserve.runtime.decode import DecodeError, DecodeLimits, decode_opened, open_image
from vitserve.runtime.predictions import Prediction, ranked_predictions
from vitserve.service.flow.admission import Admission, Flow
from vitserve.service.flow.errors import ApiError, from_decode_error
from vitserve.service.observe.metrics import ServiceMetrics

if TYPE_CHECKING:
    from prometheus_client import Histogram

log = logging.getLogger(__name__)

# An image this small (in bytes, then in pixels by its header) is decoded on the event loop itself:
# handing it to a thread costs more than decoding it (a future, a wake-up of the loop, the GIL passed
# between two threads that both run Python). The bounds keep the loop's work per image well under a
# millisecond; docs/benchmarks.md ("Decoding threads") says how to measure it.
INLINE_MAX_BYTES = 64 * 1024
INLINE_MAX_PIXELS = 128 * 128


class Model(Protocol):
    """What the flow needs of a model: service/model/local.py's LocalModel is one."""

    metadata: ArtifactMetadata

    async def infer(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, num_classes) float64 class probabilities (softmax of the logits),
        batched with other callers' images."""
        ...

    def info(self) -> dict[str, object]:
        """What the session really runs on (artifact, precision, providers, threads), for GET /model."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ItemResult:
    """The outcome for one image of a request: a prediction (and its probabilities row) or its error."""

    prediction: Prediction | None = None
    error: ApiError | None = None
    probabilities: np.ndarray | None = None  # (num_classes,) float64, for protocols that answer them all


class ClassifyFlow(Flow):
    """Image bytes of one request -> one ItemResult per image; sheds with 429 when the worker is full."""

    def __init__(
        self,
        model: Model,
        admission: Admission,
        metrics: ServiceMetrics,
        limits: DecodeLimits,
        decode_threads: int,
        retry_after_s: int,
    ) -> None:
        super().__init__(admission, metrics, retry_after_s)
        self.model = model
        self.metadata: ArtifactMetadata = model.metadata
        self.limits = limits
        # Pillow releases the GIL while it decodes a large image, so decoding those in threads
        # overlaps with the event loop and with the model's thread.
        self._decoder = ThreadPoolExecutor(decode_threads, thread_name_prefix="vitserve-decode")
        self._on_loop = metrics.decode_seconds.labels(where="loop")
        self._in_pool = metrics.decode_seconds.labels(where="pool")

    async def classify(self, images: tuple[bytes, ...], top_k: int) -> list[ItemResult]:
        """Admit the request's images, decode them (small ones on the loop), infer the good ones together."""
        async with self.admitted(len(images)):
            return await self._classify(images, top_k)

    async def classify_pixels(self, pixels: np.ndarray, top_k: int) -> list[ItemResult]:
        """(N, H, W, 3) uint8 pixels already at the model's input size: admitted and batched as decoded
        images are, with no decoding."""
        async with self.admitted(len(pixels)):
            return await self._predict(pixels, top_k)

    async def _classify(self, images: tuple[bytes, ...], top_k: int) -> list[ItemResult]:
        decoded = await self._decode_all(images)
        results = [ItemResult(error=d) if isinstance(d, ApiError) else ItemResult() for d in decoded]
        good = [(i, d) for i, d in enumerate(decoded) if isinstance(d, np.ndarray)]
        if good:
            pixels = good[0][1][None] if len(good) == 1 else np.stack([d for _, d in good])
            for (i, _), result in zip(good, await self._predict(pixels, top_k), strict=True):
                results[i] = result
        return results

    async def _predict(self, pixels: np.ndarray, top_k: int) -> list[ItemResult]:
        probs = await self._infer(pixels)
        predictions = ranked_predictions(probs, self.metadata.labels, top_k)
        for prediction in predictions:
            self.metrics.classified(prediction.label)
        return [
            ItemResult(prediction=p, probabilities=row) for p, row in zip(predictions, probs, strict=True)
        ]

    async def _decode_all(self, images: tuple[bytes, ...]) -> list[np.ndarray | ApiError]:
        """Small images decoded right here on the event loop, the others in the pool, all at once."""
        loop = asyncio.get_running_loop()
        decoded: list[np.ndarray | ApiError | asyncio.Future[np.ndarray | ApiError]] = []
        for data in images:
            if len(data) > INLINE_MAX_BYTES:
                decoded.append(loop.run_in_executor(self._decoder, self._decode, data))
                continue
            started = time.perf_counter()
            try:
                image = open_image(data, self.limits)
            except DecodeError as exc:
                decoded.append(self._failed(exc, time.perf_counter() - started, self._on_loop))
                continue
            header_s = time.perf_counter() - started
            width, height = image.size
            if width * height <= INLINE_MAX_PIXELS:
                decoded.append(self._finish(image, header_s, self._on_loop))
            else:
                pooled = loop.run_in_executor(self._decoder, self._finish, image, header_s, self._in_pool)
                decoded.append(pooled)
        return [await d if isinstance(d, asyncio.Future) else d for d in decoded]

    def _decode(self, data: bytes) -> np.ndarray | ApiError:
        started = time.perf_counter()
        try:
            image = open_image(data, self.limits)
        except DecodeError as exc:
            return self._failed(exc, time.perf_counter() - started, self._in_pool)
        return self._finish(image, time.perf_counter() - started, self._in_pool)

    def _finish(self, image: Image.Image, header_s: float, timer: Histogram) -> np.ndarray | ApiError:
        started = time.perf_counter()
        try:
            return decode_opened(image, self.metadata.preprocessing)
        except DecodeError as exc:
            return from_decode_error(exc)
        finally:
            timer.observe(header_s + time.perf_counter() - started)

    def _failed(self, error: DecodeError, header_s: float, timer: Histogram) -> ApiError:
        timer.observe(header_s)
        return from_decode_error(error)

    async def _infer(self, pixels: np.ndarray) -> np.ndarray:
        try:
            return await self.model.infer(pixels)
        except DeadlineExceeded as exc:
            raise ApiError(
                "deadline_exceeded",
                f"the batch queue did not reach this request in time ({exc}); retry later",
                retry_after_s=self.retry_after_s,
            ) from exc
        except (BatcherClosed, ConnectionError) as exc:  # shutting down; the model server restarting
            raise ApiError("unavailable", f"{exc}; retry later", retry_after_s=self.retry_after_s) from exc
        except Exception as exc:  # the model itself failed: the client can only retry
            log.exception("inference failed")
            raise ApiError(
                "unavailable", f"inference failed ({type(exc).__name__}); retry later", self.retry_after_s
            ) from exc

    def close(self) -> None:
        self.model.close()
        self._decoder.shutdown(wait=False)
