"""Peer for `vitserve bench peers`: NVIDIA PyTriton, Triton's dynamic batcher around a Python function.

As PyTriton's examples show it: an `@batch` infer function bound with a DynamicBatcher (max 32,
5 ms queue delay). Triton's API takes tensors, not forms: the encoded image arrives as a BYTES
tensor (bench/peers.py builds the request) and the answer leaves as one JSON string per image (`top_k`)
and as the class probabilities (`probabilities`, FP32), whose top 5 Triton's classification extension
gives to a client that asks for them (`vitserve bench peers --tritonclient`). Run by
the benchmark as `python -m vitserve.bench.peer_pytriton --model-dir D --port P ...`.
"""

from __future__ import annotations

import json
import os
import sysconfig
from typing import Any

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from vitserve.bench.peer_common import PeerModel, parse_args
from vitserve.bench.processes import free_port


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    # Triton's Python-backend stub links libpython3.x.so by name; on a machine whose system Python is
    # an older patch release than this interpreter's (Debian's 3.11.2 beside a 3.11.7), the stub loaded
    # the system's library under this interpreter's standard library and failed to start. Point it at
    # this interpreter's own library.
    libdir = sysconfig.get_config_var("LIBDIR")
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")]))
    model = PeerModel(args.model_dir, args.threads, args.precision)

    @batch
    def infer(image: np.ndarray) -> dict[str, Any]:
        probabilities = model.probabilities([model.decode(bytes(item[0])) for item in image])
        answers = model.answers(probabilities)
        return {
            "top_k": np.array([[json.dumps(a).encode()] for a in answers], dtype=np.bytes_),
            "probabilities": probabilities.astype(np.float32),
        }

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port or free_port(),
        metrics_port=free_port(),
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name="classifier",
            infer_func=infer,
            inputs=[Tensor(name="image", dtype=np.bytes_, shape=(1,))],
            outputs=[
                Tensor(name="top_k", dtype=np.bytes_, shape=(1,)),
                Tensor(name="probabilities", dtype=np.float32, shape=(len(model.metadata.labels),)),
            ],
            config=ModelConfig(
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=int(args.batch_wait_ms * 1000)),
            ),
        )
        triton.serve()


if __name__ == "__main__":
    main()
