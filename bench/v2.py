"""The Open Inference Protocol against /classify on one server: img/s of each at each concurrency.

One vitserve server; per round and concurrency, in rotating order, three closed loops of one image per
request, each from a C load generator: `/classify` (a multipart upload, wrk), v2 REST (the image as a
BYTES tensor in Triton's binary tensor data extension, the top 5 as classification strings, wrk) and
v2 gRPC (the same request as a ModelInferRequest with raw_input_contents, h2load over h2c, one stream
per connection, or with `--grpc-streams N` N streams on each of c/N connections, as one client's
channel multiplexes its calls). What was served is the server's own count of 200s per route
(vitserve_requests_total), so a gRPC error inside an HTTP/2 200 is never counted as served.

    vitserve bench v2 [MODEL_DIR] [--concurrency 8 64] [--duration-s 8] [--rounds 3] [--grpc-streams 1]

`apt-get install wrk nghttp2-client` provides the generators.
"""

from __future__ import annotations

import statistics
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vitserve.bench.flood import answer_counts
from vitserve.bench.h2load import h2load_binary
from vitserve.bench.peers import multipart, v2_binary, v2_infer_path
from vitserve.bench.processes import ServerProcess, free_port, running, wait_quiet
from vitserve.bench.wrk import run_wrk
from vitserve.service.v2.paths import INFER_ROUTE

PROTOCOLS = ("/classify", "v2 REST", "v2 gRPC")
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class V2BenchConfig:
    concurrencies: tuple[int, ...] = (8, 64)
    duration_s: float = 8.0
    warmup_s: float = 2.0
    rounds: int = 3
    grpc_streams: int = 1  # concurrent gRPC calls per HTTP/2 connection


def grpc_body(image: bytes, model_name: str) -> bytes:
    """One length-prefixed gRPC message: a ModelInferRequest for one BYTES image and its top 5."""
    from vitserve.service.v2 import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=model_name)
    request.inputs.add(name="image", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(struct.pack("<I", len(image)) + image)
    request.outputs.add(name="probabilities").parameters["classification"].int64_param = 5
    message = request.SerializeToString()
    return b"\x00" + struct.pack(">I", len(message)) + message


def run_h2load(url: str, body: Path, concurrency: int, duration_s: float, streams: int = 1) -> None:
    """`concurrency` closed-loop gRPC calls, `streams` of them on each HTTP/2 connection."""
    headers = ("-H", "content-type: application/grpc", "-H", "te: trailers")
    duration = f"{round(1000 * duration_s)}ms"  # h2load takes whole units
    streams = max(1, min(streams, concurrency))
    connections = ["-c", str(max(1, concurrency // streams)), "-m", str(streams)]
    command = [h2load_binary(), *connections, "-D", duration, "-d", str(body), *headers, url]
    subprocess.run(command, check=True, capture_output=True, timeout=duration_s + 60)


def served(url: str, route: str) -> tuple[float, float]:
    """(200s, other answers) the server has counted on `route` so far."""
    counts = answer_counts(url, route)
    ok = counts.get("200", 0.0)
    return ok, sum(counts.values()) - ok


def run(
    model_dir: Path, image: bytes, media_type: str, config: V2BenchConfig
) -> dict[tuple[str, int], list[float]]:
    """img/s per (protocol, concurrency), one figure per round."""
    grpc_port = free_port()
    env = {
        "VITSERVE_MODEL_DIR": str(model_dir),
        "VITSERVE_DEVICE": "cpu",
        "VITSERVE_GRPC_PORT": str(grpc_port),
    }
    infer_path = v2_infer_path(model_dir)
    rates: dict[tuple[str, int], list[float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="vitserve-bench-v2-") as tmp,
        running(ServerProcess(env=env)) as server,
    ):
        body = Path(tmp) / "grpc.bin"
        body.write_bytes(grpc_body(image, infer_path.split("/")[3]))
        routes = {"/classify": "/classify", "v2 REST": INFER_ROUTE, "v2 gRPC": GRPC_INFER}

        def load(protocol: str, concurrency: int, duration_s: float) -> None:
            if protocol == "/classify":
                run_wrk(server.url + "/classify", multipart(image, media_type), concurrency, duration_s)
            elif protocol == "v2 REST":
                run_wrk(server.url + infer_path, v2_binary(image, media_type), concurrency, duration_s)
            else:
                url = f"http://127.0.0.1:{grpc_port}{GRPC_INFER}"
                run_h2load(url, body, concurrency, duration_s, config.grpc_streams)

        for round_index in range(config.rounds):
            for c in config.concurrencies:
                order = PROTOCOLS[round_index % 3 :] + PROTOCOLS[: round_index % 3]
                for protocol in order:
                    route = routes[protocol]
                    load(protocol, c, config.warmup_s)  # connections open, batch shapes seen
                    # The warm-up's abandoned requests finish before the count starts: on a slow model
                    # they are a whole batch of the window, counted or not as the route treats them.
                    wait_quiet(server.pid)
                    ok_before, bad_before = served(server.url, route)
                    load(protocol, c, config.duration_s)
                    ok_after, bad_after = served(server.url, route)
                    if bad_after > bad_before:
                        raise RuntimeError(
                            f"{protocol} c={c}: {bad_after - bad_before:.0f} answers were not 200"
                        )
                    # Both generators stop at the duration asked for: it is the denominator.
                    rates.setdefault((protocol, c), []).append((ok_after - ok_before) / config.duration_s)
    return rates


def markdown(rates: dict[tuple[str, int], list[float]], config: V2BenchConfig) -> str:
    head = "| protocol | " + " | ".join(f"c={c}" for c in config.concurrencies) + " |"
    lines = [
        f"img/s, median over {config.rounds} round(s) (min-max)",
        "",
        head,
        "|" + " --- |" * (len(config.concurrencies) + 1),
    ]
    for protocol in PROTOCOLS:
        cells = []
        for c in config.concurrencies:
            values = rates[(protocol, c)]
            cells.append(f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})")
        lines.append(f"| {protocol} | " + " | ".join(cells) + " |")
    lines += ["", "ratios (medians of this run):", ""]
    medians = {key: statistics.median(values) for key, values in rates.items()}
    for protocol in PROTOCOLS[1:]:
        ratios = ", ".join(
            f"c={c} {medians[(protocol, c)] / medians[('/classify', c)]:.2f}x" for c in config.concurrencies
        )
        lines.append(f"- {protocol} / /classify img/s: {ratios}")
    return "\n".join(lines)
