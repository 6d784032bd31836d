"""POST /v2/models/{name}[/versions/{version}]/infer as a plain ASGI app, served by the front door as
/classify is: shed before the body is read, then parsed straight from ASGI into the classify flow."""

from __future__ import annotations

from vitserve.service.flow.classify import ClassifyFlow
from vitserve.service.flow.errors import Answer, ApiError
from vitserve.service.settings import Settings
from vitserve.service.v2.errors import V2Error, from_api_error
from vitserve.service.v2.infer import infer
from vitserve.service.v2.model import ModelSpec
from vitserve.service.v2.paths import infer_model
from vitserve.service.v2.tensors import (
    binary_outputs,
    encode_rest_response,
    error_body,
    parse_rest_request,
    v2_refusal_body,
)
from vitserve.service.web.door import Endpoint, Receive, Scope, Send, send_answer
from vitserve.service.web.parsing import RequestParts, read_body

HEADER_LENGTH = "inference-header-content-length"


class InferEndpoint:
    """ASGI app for the v2 infer paths; `answer` is the same work for a FastAPI route."""

    def __init__(self, flow: ClassifyFlow, settings: Settings, spec: ModelSpec) -> None:
        self.flow = flow
        self.settings = settings
        self.spec = spec

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_answer(send, await self.answer(scope["path"], RequestParts.from_asgi(scope, receive)))

    def refusal(self, path: str, requests_in_progress: int) -> Answer | None:
        return self.flow.refusal(requests_in_progress, render=refusal_answer)

    async def answer(self, path: str, request: RequestParts) -> Answer:
        """The answer to one infer request."""
        try:
            return await self._infer(path, request)
        except ApiError as exc:  # reading the body, or admission
            return self._refused(from_api_error(exc))
        except V2Error as exc:
            return self._refused(exc)

    def _refused(self, error: V2Error) -> Answer:
        self.flow.metrics.rejected(error.reason)  # counted once, here, where its answer is rendered
        return Answer(error.status, error_body(error), error.headers())

    async def _infer(self, path: str, request: RequestParts) -> Answer:
        flow, settings = self.flow, self.settings
        model = infer_model(path)
        assert model is not None, f"{path} is not an infer path"
        self.spec.find(*model)
        body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
        parsed = parse_rest_request(body, request.headers.get(HEADER_LENGTH))
        job = self.spec.job(parsed)
        binary = binary_outputs(parsed)
        outputs = await infer(flow, job)
        body, headers = encode_rest_response(self.spec.name, self.spec.version, parsed.id, outputs, binary)
        media_type = headers.pop("content-type")
        return Answer(200, body, headers, media_type)


def refusal_answer(error: ApiError) -> Answer:
    """The v2 form of the front door's refusal (429) of an infer request."""
    return Answer(error.status, v2_refusal_body(error), error.headers())


class Beside:
    """The front door's direct endpoint: v2 infer paths to `v2`, the classify paths to `classify`."""

    def __init__(self, classify: Endpoint, v2: InferEndpoint) -> None:
        self.classify = classify
        self.v2 = v2

    def _for(self, path: str) -> Endpoint:
        return self.v2 if infer_model(path) is not None else self.classify

    def refusal(self, path: str, requests_in_progress: int) -> Answer | None:
        return self._for(path).refusal(path, requests_in_progress)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._for(scope["path"])(scope, receive, send)
