"""An image gets the same scores alone, inside /classify_batch beside any others, and in batches formed by
concurrent /classify requests: the served artifact at its default precision, on a real server."""

from __future__ import annotations

import asyncio
import io
import math
import random
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support import DEFAULT_MODEL_DIR, SAMPLES_DIR, running_server
from vitserve.harness.metrics import metric

FORMATS = ("PNG", "JPEG", "WEBP")


@pytest.fixture(scope="module")
def images() -> list[tuple[str, bytes]]:
    """The shipped samples and 22 held-out digits encoded as PNG, JPEG and WebP: 32 different images."""
    files = sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix != ".json")
    encoded = [(p.name, p.read_bytes()) for p in files]
    with np.load(DEFAULT_MODEL_DIR / "heldout.npz") as data:
        digits = data["images"][:22]
    for i, digit in enumerate(digits):
        buffer = io.BytesIO()
        Image.fromarray(digit).save(buffer, format=FORMATS[i % 3])
        encoded.append((f"heldout_{i}.{FORMATS[i % 3].lower()}", buffer.getvalue()))
    return encoded


def scores(answer: dict) -> dict[str, float]:
    return {item["label"]: item["score"] for item in answer["top_k"]}


def tolerance(url: str) -> float:
    """From the export gate's figure for the artifact served: a logit moved by at most e moves a softmax
    probability by at most expm1(2e); 0.0 (every CPU artifact) means bitwise, and so does an artifact
    exported before the gate, held to what every served artifact must do."""
    gated = httpx.get(f"{url}/model").json()["batch_max_abs_logit"]
    return math.expm1(2 * (gated or 0.0))


@pytest.fixture(scope="module")
def alone(vitserve_server: str, images: list[tuple[str, bytes]]) -> dict[str, dict[str, float]]:
    """Each image's scores for all ten classes, sent on its own to the idle default server."""
    answers = {}
    for name, data in images:
        response = httpx.post(f"{vitserve_server}/classify?top_k=10", files={"image": (name, data)})
        assert response.status_code == 200, response.text
        answers[name] = scores(response.json())
    return answers


def assert_same(name: str, got: dict[str, float], expected: dict[str, float], tol: float) -> None:
    assert got.keys() == expected.keys()
    assert max(got[label] - expected[label] for label in got) <= tol, name
    assert min(got[label] - expected[label] for label in got) >= -tol, name
    assert max(got, key=got.__getitem__) == max(expected, key=expected.__getitem__), name


@pytest.mark.parametrize(("size", "seed"), [(2, 0), (7, 1), (7, 2), (32, 3)])
def test_classify_batch_gives_each_image_its_scores_alone_whatever_its_partners(
    vitserve_server: str,
    images: list[tuple[str, bytes]],
    alone: dict[str, dict[str, float]],
    size: int,
    seed: int,
) -> None:
    tol = tolerance(vitserve_server)
    chosen = random.Random(seed).sample(images, size)  # other partners and positions each time
    parts = [("images", (name, data)) for name, data in chosen]
    response = httpx.post(f"{vitserve_server}/classify_batch?top_k=10", files=parts)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == size
    for (name, _), result in zip(chosen, results, strict=True):
        assert_same(name, scores(result), alone[name], tol)


def test_batches_of_concurrent_classify_requests_change_no_answer(
    tmp_path: Path, images: list[tuple[str, bytes]], alone: dict[str, dict[str, float]]
) -> None:
    """Each image that finds the model idle waits (up to 5 s) until 8 are queued, so every batch the
    32 concurrent requests form holds 8 images, whichever arrived together."""
    env = {
        "VITSERVE_MAX_BATCH_SIZE": "8",
        "VITSERVE_BATCH_WAIT_MS": "5000",
        "VITSERVE_MAX_LATENCY_MS": "60000",
    }
    with running_server(env, log_path=tmp_path / "server.log") as server:
        tol = tolerance(server.url)
        before = metric(server.url, "vitserve_batch_size_count")
        before_images = metric(server.url, "vitserve_batch_size_sum")

        async def send_all() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                return await asyncio.gather(
                    *(client.post("/classify?top_k=10", files={"image": (n, d)}) for n, d in images)
                )

        responses = asyncio.run(send_all())
        assert [r.status_code for r in responses] == [200] * len(images)
        for (name, _), response in zip(images, responses, strict=True):
            assert_same(name, scores(response.json()), alone[name], tol)
        assert metric(server.url, "vitserve_batch_size_count") - before == len(images) // 8
        assert metric(server.url, "vitserve_batch_size_sum") - before_images == len(images)
