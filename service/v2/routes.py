"""v2's REST routes other than infer's fast path, as FastAPI routes beside /classify's: health, server
and model metadata, model readiness; and infer itself, for the OpenAPI document and for a request that
reaches FastAPI (the front door serves infer before it does)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from vitserve.service.v2.errors import V2Error
from vitserve.service.v2.protocol import V2Protocol
from vitserve.service.v2.tensors import error_body
from vitserve.service.web.door import response_of
from vitserve.service.web.parsing import RequestParts
from vitserve.service.worker import worker_of

router = APIRouter(tags=["Open Inference Protocol (v2)"])


class V2ErrorBody(BaseModel):
    """The protocol's error body: the message alone."""

    error: str


class Readiness(BaseModel):
    ready: bool


class ModelReadiness(BaseModel):
    name: str
    ready: bool


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": V2ErrorBody, "description": "error"} for status in statuses
    }
    if 404 in responses:
        # A name or version with a control character (a newline) never reaches these routes: the
        # mount they sit under does not match such a path, and BentoML's app answers a plain-text 404.
        responses[404]["content"] = {"text/plain": {"schema": {"type": "string"}}}
    return responses


NOT_READY: dict[int | str, dict[str, Any]] = {503: {"model": Readiness, "description": "not ready"}}


def _v2(request: Request) -> V2Protocol:
    return worker_of(request).v2


def _error(exc: V2Error) -> Response:
    return Response(error_body(exc), exc.status, exc.headers(), "application/json")


@router.get("/v2", summary="Server metadata: name, version, extensions")
async def server_metadata(request: Request) -> dict[str, Any]:
    return _v2(request).server_metadata()


@router.get("/v2/health/live", summary="200 while the server runs")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get(
    "/v2/health/ready",
    response_model=Readiness,
    responses=NOT_READY,
    summary="200 when the model serves on REST and gRPC, 503 while not",
)
async def ready(request: Request) -> JSONResponse:
    is_ready = _v2(request).ready()
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/v2/models/{name}", responses=_errors(404), summary="Model metadata: inputs, outputs, labels")
@router.get(
    "/v2/models/{name}/versions/{version}", responses=_errors(404), summary="Model metadata of one version"
)
async def model_metadata(request: Request, name: str, version: str | None = None) -> Response:
    spec = _v2(request).spec
    try:
        spec.find(name, version)
    except V2Error as exc:
        return _error(exc)
    return JSONResponse(spec.metadata())


MODEL_READY: dict[str, Any] = {
    "response_model": ModelReadiness,
    "responses": {**_errors(404), 503: {"model": ModelReadiness, "description": "not ready"}},
}


@router.get("/v2/models/{name}/ready", **MODEL_READY, summary="200 when the model is ready, 503 while not")
@router.get("/v2/models/{name}/versions/{version}/ready", **MODEL_READY, summary="Readiness of one version")
async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
    v2 = _v2(request)
    try:
        v2.spec.find(name, version)
    except V2Error as exc:
        return _error(exc)
    is_ready = v2.ready()
    return JSONResponse({"name": name, "ready": is_ready}, status_code=200 if is_ready else 503)


INFER_DOC: dict[str, Any] = {
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object", "required": ["inputs"]}},
                # Triton's binary tensor data: a JSON header of Inference-Header-Content-Length bytes
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
    "responses": {
        200: {
            "description": "the outputs (binary ones after a JSON header: Inference-Header-Content-Length)",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **_errors(400, 404, 408, 413, 429, 503),
    },
}


@router.post("/v2/models/{name}/infer", **INFER_DOC, summary="Classify images (v2 inference)")
@router.post("/v2/models/{name}/versions/{version}/infer", **INFER_DOC, summary="v2 inference of one version")
async def infer(request: Request, name: str, version: str | None = None) -> Response:
    return response_of(await _v2(request).endpoint.answer(request.url.path, RequestParts.of(request)))
