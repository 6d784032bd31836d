"""End-to-end serving benchmark: servers side by side on one model, one image, one load generator.

For each model directory, in one run and on the same ORT thread budget:
  model-only  the ORT session alone, at batch 1 and at max_batch_size on `threads` intra-op threads, and
              as `threads` single-threaded runners side by side (the ceiling serving can approach);
  each server started in turn, probed until ready, its resident memory read at rest, then driven by
  wrk (bench/wrk.py) closed-loop at each concurrency: img/s, p50/p99, and server CPU per image (CPU
  seconds of the server's whole process tree / images answered), beside the generator's own CPU;
  half-load  vitserve and naive at half their peak rates, from connections pausing at random (p99 vs p50).
Rounds repeat the servers in alternating order, so that drift in the machine's load shows up as spread
between rounds instead of favouring whoever ran first; the tables quote medians over rounds.

Which servers: `vitserve` and `naive` (bench/naive_server.py) always; the peer frameworks of
bench/peers.py where asked for (`vitserve bench peers`).
"""

from __future__ import annotations

import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from vitserve.bench.processes import ServerProcess, free_port, tree_cpu_s, tree_rss_mib, wait_quiet
from vitserve.bench.wrk import Upload, WrkResult, run_wrk
from vitserve.runtime.session import OnnxClassifier, SessionOptions

STARTUP_TIMEOUT_S = 300  # Ray and Triton take tens of seconds to come up on 2 cores


@dataclass(frozen=True)
class BenchConfig:
    concurrencies: tuple[int, ...] = (1, 8, 32, 64)
    duration_s: float = 8.0
    warmup_s: float = 2.0
    rounds: int = 2
    threads: int = 2  # ORT intra-op threads, every server and model-only alike
    max_batch_size: int = 32
    batch_wait_ms: float = 5.0  # for the peers whose batchers take a waiting window
    precision: str = "auto"
    half_load: bool = True


# (server, upload, concurrency, duration_s) -> what a closed loop of that many users was answered
LoadClient = Callable[["Server", Upload, int, float], WrkResult]


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server and send it the benchmark's image."""

    name: str
    command: Callable[[Path, int, BenchConfig], list[str]]  # (model_dir, port, config) -> argv
    ready_path: str
    classify_path: str
    upload: Callable[[bytes, str], Upload]  # (image bytes, media type) -> request body
    env: Callable[[Path, BenchConfig], dict[str, str]] = lambda model_dir, config: {}
    # The path for a given model, where it names the model (v2's /v2/models/{name}/infer).
    model_path: Callable[[Path], str] | None = None
    # (gRPC port) -> the extra argv and environment that make the server listen there too.
    grpc_listen: Callable[[int], tuple[tuple[str, ...], dict[str, str]]] | None = None
    # The load generator, where it is not wrk posting `upload` to the classify path, and its name.
    client: LoadClient | None = None
    generator: str = "wrk"


@dataclass(frozen=True)
class Point:
    concurrency: int
    images_per_s: float
    p50_ms: float
    p99_ms: float
    failed: int
    server_cpu_ms_per_image: float
    generator_cpu_ms_per_request: float


@dataclass
class SystemRun:
    """One server in one round: started, measured at every concurrency, stopped."""

    name: str
    generator: str = "wrk"
    rss_at_rest_mib: float = float("nan")
    processes: int = 0
    points: list[Point] = field(default_factory=list)
    error: str = ""  # why it could not be measured (not installed, did not start, ...)


@dataclass
class ModelReport:
    model_dir: Path
    image: str
    model_only_b1: float
    model_only_batch: float
    model_only_runners: float  # `threads` single-threaded runs side by side, max_batch_size / threads each
    runs: list[SystemRun] = field(default_factory=list)
    half_load: dict[str, Point] = field(default_factory=dict)  # server name -> latency at half its peak


class Server(ServerProcess):
    """A benchmark server started from its spec."""

    def __init__(self, spec: ServerSpec, model_dir: Path, config: BenchConfig) -> None:
        self.grpc_port = free_port() if spec.grpc_listen else 0
        argv, env = spec.grpc_listen(self.grpc_port) if spec.grpc_listen else ((), {})
        super().__init__(
            lambda port: [*spec.command(model_dir, port, config), *argv],
            env={**spec.env(model_dir, config), **env},
            ready_path=spec.ready_path,
            name="bench-" + re.sub(r"[^A-Za-z0-9]+", "-", spec.name).strip("-"),  # names a log file
        )
        self.spec = spec
        self.classify_path = spec.classify_path if spec.model_path is None else spec.model_path(model_dir)


