"""Scoring a folder or prefix: list it, keep the server busy with batches, keep each result as it arrives.

The pipeline is three kinds of asyncio task: one producer lists the images (sources.py, a page at
a time) and queues chunks of paths that this shard owns and the output does not hold yet,
`concurrency` workers read a chunk's images concurrently and send them as one /classify_batch
request, and one writer hands finished rows to the output (all that are waiting at once: one
append + fsync for a results file, a part per `commit_rows` for a results folder; destinations.py).
Memory stays flat: the queues are bounded and only the set of paths already done is kept.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypedDict, Unpack

from vitserve.client.destinations import open_results
from vitserve.client.errors import InvalidRequest, ResultsFileError, VitserveError
from vitserve.client.images import ImageInput, ImagePayload, sniff_content_type
from vitserve.client.output import Row
from vitserve.client.results import ModelInfo, Prediction
from vitserve.client.sharding import Shard
from vitserve.client.sources import ImageSource, open_source
from vitserve.client.walk import DEFAULT_EXTENSIONS, normalize_extensions

__all__ = [
    "DEFAULT_EXTENSIONS",
    "SCORE_DEFAULTS",
    "Progress",
    "ScoreOptions",
    "ScoreSummary",
    "Shard",
    "score_folder",
]

# The writer commits at most this often, taking every row answered meanwhile: each commit is a hop to
# a worker thread (and an fsync), which cost the scorer a quarter of its CPU when every answered
# request was committed on its own. Rows wait this long at most before they are durable.
GROUP_COMMIT_S = 0.05


class ScoringClient(Protocol):
    """What scoring needs of a client; AsyncClient is one."""

    async def model_info(self) -> ModelInfo: ...

    async def classify_many(
        self, images: Iterable[ImageInput], *, top_k: int | None = None, batch_size: int = 16
    ) -> list[Prediction | InvalidRequest]: ...


class ScoreOptions(TypedDict, total=False):
    """score_folder's options (Client's, AsyncClient's and this module's), each left out takes its
    value in SCORE_DEFAULTS; AsyncClient.score_folder says what each does."""

    extensions: Iterable[str]
    concurrency: int
    batch_size: int
    top_k: int | None
    progress: Callable[[Progress], None] | None
    shard: Shard | str | None
    commit_rows: int
    commit_interval_s: float


@dataclass(frozen=True)
class Progress:
    """Where a scoring run stands; passed to the `progress` callback after each group of rows is kept
    (durable at once in a results file; in a results folder, once its part is committed)."""

    total: int | None  # images under the folder (this shard's); None until the background count finishes
    skipped: int  # already in the results file from an earlier run
    scored: int  # this run
    failed: int  # this run, rows with an error
    elapsed_s: float

    @property
    def done(self) -> int:
        return self.skipped + self.scored + self.failed

    @property
    def rate(self) -> float:
        """Images per second processed by this run."""
        return (self.scored + self.failed) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        if self.total is None or self.rate <= 0:
            return None
        return max(0, self.total - self.done) / self.rate


@dataclass(frozen=True)
class ScoreSummary:
    """The outcome of a scoring run."""

    output: str | Path  # the results file, or this shard's folder inside the results folder
    scored: int  # images classified by this run
    failed: int  # images this run wrote an error row for
    skipped: int  # images already in the results file
    failed_before: int  # error rows among the skipped ones
    elapsed_s: float

    @property
    def images_per_s(self) -> float:
        return (self.scored + self.failed) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True when every image in the results file has a prediction."""
        return self.failed == 0 and self.failed_before == 0


class _Tally:
    """Counts rows as they become durable; only the writer touches it, under the writer's order."""

    def __init__(self, skipped: int) -> None:
        self.started = time.perf_counter()
        self.total: int | None = None
        self.skipped = skipped
        self.scored = 0
        self.failed = 0

    def add(self, rows: list[Row]) -> None:
        failed = sum(row.error is not None for row in rows)
        self.failed += failed
        self.scored += len(rows) - failed

    def snapshot(self) -> Progress:
        elapsed = time.perf_counter() - self.started
        return Progress(self.total, self.skipped, self.scored, self.failed, elapsed)


SCORE_DEFAULTS: ScoreOptions = {
    "extensions": DEFAULT_EXTENSIONS,
    "concurrency": 16,
    "batch_size": 8,
    "top_k": None,
    "progress": None,
    "shard": None,
    "commit_rows": 5000,
    "commit_interval_s": 10.0,
}


