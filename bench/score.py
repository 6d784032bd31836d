"""Folder scoring through the SDK, as a fraction of the service's own capacity measured in the same run.

Capacity: closed-loop clients sending the `/classify_batch` requests the SDK sends for that folder
(the same images in the same chunks, cycled), at the same concurrency, for a fixed time. Then
`Client.score_folder` scores a folder of N images (copies of the shipped samples) against the same
server, into a fresh results file. After a warm-up (the server's first seconds are slower), the two
alternate for `rounds` rounds, capacity first in odd rounds and scoring first in even ones, so that
a neighbour's load or a drift in the server hits both alike; the ratio reported is the median of
each round's scoring images/s over that round's capacity. Both run on the same kind of event loop
(uvloop, as `vitserve score` does). CPU per image is counted for the scorer (this process, which
runs nothing else while scoring) and for the server's process tree in both phases, so that the
scorer's share of the 2 cores is a figure, not a guess, and a server that worked harder per image in
one phase than the other shows.

With `profile`, py-spy samples this process (only threads holding the GIL, so waiting is not
counted) during the last round's scoring and writes the collapsed stacks; `components` sums them.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import uvloop

from vitserve.bench.processes import ServerProcess, running, tree_cpu_s
from vitserve.client import Client


@dataclass(frozen=True)
class ScoreRound:
    capacity_images_per_s: float
    scoring_images_per_s: float
    scorer_cpu_ms_per_image: float  # this process's CPU while scoring / images
    server_cpu_ms_per_image: float  # the server's process tree while scoring / images
    capacity_server_cpu_ms_per_image: float  # the same, while the capacity clients ran
    failed: int

    @property
    def ratio(self) -> float:
        return self.scoring_images_per_s / self.capacity_images_per_s


@dataclass(frozen=True)
class ScoreBenchResult:
    images: int
    rounds: tuple[ScoreRound, ...]

    @property
    def ratio(self) -> float:
        return statistics.median(r.ratio for r in self.rounds)

    def median(self, field: str) -> float:
        return statistics.median(getattr(r, field) for r in self.rounds)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.rounds)


def sample_files(samples: Path) -> list[Path]:
    """The shipped sample images, in the order the folder and the capacity clients cycle through them."""
    return sorted(p for p in samples.iterdir() if p.suffix.lower() in (".png", ".jpg", ".webp", ".bmp"))


def make_folder(samples: Path, root: Path, count: int) -> None:
    """`count` images in nested folders, cycling through the shipped samples."""
    sources = sample_files(samples)
    for i in range(count):
        source = sources[i % len(sources)]
        target = root / f"part{i // 500:02d}" / f"{i:06d}{source.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def capacity_chunks(samples: Path, batch_size: int) -> list[list[tuple[str, bytes]]]:
    """The requests the scorer sends for the folder, one cycle of them: the same images in the same
    chunks (the samples differ in cost: a 280x280 JPEG takes the server longer than a 28x28 PNG)."""
    sources = [(p.name, p.read_bytes()) for p in sample_files(samples)]
    cycle = math.lcm(len(sources), batch_size)
    images = [sources[i % len(sources)] for i in range(cycle)]
    return [images[start : start + batch_size] for start in range(0, cycle, batch_size)]


async def _capacity(
    url: str, chunks: list[list[tuple[str, bytes]]], concurrency: int, duration_s: float
) -> tuple[int, float]:
    """Images answered by `concurrency` closed-loop clients in about `duration_s`, and the seconds taken."""
    done = 0
    stop_at = time.perf_counter() + duration_s
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def client(start: int) -> None:
            nonlocal done
            for turn in itertools.count(start):
                if time.perf_counter() >= stop_at:
                    return
                chunk = chunks[turn % len(chunks)]
                form = aiohttp.FormData()
                for name, data in chunk:
                    form.add_field("images", data, filename=name)
                async with session.post(f"{url}/classify_batch", data=form) as response:
                    await response.read()
                    if response.status == 200:
                        done += len(chunk)

        started = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(concurrency)))
        return done, time.perf_counter() - started


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """The capacity clients' loop: uvloop, the loop `vitserve score` runs on since it was measured to
    cost less; the bench's own, so that it can also time scorers from before that change."""
    return uvloop.new_event_loop


