"""The public HTTP routes, as a FastAPI app mounted into the BentoML service.

FastAPI gives each route an OpenAPI entry that matches what it really returns, error bodies included;
BentoML merges it into its own document and keeps /livez, /readyz and /metrics.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import bentoml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from vitserve.runtime.predictions import Prediction
from vitserve.service.errors import ApiError
from vitserve.service.explain import router as explain_router
from vitserve.service.requests import parse_image_request, refuse_unknown_query
from vitserve.service.schemas import BatchClassification, Classification, ErrorBody, ModelInfo

if TYPE_CHECKING:
    from vitserve.service.app import ItemResult, VitServe

log = logging.getLogger(__name__)

app = FastAPI(
    title="vitserve",
    description="Vision Transformer image classification with adaptive batching.",
    docs_url=None,
    redoc_url=None,
)
app.include_router(explain_router)  # POST /explain and the /ui demo page (service/explain.py)

IMAGE_TYPES = ["image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif", "image/tiff"]


def _error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": "error"} for status in statuses}


def _request_body(field: str, many: bool) -> dict[str, Any]:
    file_schema = {"type": "string", "format": "binary"}
    form_field = {"type": "array", "items": file_schema, "minItems": 1} if many else file_schema
    content: dict[str, Any] = {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": [field],
                "properties": {field: form_field, "top_k": {"type": "integer", "minimum": 1}},
            }
        }
    }
    if not many:
        for media_type in IMAGE_TYPES:
            content[media_type] = {"schema": file_schema}
    return {"requestBody": {"required": True, "content": content}}


CLASSIFY_PATHS = frozenset({"/classify", "/classify_batch"})
CLASSIFY_QUERY = frozenset({"top_k"})  # the query parameters /classify and /classify_batch take
TOP_K_PARAM = {
    "name": "top_k",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1},
    "description": "how many classes to return (default 5, capped at the number of classes)",
}


def _service() -> VitServe:
    return bentoml.get_current_service()  # type: ignore[no-any-return]


def _prediction_body(prediction: Prediction) -> dict[str, Any]:
    return {
        "label": prediction.label,
        "score": prediction.score,
        "top_k": [{"label": t.label, "index": t.index, "score": t.score} for t in prediction.top_k],
    }


def _model_ref(svc: VitServe) -> dict[str, str]:
    return {"name": svc.metadata.model_name, "version": svc.metadata.model_version}


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())


@app.exception_handler(ApiError)
async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    svc = _service()
    svc.metrics.requests_rejected.labels(reason=exc.reason).inc()
    return error_response(exc)


def overloaded_error(svc: VitServe) -> ApiError:
    return ApiError(
        "overloaded",
        f"this worker is at its limit of {svc.admission.limit} images in flight; "
        "retry after the Retry-After seconds",
        retry_after_s=svc.settings.retry_after_s,
    )


@app.post(
    "/classify",
    response_model=Classification,
    responses=_error_responses(400, 408, 413, 415, 422, 429, 503),
    openapi_extra={**_request_body("image", many=False), "parameters": [TOP_K_PARAM]},
    summary="Classify one image (multipart field `image`, or the raw image as the body)",
)
async def classify(request: Request) -> JSONResponse:
    svc = _service()
    (result,) = await _admit_and_classify(svc, request, field="image", many=False, max_images=1)
    if result.error is not None:
        return error_response(result.error)  # already counted as rejected by classify_images
    assert result.prediction is not None
    return JSONResponse({**_prediction_body(result.prediction), "model": _model_ref(svc)})


async def _admit_and_classify(
    svc: VitServe, request: Request, field: str, many: bool, max_images: int
) -> list[ItemResult]:
    """Shed, parse, admit the request's images, classify them, release: both classify routes."""
    # Shed before reading the body: an overloaded worker should not even buffer the upload. The slots
    # are taken only once the body is in, so clients trickling bytes cannot hold them (slowloris).
    # service/front_door.py answers most of these before BentoML's stack; this catches the rest.
    if svc.admission.full():
        raise overloaded_error(svc)
    refuse_unknown_query(request, CLASSIFY_QUERY)
    parsed = await parse_image_request(
        request,
        field=field,
        many=many,
        max_bytes=svc.settings.max_body_bytes,
        body_timeout_s=svc.settings.body_timeout_s,
        max_images=max_images,
        default_top_k=svc.settings.default_top_k,
        num_classes=svc.metadata.num_classes,
    )
    count = len(parsed.images)
    if not svc.admission.try_acquire(count):
        raise overloaded_error(svc)
    try:
        return await svc.classify_images(parsed.images, parsed.top_k)
    finally:
        svc.admission.release(count)


@app.post(
    "/classify_batch",
    response_model=BatchClassification,
    responses=_error_responses(400, 408, 413, 415, 422, 429, 503),
    openapi_extra={**_request_body("images", many=True), "parameters": [TOP_K_PARAM]},
    summary="Classify several images (repeated multipart field `images`); results in the order sent",
)
async def classify_batch(request: Request) -> JSONResponse:
    svc = _service()
    limit = svc.settings.max_batch_images
    results = await _admit_and_classify(svc, request, field="images", many=True, max_images=limit)
    items = [
        _prediction_body(r.prediction) if r.prediction is not None else r.error.body()  # type: ignore[union-attr]
        for r in results
    ]
    return JSONResponse({"results": items, "model": _model_ref(svc)})


@app.get(
    "/model", response_model=ModelInfo, responses=_error_responses(503), summary="The model being served"
)
async def model(_: Request) -> JSONResponse:
    return JSONResponse(await _service().model_info())
