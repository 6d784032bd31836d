"""What every peer server of `vitserve bench peers` shares: its arguments, and the model it serves.

Each peer runs the same artifact through runtime/session.py's OnnxClassifier, decodes with
runtime/decode.py and answers the top 5 classes as JSON, like vitserve: only the serving framework
around them differs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from vitserve.runtime.decode import DecodeLimits, decode_image
from vitserve.runtime.predictions import ranked_predictions, softmax
from vitserve.runtime.session import OnnxClassifier, SessionOptions

TOP_K = 5


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=0, help="where the peer has gRPC; 0: any free port")
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    return parser.parse_args()


class PeerModel:
    """The session, the decoder and the answer format every peer shares."""

    def __init__(self, model_dir: Path, threads: int, precision: str) -> None:
        options = SessionOptions(precision=precision, device="cpu", intra_op_threads=threads)
        self.classifier = OnnxClassifier(model_dir, options)
        self.metadata = self.classifier.metadata
        self.limits = DecodeLimits()

    def decode(self, data: bytes) -> np.ndarray:
        return decode_image(data, self.metadata.preprocessing, self.limits)

    def predict(self, pixels: list[np.ndarray]) -> list[dict[str, Any]]:
        """Decoded images -> one answer each, in one ORT call."""
        return self.answers(self.probabilities(pixels))

    def probabilities(self, pixels: list[np.ndarray]) -> np.ndarray:
        """Decoded images -> (N, C) class probabilities, in one ORT call."""
        return softmax(self.classifier.predict_batch(np.stack(pixels)))

    def answers(self, probabilities: np.ndarray) -> list[dict[str, Any]]:
        """(N, C) probabilities -> one answer each: the top 5 classes, as every peer gives them."""
        meta = self.metadata
        model = {"name": meta.model_name, "version": meta.model_version}
        return [
            {
                "label": p.label,
                "score": p.score,
                "top_k": [{"label": t.label, "index": t.index, "score": t.score} for t in p.top_k],
                "model": model,
            }
            for p in ranked_predictions(probabilities, meta.labels, TOP_K)
        ]
