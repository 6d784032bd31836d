"""The /explain flow: attention rollout maps beside the prediction.

Where it runs, and why: explanations need the companion artifact model.explain.onnx (the fused
serving graph has no attention tensor). Its session lives in the API worker, loaded on the first
/explain, and runs in its own thread limiter (one explanation at a time per worker, ORT on
`explain_threads` threads, `explain_max_waiting` more queued, then 429). The classify batcher never
sees it, so /classify latency only shares CPU cycles, never a queue, with explanations; and a server
that never gets an /explain never loads the second model. Its image is admitted against the same
per-worker limit as classified images (`ExplainFlow` is a `Flow` over the worker's one Admission).
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np

from vitserve.runtime.decode import DecodeError, DecodeLimits, decode_image
from vitserve.runtime.predictions import Prediction, softmax, top_k_predictions
from vitserve.runtime.rollout import RolloutError, rollout_map
from vitserve.service.flow.admission import Admission, Flow
from vitserve.service.flow.errors import ApiError, from_decode_error
from vitserve.service.flow.heatmap import overlay_png

if TYPE_CHECKING:
    from vitserve.runtime.artifact import ArtifactMetadata
    from vitserve.runtime.explain_session import ExplainSession
    from vitserve.service.observe.metrics import ServiceMetrics

FORMATS = ("both", "json", "png")
METHOD = "attention_rollout"


@dataclass(frozen=True)
class ExplainOptions:
    format: str = "both"  # both: JSON with map and base64 PNG; json: map only; png: the PNG alone
    class_index: int | None = None  # whose score to report beside the (class-agnostic) map
    head_fusion: str = "mean"


@dataclass(frozen=True)
class Explanation:
    prediction: Prediction
    heatmap: np.ndarray  # (grid, grid), sums to 1
    class_index: int
    class_score: float
    png: bytes | None


class Explainer:
    """The lazily loaded explanation session of one API worker, behind its own small limiter."""

    def __init__(self, model_dir: Path, metadata: ArtifactMetadata, threads: int, max_waiting: int) -> None:
        self.model_dir = model_dir
        self.metadata = metadata
        self.threads = threads
        self.max_waiting = max_waiting  # explanations queued behind the running one, then 429
        self.limiter = anyio.CapacityLimiter(1)
        self.in_flight = 0  # touched only from the event loop
        self._session: ExplainSession | None = None
        self._load_lock = threading.Lock()

    def try_enter(self) -> bool:
        if self.in_flight > self.max_waiting:  # the running one plus max_waiting queued
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1

    def session(self) -> ExplainSession:
        # Imported on first use: with several API workers the model lives in the model server, and
        # ONNX Runtime would add ~30 MiB to every API worker that never gets an /explain.
        from vitserve.runtime.explain_session import ExplainArtifactError, ExplainSession

        with self._load_lock:
            if self._session is None:
                try:
                    self._session = ExplainSession(self.model_dir, self.threads)
                except ExplainArtifactError as exc:
                    raise ApiError("unavailable", f"explanations are not available: {exc}") from exc
            return self._session

    async def explain(
        self, data: bytes, limits: DecodeLimits, options: ExplainOptions, top_k: int
    ) -> Explanation:
        return await anyio.to_thread.run_sync(
            self._explain, data, limits, options, top_k, limiter=self.limiter
        )

    def _explain(self, data: bytes, limits: DecodeLimits, options: ExplainOptions, top_k: int) -> Explanation:
        try:
            pixels = decode_image(data, self.metadata.preprocessing, limits)
        except DecodeError as exc:
            raise from_decode_error(exc) from exc
        explained = self.session().explain(pixels)
        try:
            heatmap = rollout_map(explained.attentions, options.head_fusion)
        except RolloutError as exc:  # e.g. NaN attention: the model, not the request, is at fault
            raise ApiError("unavailable", f"the attention rollout failed: {exc}") from exc
        logits = explained.logits[None]
        (prediction,) = top_k_predictions(logits, self.metadata.labels, top_k)
        index = prediction.top_k[0].index if options.class_index is None else options.class_index
        score = float(softmax(logits)[0, index])
        png = overlay_png(pixels, heatmap) if options.format in ("both", "png") else None
        return Explanation(prediction, heatmap, index, score, png)


def explanation_body(result: Explanation, options: ExplainOptions, labels: tuple[str, ...]) -> dict[str, Any]:
    p = result.prediction
    explanation: dict[str, Any] = {
        "method": METHOD,
        "head_fusion": options.head_fusion,
        "grid": list(result.heatmap.shape),
        # Attention rollout does not depend on the class: the map is the same for every class, and
        # `class` only chooses whose score is reported beside it (see docs/explain.md).
        "class_specific": False,
        "class": {
            "label": labels[result.class_index],
            "index": result.class_index,
            "score": result.class_score,
        },
        "map": [[float(v) for v in row] for row in result.heatmap],
    }
    if result.png is not None:
        explanation["overlay_png"] = base64.b64encode(result.png).decode("ascii")
    return {
        "label": p.label,
        "score": p.score,
        "top_k": [{"label": t.label, "index": t.index, "score": t.score} for t in p.top_k],
        "explanation": explanation,
    }


class ExplainFlow(Flow):
    """One /explain request's image: admitted, explained in the explainer's limiter, counted."""

    def __init__(
        self,
        explainer: Explainer,
        admission: Admission,
        metrics: ServiceMetrics,
        limits: DecodeLimits,
        retry_after_s: int,
    ) -> None:
        super().__init__(admission, metrics, retry_after_s)
        self.explainer = explainer
        self.metadata = explainer.metadata
        self.limits = limits

    async def explain(self, image: bytes, options: ExplainOptions, top_k: int) -> Explanation:
        started = time.perf_counter()
        explainer = self.explainer
        if not explainer.try_enter():
            raise self.overloaded(f"{explainer.in_flight} explanations are in flight on this worker")
        try:
            async with self.admitted(1):
                result = await explainer.explain(image, self.limits, options, top_k)
        finally:
            explainer.leave()
        self.metrics.classified(result.prediction.label)
        self.metrics.explain_seconds.observe(time.perf_counter() - started)
        return result
