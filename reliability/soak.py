"""A bounded soak: steady mixed load for N minutes, RSS and latency sampled, then a leak verdict.

    .venv/bin/python -m reliability.soak [--minutes 10] [--concurrency 8] [--window 15]

The load mixes good single images, batches of 8 and bad uploads, so every path (decode, batching,
error bodies) runs. Each window prints throughput, p50/p99 and the RSS of every server process.
Verdict: after the first quarter (warm-up: caches, allocator arenas, batching cost model), the whole
server's RSS may grow by at most 1 MiB/min (least-squares slope) and the last window's p99 may be at
most 1.5x the first's (means of three windows each).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time

import aiohttp

from vitserve.harness.hostile import corpus
from vitserve.harness.load import NO_RESPONSE, LoadResult, Outcome
from vitserve.harness.procs import descendants, rss_kib, worker_pids
from vitserve.harness.servers import SAMPLES_DIR, running_server
from vitserve.service.settings import API_SERVICE_NAME

MAX_LEAK_MIB_PER_MIN = 1.0
MAX_P99_DRIFT = 1.5


def requests_mix() -> list[tuple[str, aiohttp.FormData | bytes, str]]:
    good = [p.read_bytes() for p in sorted(SAMPLES_DIR.iterdir()) if p.suffix in (".png", ".jpg", ".webp")]
    bad = [h for h in corpus() if 200 not in h.statuses and len(h.data) < 1 << 20]
    mix: list[tuple[str, aiohttp.FormData | bytes, str]] = []
    for i in range(20):
        mix.append(("/classify", good[i % len(good)], "image/png"))
    for i in range(4):
        mix.append(("/classify", bad[i * 3 % len(bad)].data, bad[i * 3 % len(bad)].content_type))
    mix.append(("/classify_batch", b"", "batch"))
    return mix


def _batch_form(images: list[bytes]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for i, data in enumerate(images):
        form.add_field("images", data, filename=f"{i}.png", content_type="image/png")
    return form


async def window(url: str, concurrency: int, seconds: float, mix: list, good: list[bytes]) -> LoadResult:
    began = time.monotonic()
    result = LoadResult(seconds)
    async with aiohttp.ClientSession() as session:

        async def client() -> None:
            while time.monotonic() - began < seconds:
                path, body, kind = random.choice(mix)
                data = _batch_form(good * 2) if kind == "batch" else body
                headers = {} if kind == "batch" else {"Content-Type": kind}
                started = time.monotonic()
                try:
                    async with session.post(f"{url}{path}", data=data, headers=headers) as response:
                        await response.read()
                        status = response.status
                    result.outcomes.append(Outcome(started - began, time.monotonic() - started, status))
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    result.outcomes.append(
                        Outcome(
                            started - began, time.monotonic() - started, NO_RESPONSE, error=type(exc).__name__
                        )
                    )

        await asyncio.gather(*(client() for _ in range(concurrency)))
    result.duration_s = time.monotonic() - began
    return result


def slope_per_min(points: list[tuple[float, float]]) -> float:
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var if var else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--window", type=float, default=15.0, help="seconds per sample")
    args = parser.parse_args()
    random.seed(0)
    mix = requests_mix()
    good = [p.read_bytes() for p in sorted(SAMPLES_DIR.iterdir()) if p.suffix in (".png", ".jpg", ".webp")]
    total_s = args.minutes * 60
    samples: list[tuple[float, float, float, float, dict[str, int]]] = []  # t, rps, p50, p99, rss
    unexpected: dict[str, int] = {}
    with running_server() as server:
        assert server.proc is not None
        root = server.proc.pid
        print(f"model {SAMPLES_DIR.parent}; {args.concurrency} clients for {args.minutes} min")
        print(f"{'t (s)':>6} {'req/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'RSS MiB (each process)':>24}")
        began = time.monotonic()
        while (elapsed := time.monotonic() - began) < total_s:
            result = asyncio.run(
                window(server.url, args.concurrency, min(args.window, total_s - elapsed), mix, good)
            )
            for key, count in result.counts().items():
                if key not in ("200", "400", "413", "415"):
                    unexpected[key] = unexpected.get(key, 0) + count
            answered = result.with_status(200)
            workers = set(worker_pids(root, API_SERVICE_NAME))
            rss = {
                ("api" if pid in workers else "supervisor"): rss_kib(pid) // 1024 for pid in descendants(root)
            }
            t = time.monotonic() - began
            p50, p99 = LoadResult.quantile(answered, 0.5) * 1000, LoadResult.quantile(answered, 0.99) * 1000
            samples.append((t, result.throughput(), p50, p99, rss))
            print(
                f"{t:6.0f} {result.throughput():6.1f} {p50:7.1f} {p99:7.1f} {sum(rss.values()):6d} {rss}",
                flush=True,
            )
    steady = [s for s in samples if s[0] >= total_s / 4]
    if len(steady) < 3:
        print("too short for a verdict: run at least 4 windows after the first quarter")
        return 1
    slope = slope_per_min([(t, sum(rss.values())) for t, _, _, _, rss in steady])
    # Mean p99 of the last three steady windows over the first three: one window's p99 is noisy.
    drift = sum(s[3] for s in steady[-3:]) / sum(s[3] for s in steady[:3])
    verdicts = {
        f"RSS slope {slope:+.2f} MiB/min <= {MAX_LEAK_MIB_PER_MIN}": slope <= MAX_LEAK_MIB_PER_MIN,
        f"p99 last/first three steady windows {drift:.2f} <= {MAX_P99_DRIFT}": drift <= MAX_P99_DRIFT,
        f"no 5xx or dropped requests {unexpected}": not unexpected,
    }
    for name, ok in verdicts.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    print("verdict:", "no leak" if all(verdicts.values()) else "LEAK OR DRIFT (see above)")
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
