"""Each class of bad input gets its 4xx with a JSON body naming the problem; the next request is served."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.support import SAMPLES_DIR


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def good_digit() -> bytes:
    return sorted(SAMPLES_DIR.glob("*.png"))[0].read_bytes()


def truncated_png() -> bytes:
    data = png_bytes(Image.new("RGB", (64, 64), (200, 10, 10)))
    return data[: len(data) // 2]


def bomb_png() -> bytes:
    # 1-bit 12000x12000 (144 MP) compresses to a few KB: the classic decompression bomb.
    return png_bytes(Image.new("1", (12000, 12000)))


BAD_INPUTS: dict[str, tuple[dict[str, Any], int, str]] = {
    # name: (request kwargs, expected status, expected error code)
    "empty-raw-body": (dict(content=b"", headers={"Content-Type": "image/png"}), 400, "invalid_image"),
    "empty-file": (dict(files={"image": ("e.png", b"")}), 400, "invalid_image"),
    "truncated-png": (dict(files={"image": ("t.png", truncated_png())}), 400, "invalid_image"),
    "not-an-image": (
        dict(files={"image": ("x.png", b"%PDF-1.4 not an image")}),
        415,
        "unsupported_media_type",
    ),
    "wrong-field": (dict(files={"file": ("d.png", b"\x89PNG")}), 400, "bad_request"),
    "url-instead-of-file": (
        dict(files={"image": (None, "http://169.254.169.254/latest/meta-data")}),
        400,
        "url_not_allowed",
    ),
    "urlencoded-form": (dict(data={"image": "http://example.com/a.png"}), 415, "unsupported_media_type"),
    "text-content-type": (
        dict(content=b"hello", headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    ),
    "json-body": (dict(json={"image": "aGVsbG8="}), 415, "unsupported_media_type"),
    "decompression-bomb": (dict(files={"image": ("b.png", bomb_png())}), 413, "image_too_large"),
    "two-images-on-classify": (
        dict(files=[("image", ("a.png", b"1")), ("image", ("b.png", b"2"))]),
        400,
        "bad_request",
    ),
    "malformed-multipart": (
        dict(content=b"--x\r\nbroken", headers={"Content-Type": "multipart/form-data; boundary=x"}),
        400,
        "bad_request",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gets_its_4xx_and_the_server_keeps_serving(vitserve_server: str, case: str) -> None:
    kwargs, status, code = BAD_INPUTS[case]
    response = httpx.post(f"{vitserve_server}/classify", timeout=30, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code
    assert body["message"]
    follow_up = httpx.post(f"{vitserve_server}/classify", files={"image": ("d.png", good_digit())})
    assert follow_up.status_code == 200


def test_body_over_the_limit_is_refused_before_it_is_read(vitserve_server: str) -> None:
    huge = b"\0" * (21 * 1024 * 1024)  # the default limit is 20 MiB
    response = httpx.post(
        f"{vitserve_server}/classify", content=huge, headers={"Content-Type": "image/png"}, timeout=30
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_batch_endpoint_refuses_raw_bodies_clearly(vitserve_server: str) -> None:
    response = httpx.post(
        f"{vitserve_server}/classify_batch", content=good_digit(), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 415
    assert "multipart" in response.json()["message"]


def test_bad_item_does_not_affect_concurrent_good_requests(vitserve_server: str) -> None:
    """Corrupt images sent beside good ones get their 400 at decoding, before any batch; the good ones,
    in flight at the same time, all get the answer a lone request gets."""
    import concurrent.futures

    def send(data: bytes) -> tuple[int, str | None]:
        answer = httpx.post(f"{vitserve_server}/classify", files={"image": ("x.png", data)}, timeout=30)
        return answer.status_code, answer.json().get("label")

    # Different digits, so that an answer reaching the wrong request shows.
    digits = [p.read_bytes() for p in sorted(SAMPLES_DIR.glob("*.png"))]
    alone = [send(d) for d in digits]
    assert [status for status, _ in alone] == [200] * len(digits)
    payloads = [digits[i % len(digits)] if i % 4 else truncated_png() for i in range(32)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, payloads))
    assert answers == [alone[i % len(digits)] if i % 4 else (400, None) for i in range(32)]
