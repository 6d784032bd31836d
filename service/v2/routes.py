"""v2's REST routes other than infer's fast path, as FastAPI routes beside /classify's: health, server
and model metadata, model readiness; and infer itself, for the OpenAPI document and for a request that
reaches FastAPI (the front door serves infer before it does)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from vitserve.service.context import context_of
from vitserve.service.requests import RequestParts
from vitserve.service.v2.errors import V2Error
from vitserve.service.v2.protocol import V2Protocol
from vitserve.service.v2.tensors import error_body

router = APIRouter(tags=["Open Inference Protocol (v2)"])


def _v2(request: Request) -> V2Protocol:
    return context_of(request).v2


def _error(exc: V2Error) -> Response:
    return Response(error_body(exc), exc.status, exc.headers(), "application/json")


@router.get("/v2", summary="Server metadata: name, version, extensions")
async def server_metadata(request: Request) -> dict[str, Any]:
    return _v2(request).server_metadata()


@router.get("/v2/health/live", summary="200 while the server runs")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready", summary="200 when the model serves on REST and gRPC, 503 while not")
async def ready(request: Request) -> JSONResponse:
    is_ready = _v2(request).ready()
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/v2/models/{name}", summary="Model metadata: inputs, outputs, labels")
@router.get("/v2/models/{name}/versions/{version}", summary="Model metadata of one version")
async def model_metadata(request: Request, name: str, version: str | None = None) -> Response:
    spec = _v2(request).spec
    try:
        spec.find(name, version)
    except V2Error as exc:
        return _error(exc)
    return JSONResponse(spec.metadata())


@router.get("/v2/models/{name}/ready", summary="200 when the model is ready, 503 while not")
@router.get("/v2/models/{name}/versions/{version}/ready", summary="Readiness of one version")
async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
    v2 = _v2(request)
    try:
        v2.spec.find(name, version)
    except V2Error as exc:
        return _error(exc)
    is_ready = v2.ready()
    return JSONResponse({"name": name, "ready": is_ready}, status_code=200 if is_ready else 503)


INFER_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "required": ["inputs"]}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post("/v2/models/{name}/infer", openapi_extra=INFER_DOC, summary="Classify images (v2 inference)")
@router.post("/v2/models/{name}/versions/{version}/infer", openapi_extra=INFER_DOC, summary="v2 inference")
async def infer(request: Request, name: str, version: str | None = None) -> Response:
    status, body, headers = await _v2(request).endpoint.answer(request.url.path, RequestParts.of(request))
    return Response(body, status, headers)
