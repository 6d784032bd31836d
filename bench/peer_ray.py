"""Peer for `vitserve bench peers`: a Ray Serve deployment batching with @serve.batch.

As Ray Serve's batching guide shows it: one deployment, a batched method (max 32, 5 ms window),
`max_ongoing_requests` raised above the batch size so that a batch can fill. Run by the benchmark as
`python -m vitserve.bench.peer_ray --model-dir D --port P ...`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ray
from ray import serve
from starlette.datastructures import UploadFile
from starlette.requests import Request

from vitserve.bench.peer_common import PeerModel, parse_args


@serve.deployment(max_ongoing_requests=128)
class Classifier:
    def __init__(self, model_dir: str, threads: int, precision: str, max_batch: int, wait_s: float) -> None:
        self.model = PeerModel(Path(model_dir), threads, precision)
        self.predict.set_max_batch_size(max_batch)
        self.predict.set_batch_wait_timeout_s(wait_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def predict(self, images: list[bytes]) -> list[dict[str, Any]]:
        return self.model.predict([self.model.decode(data) for data in images])

    async def __call__(self, request: Request) -> Any:
        if request.method == "GET":
            return {"ready": True}  # the benchmark's readiness probe: the replica is up
        upload = (await request.form())["image"]
        assert isinstance(upload, UploadFile), "the benchmark sends the image as a file"
        return await self.predict(await upload.read())


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    app = Classifier.bind(  # type: ignore[attr-defined]
        str(args.model_dir.resolve()),
        args.threads,
        args.precision,
        args.max_batch_size,
        args.batch_wait_ms / 1000,
    )
    serve.run(app, route_prefix="/classify")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