def check_answers(server: Server, upload: Upload, n: int = 20) -> None:
    """A few requests before measuring: every server must really classify the image, not fail fast."""
    if server.spec.client is not None:
        result = server.spec.client(server, upload, 1, 1.0)
        if result.requests == 0 or result.failed:
            raise RuntimeError(f"{server.spec.name}: {result.failed} of {result.requests} answers failed")
        return
    headers = upload.headers
    for _ in range(n):
        response = httpx.post(
            server.url + server.classify_path, content=upload.body, headers=headers, timeout=60
        )
        if response.status_code != 200:
            raise RuntimeError(f"{server.spec.name} answered {response.status_code}: {response.text[:300]}")


def measure_point(
    server: Server, upload: Upload, concurrency: int, config: BenchConfig, think_ms: float | None = None
) -> Point:
    url = server.url + server.classify_path
    client = server.spec.client
    if client is not None and think_ms is not None:
        raise ValueError(f"{server.spec.name}'s load client has no pauses between requests")

    def generate(duration_s: float) -> WrkResult:
        if client is None:
            return run_wrk(url, upload, concurrency, duration_s, think_ms=think_ms)
        return client(server, upload, concurrency, duration_s)

    generate(config.warmup_s)  # connections open, shapes seen
    wait_quiet(server.pid)  # the warm-up's abandoned requests, finished before anything is billed
    cpu_before = tree_cpu_s(server.pid)
    result = generate(config.duration_s)
    cpu = tree_cpu_s(server.pid) - cpu_before
    answered = result.requests - result.failed
    return Point(
        concurrency=concurrency,
        images_per_s=result.ok_per_s,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        failed=result.failed,
        server_cpu_ms_per_image=1000 * cpu / max(answered, 1),
        generator_cpu_ms_per_request=result.generator_cpu_ms_per_request,
    )


def measure_system(
    spec: ServerSpec, model_dir: Path, payload: tuple[bytes, str], config: BenchConfig
) -> SystemRun:
    run = SystemRun(spec.name, spec.generator)
    server = Server(spec, model_dir, config)
    try:
        server.start()
        upload = spec.upload(*payload)
        check_answers(server, upload)
        time.sleep(1.0)  # let start-up and the check's garbage settle before reading memory
        run.rss_at_rest_mib = tree_rss_mib(server.pid)
        run.processes = len(server.pids())
        for c in config.concurrencies:
            run.points.append(measure_point(server, upload, c, config))
            print(f"  {spec.name} c={c}: {run.points[-1]}", file=sys.stderr, flush=True)
    except (OSError, RuntimeError, TimeoutError, httpx.HTTPError) as exc:
        run.error = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        print(f"  {spec.name} failed: {exc}", file=sys.stderr, flush=True)
    finally:
        server.stop()
    return run


HALF_LOAD_CONNECTIONS = 32


def half_load(
    spec: ServerSpec, model_dir: Path, payload: tuple[bytes, str], rate: float, config: BenchConfig
) -> Point:
    """Latency at about `rate` img/s: many connections, each pausing a random time between requests.

    At half of capacity answers take a small fraction of the pause, so the connections' requests
    arrive nearly as independent users' would (open loop), from a generator as cheap as the rest.
    """
    server = Server(spec, model_dir, config)
    try:
        server.start()
        upload = spec.upload(*payload)
        check_answers(server, upload)
        return measure_point(
            server, upload, HALF_LOAD_CONNECTIONS, config, think_ms=1000 * HALF_LOAD_CONNECTIONS / rate
        )
    finally:
        server.stop()


