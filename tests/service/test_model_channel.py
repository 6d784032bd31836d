"""The model server's socket channel: pixels in, probabilities out, many calls in flight, restarts ridden out.

A real ChannelServer serves a real model (the shipped artifact behind the batcher) on a Unix socket
in this process's event loop; RemoteModel is the API worker's side of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support import DEFAULT_MODEL_DIR
from vitserve.runtime.artifact import ArtifactMetadata
from vitserve.runtime.batcher import DeadlineExceeded
from vitserve.runtime.predictions import softmax
from vitserve.service.model.channel import (
    ChannelServer,
    ModelServerError,
    ModelUnreachable,
    RemoteModel,
    read_hello,
)
from vitserve.service.model.local import LocalModel
from vitserve.service.settings import Settings

SETTINGS = Settings(model_dir=DEFAULT_MODEL_DIR, precision="fp32", device="cpu", intra_op_threads=1)


@pytest.fixture(scope="module")
def model() -> Iterator[LocalModel]:
    model = LocalModel(SETTINGS)
    yield model
    model.close()


class Failing:
    """A model whose every call fails the way `error` says: what crosses the channel is the question."""

    def __init__(self, metadata: ArtifactMetadata, error: Exception) -> None:
        self.metadata, self.error = metadata, error

    async def infer(self, pixels: np.ndarray) -> np.ndarray:
        raise self.error

    def info(self) -> dict[str, object]:
        return {"providers": ["none"]}


def pixels(model: LocalModel, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *model.classifier.input_shape), dtype=np.uint8)


async def connect(path: Path, retries: list[int]) -> RemoteModel:
    hello = await asyncio.get_running_loop().run_in_executor(None, read_hello, path, 10.0)
    return RemoteModel(path, hello, attempts=3, on_retry=lambda: retries.append(1))


def test_concurrent_calls_come_back_to_their_callers_with_the_models_probabilities(
    model: LocalModel, tmp_path: Path
) -> None:
    path = tmp_path / "model.sock"
    batches = [pixels(model, n, seed) for seed, n in enumerate([1, 3, 1, 40, 2, 1, 5])]

    async def go() -> tuple[list[np.ndarray], RemoteModel]:
        server = ChannelServer(model, path)
        await server.start()
        remote = await connect(path, [])
        try:
            return list(await asyncio.gather(*(remote.infer(b) for b in batches))), remote
        finally:
            remote.close()
            server.close()

    results, remote = asyncio.run(go())
    for got, sent in zip(results, batches, strict=True):
        # float64 both ways: what the model server computed arrives bit for bit.
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, softmax(model.classifier.predict_batch(sent)), rtol=1e-5, atol=1e-7)
    assert remote.metadata == model.metadata
    assert remote.info() == model.info()


def test_a_restarted_server_is_reconnected_to_and_the_resend_counted(
    model: LocalModel, tmp_path: Path
) -> None:
    path = tmp_path / "model.sock"
    retries: list[int] = []

    async def go() -> np.ndarray:
        first = ChannelServer(model, path)
        await first.start()
        remote = await connect(path, retries)
        await remote.infer(pixels(model, 1, 0))  # the connection is open now
        first.close()
        await first.wait_closed_connections()
        second = ChannelServer(model, path)  # a replacement, on the same path
        await second.start()
        try:
            return await remote.infer(pixels(model, 2, 1))
        finally:
            remote.close()
            second.close()

    got = asyncio.run(go())
    # The resent call's own answer, not just one of the right shape.
    np.testing.assert_allclose(
        got, softmax(model.classifier.predict_batch(pixels(model, 2, 1))), rtol=1e-5, atol=1e-7
    )
    assert retries == [1]


def test_no_server_at_all_is_unreachable_not_a_hang(model: LocalModel, tmp_path: Path) -> None:
    path = tmp_path / "model.sock"
    with pytest.raises(ModelUnreachable):
        read_hello(path, deadline_s=0.3)


@pytest.mark.parametrize(
    ("error", "raised"),
    [(DeadlineExceeded("queued too long"), DeadlineExceeded), (ValueError("bad model"), ModelServerError)],
)
def test_the_servers_failures_arrive_as_the_same_kind_of_error(
    model: LocalModel, tmp_path: Path, error: Exception, raised: type[Exception]
) -> None:
    path = tmp_path / "model.sock"

    async def go() -> None:
        server = ChannelServer(Failing(model.metadata, error), path)
        await server.start()
        remote = await connect(path, [])
        try:
            with pytest.raises(raised, match=str(error)):
                await remote.infer(pixels(model, 1, 0))
        finally:
            remote.close()
            server.close()

    asyncio.run(go())
