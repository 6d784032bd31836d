"""Peer for `vitserve bench peers`: LitServe, a LitAPI batching with LitServer's own batcher.

As LitServe's documentation shows it: `setup` loads the model, `decode_request` turns the uploaded
form into pixels, `predict` runs a batch (max 32, 5 ms timeout), `encode_response` answers. Run by the
benchmark as `python -m vitserve.bench.peer_litserve --model-dir D --port P ...`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np

from vitserve.bench.peer_common import PeerModel, parse_args


class ClassifierAPI(ls.LitAPI):
    def __init__(self, model_dir: Path, threads: int, precision: str, max_batch: int, wait_s: float) -> None:
        super().__init__(max_batch_size=max_batch, batch_timeout=wait_s, api_path="/predict")
        self.model_dir, self.threads, self.precision = model_dir, threads, precision

    def setup(self, device: str) -> None:
        self.model = PeerModel(self.model_dir, self.threads, self.precision)

    # Unannotated on purpose: LitServe reads the annotation to decide what to parse, and without one
    # it hands over the parsed form of a multipart request.
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return self.model.decode(request["image"].file.read())

    def batch(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return inputs  # PeerModel.predict stacks them

    def predict(self, pixels: list[np.ndarray]) -> list[dict[str, Any]]:
        return self.model.predict(pixels)

    def unbatch(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return output

    def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return output


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    api = ClassifierAPI(
        args.model_dir.resolve(), args.threads, args.precision, args.max_batch_size, args.batch_wait_ms / 1000
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