def model_only(model_dir: Path, config: BenchConfig, batch: int, runners: int = 1, rounds: int = 5) -> float:
    """Median images/s of the bare session at one batch size, run by `runners` threads at once.

    With several runners the session's `threads` are shared among them (single-threaded runs side by
    side, as vitserve runs a costly model on the CPU) and each runs its share of the batch.
    """
    threads = max(1, config.threads // runners)
    options = SessionOptions(precision=config.precision, device="cpu", intra_op_threads=threads)
    classifier = OnnxClassifier(model_dir, options)
    share = -(-batch // runners)
    pixels = np.random.default_rng(0).integers(0, 256, (share, *classifier.input_shape), dtype=np.uint8)
    classifier.predict_batch(pixels)

    def run_for(seconds: float) -> int:
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds or calls < 2:
            classifier.predict_batch(pixels)
            calls += 1
        return calls

    rates = []
    with ThreadPoolExecutor(runners) as pool:
        for _ in range(rounds):
            started = time.perf_counter()
            calls = sum(pool.map(run_for, [1.0] * runners))
            rates.append(calls * share / (time.perf_counter() - started))
    return statistics.median(rates)


def run(
    model_dirs: Sequence[tuple[Path, tuple[bytes, str], str]],
    specs: Sequence[ServerSpec],
    config: BenchConfig,
    unavailable: dict[str, str] | None = None,
) -> list[ModelReport]:
    """model_dirs: (directory, (image bytes, media type), image description) each."""
    reports = []
    for model_dir, payload, image in model_dirs:
        report = ModelReport(
            model_dir=model_dir,
            image=image,
            model_only_b1=model_only(model_dir, config, 1),
            model_only_batch=model_only(model_dir, config, config.max_batch_size),
            model_only_runners=model_only(model_dir, config, config.max_batch_size, runners=config.threads),
        )
        for round_index in range(config.rounds):
            order = list(specs) if round_index % 2 == 0 else list(reversed(specs))
            for spec in order:
                print(f"{model_dir.name} round {round_index + 1}: {spec.name}", file=sys.stderr, flush=True)
                report.runs.append(measure_system(spec, model_dir, payload, config))
        for name, why in (unavailable or {}).items():
            report.runs.append(SystemRun(name, error=why))
        if config.half_load:
            # vitserve's, and the naive server's at half of its own peak: the same open-loop arrivals
            # to a server that never batches show what of the tail is queueing, not batching.
            for spec in specs:
                measured = [r for r in report.runs if r.name == spec.name and r.points]
                if spec.name in ("vitserve", "naive") and measured:
                    peak = statistics.median(max(p.images_per_s for p in r.points) for r in measured)
                    report.half_load[spec.name] = half_load(spec, model_dir, payload, peak / 2, config)
        reports.append(report)
    return reports


# --- the report ----------------------------------------------------------------------------------------


def median_points(runs: Sequence[SystemRun]) -> list[Point]:
    """Per concurrency, the median of every field over the rounds that measured it."""
    by_c: dict[int, list[Point]] = {}
    for run_ in runs:
        for p in run_.points:
            by_c.setdefault(p.concurrency, []).append(p)
    merged = []
    for c, points in sorted(by_c.items()):
        merged.append(
            Point(
                concurrency=c,
                images_per_s=statistics.median(p.images_per_s for p in points),
                p50_ms=statistics.median(p.p50_ms for p in points),
                p99_ms=statistics.median(p.p99_ms for p in points),
                failed=sum(p.failed for p in points),
                server_cpu_ms_per_image=statistics.median(p.server_cpu_ms_per_image for p in points),
                generator_cpu_ms_per_request=statistics.median(
                    p.generator_cpu_ms_per_request for p in points
                ),
            )
        )
    return merged


def _span(values: list[float], fmt: str) -> str:
    """The median, and the range over rounds where there are several."""
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1 or min(values) == max(values):
        return format(med, fmt)
    return f"{format(med, fmt)} ({format(min(values), fmt)}–{format(max(values), fmt)})"


def markdown(report: ModelReport, config: BenchConfig) -> str:
    names = list(dict.fromkeys(r.name for r in report.runs))
    runs = {n: [r for r in report.runs if r.name == n] for n in names}
    ok = {n: [r for r in rs if r.points] for n, rs in runs.items()}
    cs = config.concurrencies
    lines = [
        f"**{report.model_dir.name}** ({report.image}); model-only, same artifact and {config.threads} ORT "
        f"threads: {report.model_only_b1:.1f} img/s at batch 1, {report.model_only_batch:.1f} at batch "
        f"{config.max_batch_size}; {report.model_only_runners:.1f} as {config.threads} single-threaded "
        "runners side by side",
        "",
        "img/s, median over rounds (range):",
        "",
        "| server | " + " | ".join(f"c={c}" for c in cs) + " |",
        "| --- |" + " ---: |" * len(cs),
    ]

    def row(name: str, cell: Callable[[int, list[Point]], str]) -> str:
        cells = []
        for c in cs:
            points = [p for r in ok[name] for p in r.points if p.concurrency == c]
            cells.append(cell(c, points) if points else "-")
        return f"| {name} | " + " | ".join(cells) + " |"

    for name in names:
        if ok[name]:
            lines.append(row(name, lambda c, ps: _span([p.images_per_s for p in ps], ".1f")))
    lines += ["", "p50 / p99 ms:", "", "| server | " + " | ".join(f"c={c}" for c in cs) + " |"]
    lines.append("| --- |" + " ---: |" * len(cs))
    for name in names:
        if ok[name]:
            lines.append(
                row(
                    name,
                    lambda c, ps: (
                        f"{statistics.median(p.p50_ms for p in ps):.1f} / "
                        f"{statistics.median(p.p99_ms for p in ps):.1f}"
                    ),
                )
            )
    lines += ["", "server CPU ms per image (process tree), median:", ""]
    lines.append(
        "| server | " + " | ".join(f"c={c}" for c in cs) + " | RSS at rest MiB (processes) | failed |"
    )
    lines.append("| --- |" + " ---: |" * (len(cs) + 2))
    for name in names:
        if not ok[name]:
            continue
        cpu = row(name, lambda c, ps: f"{statistics.median(p.server_cpu_ms_per_image for p in ps):.2f}")
        rss = statistics.median(r.rss_at_rest_mib for r in ok[name])
        procs = max(r.processes for r in ok[name])
        failed = sum(p.failed for r in ok[name] for p in r.points)
        lines.append(f"{cpu} {rss:.0f} ({procs}) | {failed} |")
    by_wrk = [
        p.generator_cpu_ms_per_request
        for rs in ok.values()
        for r in rs
        if r.generator == "wrk"
        for p in r.points
    ]
    if by_wrk:
        lines += [
            "",
            f"load generator (wrk) CPU per request: median {statistics.median(by_wrk):.3f} ms, "
            f"max {max(by_wrk):.3f} ms",
        ]
    others = [n for n in names if ok[n] and ok[n][0].generator != "wrk"]
    if others:
        lines += ["", "load generator CPU ms per request (its own process), median:", ""]
        lines += [
            "| server (generator) | " + " | ".join(f"c={c}" for c in cs) + " |",
            "| --- |" + " ---: |" * len(cs),
        ]
        for name in others:
            cells = row(
                name, lambda c, ps: f"{statistics.median(p.generator_cpu_ms_per_request for p in ps):.2f}"
            )
            lines.append(cells.replace(f"| {name} |", f"| {name} ({ok[name][0].generator}) |", 1))
    failures = [(n, r.error) for n, rs in runs.items() for r in rs if r.error]
    if failures:
        lines += ["", "not measured:"]
        lines += [f"- {n}: {why}" for n, why in dict(failures).items()]
    lines += ["", *targets(report, config, ok)]
    return "\n".join(lines)


def targets(report: ModelReport, config: BenchConfig, ok: dict[str, list[SystemRun]]) -> list[str]:
    """The ratios the serving targets are stated in, from this run's medians."""
    if not ok.get("vitserve"):
        return ["vitserve was not measured: no ratios"]
    vs = {p.concurrency: p for p in median_points(ok["vitserve"])}
    lines = ["ratios (medians of this run):", ""]
    if ok.get("naive"):
        nv = {p.concurrency: p for p in median_points(ok["naive"])}
        ratios = img_s_ratios(vs, nv)
        lines.append(f"- vitserve / naive img/s: {ratios}")
        cpu = ", ".join(
            f"c={c} {vs[c].server_cpu_ms_per_image / nv[c].server_cpu_ms_per_image:.2f}x"
            for c in vs
            if c in nv
        )
        lines.append(f"- vitserve / naive server CPU per image: {cpu}")
    if ok.get("vitserve-v2"):
        v2 = {p.concurrency: p for p in median_points(ok["vitserve-v2"])}
        ratios = img_s_ratios(v2, vs)
        lines.append(f"- vitserve-v2 (v2 REST, binary BYTES) / vitserve (/classify) img/s: {ratios}")
    peak = max(vs.values(), key=lambda p: p.images_per_s)
    # The bare session's best of batch 1 and the largest batch: on some CPUs a large batch is not faster.
    ceiling = max(report.model_only_b1, report.model_only_batch)
    lines.append(
        f"- vitserve at saturation / model-only (best of batch 1 and {config.max_batch_size}): "
        f"{peak.images_per_s / ceiling:.0%} (c={peak.concurrency}); / the best of those and the "
        f"side-by-side runners: {peak.images_per_s / max(ceiling, report.model_only_runners):.0%}"
    )
    lines += protocol_ratios(vs, ok)
    # The peers under the same load generator as vitserve's /classify.
    peers = [
        n
        for n in ok
        if n != "naive" and not n.startswith("vitserve") and ok[n] and ok[n][0].generator == "wrk"
    ]
    for c in vs:
        best = [(median_points(ok[n]), n) for n in peers]
        rivals = [(next((p.images_per_s for p in pts if p.concurrency == c), 0.0), n) for pts, n in best]
        if rivals:
            top, who = max(rivals)
            lines.append(
                f"- c={c}: vitserve / best peer ({who}) img/s: {vs[c].images_per_s / max(top, 1e-9):.2f}x"
            )
    rss = statistics.median(r.rss_at_rest_mib for r in ok["vitserve"])
    lines.append(f"- vitserve RSS at rest: {rss:.0f} MiB")
    for name, half in report.half_load.items():
        ratio = half.p99_ms / max(half.p50_ms, 1e-9)
        lines.append(
            f"- {name} at half of its capacity ({half.images_per_s:.1f} img/s answered, {half.concurrency} "
            f"connections pausing at random): p50 {half.p50_ms:.1f} ms, p99 {half.p99_ms:.1f} ms, "
            f"p99/p50 {ratio:.2f}, errors {half.failed}"
        )
    return lines


V2_PROTOCOLS = (
    "v2 REST",
    "v2 gRPC",
)  # `vitserve bench peers --tritonclient` names its systems "SERVER PROTOCOL"
CLASSIFY_CONTROL = "vitserve /classify"  # and /classify under a Python client, the control


def img_s_ratios(top: dict[int, Point], bottom: dict[int, Point]) -> str:
    """`c=C R.RRx` of top's img/s over bottom's, at each concurrency both measured."""
    return ", ".join(f"c={c} {top[c].images_per_s / bottom[c].images_per_s:.2f}x" for c in top if c in bottom)


def protocol_ratios(classify: dict[int, Point], ok: dict[str, list[SystemRun]]) -> list[str]:
    """Each v2 protocol against vitserve's /classify (under wrk, and under the control's client where it
    ran), and vitserve against PyTriton on each protocol."""
    lines = []
    control = ok.get(CLASSIFY_CONTROL)
    like = {p.concurrency: p for p in median_points(control)} if control else {}
    for protocol in V2_PROTOCOLS:
        if not ok.get(f"vitserve {protocol}"):
            continue
        ours = {p.concurrency: p for p in median_points(ok[f"vitserve {protocol}"])}
        generator = ok[f"vitserve {protocol}"][0].generator
        ratios = img_s_ratios(ours, classify)
        lines.append(f"- vitserve {protocol} ({generator}) / vitserve /classify (wrk) img/s: {ratios}")
        if control:
            against = f"vitserve /classify ({control[0].generator})"
            lines.append(f"- vitserve {protocol} ({generator}) / {against} img/s: {img_s_ratios(ours, like)}")
        if ok.get(f"pytriton {protocol}"):
            theirs = {p.concurrency: p for p in median_points(ok[f"pytriton {protocol}"])}
            ratios = img_s_ratios(ours, theirs)
            lines.append(f"- vitserve / pytriton, {protocol} ({generator}) img/s: {ratios}")
    return lines
