"""Scoring a folder: walk it, keep the server busy with batches, write each result as it arrives.

The pipeline is three kinds of asyncio task: one producer walks the tree and queues chunks of
paths not yet in the results file, `concurrency` workers send each chunk as one /classify_batch
request, and one writer appends finished rows (all that are waiting, as one write + fsync, so that
disk flushes never cap the rate). Memory stays flat: the queues are bounded and only the set of
paths already done is kept.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vitserve.client.errors import InvalidRequest, ResultsFileError, VitserveError
from vitserve.client.images import ImageInput, ImagePayload, to_payload
from vitserve.client.output import ResultsWriter, Row, load_resume_state, results_format
from vitserve.client.results import ModelInfo, Prediction
from vitserve.client.walk import DEFAULT_EXTENSIONS, count_images, iter_images, normalize_extensions

__all__ = ["DEFAULT_EXTENSIONS", "Progress", "ScoreSummary", "score_folder"]


class ScoringClient(Protocol):
    """What scoring needs of a client; AsyncClient is one."""

    async def model_info(self) -> ModelInfo: ...

    async def classify_many(
        self, images: Iterable[ImageInput], *, top_k: int | None = None, batch_size: int = 16
    ) -> list[Prediction | InvalidRequest]: ...


@dataclass(frozen=True)
class Progress:
    """Where a scoring run stands; passed to the `progress` callback after each durable write."""

    total: int | None  # image files under the folder; None until the background count finishes
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

    output: Path
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


async def score_folder(
    client: ScoringClient,
    root: str | Path,
    out: str | Path,
    *,
    extensions: Iterable[str] = DEFAULT_EXTENSIONS,
    concurrency: int = 16,
    batch_size: int = 8,
    top_k: int | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> ScoreSummary:
    """Classify every image under `root` with `client` into `out`; see AsyncClient.score_folder."""
    if concurrency < 1 or batch_size < 1:
        raise ValueError(f"concurrency and batch_size must be >= 1, got {concurrency} and {batch_size}")
    root, out = Path(root), Path(out)
    wanted = normalize_extensions(extensions)
    results_format(out)  # fail on a bad suffix before touching anything
    if not root.is_dir():
        raise NotADirectoryError(f"not a directory: {root}")

    state = load_resume_state(out)
    info = await client.model_info()  # also fails fast when the server is unreachable
    model = str(info.ref)
    server_limit = info.extra.get("max_batch_images")
    if isinstance(server_limit, int) and server_limit >= 1:
        batch_size = min(batch_size, server_limit)  # a larger batch would be refused outright
    if state.models - {model}:
        raise ResultsFileError(
            f"{out} holds results of {', '.join(sorted(state.models))} but the server serves {model}; "
            "write to a new results file instead of mixing models"
        )

    tally = _Tally(skipped=len(state.done))
    chunks: asyncio.Queue[list[str] | None] = asyncio.Queue(maxsize=2 * concurrency)
    finished: asyncio.Queue[list[Row] | None] = asyncio.Queue()
    commit_lock = threading.Lock()
    stop_counting = threading.Event()

    async def count_total() -> None:
        tally.total = await asyncio.to_thread(count_images, root, wanted, stop_counting)

    async def produce() -> None:
        chunk: list[str] = []
        for path in iter_images(root, wanted):
            if path in state.done:
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
            finished.put_nowait(await _score_chunk(client, root, chunk, top_k))

    def commit(writer: ResultsWriter, rows: list[Row]) -> None:
        # Runs in a worker thread; writing and counting together keep the tally equal to the file.
        with commit_lock:
            writer.write(rows)
            tally.add(rows)

    async def write(writer: ResultsWriter) -> None:
        more = True
        try:
            while more:
                rows: list[Row] = []
                batch = await finished.get()
                while True:  # group commit: everything that is ready, one write and one fsync
                    if batch is None:
                        more = False  # the stop sign: write what came before it, then stop
                        break
                    rows.extend(batch)
                    if finished.empty():
                        break
                    batch = finished.get_nowait()
                if rows:
                    await asyncio.to_thread(commit, writer, rows)
                    if progress is not None:
                        progress(tally.snapshot())
        finally:
            # Cancelled (Ctrl-C, a failed worker): rows already answered are kept all the same. A
            # batch whose write was under way when cancelled is finished by its thread, not here.
            left: list[Row] = []
            while not finished.empty():
                left.extend(finished.get_nowait() or ())
            commit(writer, left)

    with ResultsWriter(out) as writer:
        try:
            async with asyncio.TaskGroup() as group:
                if progress is not None:
                    group.create_task(count_total())
                group.create_task(produce())
                workers = [group.create_task(work()) for _ in range(concurrency)]
                group.create_task(write(writer))
                await asyncio.wait(workers)
                finished.put_nowait(None)  # all answered: the writer drains the queue and stops
        except BaseExceptionGroup as errors:
            raise _first_error(errors)  # noqa: B904  (the group stays attached as __context__)
        finally:
            stop_counting.set()
    summary = tally.snapshot()
    if progress is not None:
        progress(summary)
    return ScoreSummary(
        output=out,
        scored=summary.scored,
        failed=summary.failed,
        skipped=summary.skipped,
        failed_before=state.failed,
        elapsed_s=summary.elapsed_s,
    )


async def _score_chunk(client: ScoringClient, root: Path, chunk: list[str], top_k: int | None) -> list[Row]:
    """Rows for one chunk of paths: files that cannot be read locally fail here, the rest are sent."""
    rows: dict[str, Row] = {}
    payloads: list[ImagePayload] = []
    sent: list[str] = []
    for path in chunk:
        try:
            payloads.append(to_payload(root / path, filename=path))
        except OSError as exc:  # vanished, unreadable: this file's row says so
            rows[path] = Row(path, error="unreadable", message=f"{type(exc).__name__}: {exc}")
            continue
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
