"""POST /classify and /classify_batch as a plain ASGI app: what the front door hands a request it lets in.

The routes used to be FastAPI routes. Under load, FastAPI's and Starlette's routing, dependency
solving, Request objects and exception middlewares took 31 % of the event loop's busy time at 64
clients on the default model (docs/benchmarks.md, "Where the time goes"), more than parsing and
decoding together. Here a request is parsed straight from its ASGI scope and messages, and the answer
goes out as two ASGI messages. The FastAPI routes in service/web/routes.py stay for the OpenAPI document
and answer through `ClassifyEndpoint.answer`, so both ways give the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vitserve.runtime.predictions import Prediction
from vitserve.service.flow.classify import ClassifyFlow, ItemResult
from vitserve.service.flow.errors import ApiError
from vitserve.service.settings import Settings
from vitserve.service.web.door import Receive, Scope, Send
from vitserve.service.web.parsing import RequestParts, parse_image_request, refuse_unknown_query

CLASSIFY_QUERY = frozenset({"top_k"})  # the query parameters /classify and /classify_batch take


@dataclass(frozen=True)
class Answer:
    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


def json_bytes(body: Mapping[str, Any]) -> bytes:
    """What Starlette's JSONResponse sends, byte for byte."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


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
        answer = await self.answer(scope["path"], RequestParts.from_asgi(scope, receive))
        body = json_bytes(answer.body)
        headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items()),
        ]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def answer(self, path: str, request: RequestParts) -> Answer:
        try:
            if path == "/classify_batch":
                return await self._classify_batch(request)
            return await self._classify(request)
        except ApiError as exc:
            self.flow.metrics.rejected(exc.reason)
            return error_answer(exc)

    async def _classify(self, request: RequestParts) -> Answer:
        (result,) = await self._parse_and_classify(request, field="image", many=False, max_images=1)
        if result.error is not None:
            return error_answer(result.error)  # already counted as rejected by the flow
        assert result.prediction is not None
        return Answer(200, {**prediction_body(result.prediction), "model": self.model_ref})

    async def _classify_batch(self, request: RequestParts) -> Answer:
        limit = self.settings.max_batch_images
        results = await self._parse_and_classify(request, field="images", many=True, max_images=limit)
        items = [
            prediction_body(r.prediction) if r.prediction is not None else r.error.body()  # type: ignore[union-attr]
            for r in results
        ]
        return Answer(200, {"results": items, "model": self.model_ref})

    async def _parse_and_classify(
        self, request: RequestParts, field: str, many: bool, max_images: int
    ) -> list[ItemResult]:
        flow, settings = self.flow, self.settings
        # Shed before reading the body: an overloaded worker should not even buffer the upload. Images
        # are admitted only once the body is in, so clients trickling bytes cannot hold places
        # (slowloris). The front door answers most of these before the endpoint runs; this catches
        # the rest.
        if flow.admission.full():
            raise flow.overloaded()
        refuse_unknown_query(request.query, CLASSIFY_QUERY)
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


def error_answer(exc: ApiError) -> Answer:
    return Answer(exc.status, exc.body(), exc.headers())
