"""Client and AsyncClient against the real server: every input type, batches, model info, the CLI."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.support import SAMPLES_DIR
from vitserve.client import AsyncClient, Client, InvalidImage, ModelRef, Prediction


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shipped sample digit, or one drawn with Pillow when the samples are not there yet."""
    shipped = sorted(SAMPLES_DIR.glob("*.png")) if SAMPLES_DIR.is_dir() else []
    if shipped:
        return shipped[0]
    from tests.client.conftest import digit_image

    path = tmp_path_factory.mktemp("sample") / "seven.png"
    path.write_bytes(digit_image(7))
    return path


def test_every_input_type_gets_the_same_prediction(vitserve_server: str, sample: Path) -> None:
    data = sample.read_bytes()
    with Client(vitserve_server) as client:
        info = client.model_info()
        reference = client.classify(sample, top_k=3)
        with sample.open("rb") as file:
            inputs: list[Any] = [
                str(sample),
                data,
                bytearray(data),
                io.BytesIO(data),
                file,
                Image.open(sample),
            ]
            predictions = [client.classify(image, top_k=3) for image in inputs]
    assert isinstance(reference, Prediction) and len(reference.top_k) == 3
    assert reference.model == ModelRef(info.name, info.version)
    assert reference.label in info.labels and reference.top_k[0].label == reference.label
    assert reference.top_k[0].index == info.labels.index(reference.label)
    assert [k.score for k in reference.top_k] == sorted((k.score for k in reference.top_k), reverse=True)
    for prediction in predictions:
        # A PIL image travels as PNG of the same pixels, so all inputs decode to the same array.
        assert prediction.label == reference.label
        assert prediction.score == pytest.approx(reference.score, abs=1e-4)  # batch-size jitter only


def test_classify_many_keeps_order_and_isolates_bad_images(vitserve_server: str, sample: Path) -> None:
    good = sample.read_bytes()
    images = [good, b"\x89PNG\r\n\x1a\ntruncated", good, b"", good]
    with Client(vitserve_server) as client:
        results = client.classify_many(images, top_k=2, batch_size=2)
        single = client.classify(good, top_k=2)
        with pytest.raises(InvalidImage) as raised:
            client.classify(b"this is not an image")
    assert [type(r) for r in results] == [Prediction, InvalidImage, Prediction, InvalidImage, Prediction]
    assert {r.label for r in results if isinstance(r, Prediction)} == {single.label}
    assert all(r.code and r.message for r in results if isinstance(r, InvalidImage))
    assert raised.value.status is not None and 400 <= raised.value.status < 500


def test_async_client_has_the_same_methods(vitserve_server: str, sample: Path) -> None:
    public = {name for name in dir(Client) if not name.startswith("_")}
    assert public - {"close"} == {name for name in dir(AsyncClient) if not name.startswith("_")} - {"aclose"}

    async def run() -> tuple[Prediction, list[Any], bool]:
        async with AsyncClient(vitserve_server) as client:
            assert await client.ready()
            one, many = await asyncio.gather(
                client.classify(sample), client.classify_many([sample] * 5, batch_size=4)
            )
            return one, many, (await client.model_info()).ref == one.model

    one, many, same_model = asyncio.run(run())
    assert same_model and len(many) == 5
    assert all(isinstance(p, Prediction) and p.label == one.label for p in many)


def test_cli_classify_prints_the_prediction_as_json(
    vitserve_server: str, sample: Path, tmp_path: Path, image_bytes: Callable[..., bytes]
) -> None:
    command = [sys.executable, "-m", "vitserve", "classify", "--url", vitserve_server]
    result = subprocess.run(
        [*command, str(sample), "--top-k", "2"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert set(printed) == {"label", "score", "top_k", "model"} and len(printed["top_k"]) == 2
    piped = subprocess.run([*command, "-"], input=sample.read_bytes(), capture_output=True, timeout=60)
    assert piped.returncode == 0 and json.loads(piped.stdout)["label"] == printed["label"]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(image_bytes(1, "JPEG")[:40])
    failed = subprocess.run([*command, str(bad)], capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and failed.stdout == ""
    assert "invalid_image" in failed.stderr or "unsupported_media_type" in failed.stderr
