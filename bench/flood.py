"""Overload: what a server still serves while a flood of clients resends at once, measured from outside.

wrk (C, a few tens of µs of CPU per request) holds N connections that each send their next request as
soon as the last is answered, the way a client fleet ignoring Retry-After or a proxy retrying 429s
does. The first point, at the admission bound's own connection count, is the capacity; each flood point
reports what was served and shed per second (the server's own vitserve_requests_total), served as a
share of the capacity, the server's and wrk's CPU, and socket errors. A probe (one Python keep-alive
connection, closed loop, beside wrk) times its own requests by answer: the admitted ones' p50/p99 and
the refusals' p99 are what a client among the flood sees.

    vitserve bench flood [MODEL_DIR] [--connections 16 256 1024] [--route /classify]
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vitserve.bench.processes import ServerProcess, running, tree_cpu_s, wait_quiet
from vitserve.bench.wrk import Upload, run_wrk
from vitserve.harness.metrics import counter_by_label, fetch

# Longer than the shed delay a refusal is held for (service/settings.py's default 1 s).
HELD_REFUSALS_S = 1.5


@dataclass(frozen=True)
class FloodConfig:
    connections: tuple[int, ...] = (16, 256, 1024)  # the first is the capacity point
    duration_s: float = 8.0
    max_in_flight: int = 16  # VITSERVE_MAX_IN_FLIGHT: the capacity point's connections fill it
    route: str = "/classify"
    images_per_request: int = 1  # /classify_batch: images in each request
    env: tuple[tuple[str, str], ...] = ()  # further VITSERVE_* settings


@dataclass(frozen=True)
class FloodPoint:
    connections: int
    offered_per_s: float  # requests wrk completed per second, whatever their answer
    served_per_s: float  # 200s, from the server's counters
    shed_per_s: float  # 429s
    other: dict[str, float]  # any other status: count
    socket_errors: int
    server_cores: float
    generator_cores: float
    admitted_ms: tuple[float, float] | None  # the probe's 200s: p50, p99
    refused_p99_ms: float | None  # the probe's 429s
    probe_answers: int


def answer_counts(url: str, route: str) -> dict[str, float]:
    """The server's answers so far on `route`, by status code."""
    return counter_by_label(fetch(url, timeout_s=30), "vitserve_requests_total", "code", route=route)


class Probe(threading.Thread):
    """One keep-alive connection sending the flood's own request, closed loop, timing each answer."""

    def __init__(self, port: int, route: str, upload: Upload) -> None:
        super().__init__(daemon=True)
        self.port, self.route, self.upload = port, route, upload
        self.stop = threading.Event()
        self.times: dict[int, list[float]] = {}

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stop.is_set():
            started = time.perf_counter()
            connection.request("POST", self.route, self.upload.body, self.upload.headers)
            response = connection.getresponse()
            response.read()
            self.times.setdefault(response.status, []).append(1000 * (time.perf_counter() - started))
        connection.close()


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(server: ServerProcess, upload: Upload, connections: int, config: FloodConfig) -> FloodPoint:
    wait_quiet(server.pid)
    before, cpu_before = answer_counts(server.url, config.route), tree_cpu_s(server.pid)
    probe = Probe(server.port, config.route, upload)
    probe.start()
    result = run_wrk(server.url + config.route, upload, connections, config.duration_s, timeout_s=5)
    probe.stop.set()
    probe.join()
    cpu_s = tree_cpu_s(server.pid) - cpu_before
    time.sleep(HELD_REFUSALS_S)  # refusals still held when wrk stopped are answered, and counted
    wait_quiet(server.pid)
    after = answer_counts(server.url, config.route)
    delta = {code: after[code] - before.get(code, 0.0) for code in after}
    admitted, refused = probe.times.get(200, []), probe.times.get(429, [])
    return FloodPoint(
        connections=connections,
        offered_per_s=result.requests / result.duration_s,
        served_per_s=delta.pop("200", 0.0) / result.duration_s,
        shed_per_s=delta.pop("429", 0.0) / result.duration_s,
        other={code: n for code, n in delta.items() if n},
        socket_errors=result.socket_errors,
        server_cores=cpu_s / result.duration_s,
        generator_cores=result.generator_cpu_s / result.duration_s,
        admitted_ms=(statistics.median(admitted), percentile(admitted, 0.99)) if admitted else None,
        refused_p99_ms=percentile(refused, 0.99) if refused else None,
        probe_answers=sum(len(v) for v in probe.times.values()),
    )


def flood_upload(image: bytes, media_type: str, route: str, images: int) -> Upload:
    """/classify: the raw image as the body; /classify_batch: `images` copies as multipart parts."""
    if route == "/classify":
        return Upload(image, media_type)
    boundary = "vitserve-flood"
    part = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="i"\r\n'
            f"Content-Type: {media_type}\r\n\r\n"
        ).encode()
        + image
        + b"\r\n"
    )
    return Upload(part * images + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}")


def flood_server(model_dir: Path, config: FloodConfig) -> ServerProcess:
    env = {"VITSERVE_MODEL_DIR": str(model_dir), "VITSERVE_MAX_IN_FLIGHT": str(config.max_in_flight)}
    return ServerProcess(env={**env, **dict(config.env)}, name="flood")


def run_flood(model_dir: Path, upload: Upload, config: FloodConfig) -> list[FloodPoint]:
    with running(flood_server(model_dir, config)) as server:
        run_wrk(server.url + config.route, upload, config.connections[0], 2)  # warm-up
        return [measure(server, upload, c, config) for c in config.connections]


def markdown(points: list[FloodPoint], config: FloodConfig) -> str:
    capacity = points[0].served_per_s * config.images_per_request
    lines = [
        "| connections | offered req/s | served req/s | served img/s, % of capacity | shed req/s "
        "| admitted p50 / p99 ms | refused p99 ms | socket errors | other answers | server cores "
        "| wrk cores |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for p in points:
        images = p.served_per_s * config.images_per_request
        admitted = f"{p.admitted_ms[0]:.1f} / {p.admitted_ms[1]:.1f}" if p.admitted_ms else "none"
        refused = f"{p.refused_p99_ms:.0f}" if p.refused_p99_ms is not None else "none"
        other = ", ".join(f"{code}: {n:.0f}" for code, n in p.other.items()) or "none"
        lines.append(
            f"| {p.connections} | {p.offered_per_s:.0f} | {p.served_per_s:.0f} | {images:.0f}, "
            f"{100 * images / capacity:.0f} % | {p.shed_per_s:.0f} | {admitted} | {refused} "
            f"| {p.socket_errors} | {other} | {p.server_cores:.2f} | {p.generator_cores:.2f} |"
        )
    return "\n".join(lines)
