"""The classify endpoint as a plain ASGI app, and the FastAPI routes that answer through it.

A running worker's front door hands classify requests to the endpoint; FastAPI's routes only exist for
the OpenAPI document and any request that reaches them. Both must answer every request with the same
status, headers and bytes, and count a refused request once. The full server (front door, timeouts,
shedding) is tested in test_classify.py, test_bad_input.py and test_overload_and_openapi.py.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from tests.service.conftest import SETTINGS, flow_with
from tests.support import SAMPLES_DIR
from vitserve.runtime.decode import DecodeLimits, decode_image
from vitserve.service.flow.explain import Explainer, ExplainFlow
from vitserve.service.model.local import LocalModel
from vitserve.service.observe.logs import RequestLog
from vitserve.service.observe.metrics import ServiceMetrics
from vitserve.service.v2.protocol import V2Protocol
from vitserve.service.web.endpoints import ClassifyEndpoint
from vitserve.service.web.routes import install_routes
from vitserve.service.worker import Worker

PNG = sorted(SAMPLES_DIR.glob("*.png"))[0]
TRUNCATED = PNG.read_bytes()[:60]  # a PNG's signature and header, its pixels cut off


def jpeg_of(path: Any) -> bytes:
    out = io.BytesIO()
    Image.open(path).convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


REQUESTS: dict[str, dict[str, Any]] = {
    "multipart png": {"url": "/classify", "files": {"image": ("d.png", PNG.read_bytes(), "image/png")}},
    "raw jpeg, top_k 2": {
        "url": "/classify?top_k=2",
        "content": jpeg_of(PNG),
        "headers": {"content-type": "image/jpeg"},
    },
    "unknown query parameter": {
        "url": "/classify?topk=3",
        "content": PNG.read_bytes(),
        "headers": {"content-type": "image/png"},
    },
    "top_k 0": {
        "url": "/classify?top_k=0",
        "content": PNG.read_bytes(),
        "headers": {"content-type": "image/png"},
    },
    "text body": {"url": "/classify", "content": b"hello", "headers": {"content-type": "text/plain"}},
    "not an image": {"url": "/classify", "content": TRUNCATED, "headers": {"content-type": "image/png"}},
    "malformed multipart": {
        "url": "/classify",
        "content": b"--x\r\nbroken",
        "headers": {"content-type": "multipart/form-data; boundary=x"},
    },
    "declared too large": {
        "url": "/classify",
        "content": b"",
        "headers": {"content-type": "image/png", "content-length": str(SETTINGS.max_body_bytes + 1)},
    },
    "batch, one bad": {
        "url": "/classify_batch",
        "files": [
            ("images", ("a.png", PNG.read_bytes(), "image/png")),
            ("images", ("b.png", TRUNCATED, "image/png")),
        ],
    },
}


@pytest.fixture(scope="module")
def served(model: LocalModel, metrics: ServiceMetrics) -> tuple[ClassifyEndpoint, FastAPI]:
    """The endpoint, and a FastAPI app with the routes, over one flow."""
    flow, _ = flow_with(model, metrics)
    endpoint = ClassifyEndpoint(flow, SETTINGS)
    explainer = Explainer(SETTINGS.model_dir, model.metadata, threads=1, max_waiting=8)
    explain_flow = ExplainFlow(explainer, flow.admission, metrics, flow.limits, retry_after_s=3)
    log = RequestLog(metrics, log_access=False)
    worker = Worker(SETTINGS, flow, endpoint, explain_flow, log, V2Protocol(flow, SETTINGS))
    app = FastAPI()
    install_routes(app, worker)
    return endpoint, app


async def send(app: Any, request: dict[str, Any]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post(**request)


def rejected_total(metrics: ServiceMetrics) -> float:
    return sum(
        s.value for m in metrics.requests_rejected.collect() for s in m.samples if s.name.endswith("_total")
    )


@pytest.mark.parametrize("case", list(REQUESTS))
def test_the_endpoint_and_the_fastapi_routes_answer_alike(
    case: str, served: tuple[ClassifyEndpoint, FastAPI], metrics: ServiceMetrics
) -> None:
    endpoint, app = served
    answers = []
    for target in (endpoint, app):
        before = rejected_total(metrics)
        response = asyncio.run(send(target, REQUESTS[case]))
        answers.append((response, rejected_total(metrics) - before))
    (direct, direct_rejected), (routed, routed_rejected) = answers
    assert direct.status_code == routed.status_code
    assert direct.content == routed.content
    for header in ("content-type", "content-length", "retry-after"):
        assert direct.headers.get(header) == routed.headers.get(header)
    assert direct.headers["content-type"] == "application/json"
    # A refused request (or a batch's bad image) is counted once on either way in, never twice.
    assert direct_rejected == routed_rejected == (0 if case.startswith(("multipart", "raw")) else 1)


def test_what_the_endpoint_answers(model: LocalModel, served: tuple[ClassifyEndpoint, FastAPI]) -> None:
    endpoint, _ = served
    answers = {case: asyncio.run(send(endpoint, request)) for case, request in REQUESTS.items()}
    pixels = decode_image(PNG.read_bytes(), model.metadata.preprocessing, DecodeLimits())
    expected_label = model.metadata.labels[int(model.classifier.predict_batch(pixels[None])[0].argmax())]
    png = answers["multipart png"].json()
    assert png["label"] == expected_label and len(png["top_k"]) == SETTINGS.default_top_k
    assert png["model"] == {"name": model.metadata.model_name, "version": model.metadata.model_version}
    assert len(answers["raw jpeg, top_k 2"].json()["top_k"]) == 2
    errors = {
        "unknown query parameter": (422, "invalid_parameter"),
        "top_k 0": (422, "invalid_parameter"),
        "text body": (415, "unsupported_media_type"),
        "not an image": (400, "invalid_image"),
        "malformed multipart": (400, "bad_request"),
        "declared too large": (413, "payload_too_large"),
    }
    for case, (status, code) in errors.items():
        assert (answers[case].status_code, answers[case].json()["error"]) == (status, code), case
        assert answers[case].json()["message"]
    batch = json.loads(answers["batch, one bad"].content)["results"]
    assert batch[0]["label"] == expected_label and batch[1]["error"] == "invalid_image"
