"""Overload is shed at once with 429 + Retry-After; the OpenAPI document describes what is served."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import httpx
import jsonschema
import pytest

from tests.support import SAMPLES_DIR, running_server
from vitserve.harness.metrics import scrape, value


def test_overload_is_shed_with_429_and_retry_after() -> None:
    data = sorted(SAMPLES_DIR.glob("*.png"))[0].read_bytes()
    # One image in flight per worker: any overlap between requests must be shed, not queued.
    with running_server(env={"VITSERVE_MAX_IN_FLIGHT": "1", "VITSERVE_RETRY_AFTER_S": "2"}) as server:

        def send(_: int) -> httpx.Response:
            return httpx.post(f"{server.url}/classify", files={"image": ("d.png", data)}, timeout=60)

        before = scrape(server.url)
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            responses = list(pool.map(send, range(96)))
        after = scrape(server.url)
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 429}, statuses
        shed = [r for r in responses if r.status_code == 429]
        assert shed, "24 concurrent clients never exceeded one image in flight"
        assert statuses.count(200) >= 1
        for response in shed:
            assert response.headers["Retry-After"] == "2"
            assert response.json()["error"] == "overloaded"
        # Every shed request is counted as ours, and (service/web/door.py) most never reach BentoML's
        # per-request stack, so its request counter sees fewer 429s than were sent back.
        ours = r'vitserve_requests_rejected_total\{reason="overloaded"\}'
        assert value(after, ours) - value(before, ours) == len(shed)
        bentoml_429 = r'bentoml_service_request_total\{endpoint="/classify",http_response_code="429".*\}'
        assert value(after, bentoml_429) - value(before, bentoml_429) < len(shed)
        # Once the burst is over the server answers normally again.
        assert send(0).status_code == 200


@pytest.fixture(scope="module")
def openapi(vitserve_server: str) -> dict:
    return httpx.get(f"{vitserve_server}/docs.json").json()


def resolve(schema: dict, document: dict) -> dict:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return {**document["components"]["schemas"][name], "components": document["components"]}
    return schema


def test_openapi_documents_both_upload_forms(openapi: dict) -> None:
    body = openapi["paths"]["/classify"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body
    assert {"image/png", "image/jpeg", "image/webp"} <= set(body)
    batch = openapi["paths"]["/classify_batch"]["post"]["requestBody"]["content"]
    assert batch["multipart/form-data"]["schema"]["properties"]["images"]["type"] == "array"


def schema_for(openapi: dict, path: str, status: str) -> dict:
    responses = openapi["paths"][path]["post"]["responses"]
    content = responses[status]["content"]["application/json"]["schema"]
    schema = resolve(content, openapi)
    # Make the document's $refs resolvable from inside the schema we validate against.
    return {**schema, "components": openapi["components"]}


def test_real_responses_match_the_documented_schemas(vitserve_server: str, openapi: dict) -> None:
    data = sorted(SAMPLES_DIR.glob("*.png"))[0].read_bytes()
    ok = httpx.post(f"{vitserve_server}/classify", files={"image": ("d.png", data)})
    jsonschema.validate(ok.json(), schema_for(openapi, "/classify", "200"))
    bad: dict[str, dict[str, Any]] = {
        "400": dict(files={"image": ("d.png", b"")}),
        "415": dict(content=b"x", headers={"Content-Type": "text/plain"}),
        "422": dict(files={"image": ("d.png", data)}, params={"top_k": "zero"}),
    }
    for status, kwargs in bad.items():
        response = httpx.post(f"{vitserve_server}/classify", **kwargs)
        assert str(response.status_code) == status
        jsonschema.validate(response.json(), schema_for(openapi, "/classify", status))
    batch = httpx.post(f"{vitserve_server}/classify_batch", files=[("images", ("d.png", data))] * 2)
    jsonschema.validate(batch.json(), schema_for(openapi, "/classify_batch", "200"))


def test_every_documented_post_is_served_by_the_route_it_documents(
    vitserve_server: str, openapi: dict
) -> None:
    # The classify routes' entries are generated from the table the front door serves
    # (service/web/endpoints.py): each documented POST must reach vitserve's own parsing, which refuses
    # a text body with a JSON error, never BentoML's 404 or 405.
    model = httpx.get(f"{vitserve_server}/model").json()
    posts = {path for path, operations in openapi["paths"].items() if "post" in operations}
    assert {"/classify", "/classify_batch", "/explain", "/v2/models/{name}/infer"} <= posts
    for path in sorted(posts):
        url = vitserve_server + path.format(name=model["name"], version=model["version"])
        response = httpx.post(url, content=b"hello", headers={"content-type": "text/plain"}, timeout=30)
        assert response.status_code in (400, 415), (path, response.status_code, response.text)
        assert response.json()["error"], path
