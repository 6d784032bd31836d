"""POST /classify and /classify_batch as a plain ASGI app: what the front door hands a request it lets in.

A request is parsed straight from its ASGI scope and messages and its answer goes out as two ASGI
messages: FastAPI's and Starlette's routing, dependency solving and Request objects cost the event
loop more than parsing and decoding together (docs/benchmarks.md, "Where the time goes"). The
routes' OpenAPI entries are generated from the same table (service/web/routes.py), and answer
through this endpoint when a request reaches them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from vitserve.runtime.predictions import Prediction
from vitserve.service.flow.classify import ClassifyFlow
from vitserve.service.flow.errors import Answer, ApiError
from vitserve.service.settings import Settings
from vitserve.service.web.door import Receive, Scope, Send, send_answer
from vitserve.service.web.openapi import BatchClassification, Classification
from vitserve.service.web.parsing import RequestParts, parse_image_request, refuse_unknown_query

CLASSIFY_QUERY = frozenset({"top_k"})  # the query parameters /classify and /classify_batch take


@dataclass(frozen=True)
class DirectRoute:
    """A POST route answered by the classify endpoint; the front door serves it and FastAPI documents it."""

    path: str
    field: str  # the multipart field of its images
    many: bool  # the field repeats
    answer: type[BaseModel]
    summary: str


DIRECT_ROUTES = (
    DirectRoute(
        "/classify",
        "image",
        False,
        Classification,
        "Classify one image (multipart field `image`, or the raw image as the body)",
    ),
    DirectRoute(
        "/classify_batch",
        "images",
        True,
        BatchClassification,
        "Classify several images (repeated multipart field `images`); results in the order sent",
    ),
)
DIRECT_PATHS = frozenset(r.path for r in DIRECT_ROUTES)
ROUTES_BY_PATH = {r.path: r for r in DIRECT_ROUTES}


def prediction_body(prediction: Prediction) -> dict[str, Any]:
    return {
        "label": prediction.label,
        "score": prediction.score,
        "top_k": [{"label": t.label, "index": t.index, "score": t.score} for t in prediction.top_k],
    }


class ClassifyEndpoint:
    """ASGI app for the classify paths; `answer` is the same work for a caller that has a Request."""

    def __init__(self, flow: ClassifyFlow, settings: Settings) -> None:
        self.flow = flow
        self.settings = settings
        meta = flow.metadata
        self.model_ref = {"name": meta.model_name, "version": meta.model_version}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_answer(send, await self.answer(scope["path"], RequestParts.from_asgi(scope, receive)))

    def refusal(self, path: str, requests_in_progress: int) -> Answer | None:
        return self.flow.refusal(requests_in_progress)

    async def answer(self, path: str, request: RequestParts) -> Answer:
        route = ROUTES_BY_PATH[path]
        many = route.many
        settings, flow = self.settings, self.flow
        try:
            refuse_unknown_query(request.query, CLASSIFY_QUERY)
            parsed = await parse_image_request(
                request,
                field=route.field,
                many=many,
                max_bytes=settings.max_body_bytes,
                body_timeout_s=settings.body_timeout_s,
                max_images=settings.max_batch_images if many else 1,
                default_top_k=settings.default_top_k,
                num_classes=flow.metadata.num_classes,
            )
            results = await flow.classify(parsed.images, parsed.top_k)
        except ApiError as exc:
            return flow.error_answer(exc)
        if many:
            items = [
                prediction_body(r.prediction) if r.prediction is not None else flow.item_error(r.error)  # type: ignore[arg-type]
                for r in results
            ]
            return Answer(200, {"results": items, "model": self.model_ref})
        (result,) = results
        if result.prediction is None:
            assert result.error is not None
            return flow.error_answer(result.error)
        return Answer(200, {**prediction_body(result.prediction), "model": self.model_ref})
