"""POST /classify and /classify_batch on a real server: both upload forms, offline parity, top_k."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.support import SAMPLES_DIR, host_providers
from vitserve.runtime.decode import DecodeLimits, decode_image
from vitserve.runtime.predictions import top_k_predictions
from vitserve.runtime.session import OnnxClassifier, SessionOptions

MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}


def sample_files() -> list[Path]:
    files = sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix.lower() in MIME)
    assert len(files) >= 4, f"the shipped samples are missing from {SAMPLES_DIR}"
    return files


def sample_labels() -> dict[str, str]:
    return {str(k): str(v) for k, v in json.loads((SAMPLES_DIR / "labels.json").read_text()).items()}


@pytest.fixture(scope="module")
def offline(vitserve_server: str) -> OnnxClassifier:
    """The same artifact the server chose, run in-process: the reference for its answers."""
    info = httpx.get(f"{vitserve_server}/model").json()
    return OnnxClassifier(SAMPLES_DIR.parent, SessionOptions(precision=info["precision"], device="cpu"))


def offline_prediction(classifier: OnnxClassifier, data: bytes, k: int = 5):
    pixels = decode_image(data, classifier.metadata.preprocessing, DecodeLimits())
    logits = classifier.predict_batch(pixels[None])
    return top_k_predictions(logits, classifier.metadata.labels, k)[0]


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name)
def test_multipart_and_raw_body_match_offline_onnx_and_the_true_label(
    vitserve_server: str, offline: OnnxClassifier, path: Path
) -> None:
    data = path.read_bytes()
    multipart = httpx.post(f"{vitserve_server}/classify", files={"image": (path.name, data)})
    raw = httpx.post(
        f"{vitserve_server}/classify", content=data, headers={"Content-Type": MIME[path.suffix.lower()]}
    )
    assert multipart.status_code == 200, multipart.text
    assert raw.status_code == 200, raw.text
    expected = offline_prediction(offline, data)
    for body in (multipart.json(), raw.json()):
        assert body["label"] == expected.label == sample_labels()[path.name]
        assert body["score"] == expected.score  # the served artifact is batch-invariant: bitwise
        assert [t["label"] for t in body["top_k"]] == [t.label for t in expected.top_k]
        assert body["model"] == {
            "name": offline.metadata.model_name,
            "version": offline.metadata.model_version,
        }


def test_top_k_default_explicit_and_capped(vitserve_server: str) -> None:
    data = sample_files()[0].read_bytes()
    files = {"image": ("d.png", data)}
    default = httpx.post(f"{vitserve_server}/classify", files=files).json()
    assert len(default["top_k"]) == 5
    scores = [t["score"] for t in default["top_k"]]
    assert scores == sorted(scores, reverse=True)
    assert (
        len(httpx.post(f"{vitserve_server}/classify", files=files, data={"top_k": "2"}).json()["top_k"]) == 2
    )
    capped = httpx.post(f"{vitserve_server}/classify?top_k=1000", files=files).json()
    assert len(capped["top_k"]) == 10
    assert sum(t["score"] for t in capped["top_k"]) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("value", ["0", "-3", "three"])
def test_bad_top_k_is_422(vitserve_server: str, value: str) -> None:
    data = sample_files()[0].read_bytes()
    response = httpx.post(f"{vitserve_server}/classify?top_k={value}", files={"image": ("d.png", data)})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_parameter"
    assert "top_k" in response.json()["message"]


def test_batch_keeps_order_and_isolates_a_bad_item(vitserve_server: str, offline: OnnxClassifier) -> None:
    files = sample_files()[:3]
    parts = [("images", (p.name, p.read_bytes())) for p in files]
    parts.insert(1, ("images", ("notes.png", b"this is not an image")))
    response = httpx.post(f"{vitserve_server}/classify_batch", files=parts)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 4
    assert results[1]["error"] == "unsupported_media_type"
    for result, path in zip([results[0], *results[2:]], files, strict=True):
        expected = offline_prediction(offline, path.read_bytes())
        assert result["label"] == expected.label
        assert result["score"] == expected.score


def test_model_reports_the_providers_the_session_really_runs_on(vitserve_server: str) -> None:
    info = httpx.get(f"{vitserve_server}/model").json()
    assert info["providers"] == host_providers()  # CUDA where the host really has it, else the CPU
    assert info["labels"] == [str(i) for i in range(10)]
    assert info["input_size"] == [28, 28]
    assert info["precision"] in ("int8", "fp32")
    assert info["artifact_choice"].startswith(
        "auto on the CPU serves the first of model.int8.onnx, model.onnx"
    )
    assert info["batch_max_abs_logit"] == 0.0
    assert info["fused_attention"] >= 1


def test_probes(vitserve_server: str) -> None:
    assert httpx.get(f"{vitserve_server}/livez").status_code == 200
    assert httpx.get(f"{vitserve_server}/readyz").status_code == 200
