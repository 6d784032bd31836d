"""Test images -> ready-to-send HTTP requests, encoded once so that Locust spends no CPU per request.

The load generator shares the machine's cores with the server; building a multipart body per request
would make Locust, not vitserve, the thing being measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loadtests.images import BadInput, TestImage
from vitserve.harness.uploads import multipart


@dataclass(frozen=True)
class Payload:
    name: str  # the image or mistake it carries, for failure messages
    path: str  # with query string
    body: bytes
    content_type: str
    expected_status: int = 200
    images: int = 1  # images the server must answer for (a /classify_batch carries several)


def classify_multipart(image: TestImage) -> Payload:
    body, content_type = multipart([("image", image.name, image.data, image.content_type)])
    return Payload(image.name, "/classify", body, content_type)


def classify_raw(image: TestImage) -> Payload:
    """The other upload form the API takes: the image itself as the body (`curl --data-binary`)."""
    return Payload(image.name, "/classify", image.data, image.content_type)


def classify_batch(images: Sequence[TestImage]) -> Payload:
    body, content_type = multipart([("images", i.name, i.data, i.content_type) for i in images])
    name = f"{len(images)} images"
    return Payload(name, "/classify_batch", body, content_type, images=len(images))


def bad_request(bad: BadInput) -> Payload:
    path = "/classify" if bad.top_k is None else f"/classify?top_k={bad.top_k}"
    if bad.as_text_field:
        body, content_type = multipart([("image", None, bad.data, "")])
    elif bad.content_type.startswith("image/"):
        body, content_type = multipart([("image", bad.name, bad.data, bad.content_type)])
    else:
        body, content_type = bad.data, bad.content_type
    return Payload(bad.name, path, body, content_type, expected_status=bad.expected_status)
