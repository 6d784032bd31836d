"""Overload: what a server still serves while a flood of clients resends at once, measured from outside.

The one flood engine of `vitserve bench flood` and `python -m reliability.overload`. h2load (C, a few
µs of CPU per request; bench/h2load.py) floods in two ways:

- closed loop at fixed connection counts: each connection sends its next request as soon as the last
  is answered, the way a client fleet ignoring Retry-After or a proxy retrying 429s does. The first
  count, the admission bound's own, is the capacity point;
- open loop, paced at multiples of that capacity (2x, 5x, 10x): requests go out at the rate asked for
  whatever the answers say, as far as the connections allow (bench/h2load.py says why; the rate
  reached is reported beside the rate asked for).

Each point reports what was served and shed per second (the server's own vitserve_requests_total),
served as a share of the capacity, the latencies of admitted and refused requests (every request's,
from h2load's log), errors, and the server's and h2load's CPU side by side.

    vitserve bench flood [MODEL_DIR] [--connections 16 256 1024] [--factors 2 5 10] [--route /classify]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitserve.bench.h2load import H2loadResult, percentile, run_h2load
from vitserve.bench.peers import v2_binary
from vitserve.bench.processes import ServerProcess, running, tree_cpu_s, tree_rss_mib, wait_quiet
from vitserve.bench.wrk import Upload
from vitserve.harness.metrics import counter_by_label, fetch
from vitserve.harness.procs import RssSampler
from vitserve.harness.uploads import multipart
from vitserve.service.v2.paths import INFER_ROUTE, route_label

DEFAULT_SHED_DELAY_S = 1.0  # service settings' shed_delay_ms default: how long a refusal is held
WARM_UP_S = 2.0  # closed loop at capacity first: the batching cost model's first seconds


@dataclass(frozen=True)
class FloodConfig:
    connections: tuple[int, ...] = (16, 256, 1024)  # closed loop; the first is the capacity point
    factors: tuple[float, ...] = (2.0, 5.0, 10.0)  # open loop, paced at these multiples of capacity
    duration_s: float = 8.0
    max_in_flight: int = 16  # VITSERVE_MAX_IN_FLIGHT: the capacity point's connections fill it
    route: str = "/classify"
    images_per_request: int = 1  # /classify_batch: images in each request
    env: tuple[tuple[str, str], ...] = ()  # further VITSERVE_* settings
    max_connections: int = 4096  # the most a paced point opens
    recovery: bool = False  # measure the capacity point again after the floods

    @property
    def shed_delay_s(self) -> float:
        held = dict(self.env).get("VITSERVE_SHED_DELAY_MS")
        return int(held) / 1000 if held is not None else DEFAULT_SHED_DELAY_S


@dataclass(frozen=True)
class FloodPoint:
    load: str  # "16 connections" or "5x capacity, paced"
    connections: int
    asked_per_s: float | None  # the paced rate asked for; None in closed loop
    sent_per_s: float  # requests h2load sent per second, whatever became of them
    served_per_s: float  # 200s, from the server's counters
    shed_per_s: float  # 429s
    other: dict[str, float]  # any other status: count
    errors: int  # requests with no answer: reset, refused or timed out
    unanswered: int  # still in flight when the flood stopped (held refusals, mostly)
    server_cores: float
    generator_cores: float
    admitted_ms: tuple[float, float] | None  # h2load's 200s: p50, p99
    refused_p99_ms: float | None  # h2load's 429s


@dataclass
class FloodRun:
    points: list[FloodPoint]
    recovered: FloodPoint | None = None
    rss_before_mib: float = 0.0
    rss_peak_mib: float = 0.0
    rss_after_mib: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def capacity(self) -> FloodPoint:
        return self.points[0]


def answer_counts(url: str, route: str) -> dict[str, float]:
    """The server's answers so far on `route` (a path, or its metrics label), by status code."""
    return counter_by_label(
        fetch(url, timeout_s=30), "vitserve_requests_total", "code", route=route_label(route)
    )


def measure(
    server: ServerProcess, upload: Upload, config: FloodConfig, connections: int, asked: float | None = None
) -> FloodPoint:
    wait_quiet(server.pid)
    before, cpu_before = answer_counts(server.url, config.route), tree_cpu_s(server.pid)
    rate = None if asked is None else asked / connections
    result: H2loadResult = run_h2load(server.url + config.route, upload, connections, config.duration_s, rate)
    cpu_s = tree_cpu_s(server.pid) - cpu_before
    time.sleep(config.shed_delay_s + 0.5)  # refusals still held when h2load stopped are answered, counted
    wait_quiet(server.pid)
    after = answer_counts(server.url, config.route)
    delta = {code: after[code] - before.get(code, 0.0) for code in after}
    admitted, refused = result.latencies_ms(200), result.latencies_ms(429)
    return FloodPoint(
        load=f"{connections} connections",
        connections=connections,
        asked_per_s=asked,
        sent_per_s=result.started / result.duration_s,
        served_per_s=delta.pop("200", 0.0) / result.duration_s,
        shed_per_s=delta.pop("429", 0.0) / result.duration_s,
        other={code: n for code, n in delta.items() if n},
        errors=result.errors,
        unanswered=result.started - result.done,
        server_cores=cpu_s / result.duration_s,
        generator_cores=result.generator_cpu_s / result.duration_s,
        admitted_ms=(statistics.median(admitted), percentile(admitted, 0.99)) if admitted else None,
        refused_p99_ms=percentile(refused, 0.99) if refused else None,
    )


