"""SIGTERM with a gRPC call in flight: gRPC readiness fails first, the call completes, the server exits."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from typing import Any

import numpy as np
import tritonclient.grpc as tgrpc

from tests.support import DEFAULT_MODEL_DIR, SAMPLES_DIR, ServerProcess, free_port
from vitserve.harness.metrics import metric
from vitserve.runtime.artifact import read_metadata

# A lone image waits this long for company before its batch runs: its call is surely still in flight
# when SIGTERM lands, and still when the worker stops accepting after the shutdown delay.
BATCH_WAIT_MS = 8_000
SHUTDOWN_DELAY_S = 4


def test_sigterm_drains_grpc_calls_in_flight() -> None:
    name = read_metadata(DEFAULT_MODEL_DIR / "model.onnx").model_name
    grpc_port = free_port()
    env = {
        "VITSERVE_GRPC_PORT": str(grpc_port),
        "VITSERVE_BATCH_WAIT_MS": str(BATCH_WAIT_MS),
        "VITSERVE_MAX_LATENCY_MS": str(5 * BATCH_WAIT_MS),  # the queue deadline, past the wait
        "VITSERVE_SHUTDOWN_DELAY_S": str(SHUTDOWN_DELAY_S),
    }
    server = ServerProcess(env=env).start()
    try:
        client = tgrpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        assert client.is_server_ready()
        image = tgrpc.InferInput("image", [1], "BYTES")
        image.set_data_from_numpy(
            np.array([sorted(SAMPLES_DIR.glob("*.png"))[0].read_bytes()], dtype=np.object_)
        )
        done: concurrent.futures.Future[tuple[Any, Any]] = concurrent.futures.Future()
        client.async_infer(name, [image], callback=lambda result, error: done.set_result((result, error)))
        deadline = time.monotonic() + 60
        while metric(server.url, "vitserve_in_flight_images") < 1:  # admitted, waiting for its batch
            assert time.monotonic() < deadline and not done.done(), "the call was never in flight"
            time.sleep(0.05)
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGTERM)  # the supervising process, as Kubernetes would
        while client.is_server_ready():  # fails while the worker still serves (the shutdown delay)
            assert time.monotonic() < deadline, "gRPC readiness never failed after SIGTERM"
            time.sleep(0.05)
        assert not done.done(), "the call finished before the test could see the drain"
        result, error = done.result(timeout=120)
        assert error is None, error
        assert result.as_numpy("probabilities").shape[0] == 1
        assert server.proc.wait(timeout=120) is not None  # drained and gone, not hung
    finally:
        server.stop()
