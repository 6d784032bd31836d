"""Folder scoring through the SDK, as a fraction of the service's own capacity measured in the same run.

Capacity: closed-loop clients sending `/classify_batch` requests of the same chunk size the SDK uses,
at the same concurrency, for a fixed time. Then `Client.score_folder` scores a folder of N images
(copies of the shipped samples) against the same server. Ratio = scoring images/s / capacity.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from vitserve.client import Client
from vitserve.service.launcher import running_server


@dataclass(frozen=True)
class ScoreBenchResult:
    images: int
    capacity_images_per_s: float
    scoring_images_per_s: float
    failed: int

    @property
    def ratio(self) -> float:
        return self.scoring_images_per_s / self.capacity_images_per_s


def make_folder(samples: Path, root: Path, count: int) -> None:
    """`count` images in nested folders, cycling through the shipped samples."""
    sources = sorted(p for p in samples.iterdir() if p.suffix.lower() in (".png", ".jpg", ".webp", ".bmp"))
    for i in range(count):
        source = sources[i % len(sources)]
        target = root / f"part{i // 500:02d}" / f"{i:06d}{source.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


async def _capacity(url: str, images: list[tuple[str, bytes]], concurrency: int, duration_s: float) -> float:
    done = 0
    stop_at = time.perf_counter() + duration_s
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def client() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                form = aiohttp.FormData()
                for name, data in images:
                    form.add_field("images", data, filename=name)
                async with session.post(f"{url}/classify_batch", data=form) as response:
                    await response.read()
                    if response.status == 200:
                        done += len(images)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return done / (time.perf_counter() - started)


def run(
    model_dir: Path, count: int, concurrency: int, batch_size: int, duration_s: float
) -> ScoreBenchResult:
    samples = model_dir / "samples"
    chunk = [(p.name, p.read_bytes()) for p in sorted(samples.glob("*.png"))[:batch_size]]
    chunk = (chunk * batch_size)[:batch_size]
    with tempfile.TemporaryDirectory() as tmp, running_server(model_dir) as server:
        root = Path(tmp) / "images"
        make_folder(samples, root, count)
        capacity = asyncio.run(_capacity(server.url, chunk, concurrency, duration_s))
        with Client(server.url) as client:
            summary = client.score_folder(
                root, Path(tmp) / "results.jsonl", concurrency=concurrency, batch_size=batch_size
            )
    return ScoreBenchResult(count, capacity, summary.images_per_s, summary.failed)
