"""The client's logic without I/O: request building, retries, batch fallback, response parsing."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from vitserve.client import protocol
from vitserve.client.errors import (
    ConnectionFailed,
    InvalidImage,
    InvalidRequest,
    ServerError,
    ServiceOverloaded,
    VitserveError,
)
from vitserve.client.images import ImagePayload
from vitserve.client.results import ModelRef, Prediction, TopK, parse_model_info
from vitserve.client.retry import AdaptiveLimit, OverloadGate, RetryPolicy

NO_JITTER = RetryPolicy(retries=3, backoff=0.5, max_backoff=4.0, jitter=0.0)
PAYLOAD = ImagePayload("a.png", b"\x89PNG\r\n\x1a\nfake", "image/png")


def drive(
    operation: protocol.Operation[Any], replies: list[httpx.Response | VitserveError]
) -> tuple[Any, list[protocol.Send], list[float]]:
    """Run an operation against canned replies; returns its result, the requests and the sleeps."""
    sends: list[protocol.Send] = []
    sleeps: list[float] = []
    reply: protocol.Reply = None
    while True:
        try:
            step = operation.send(reply)
        except StopIteration as finished:
            return finished.value, sends, sleeps
        if isinstance(step, protocol.Sleep):
            sleeps.append(step.seconds)
            reply = None
        else:
            sends.append(step)
            reply = replies.pop(0)


def ok(body: object) -> httpx.Response:
    return httpx.Response(200, json=body)


def fail(status: int, code: str, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return httpx.Response(status, json={"error": code, "message": f"{code}!"}, headers=headers)


def test_classify_builds_a_multipart_request_and_parses_the_answer(
    prediction_body: Callable[..., Any],
) -> None:
    operation = protocol.classify(PAYLOAD, 3, NO_JITTER, OverloadGate())
    result, sends, sleeps = drive(operation, [ok(prediction_body("7"))])
    assert result == Prediction(
        label="7",
        score=0.9,
        top_k=(TopK("7", 7, 0.9), TopK("1", 1, 0.05)),
        model=ModelRef("digits-vit", "1"),
    )
    (send,) = sends
    assert (send.method, send.path, send.data) == ("POST", "/classify", {"top_k": "3"})
    request = httpx.Client(base_url="http://server:1/prefix").build_request(
        send.method, send.path, data=send.data, files=send.files
    )
    body = request.read()
    assert str(request.url) == "http://server:1/prefix/classify"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'name="image"; filename="a.png"' in body and b"Content-Type: image/png" in body
    assert b'name="top_k"' in body and PAYLOAD.data in body
    assert sleeps == []


@pytest.mark.parametrize("top_k", [0, -1, True, 2.0])
def test_bad_top_k_is_refused_before_sending(top_k: Any) -> None:
    with pytest.raises(ValueError, match="top_k"):
        drive(protocol.classify(PAYLOAD, top_k, NO_JITTER, OverloadGate()), [])


def test_connection_failures_are_retried_with_exponential_backoff(
    prediction_body: Callable[..., Any],
) -> None:
    refused = ConnectionFailed("refused")
    result, sends, sleeps = drive(
        protocol.classify(PAYLOAD, None, NO_JITTER, OverloadGate()), [refused, refused, ok(prediction_body())]
    )
    assert result.label == "7" and len(sends) == 3 and sleeps == [0.5, 1.0]
    assert sends[0].data == {}  # no top_k: the server's default


def test_retries_run_out_and_raise_the_last_error() -> None:
    refused = ConnectionFailed("refused")
    with pytest.raises(ConnectionFailed):
        drive(protocol.classify(PAYLOAD, None, NO_JITTER, OverloadGate()), [refused] * 4)
    no_retries = RetryPolicy(retries=0)
    with pytest.raises(ServiceOverloaded):
        drive(protocol.classify(PAYLOAD, None, no_retries, OverloadGate()), [fail(429, "overloaded", "1")])


def test_overload_honours_retry_after_and_closes_the_gate(prediction_body: Callable[..., Any]) -> None:
    gate = OverloadGate()
    result, _, sleeps = drive(
        protocol.classify(PAYLOAD, None, NO_JITTER, gate),
        [fail(429, "overloaded", "2"), ok(prediction_body())],
    )
    assert result.label == "7" and len(sleeps) == 1 and 1.5 < sleeps[0] <= 2.0
    assert 1.5 < gate.wait_time() <= 2.0  # other requests of the client wait too
    _, _, sleeps = drive(protocol.model_info(NO_JITTER, gate), [ok(model_body())])
    assert len(sleeps) == 1 and 1.5 < sleeps[0] <= 2.0
    # A Retry-After beyond max_backoff is capped, so a confused server cannot stall us for an hour.
    _, _, sleeps = drive(
        protocol.classify(PAYLOAD, None, NO_JITTER, OverloadGate()),
        [fail(503, "overloaded", "3600"), ok(prediction_body())],
    )
    assert len(sleeps) == 1 and 3.5 < sleeps[0] <= 4.0


def test_invalid_images_and_500s_are_not_retried() -> None:
    with pytest.raises(InvalidImage) as raised:
        drive(protocol.classify(PAYLOAD, None, NO_JITTER, OverloadGate()), [fail(400, "invalid_image")])
    assert raised.value.code == "invalid_image" and raised.value.message == "invalid_image!"
    with pytest.raises(ServerError):
        drive(protocol.classify(PAYLOAD, None, NO_JITTER, OverloadGate()), [fail(500, "internal")])


def test_gateway_errors_are_retried(prediction_body: Callable[..., Any]) -> None:
    result, _, sleeps = drive(
        protocol.classify(PAYLOAD, None, NO_JITTER, OverloadGate()),
        [httpx.Response(502, text="bad gateway"), ok(prediction_body())],
    )
    assert result.label == "7" and sleeps == [0.5]


def test_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy(retries=5, backoff=1.0, max_backoff=100.0, jitter=0.25)
    delays = [policy.delay(2, ConnectionFailed("x")) for _ in range(200)]
    assert all(3.0 <= d <= 5.0 for d in delays if d is not None) and len(set(delays)) > 1


def test_malformed_success_bodies_are_server_errors() -> None:
    for body in [
        httpx.Response(200, text="not json"),
        ok({"label": "7"}),
        ok({"label": "7", "score": "x", "top_k": [], "model": {"name": "m", "version": "1"}}),
    ]:
        with pytest.raises(ServerError) as raised:
            drive(protocol.classify(PAYLOAD, None, NO_JITTER, OverloadGate()), [body])
        assert raised.value.code == "invalid_response"
        assert raised.value.__cause__ is not None


def batch_body(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"results": items, "model": {"name": "digits-vit", "version": "1"}}


def test_batch_items_are_predictions_or_their_errors_in_order(prediction_body: Callable[..., Any]) -> None:
    item = {k: v for k, v in prediction_body("4").items() if k != "model"}
    body = batch_body([item, {"error": "invalid_image", "message": "truncated"}, item])
    results, sends, _ = drive(
        protocol.classify_batch([PAYLOAD] * 3, 2, NO_JITTER, OverloadGate()), [ok(body)]
    )
    assert [type(r) for r in results] == [Prediction, InvalidImage, Prediction]
    assert results[0].model == ModelRef("digits-vit", "1")
    assert results[1].message == "truncated"
    assert sends[0].path == "/classify_batch" and [f[0] for f in sends[0].files] == ["images"] * 3


def test_a_batch_answer_of_the_wrong_length_is_a_server_error(prediction_body: Callable[..., Any]) -> None:
    with pytest.raises(ServerError, match="sent 2 images"):
        drive(
            protocol.classify_batch([PAYLOAD] * 2, None, NO_JITTER, OverloadGate()),
            [ok(batch_body([prediction_body()]))],
        )


def test_classify_many_chunks_and_falls_back_to_single_requests(prediction_body: Callable[..., Any]) -> None:
    item = prediction_body("2")
    replies: list[httpx.Response | VitserveError] = [
        ok(batch_body([item, item])),  # chunk 1
        fail(400, "invalid_image"),  # chunk 2 rejected as a whole: one by one
        ok(item),
        fail(400, "invalid_image"),
        ok(item),  # chunk 3: a single image goes to /classify
    ]
    results, sends, _ = drive(
        protocol.classify_many([PAYLOAD] * 5, None, 2, NO_JITTER, OverloadGate()), replies
    )
    assert [s.path for s in sends] == [
        "/classify_batch",
        "/classify_batch",
        "/classify",
        "/classify",
        "/classify",
    ]
    assert [type(r) for r in results] == [Prediction, Prediction, Prediction, InvalidImage, Prediction]


def test_classify_many_raises_request_errors_that_are_not_about_an_image() -> None:
    with pytest.raises(InvalidRequest) as raised:
        drive(
            protocol.classify_many([PAYLOAD] * 2, 99, 2, NO_JITTER, OverloadGate()),
            [fail(422, "invalid_parameter")],
        )
    assert raised.value.code == "invalid_parameter"
    with pytest.raises(ValueError, match="batch_size"):
        drive(protocol.classify_many([PAYLOAD], None, 0, NO_JITTER, OverloadGate()), [])


def model_body() -> dict[str, Any]:
    return {
        "name": "digits-vit",
        "version": "1",
        "labels": [str(i) for i in range(10)],
        "input_size": [28, 28],
        "precision": "int8",
        "providers": ["CPUExecutionProvider"],
        "max_batch_images": 64,
    }


def test_model_info_is_parsed_and_keeps_extra_fields() -> None:
    info, sends, _ = drive(protocol.model_info(NO_JITTER, OverloadGate()), [ok(model_body())])
    assert sends[0] == protocol.Send("GET", "/model")
    assert info == parse_model_info(model_body())
    assert info.labels[3] == "3" and info.input_size == (28, 28) and info.extra == {"max_batch_images": 64}
    assert str(info.ref) == "digits-vit:1"


def test_ready_is_true_false_or_raises() -> None:
    assert drive(protocol.ready(), [httpx.Response(200)])[0] is True
    assert drive(protocol.ready(), [fail(503, "not_ready")])[0] is False
    with pytest.raises(ConnectionFailed):
        drive(protocol.ready(), [ConnectionFailed("refused")])


@pytest.mark.parametrize("url", ["localhost:3000", "ftp://host/", "http://", "127.0.0.1"])
def test_base_urls_without_http_scheme_or_host_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="http://host:port"):
        protocol.check_base_url(url)
    assert protocol.check_base_url("https://example.org:8443/vitserve") == "https://example.org:8443/vitserve"


def test_chunked_is_lazy_and_keeps_the_remainder() -> None:
    assert list(protocol.chunked(range(5), 2)) == [[0, 1], [2, 3], [4]]
    assert list(protocol.chunked([], 3)) == []
    endless = protocol.chunked(iter(int, 1), 4)  # an endless iterator: only what is asked is read
    assert next(endless) == [0, 0, 0, 0]


def test_adaptive_limit_halves_once_per_burst_and_grows_back() -> None:
    limit = AdaptiveLimit(ceiling=6)
    assert limit.limit == math.inf and limit.can_send()
    burst = [limit.start() for _ in range(8)]
    limit.finish(burst[0], overloaded=True)  # 8 in flight when the first 429 came back
    assert limit.limit == 4
    for ticket in burst[1:]:
        limit.finish(ticket, overloaded=True)  # the rest of the same burst: no further cuts
    assert limit.limit == 4 and limit.in_flight == 0
    tickets = [limit.start() for _ in range(4)]
    assert not limit.can_send()
    limit.finish(tickets[0], overloaded=True)  # sent after the cut and still too many: cut again
    assert limit.limit == 2
    for ticket in tickets[1:]:
        limit.finish(ticket, overloaded=False)
    assert 3 < limit.limit < 3.5  # additive increase: 2 -> 2.5 -> 2.9 -> 3.24, about +1 per window
    for _ in range(100):
        limit.finish(limit.start(), overloaded=False)
    assert limit.limit == 6  # the ceiling
    one = AdaptiveLimit()
    one.finish(one.start(), overloaded=True)
    assert one.limit == 1  # never below one request


def test_multipart_body_is_what_httpx_would_send_in_one_piece() -> None:
    """The one-write body (protocol.encode_multipart) matches httpx's streaming encoder byte for byte,
    odd file names included, so the server parses it the same."""
    files = (
        ("images", ('a"b\\c\r\n.png', PAYLOAD.data, "image/png")),
        ("images", ("é/deep.jpg", b"\xff\xd8\xffjpeg", "image/jpeg")),
    )
    send = protocol.Send("POST", "/classify_batch", data={"top_k": "3"}, files=files)
    headers, body = send.body()
    reference = httpx.Request("POST", "http://server/", data=send.data, files=list(files))
    ours = headers["Content-Type"].split("boundary=")[1].encode()
    theirs = reference.headers["content-type"].split("boundary=")[1].encode()
    assert body is not None and body.replace(ours, b"B") == reference.read().replace(theirs, b"B")
    assert protocol.Send("GET", "/model").body() == ({}, None)
