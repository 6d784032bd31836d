"""Peer for `vitserve bench peers`: plain BentoML, gallery style (one service, a batchable API).

Shaped like BentoML's own examples (BentoResnet): `__init__` loads the model once; one batchable
endpoint receives the uploaded files, decodes them and runs the batch. Run by the benchmark as
`python -m vitserve.bench.peer_bentoml --model-dir D --port P ...`, which starts `bentoml serve`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import bentoml

from vitserve.bench.peer_common import PeerModel, parse_args

CONFIG_ENV = "VITSERVE_PEER_CONFIG"  # the arguments, for the worker processes bentoml serve starts
CONFIG = json.loads(os.environ.get(CONFIG_ENV, "{}"))


@bentoml.service(workers=1, traffic={"timeout": 60})
class PlainClassifier:
    def __init__(self) -> None:
        self.model = PeerModel(Path(CONFIG["model_dir"]), CONFIG["threads"], CONFIG["precision"])

    @bentoml.api(
        batchable=True,
        max_batch_size=CONFIG.get("max_batch_size", 32),
        # BentoML's deadline for a queued request (not a window): generous, as vitserve's default.
        max_latency_ms=10_000,
    )
    def classify(self, image: list[Path]) -> list[dict[str, Any]]:
        return self.model.predict([self.model.decode(path.read_bytes()) for path in image])


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    config = {
        "model_dir": str(args.model_dir.resolve()),
        "threads": args.threads,
        "precision": args.precision,
        "max_batch_size": args.max_batch_size,
    }
    environ = {**os.environ, CONFIG_ENV: json.dumps(config)}
    command = [sys.executable, "-m", "bentoml", "serve", f"{__spec__.name}:PlainClassifier"]
    os.execve(sys.executable, [*command, "--host", "127.0.0.1", "--port", str(args.port)], environ)


if __name__ == "__main__":
    main()