def paced(
    server: ServerProcess, upload: Upload, config: FloodConfig, capacity: FloodPoint, factor: float
) -> FloodPoint:
    """Open loop at `factor` x capacity, over enough connections for each to wait out a held refusal."""
    asked = factor * capacity.served_per_s
    admitted_s = capacity.admitted_ms[1] / 1000 if capacity.admitted_ms else 0.0
    # A connection sends again only once answered: at a refusal's hold plus an admission's p99 each,
    # with a fifth to spare, this many connections carry the rate.
    needed = math.ceil(1.2 * asked * (config.shed_delay_s + admitted_s))
    connections = max(1, min(config.max_connections, needed))
    point = measure(server, upload, config, connections, asked)
    return dataclasses.replace(point, load=f"{factor:g}x capacity, paced")


def add_flood_arguments(parser: argparse.ArgumentParser, duration_flag: str) -> None:
    """The flood's shape, for `vitserve bench flood` and reliability.overload; FloodConfig's defaults."""
    defaults = FloodConfig()
    parser.add_argument(
        "--connections",
        type=int,
        nargs="+",
        default=list(defaults.connections),
        help="closed loop; the first: capacity",
    )
    parser.add_argument(
        "--factors", type=float, nargs="*", default=list(defaults.factors), help="paced at these x capacity"
    )
    parser.add_argument(
        "--max-connections", type=int, default=defaults.max_connections, help="the most a paced point opens"
    )
    parser.add_argument(
        duration_flag, dest="duration_s", type=float, default=defaults.duration_s, help="seconds per point"
    )
    parser.add_argument(
        "--max-in-flight", type=int, default=defaults.max_in_flight, help="VITSERVE_MAX_IN_FLIGHT"
    )


def flood_config(args: argparse.Namespace, **more: Any) -> FloodConfig:
    """The FloodConfig of `add_flood_arguments`' options, and `more` fields."""
    return FloodConfig(
        connections=tuple(args.connections),
        factors=tuple(args.factors),
        max_connections=args.max_connections,
        duration_s=args.duration_s,
        max_in_flight=args.max_in_flight,
        **more,
    )


def flood_upload(image: bytes, media_type: str, route: str, images: int) -> Upload:
    """/classify: the raw image as the body; /classify_batch: `images` copies as multipart parts; a v2
    infer path: the image as a binary BYTES tensor, answered with the top 5."""
    if route == "/classify":
        return Upload(image, media_type)
    if route_label(route) == INFER_ROUTE:
        return v2_binary(image, media_type)
    return Upload(*multipart([("images", f"{i}", image, media_type) for i in range(images)]))


def flood_server(model_dir: Path, config: FloodConfig) -> ServerProcess:
    env = {"VITSERVE_MODEL_DIR": str(model_dir), "VITSERVE_MAX_IN_FLIGHT": str(config.max_in_flight)}
    return ServerProcess(env={**env, **dict(config.env)}, name="flood")


def run_flood(model_dir: Path, upload: Upload, config: FloodConfig) -> FloodRun:
    with running(flood_server(model_dir, config)) as server:
        run_h2load(server.url + config.route, upload, config.connections[0], WARM_UP_S)
        wait_quiet(server.pid)
        run = FloodRun(points=[], rss_before_mib=tree_rss_mib(server.pid))
        with RssSampler(server.pid, interval_s=0.5) as rss:
            run.points += [measure(server, upload, config, c) for c in config.connections]
            run.points += [paced(server, upload, config, run.capacity, f) for f in config.factors]
        run.rss_peak_mib, run.rss_after_mib = rss.peak_mib, tree_rss_mib(server.pid)
        if config.recovery:
            again = measure(server, upload, config, config.connections[0])
            run.recovered = dataclasses.replace(again, load=f"{again.load}, after the floods")
        for p in run.points:
            if p.asked_per_s is not None and p.sent_per_s < 0.9 * p.asked_per_s:
                run.notes.append(
                    f"{p.load}: {p.sent_per_s:.0f} of the {p.asked_per_s:.0f} req/s asked for were sent; "
                    f"{p.connections} connections each waiting out its answers cannot send more"
                )
        return run


def markdown(run: FloodRun, config: FloodConfig) -> str:
    capacity = run.capacity.served_per_s * config.images_per_request
    lines = [
        "| load | connections | asked req/s | sent req/s | served req/s | served img/s, % of capacity "
        "| shed req/s | admitted p50 / p99 ms | refused p99 ms | errors | unanswered at the end "
        "| other answers | server cores | h2load cores |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    rows = run.points + ([run.recovered] if run.recovered else [])
    for p in rows:
        images = p.served_per_s * config.images_per_request
        admitted = f"{p.admitted_ms[0]:.1f} / {p.admitted_ms[1]:.1f}" if p.admitted_ms else "none"
        refused = f"{p.refused_p99_ms:.0f}" if p.refused_p99_ms is not None else "none"
        other = ", ".join(f"{code}: {n:.0f}" for code, n in p.other.items()) or "none"
        asked = f"{p.asked_per_s:.0f}" if p.asked_per_s is not None else "closed loop"
        lines.append(
            f"| {p.load} | {p.connections} | {asked} | {p.sent_per_s:.0f} | {p.served_per_s:.0f} "
            f"| {images:.0f}, {100 * images / capacity:.0f} % | {p.shed_per_s:.0f} | {admitted} | {refused} "
            f"| {p.errors} | {p.unanswered} | {other} | {p.server_cores:.2f} | {p.generator_cores:.2f} |"
        )
    return "\n".join(lines + [f"\n{note}" for note in run.notes])
