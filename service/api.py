"""The public HTTP routes, installed into the FastAPI app that service/app.py mounts into BentoML.

FastAPI gives each route an OpenAPI entry that matches what it really returns, error bodies included;
BentoML merges it into its own document and keeps /livez, /readyz and /metrics. The routes are
installed by each worker at start-up (`install_routes`), so that BentoML's arbiter, which imports
service/app.py to read the service's configuration, never imports this module and what it needs.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from vitserve.runtime.decode import MEDIA_TYPES
from vitserve.runtime.predictions import Prediction
from vitserve.service.classify import ClassifyFlow, ItemResult
from vitserve.service.context import context_of, hand_over
from vitserve.service.errors import ApiError
from vitserve.service.explain import router as explain_router
from vitserve.service.requests import parse_image_request, refuse_unknown_query
from vitserve.service.schemas import BatchClassification, Classification, ErrorBody, ModelInfo
from vitserve.service.settings import Settings
from vitserve.service.worker import Worker

log = logging.getLogger(__name__)

router = APIRouter()


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
        for media_type in MEDIA_TYPES.values():
            content[media_type] = {"schema": file_schema}
    return {"requestBody": {"required": True, "content": content}}


CLASSIFY_QUERY = frozenset({"top_k"})  # the query parameters /classify and /classify_batch take
TOP_K_PARAM = {
    "name": "top_k",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1},
    "description": "how many classes to return (default 5, capped at the number of classes)",
}


def _prediction_body(prediction: Prediction) -> dict[str, Any]:
    return {
        "label": prediction.label,
        "score": prediction.score,
        "top_k": [{"label": t.label, "index": t.index, "score": t.score} for t in prediction.top_k],
    }


def _model_ref(flow: ClassifyFlow) -> dict[str, str]:
    return {"name": flow.metadata.model_name, "version": flow.metadata.model_version}


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    context_of(request).flow.metrics.rejected(exc.reason)
    return error_response(exc)


@router.post(
    "/classify",
    response_model=Classification,
    responses=_error_responses(400, 408, 413, 415, 422, 429, 503),
    openapi_extra={**_request_body("image", many=False), "parameters": [TOP_K_PARAM]},
    summary="Classify one image (multipart field `image`, or the raw image as the body)",
)
async def classify(request: Request) -> JSONResponse:
    flow = context_of(request).flow
    (result,) = await _parse_and_classify(request, field="image", many=False, max_images=1)
    if result.error is not None:
        return error_response(result.error)  # already counted as rejected by the flow
    assert result.prediction is not None
    return JSONResponse({**_prediction_body(result.prediction), "model": _model_ref(flow)})


async def _parse_and_classify(request: Request, field: str, many: bool, max_images: int) -> list[ItemResult]:
    """Shed, parse, then hand the images to the classify flow: both classify routes."""
    context = context_of(request)
    flow, settings = context.flow, context.settings
    # Shed before reading the body: an overloaded worker should not even buffer the upload. Images
    # are admitted only once the body is in, so clients trickling bytes cannot hold places
    # (slowloris). The front door answers most of these before the route runs; this catches the rest.
    if flow.admission.full():
        raise flow.overloaded()
    refuse_unknown_query(request, CLASSIFY_QUERY)
    parsed = await parse_image_request(
        request,
        field=field,
        many=many,
        max_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        max_images=max_images,
        default_top_k=settings.default_top_k,
        num_classes=flow.metadata.num_classes,
    )
    return await flow.classify(parsed.images, parsed.top_k)


@router.post(
    "/classify_batch",
    response_model=BatchClassification,
    responses=_error_responses(400, 408, 413, 415, 422, 429, 503),
    openapi_extra={**_request_body("images", many=True), "parameters": [TOP_K_PARAM]},
    summary="Classify several images (repeated multipart field `images`); results in the order sent",
)
async def classify_batch(request: Request) -> JSONResponse:
    context = context_of(request)
    limit = context.settings.max_batch_images
    results = await _parse_and_classify(request, field="images", many=True, max_images=limit)
    items = [
        _prediction_body(r.prediction) if r.prediction is not None else r.error.body()  # type: ignore[union-attr]
        for r in results
    ]
    return JSONResponse({"results": items, "model": _model_ref(context.flow)})


@router.get(
    "/model", response_model=ModelInfo, responses=_error_responses(503), summary="The model being served"
)
async def model(request: Request) -> JSONResponse:
    context = context_of(request)
    return JSONResponse(model_info(context.flow, context.settings))


def model_info(flow: ClassifyFlow, settings: Settings) -> dict[str, object]:
    meta = flow.metadata
    pre = meta.preprocessing
    return {
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
        "max_batch_images": settings.max_batch_images,
        **flow.model.info(),
    }


def install_routes(app: FastAPI, worker: Worker) -> None:
    """Give the mounted app its routes and hand them the worker's objects (at start-up)."""
    app.include_router(router)
    app.include_router(explain_router)  # POST /explain and the /ui demo page (service/explain.py)
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    hand_over(app, worker)
