"""The public HTTP routes, each declared once, installed into the FastAPI app that service/app.py mounts.

FastAPI gives each route an OpenAPI entry that matches what it really returns, error bodies included;
BentoML merges it into its own document (/docs.json) and keeps /livez, /readyz and /metrics.

`DIRECT_ROUTES` (service/web/endpoints.py) are the routes the front door serves itself, in front of
BentoML's stack: the door's paths and their OpenAPI entries are both made from that one table, and
a request that reaches the FastAPI route instead (the door not yet open) gets the same answer from
the same endpoint. /explain and /model are plain FastAPI routes.

The routes are installed by each worker at start-up (`install_routes`): BentoML's arbiter, which
imports service/app.py to read the service's configuration, never imports this module and what it
needs. Each worker's objects reach the routes through `app.state`, FastAPI's place for objects
created at start-up.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import QueryParams

from vitserve.runtime.decode import MEDIA_TYPES
from vitserve.runtime.rollout import HEAD_FUSIONS
from vitserve.service.flow.errors import ApiError
from vitserve.service.flow.explain import FORMATS, ExplainOptions, explanation_body
from vitserve.service.v2.routes import router as v2_router
from vitserve.service.web.door import response_of
from vitserve.service.web.endpoints import DIRECT_ROUTES
from vitserve.service.web.openapi import (
    EXPLAIN_PARAMS,
    IMAGE_ERRORS,
    TOP_K_PARAM,
    ModelInfo,
    error_responses,
    explain_responses,
    image_request_body,
)
from vitserve.service.web.parsing import RequestParts, parse_image_request, refuse_unknown_query
from vitserve.service.worker import Worker, worker_of

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent.parent / "static"
EXPLAIN_QUERY = frozenset({"format", "class", "head_fusion", "top_k"})  # documented in EXPLAIN_PARAMS


async def _direct(request: Request) -> Response:
    """A DIRECT_ROUTES request that reached FastAPI: the same endpoint answers it."""
    answer = await worker_of(request).endpoint.answer(request.url.path, RequestParts.of(request))
    return response_of(answer)


router = APIRouter()
for route in DIRECT_ROUTES:
    router.add_api_route(
        route.path,
        _direct,
        methods=["POST"],
        name=route.path.strip("/"),
        response_model=route.answer,
        responses=error_responses(*IMAGE_ERRORS),
        openapi_extra={
            "requestBody": image_request_body(route.field, route.many, MEDIA_TYPES.values()),
            "parameters": [TOP_K_PARAM],
        },
        summary=route.summary,
    )


@router.get(
    "/model", response_model=ModelInfo, responses=error_responses(503), summary="The model being served"
)
async def model(request: Request) -> JSONResponse:
    worker = worker_of(request)
    flow, settings = worker.flow, worker.settings
    meta = flow.metadata
    pre = meta.preprocessing
    return JSONResponse(
        {
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
    )


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


@router.post(
    "/explain",
    responses=explain_responses(),
    openapi_extra={
        "requestBody": image_request_body("image", False, MEDIA_TYPES.values(), form_top_k=False),
        "parameters": EXPLAIN_PARAMS,
    },
    summary="Classify one image and show where the class token looked (attention rollout)",
)
async def explain(request: Request) -> Response:
    worker = worker_of(request)
    flow, settings = worker.explain_flow, worker.settings
    refusal = flow.refusal(0)  # before the body is read, as the front door asks for /classify
    if refusal is not None:
        return response_of(refusal)
    try:
        refuse_unknown_query(request.query_params, EXPLAIN_QUERY)
        options = parse_explain_options(request.query_params, flow.metadata.labels)
        parsed = await parse_image_request(
            RequestParts.of(request),
            field="image",
            many=False,
            max_bytes=settings.max_body_bytes,
            body_timeout_s=settings.body_timeout_s,
            max_images=1,
            default_top_k=settings.default_top_k,
            num_classes=flow.metadata.num_classes,
        )
        result = await flow.explain(parsed.images[0], options, parsed.top_k)
    except ApiError as exc:
        return response_of(flow.error_answer(exc))
    if options.format == "png":
        assert result.png is not None
        headers = {
            # Percent-encoded: a header is latin-1, a label may be any Unicode ("café", "日本").
            "X-Vitserve-Label": quote(result.prediction.label, safe=""),
            "X-Vitserve-Score": f"{result.prediction.score:.6g}",
        }
        return Response(result.png, media_type="image/png", headers=headers)
    body = explanation_body(result, options, flow.metadata.labels)
    body["model"] = {"name": flow.metadata.model_name, "version": flow.metadata.model_version}
    return JSONResponse(body)


@router.get("/ui", include_in_schema=False)
async def demo_page() -> HTMLResponse:
    """The demo page: pick or drop an image, see the top-k labels and the attention overlay."""
    return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))


def install_routes(app: FastAPI, worker: Worker) -> None:
    """Give the mounted app its routes and hand them the worker's objects (at start-up)."""
    app.include_router(router)
    app.include_router(v2_router)  # the Open Inference Protocol's REST routes (service/v2/routes.py)
    app.state.vitserve = worker
