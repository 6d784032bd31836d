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
from fastapi.responses import JSONResponse, Response

from vitserve.runtime.decode import MEDIA_TYPES
from vitserve.service.classify import ClassifyFlow
from vitserve.service.classify_http import json_bytes
from vitserve.service.context import context_of, hand_over
from vitserve.service.errors import ApiError
from vitserve.service.explain import router as explain_router
from vitserve.service.requests import RequestParts
from vitserve.service.schemas import BatchClassification, Classification, ErrorBody, ModelInfo
from vitserve.service.settings import Settings
from vitserve.service.v2.routes import router as v2_router
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


TOP_K_PARAM = {
    "name": "top_k",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1},
    "description": "how many classes to return (default 5, capped at the number of classes)",
}


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    context_of(request).flow.metrics.rejected(exc.reason)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())


# Declared here for the OpenAPI document. In a running worker the front door hands these POSTs to
# the endpoint itself (service/classify_http.py) and they never reach FastAPI; a request that does
# gets the same answer from the same code.
@router.post(
    "/classify",
    response_model=Classification,
    responses=_error_responses(400, 408, 413, 415, 422, 429, 503),
    openapi_extra={**_request_body("image", many=False), "parameters": [TOP_K_PARAM]},
    summary="Classify one image (multipart field `image`, or the raw image as the body)",
)
async def classify(request: Request) -> Response:
    return await _answer(request)


@router.post(
    "/classify_batch",
    response_model=BatchClassification,
    responses=_error_responses(400, 408, 413, 415, 422, 429, 503),
    openapi_extra={**_request_body("images", many=True), "parameters": [TOP_K_PARAM]},
    summary="Classify several images (repeated multipart field `images`); results in the order sent",
)
async def classify_batch(request: Request) -> Response:
    return await _answer(request)


async def _answer(request: Request) -> Response:
    answer = await context_of(request).endpoint.answer(request.url.path, RequestParts.of(request))
    return Response(json_bytes(answer.body), answer.status, dict(answer.headers), "application/json")


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
    app.include_router(v2_router)  # the Open Inference Protocol's REST routes (service/v2/routes.py)
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    hand_over(app, worker)
