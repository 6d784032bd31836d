"""POST /explain and GET /ui on a real server, against the explanation artifact run in-process."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support import DEFAULT_MODEL_DIR, patch_grid
from vitserve.harness.metrics import scrape, value
from vitserve.runtime.decode import DecodeLimits, decode_image
from vitserve.runtime.explain_session import ExplainSession
from vitserve.runtime.predictions import softmax
from vitserve.runtime.rollout import rollout_map


def heldout_png(index: int) -> tuple[bytes, str]:
    """A held-out digit as a PNG file's bytes, and its true label."""
    with np.load(DEFAULT_MODEL_DIR / "heldout.npz") as data:
        image, label = data["images"][index], int(data["labels"][index])
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue(), str(label)


@pytest.fixture(scope="module")
def offline() -> ExplainSession:
    return ExplainSession(DEFAULT_MODEL_DIR)


@pytest.fixture(scope="module")
def digit(offline: ExplainSession) -> tuple[bytes, str]:
    """The first held-out digit the model gets right (the test is about maps, not accuracy)."""
    for index in range(50):
        data, label = heldout_png(index)
        pixels = decode_image(data, offline.metadata.preprocessing, DecodeLimits())
        if str(offline.explain(pixels).logits.argmax()) == label:
            return data, label
    raise AssertionError("the model gets none of the first 50 held-out digits right")


def test_explain_returns_the_prediction_map_and_overlay(
    vitserve_server: str, offline: ExplainSession, digit: tuple[bytes, str]
) -> None:
    data, label = digit
    before = scrape(vitserve_server)
    response = httpx.post(f"{vitserve_server}/explain", files={"image": ("digit.png", data)}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] == label
    classified = httpx.post(f"{vitserve_server}/classify", files={"image": ("digit.png", data)}).json()
    assert classified["label"] == label  # same decision as the serving artifact
    assert body["model"] == classified["model"]
    explanation = body["explanation"]
    assert explanation["method"] == "attention_rollout" and explanation["class_specific"] is False
    assert explanation["grid"] == [patch_grid()] * 2 and explanation["head_fusion"] == "mean"
    assert explanation["class"] == {
        "label": label,
        "index": int(label),
        "score": pytest.approx(body["score"]),
    }
    heatmap = np.array(explanation["map"])
    assert heatmap.sum() == pytest.approx(1.0)
    pixels = decode_image(data, offline.metadata.preprocessing, DecodeLimits())
    np.testing.assert_allclose(heatmap, rollout_map(offline.explain(pixels).attentions), atol=1e-6)
    overlay = Image.open(io.BytesIO(base64.b64decode(explanation["overlay_png"])))
    assert overlay.format == "PNG" and overlay.size == (224, 224) and overlay.mode == "RGB"
    after = scrape(vitserve_server)
    assert (
        value(after, "vitserve_explain_seconds_count") == value(before, "vitserve_explain_seconds_count") + 1
    )


def test_formats_raw_body_class_and_head_fusion(
    vitserve_server: str, offline: ExplainSession, digit: tuple[bytes, str]
) -> None:
    data, label = digit
    url = f"{vitserve_server}/explain"
    as_json = httpx.post(url, params={"format": "json"}, content=data, headers={"Content-Type": "image/png"})
    assert as_json.status_code == 200, as_json.text
    assert "overlay_png" not in as_json.json()["explanation"]

    png = httpx.post(url, params={"format": "png"}, files={"image": ("d.png", data)})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.headers["x-vitserve-label"] == label
    assert Image.open(io.BytesIO(png.content)).size == (224, 224)

    pixels = decode_image(data, offline.metadata.preprocessing, DecodeLimits())
    explained = offline.explain(pixels)
    probabilities = softmax(explained.logits[None])[0]
    other = "1" if label != "1" else "2"
    for raw_class in (other, int(other)):  # a label or an index
        answer = httpx.post(url, params={"format": "json", "class": raw_class}, files={"image": ("d", data)})
        target = answer.json()["explanation"]["class"]
        assert target["label"] == other and target["score"] == pytest.approx(
            probabilities[int(other)], abs=1e-6
        )
        # Rollout is class-agnostic: the map does not change with the class asked for.
        assert answer.json()["explanation"]["map"] == as_json.json()["explanation"]["map"]

    maxed = httpx.post(url, params={"format": "json", "head_fusion": "max"}, files={"image": ("d", data)})
    np.testing.assert_allclose(
        maxed.json()["explanation"]["map"], rollout_map(explained.attentions, "max"), atol=1e-6
    )
    assert maxed.json()["explanation"]["map"] != as_json.json()["explanation"]["map"]


@pytest.mark.parametrize(
    ("params", "files", "status", "code"),
    [
        ({"format": "gif"}, None, 422, "invalid_parameter"),
        ({"head_fusion": "median"}, None, 422, "invalid_parameter"),
        ({"class": "99"}, None, 422, "invalid_parameter"),
        ({"class": "seven"}, None, 422, "invalid_parameter"),
        ({"top_k": "0"}, None, 422, "invalid_parameter"),
        ({}, {"image": ("x.png", heldout_png(0)[0][:60])}, 400, "invalid_image"),  # truncated
        ({}, {"image": ("x.txt", b"hello")}, 415, "unsupported_media_type"),
    ],
)
def test_bad_requests_get_typed_errors_and_are_counted(
    vitserve_server: str,
    digit: tuple[bytes, str],
    params: dict[str, str],
    files: dict[str, tuple[str, bytes]] | None,
    status: int,
    code: str,
) -> None:
    before = value(scrape(vitserve_server), r"vitserve_requests_rejected_total\{.*\}")
    response = httpx.post(
        f"{vitserve_server}/explain", params=params, files=files or {"image": ("d.png", digit[0])}
    )
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert value(scrape(vitserve_server), r"vitserve_requests_rejected_total\{.*\}") == before + 1


def test_openapi_documents_explain_and_ui_serves_the_demo(vitserve_server: str) -> None:
    spec = httpx.get(f"{vitserve_server}/docs.json").json()
    operation = spec["paths"]["/explain"]["post"]
    assert {"200", "400", "413", "415", "422", "429", "503"} <= set(operation["responses"])
    assert {"format", "class", "head_fusion", "top_k"} == {p["name"] for p in operation["parameters"]}
    assert "/ui" not in spec["paths"]  # a page, not an API
    page = httpx.get(f"{vitserve_server}/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "fetch(`explain?" in page.text  # it calls the public API, relative to where it is served


def test_missing_explanation_artifact_is_a_clear_503(tmp_path: Path) -> None:
    """A model folder exported with --no-explain still classifies; /explain says what to do."""
    from tests.support import running_server

    for name in ("model.onnx",):
        (tmp_path / name).write_bytes((DEFAULT_MODEL_DIR / name).read_bytes())
    data, _ = heldout_png(0)
    with running_server(model_dir=tmp_path) as server:
        assert httpx.post(f"{server.url}/classify", files={"image": ("d.png", data)}).status_code == 200
        response = httpx.post(f"{server.url}/explain", files={"image": ("d.png", data)})
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable" and "vitserve export" in response.json()["message"]