def run(
    model_dir: Path,
    count: int,
    concurrency: int,
    batch_size: int,
    duration_s: float,
    rounds: int = 3,
    profile: Path | None = None,
    warmup_s: float = 10.0,
) -> ScoreBenchResult:
    samples = model_dir / "samples"
    chunks = capacity_chunks(samples, batch_size)
    results = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        running(ServerProcess(env={"VITSERVE_MODEL_DIR": str(model_dir)})) as server,
        asyncio.Runner(loop_factory=event_loop_factory()) as loop,
    ):
        assert server.proc is not None
        pid = server.proc.pid
        root = Path(tmp) / "images"
        make_folder(samples, root, count)
        if warmup_s > 0:  # the server's first seconds are slower; not counted
            loop.run(_capacity(server.url, chunks, concurrency, warmup_s))

        def capacity() -> tuple[float, float]:
            before = tree_cpu_s(pid)
            images, elapsed_s = loop.run(_capacity(server.url, chunks, concurrency, duration_s))
            return images / elapsed_s, 1000 * (tree_cpu_s(pid) - before) / images

        for number in range(rounds):
            if number % 2 == 0:  # capacity first in odd rounds, scoring first in even ones
                capacity_per_s, capacity_cpu = capacity()
            sampling = profile if profile is not None and number == rounds - 1 else None
            server_before, scorer_before = tree_cpu_s(pid), time.process_time()
            with Client(server.url) as client, _py_spy(sampling):
                summary = client.score_folder(
                    root,
                    Path(tmp) / f"results-{number}.jsonl",
                    concurrency=concurrency,
                    batch_size=batch_size,
                )
            scorer_cpu = time.process_time() - scorer_before
            server_cpu = tree_cpu_s(pid) - server_before
            if number % 2 == 1:
                capacity_per_s, capacity_cpu = capacity()
            images = summary.scored + summary.failed
            results.append(
                ScoreRound(
                    capacity_images_per_s=capacity_per_s,
                    scoring_images_per_s=summary.images_per_s,
                    scorer_cpu_ms_per_image=1000 * scorer_cpu / images,
                    server_cpu_ms_per_image=1000 * server_cpu / images,
                    capacity_server_cpu_ms_per_image=capacity_cpu,
                    failed=summary.failed,
                )
            )
    return ScoreBenchResult(count, tuple(results))


@contextmanager
def _py_spy(output: Path | None) -> Iterator[None]:
    """py-spy recording this process while the block runs (nothing when `output` is None)."""
    if output is None:
        yield
        return
    beside = Path(sys.executable).parent / "py-spy"  # installed in this virtual environment
    spy = str(beside) if beside.is_file() else shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("--profile needs py-spy: pip install py-spy")
    command = [spy, "record", "--pid", str(os.getpid()), "--gil", "--rate", "250", "--format", "raw"]
    recorder = subprocess.Popen([*command, "--output", str(output)], stdout=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy attaches within a few hundred ms; what it misses is the run's first second
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)  # py-spy writes the stacks it has on Ctrl-C
        recorder.wait(timeout=60)


# Where a sample's time is charged: the first component, in this order, found anywhere in its stack.
# The scorer's own steps come first, so that JSON decoding inside httpx.Response.json() is parsing
# and a thread hop made to write rows is writing; the transports and the event loop get the rest.
COMPONENTS = (
    ("multipart encoding", "encode_multipart"),
    ("answer parsing (JSON, predictions, rows)", "parse_batch", "parse_prediction", "from_result", "json/"),
    ("writing results (encode, write, fsync)", "ResultsWriter", "encode_row", "sink", "commit"),
    ("reading images", "read_many", "_read_local", "sniff_content_type"),
    ("listing images", "pages", "iter_images", "_walk"),
    ("HTTP transport (aiohttp)", "aiohttp/"),
    ("HTTP transport (httpx/httpcore/anyio)", "httpx/", "httpcore/", "anyio/", "h11/"),
    ("asyncio event loop and threads", "asyncio/", "selectors.py", "concurrent/", "threading.py", "uvloop"),
)


def components(stacks: Path) -> list[tuple[str, float]]:
    """Share of py-spy samples per component, from a collapsed-stacks file."""
    counts: Counter[str] = Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        samples = int(number)
        total += samples
        frames = stack.split(";")
        counts[_component(frames)] += samples
    return [(name, samples / total) for name, samples in counts.most_common()] if total else []


def _component(frames: list[str]) -> str:
    for name, *markers in COMPONENTS:
        if any(marker in frame for frame in frames for marker in markers):
            return name
    return "other (vitserve.client glue, interpreter)"
