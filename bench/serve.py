"""End-to-end serving benchmark: vitserve vs model-only vs a naive one-image-per-request server.

For each model directory, in one run and on the same thread budget:
  model-only  the ORT session alone at batch = max_batch_size (the ceiling serving can approach);
  vitserve    the real BentoML server, closed-loop clients at each concurrency;
  naive       bench/naive_server.py (FastAPI, batch 1, no batching) at the same concurrencies;
  half-load   vitserve under an open-loop arrival rate of half its measured peak (p99 vs p50).
The load generator runs on the same machine and takes CPU from the servers; the report says so.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np

from vitserve.runtime.session import OnnxClassifier, SessionOptions
from vitserve.service.launcher import running_server


@dataclass(frozen=True)
class LoadResult:
    system: str
    concurrency: int
    requests: int
    errors: int
    images_per_s: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class ServeBenchConfig:
    model_dirs: tuple[Path, ...]
    concurrencies: tuple[int, ...] = (1, 8, 32, 64)
    duration_s: float = 10.0
    warmup_s: float = 2.0
    threads: int = 2
    max_batch_size: int = 32
    precision: str = "auto"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


async def _closed_loop(
    url: str, payload: bytes, concurrency: int, duration_s: float, warmup_s: float
) -> tuple:
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    measure_from = started + warmup_s
    stop_at = measure_from + duration_s
    counted = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal errors, counted
            while (now := time.perf_counter()) < stop_at:
                t0 = now
                async with session.post(
                    f"{url}/classify", data=payload, headers={"Content-Type": "image/png"}
                ) as response:
                    await response.read()
                    ok = response.status == 200
                t1 = time.perf_counter()
                if t0 >= measure_from and t1 <= stop_at:
                    counted += 1
                    if ok:
                        latencies.append(t1 - t0)
                    else:
                        errors += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, errors, counted


async def _open_loop(url: str, payload: bytes, rate: float, duration_s: float) -> tuple:
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> None:
            nonlocal errors
            t0 = time.perf_counter()
            async with session.post(
                f"{url}/classify", data=payload, headers={"Content-Type": "image/png"}
            ) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
                    return
            latencies.append(time.perf_counter() - t0)

        tasks = []
        start = time.perf_counter()
        n = int(rate * duration_s)
        for i in range(n):
            # Fixed inter-arrival times: the load does not wait for answers, like real independent users.
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies, errors, n


def measure(system: str, url: str, payload: bytes, concurrency: int, config: ServeBenchConfig) -> LoadResult:
    latencies, errors, counted = asyncio.run(
        _closed_loop(url, payload, concurrency, config.duration_s, config.warmup_s)
    )
    return LoadResult(
        system=system,
        concurrency=concurrency,
        requests=counted,
        errors=errors,
        images_per_s=len(latencies) / config.duration_s,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
    )


def model_only(model_dir: Path, config: ServeBenchConfig, batch: int, rounds: int = 5) -> float:
    """Median images/s of the bare session at one batch size."""
    options = SessionOptions(precision=config.precision, device="cpu", intra_op_threads=config.threads)
    classifier = OnnxClassifier(model_dir, options)
    pixels = np.random.default_rng(0).integers(0, 256, (batch, *classifier.input_shape), dtype=np.uint8)
    classifier.predict_batch(pixels)
    rates = []
    for _ in range(rounds):
        calls, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < 1.0 or calls < 2:
            classifier.predict_batch(pixels)
            calls += 1
        rates.append(calls * batch / elapsed)
    return statistics.median(rates)


def sample_payload(model_dir: Path) -> bytes:
    samples = sorted((model_dir / "samples").glob("*.png"))
    if samples:
        return samples[0].read_bytes()
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(
        buffer, "PNG"
    )
    return buffer.getvalue()


def bench_model_dir(model_dir: Path, config: ServeBenchConfig) -> dict[str, object]:
    payload = sample_payload(model_dir)
    ceiling = model_only(model_dir, config, config.max_batch_size)
    ceiling_b1 = model_only(model_dir, config, 1)
    env = {
        "VITSERVE_INTRA_OP_THREADS": str(config.threads),
        "VITSERVE_MAX_BATCH_SIZE": str(config.max_batch_size),
        "VITSERVE_PRECISION": config.precision,
        "VITSERVE_DEVICE": "cpu",
        # Admission must not shed the benchmark's own load: the largest concurrency fits.
        "VITSERVE_MAX_IN_FLIGHT": str(max(config.concurrencies) * 2),
        "VITSERVE_MAX_LATENCY_MS": "60000",
    }
    results: list[LoadResult] = []
    with running_server(model_dir, env) as server:
        for c in config.concurrencies:
            results.append(measure("vitserve", server.url, payload, c, config))
            print(results[-1], file=sys.stderr)
        peak = max(r.images_per_s for r in results)
        half_rate = peak / 2
        latencies, errors, sent = asyncio.run(_open_loop(server.url, payload, half_rate, config.duration_s))
        half = LoadResult(
            "vitserve half-load",
            0,
            sent,
            errors,
            len(latencies) / config.duration_s,
            percentile(latencies, 50) * 1000,
            percentile(latencies, 99) * 1000,
        )
        print(half, file=sys.stderr)
    naive_command = [
        *(sys.executable, "-m", "vitserve.bench.naive_server", "--model-dir", str(model_dir)),
        *("--threads", str(config.threads), "--precision", config.precision, "--port", "{port}"),
    ]
    naive_results: list[LoadResult] = []
    with running_server(model_dir, command=naive_command) as naive:
        for c in config.concurrencies:
            naive_results.append(measure("naive", naive.url, payload, c, config))
            print(naive_results[-1], file=sys.stderr)
    return {
        "model_dir": str(model_dir),
        "model_only_batch": ceiling,
        "model_only_b1": ceiling_b1,
        "vitserve": results,
        "naive": naive_results,
        "half_load": half,
    }


def markdown(report: dict[str, object], config: ServeBenchConfig) -> str:
    vs: list[LoadResult] = report["vitserve"]  # type: ignore[assignment]
    nv: list[LoadResult] = report["naive"]  # type: ignore[assignment]
    half: LoadResult = report["half_load"]  # type: ignore[assignment]
    ceiling = float(report["model_only_batch"])  # type: ignore[arg-type]
    lines = [
        f"**{report['model_dir']}** — model-only (same artifact, {config.threads} threads): "
        f"{ceiling:.1f} img/s at batch {config.max_batch_size}, "
        f"{float(report['model_only_b1']):.1f} img/s at batch 1",  # type: ignore[arg-type]
        "",
        "| concurrency | vitserve img/s | p50 ms | p99 ms | naive img/s | naive p50 ms | naive p99 ms "
        "| vitserve / naive | vitserve / model-only |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v, n in zip(vs, nv, strict=True):
        lines.append(
            f"| {v.concurrency} | {v.images_per_s:.1f} | {v.p50_ms:.1f} | {v.p99_ms:.1f} | "
            f"{n.images_per_s:.1f} | {n.p50_ms:.1f} | {n.p99_ms:.1f} | "
            f"{v.images_per_s / max(n.images_per_s, 1e-9):.2f}x | {v.images_per_s / ceiling:.0%} |"
        )
    peak = max(vs, key=lambda r: r.images_per_s)
    lines += [
        "",
        f"- end-to-end / model-only at saturation: {peak.images_per_s / ceiling:.0%} "
        f"(concurrency {peak.concurrency}; target >= 85%)",
        f"- vitserve / naive at {vs[-1].concurrency} clients: "
        f"{vs[-1].images_per_s / max(nv[-1].images_per_s, 1e-9):.2f}x (target >= 8x for the default model)",
        f"- half of capacity ({half.requests / config.duration_s:.1f} req/s offered, open loop): "
        f"p50 {half.p50_ms:.1f} ms, p99 {half.p99_ms:.1f} ms, p99/p50 = "
        f"{half.p99_ms / max(half.p50_ms, 1e-9):.2f} (target <= 2), errors {half.errors}",
        f"- errors: vitserve {sum(r.errors for r in vs)}, naive {sum(r.errors for r in nv)}",
    ]
    return "\n".join(lines)