async def score_folder(
    client: ScoringClient, root: str | Path, out: str | Path, **options: Unpack[ScoreOptions]
) -> ScoreSummary:
    """Classify every image under `root` with `client` into `out`; see AsyncClient.score_folder."""
    unknown = sorted(set(options) - ScoreOptions.__optional_keys__)
    if unknown:  # what explicit keyword parameters would have refused
        raise TypeError(f"score_folder() got unexpected keyword arguments {unknown}")
    chosen: ScoreOptions = {**SCORE_DEFAULTS, **options}
    extensions, concurrency, batch_size = chosen["extensions"], chosen["concurrency"], chosen["batch_size"]
    top_k, progress, shard = chosen["top_k"], chosen["progress"], chosen["shard"]
    commit_rows, commit_interval_s = chosen["commit_rows"], chosen["commit_interval_s"]
    if concurrency < 1 or batch_size < 1:
        raise ValueError(f"concurrency and batch_size must be >= 1, got {concurrency} and {batch_size}")
    wanted = normalize_extensions(extensions)
    owner = None if shard is None else Shard.parse(shard)
    # Fail on a bad --out or a missing folder before touching anything.
    sink = open_results(out, owner, commit_rows=commit_rows, commit_interval_s=commit_interval_s)
    source = open_source(root, wanted)

    state = await asyncio.to_thread(sink.load)
    info = await client.model_info()  # also fails fast when the server is unreachable
    model = str(info.ref)
    server_limit = info.extra.get("max_batch_images")
    if isinstance(server_limit, int) and server_limit >= 1:
        batch_size = min(batch_size, server_limit)  # a larger batch would be refused outright
    if state.models - {model}:
        raise ResultsFileError(
            f"{sink.output} holds results of {', '.join(sorted(state.models))} but the server serves "
            f"{model}; write to a new results file instead of mixing models"
        )

    tally = _Tally(skipped=len(state.done))
    chunks: asyncio.Queue[list[str] | None] = asyncio.Queue(maxsize=2 * concurrency)
    finished: asyncio.Queue[list[Row] | None] = asyncio.Queue()
    commit_lock = threading.Lock()
    stop_counting = threading.Event()

    async def count_total() -> None:
        keep = None if owner is None or owner.count == 1 else owner.owns
        tally.total = await asyncio.to_thread(source.count, stop_counting, keep)

    async def produce() -> None:
        chunk: list[str] = []
        async for page in source.pages():
            for path in page:
                if path in state.done or (owner is not None and not owner.owns(path)):
                    continue
                chunk.append(path)
                if len(chunk) == batch_size:
                    await chunks.put(chunk)
                    chunk = []
        if chunk:
            await chunks.put(chunk)
        for _ in range(concurrency):
            await chunks.put(None)  # one stop sign per worker

    async def work() -> None:
        while (chunk := await chunks.get()) is not None:
            finished.put_nowait(await _score_chunk(client, source, chunk, top_k))

    def commit(rows: list[Row]) -> None:
        # Runs in a worker thread; writing and counting together keep the tally equal to the output.
        with commit_lock:
            sink.write(rows)
            tally.add(rows)

    async def write() -> None:
        more = True
        loop = asyncio.get_running_loop()
        last_commit = -math.inf
        waiting: list[Row] = []  # answered, not yet handed to a commit: kept if cancelled meanwhile
        try:
            while more:
                batch = await finished.get()
                if batch is not None:
                    waiting.extend(batch)
                    if (pause := last_commit + GROUP_COMMIT_S - loop.time()) > 0:
                        await asyncio.sleep(pause)  # let more answers arrive; the stop sign never waits
                    # Group commit: everything that is ready, one write and one fsync.
                    while not finished.empty() and (batch := finished.get_nowait()) is not None:
                        waiting.extend(batch)
                if batch is None:
                    more = False  # the stop sign: write what came before it, then stop
                if waiting:
                    rows, waiting = waiting, []
                    last_commit = loop.time()
                    await asyncio.to_thread(commit, rows)
                    if progress is not None:
                        progress(tally.snapshot())
        finally:
            # Cancelled (Ctrl-C, a failed worker): rows already answered are kept all the same. A
            # batch whose write was under way when cancelled is finished by its thread, not here.
            left = waiting
            while not finished.empty():
                left.extend(finished.get_nowait() or ())
            with commit_lock:
                sink.write(left)
                tally.add(left)
                sink.flush()

    sink.open()
    try:
        try:
            async with asyncio.TaskGroup() as group:
                if progress is not None:
                    group.create_task(count_total())
                group.create_task(produce())
                workers = [group.create_task(work()) for _ in range(concurrency)]
                group.create_task(write())
                await asyncio.wait(workers)
                finished.put_nowait(None)  # all answered: the writer drains the queue and stops
        except BaseExceptionGroup as errors:
            raise _first_error(errors)  # noqa: B904  (the group stays attached as __context__)
        finally:
            stop_counting.set()
        await asyncio.to_thread(sink.finish, source.location)
    finally:
        sink.close()
    summary = tally.snapshot()
    if progress is not None:
        progress(summary)
    return ScoreSummary(
        output=sink.output,
        scored=summary.scored,
        failed=summary.failed,
        skipped=summary.skipped,
        failed_before=state.failed,
        elapsed_s=summary.elapsed_s,
    )


async def _score_chunk(
    client: ScoringClient, source: ImageSource, chunk: list[str], top_k: int | None
) -> list[Row]:
    """Rows for one chunk of paths: images that cannot be read fail here, the rest are sent."""
    rows: dict[str, Row] = {}
    payloads: list[ImagePayload] = []
    sent: list[str] = []
    for path, data in zip(chunk, await source.read_many(chunk), strict=True):
        if isinstance(data, OSError):  # vanished, unreadable: this file's row says so
            rows[path] = Row(path, error="unreadable", message=f"{type(data).__name__}: {data}")
            continue
        payloads.append(ImagePayload(path, data, sniff_content_type(data)))
        sent.append(path)
    if payloads:
        results = await client.classify_many(payloads, top_k=top_k, batch_size=len(payloads))
        rows.update((path, Row.from_result(path, result)) for path, result in zip(sent, results, strict=True))
    return [rows[path] for path in chunk]


def _first_error(errors: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that stopped the run: a service failure beats the cancellations it caused."""
    leaves: list[BaseException] = []

    def collect(group: BaseExceptionGroup[BaseException]) -> None:
        for error in group.exceptions:
            if isinstance(error, BaseExceptionGroup):
                collect(error)
            else:
                leaves.append(error)

    collect(errors)
    for error in leaves:
        if isinstance(error, VitserveError):
            return error
    return leaves[0]
