"""`Client.explain`, `AsyncClient.explain` and `vitserve explain` against a real server."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support import DEFAULT_MODEL_DIR, patch_grid
from vitserve.cli import main
from vitserve.client import AsyncClient, Client, InvalidImage, InvalidRequest, ServerError
from vitserve.client.explain import Explanation, parse_explanation


@pytest.fixture(scope="module")
def digit_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with np.load(DEFAULT_MODEL_DIR / "heldout.npz") as data:
        image = data["images"][0]
    path = tmp_path_factory.mktemp("digit") / "digit.png"
    Image.fromarray(image).save(path)
    return path


def check(explanation: Explanation) -> None:
    assert explanation.method == "attention_rollout" and explanation.grid == (patch_grid(), patch_grid())
    assert sum(map(sum, explanation.heatmap)) == pytest.approx(1.0)
    assert explanation.target.label == explanation.prediction.label


def test_sync_and_async_clients_agree(vitserve_server: str, digit_file: Path) -> None:
    with Client(vitserve_server) as client:
        result = client.explain(digit_file, top_k=3)
        plain = client.classify(digit_file, top_k=3)
        without_overlay = client.explain(
            digit_file.read_bytes(), overlay=False, head_fusion="max", for_class=4
        )
    check(result)
    # /explain scores with the FP32 explanation graph, /classify with the served (maybe INT8) artifact.
    assert result.prediction.label == plain.label and result.prediction.model == plain.model
    assert Image.open(io.BytesIO(result.overlay_png or b"")).size == (224, 224)
    assert without_overlay.overlay_png is None and without_overlay.head_fusion == "max"
    assert without_overlay.target.index == 4
    with pytest.raises(ValueError, match="no overlay"):
        without_overlay.save_overlay("x.png")

    async def run() -> Explanation:
        async with AsyncClient(vitserve_server) as client:
            return await client.explain(digit_file, top_k=3)

    assert asyncio.run(run()) == result


def test_errors_are_typed(vitserve_server: str) -> None:
    with Client(vitserve_server, retries=0) as client:
        with pytest.raises(InvalidImage):
            client.explain(b"not an image at all")
        with pytest.raises(InvalidRequest, match="class"):
            client.explain(DEFAULT_MODEL_DIR / "heldout.npz", for_class="eleven")  # bad class checked first
        with pytest.raises(ValueError, match="head_fusion"):
            client.explain(b"x", head_fusion="median")


def test_cli_writes_the_overlay(
    vitserve_server: str, digit_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "overlay.png"
    assert main(["explain", str(digit_file), "--url", vitserve_server, "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["explanation"]["grid"] == [patch_grid()] * 2
    assert printed["explanation"]["overlay"] == str(out)
    assert Image.open(out).size == (224, 224)
    assert main(["explain", str(tmp_path / "missing.png"), "--url", vitserve_server]) == 2


def test_a_malformed_answer_is_a_server_error() -> None:
    body = {"label": "1", "score": 0.9, "top_k": [{"label": "1", "index": 1, "score": 0.9}]}
    body["model"] = {"name": "m", "version": "1"}
    with pytest.raises(ServerError, match="explanation"):
        parse_explanation({**body, "explanation": {"map": [[0.5], [0.25, 0.25]]}})
    with pytest.raises(ServerError, match="base64"):
        explanation = {
            "map": [[1.0]],
            "head_fusion": "mean",
            "method": "attention_rollout",
            "class": {"label": "1", "index": 1, "score": 0.9},
            "overlay_png": "not base64!",
        }
        parse_explanation({**body, "explanation": explanation})
