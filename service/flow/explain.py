"""POST /explain and the /ui demo page: attention rollout maps beside the prediction.

Where it runs, and why: explanations need the companion artifact model.explain.onnx (the fused
serving graph has no attention tensor). Its session lives in the API worker, loaded on the first
/explain, and runs in its own thread limiter (one explanation at a time per worker, ORT on
`threads` threads, `max_waiting` more queued, then 429). The classify batcher never sees it, so
/classify latency only shares CPU cycles, never a queue, with explanations; and a server
that never gets an /explain never loads the second model. A separate BentoML service would isolate
it further, at the cost of a process and its memory for a rarely used feature.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import QueryParams

from vitserve.runtime.decode import MEDIA_TYPES, DecodeError, DecodeLimits, decode_image
from vitserve.runtime.predictions import Prediction, softmax, top_k_predictions
from vitserve.runtime.rollout import HEAD_FUSIONS, RolloutError, rollout_map
from vitserve.service.flow.errors import ApiError, from_decode_error
from vitserve.service.flow.heatmap import overlay_png
from vitserve.service.web.context import context_of
from vitserve.service.web.openapi import ErrorBody
from vitserve.service.web.parsing import RequestParts, parse_image_request, refuse_unknown_query

if TYPE_CHECKING:
    from vitserve.runtime.artifact import ArtifactMetadata
    from vitserve.runtime.explain_session import ExplainSession

FORMATS = ("both", "json", "png")
STATIC_DIR = Path(__file__).parent.parent / "static"
METHOD = "attention_rollout"


@dataclass(frozen=True)
class ExplainConfig:
    # ORT threads for one explanation: one keeps it from competing with the classify batches
    # for every core; the digits model explains in ~5 ms on one thread, ViT-B/16 in ~1 s.
    threads: int = 1
    # Explanations queued behind the running one per API worker before new ones get 429.
    max_waiting: int = 8


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


EXPLAIN_QUERY = frozenset({"format", "class", "head_fusion", "top_k"})  # documented in the OpenAPI entry


def parse_explain_options(query: QueryParams, labels: tuple[str, ...]) -> ExplainOptions:
    """`format`, `class` and `head_fusion` from the query string; 422 for any bad value."""
    # An empty value ("format=") is refused like any other bad value, not read as the default: the
    # OpenAPI enum does not contain it (schemathesis, tests/reliability/test_api_fuzz.py).
    fmt = query.get("format", "both")
    if fmt not in FORMATS:
        raise ApiError("invalid_parameter", f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    fusion = query.get("head_fusion", "mean")
    if fusion not in HEAD_FUSIONS:
        choices = ", ".join(HEAD_FUSIONS)
        raise ApiError("invalid_parameter", f"head_fusion must be one of {choices}, not {fusion!r}")
    raw_class = query.get("class")
    return ExplainOptions(
        format=fmt,
        class_index=resolve_class(raw_class, labels) if raw_class is not None else None,
        head_fusion=fusion,
    )


def resolve_class(raw: str, labels: tuple[str, ...]) -> int:
    """A label (matched first, so a label "3" means that label) or a class index."""
    if raw in labels:
        return labels.index(raw)
    try:
        index = int(raw)
    except ValueError as exc:
        raise ApiError("invalid_parameter", f"class {raw!r} is neither a label nor an index") from exc
    if not 0 <= index < len(labels):
        raise ApiError("invalid_parameter", f"class index {index} is out of range 0..{len(labels) - 1}")
    return index


class Explainer:
    """The lazily loaded explanation session of one API worker, behind its own small limiter."""

    def __init__(
        self, model_dir: Path, metadata: ArtifactMetadata, config: ExplainConfig | None = None
    ) -> None:
        import prometheus_client as prom  # after BentoML has set the multiprocess dir (see metrics.py)

        self.model_dir = model_dir
        self.metadata = metadata
        self.config = config or ExplainConfig()
        self.limiter = anyio.CapacityLimiter(1)
        self.in_flight = 0  # touched only from the event loop
        self._session: ExplainSession | None = None
        self._load_lock = threading.Lock()
        self.seconds = prom.Histogram(
            "vitserve_explain_seconds",
            "Time to answer one /explain request: decode, explanation graph, rollout and PNG.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )

    def try_enter(self) -> bool:
        if self.in_flight > self.config.max_waiting:  # the running one plus max_waiting queued
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
                    self._session = ExplainSession(self.model_dir, self.config.threads)
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


router = APIRouter()

_QUERY = [
    {
        "name": "format",
        "in": "query",
        "schema": {"type": "string", "enum": list(FORMATS), "default": "both"},
        "description": "both: JSON with the map and a base64 PNG overlay; json: the map only; "
        "png: the overlay PNG itself (prediction in X-Vitserve-Label / X-Vitserve-Score headers)",
    },
    {
        "name": "class",
        "in": "query",
        "schema": {"type": "string"},
        "description": "label or index whose score to report with the map (rollout is class-agnostic: "
        "the map itself does not change)",
    },
    {
        "name": "head_fusion",
        "in": "query",
        "schema": {"type": "string", "enum": list(HEAD_FUSIONS), "default": "mean"},
        "description": "how each layer's attention heads are combined",
    },
    {
        "name": "top_k",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1},
        "description": "how many classes to return (default 5, capped at the number of classes)",
    },
]

_FILE = {"type": "string", "format": "binary"}
_REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["image"], "properties": {"image": _FILE}}
        },
        **{media_type: {"schema": _FILE} for media_type in MEDIA_TYPES.values()},
    },
}
_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the prediction and its attention rollout map",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "image/png": {"schema": _FILE},
        },
    },
    **{
        status: {"model": ErrorBody, "description": "error"} for status in (400, 408, 413, 415, 422, 429, 503)
    },
}


def _overloaded(why: str, retry_after_s: int) -> ApiError:
    return ApiError("overloaded", f"{why}; retry after the Retry-After seconds", retry_after_s=retry_after_s)


@router.post(
    "/explain",
    responses=_ANSWERS,
    openapi_extra={"requestBody": _REQUEST_BODY, "parameters": _QUERY},
    summary="Classify one image and show where the class token looked (attention rollout)",
)
async def explain(request: Request) -> Response:
    context = context_of(request)
    explainer, settings, flow = context.explainer, context.settings, context.flow
    admission, metadata = flow.admission, flow.metadata
    started = time.perf_counter()
    if admission.full():
        raise _overloaded(
            f"{admission.in_flight} images are in flight on this worker", settings.retry_after_s
        )
    refuse_unknown_query(request.query_params, EXPLAIN_QUERY)
    options = parse_explain_options(request.query_params, metadata.labels)
    parsed = await parse_image_request(
        RequestParts.of(request),
        field="image",
        many=False,
        max_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        max_images=1,
        default_top_k=settings.default_top_k,
        num_classes=metadata.num_classes,
    )
    if not explainer.try_enter():
        raise _overloaded(
            f"{explainer.in_flight} explanations are in flight on this worker", settings.retry_after_s
        )
    try:
        if not admission.try_acquire(1):
            raise _overloaded(
                f"{admission.in_flight} images are in flight on this worker", settings.retry_after_s
            )
        try:
            result = await explainer.explain(parsed.images[0], flow.limits, options, parsed.top_k)
        finally:
            admission.release(1)
    finally:
        explainer.leave()
    flow.metrics.classified(result.prediction.label)
    explainer.seconds.observe(time.perf_counter() - started)
    if options.format == "png":
        assert result.png is not None
        headers = {
            # Percent-encoded: a header is latin-1, a label may be any Unicode ("café", "日本").
            "X-Vitserve-Label": quote(result.prediction.label, safe=""),
            "X-Vitserve-Score": f"{result.prediction.score:.6g}",
        }
        return Response(result.png, media_type="image/png", headers=headers)
    body = explanation_body(result, options, metadata.labels)
    body["model"] = {"name": metadata.model_name, "version": metadata.model_version}
    return JSONResponse(body)


@router.get("/ui", include_in_schema=False)
async def demo_page() -> HTMLResponse:
    """The demo page: pick or drop an image, see the top-k labels and the attention overlay."""
    return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))
