"""Greedy (continuous) batching on an asyncio event loop, with the model running in one dedicated thread.

A request that finds the model idle runs at once, alone: nothing is added to its latency. While a
batch runs, new images queue; when it ends, the next batch takes everything queued, up to
`max_batch_size`. Under light load batches stay small and latency low; under heavy load they fill up
by themselves, since every image that arrived during one batch rides in the next. No cost model has to
be learned and no image is held on purpose unless `max_wait_s` says so.

The model call blocks (ONNX Runtime releases the GIL while it computes), so it runs in a thread of its
own. With `runners` above 1, that many batches may run at once, each in its own thread, on the same
session: a batch that queued while another runs starts as soon as a runner is free. The images of
one batching round are then shared among the runners: each takes at most max_batch_size / runners
(rounded up), so together they run about max_batch_size images at once, and a runner does not sit
idle beside one that took everything. On a CPU, runs side by side do more per second
than one run split over intra-op threads, which wait for each other at every operator
(service/model.py says when the service uses them, and how they share one session).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# (N, H, W, 3) uint8 pixels -> (N, num_classes) class scores (the service passes probabilities); blocking.
RunBatch = Callable[[np.ndarray], np.ndarray]


class DeadlineExceeded(RuntimeError):
    """An image waited in the queue past the batcher's deadline and was dropped before running."""


class BatcherClosed(RuntimeError):
    """The batcher was closed; nothing more is run."""


class BatchObserver(Protocol):
    """Told about every batch that ran: for metrics."""

    def batch_done(self, size: int, run_s: float, queue_waits_s: Sequence[float]) -> None: ...


@dataclass
class _Item:
    pixels: np.ndarray  # (n, H, W, 3), n <= run_size
    future: asyncio.Future[np.ndarray]
    queued_at: float  # time.perf_counter()


class Batcher:
    """Coalesces the images of concurrent `infer` calls into batches for one blocking model function."""

    def __init__(
        self,
        run: RunBatch,
        max_batch_size: int,
        deadline_s: float,
        max_wait_s: float = 0.0,
        observer: BatchObserver | None = None,
        runners: int = 1,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if runners < 1:
            raise ValueError(f"runners must be >= 1, got {runners}")
        self._run = run
        self.max_batch_size = max_batch_size
        self.run_size = -(-max_batch_size // runners)  # images one runner takes at most
        self.deadline_s = deadline_s
        self.max_wait_s = max_wait_s
        self._observer = observer
        self._queue: deque[_Item] = deque()
        self._queued_images = 0
        self.runners = runners
        # Drain tasks forming or running batches, at most one per runner; touched from the loop only.
        self._drainers: set[asyncio.Task[None]] = set()
        self._arrived = asyncio.Event()  # set by infer() while a batching window is open
        self._windows_open = 0
        self._closed = False
        self._thread = ThreadPoolExecutor(max_workers=runners, thread_name_prefix="vitserve-model")

    @property
    def queued_images(self) -> int:
        return self._queued_images

    async def infer(self, pixels: np.ndarray) -> np.ndarray:
        """(n, H, W, 3) uint8 -> (n, C) scores; n may exceed run_size (it is split)."""
        if self._closed:
            raise BatcherClosed("the model is shutting down")
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        futures = []
        for start in range(0, len(pixels), self.run_size):
            part = pixels[start : start + self.run_size]
            future: asyncio.Future[np.ndarray] = loop.create_future()
            self._queue.append(_Item(part, future, now))
            self._queued_images += len(part)
            futures.append(future)
        if self._windows_open:
            self._arrived.set()
        if len(self._drainers) < self.runners:  # a runner is free: these images need not wait
            self._drainers.add(loop.create_task(self._drain()))
        if len(futures) == 1:
            return await futures[0]
        return np.concatenate(await asyncio.gather(*futures))

    async def _drain(self) -> None:
        """Run batches until the queue is empty; each takes what queued while the last one ran."""
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                if self.max_wait_s > 0 and self._queued_images < self.run_size:
                    await self._wait_for_more()
                batch = self._take_batch()
                if batch:
                    await self._run_batch(loop, batch)
        finally:
            # Here, not in a done callback: one would run a loop turn later, and an infer() in
            # between would count this drainer as busy and leave its images queued with no drainer.
            self._drainers.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _wait_for_more(self) -> None:
        """The optional batching window: hold the oldest image up to max_wait_s for company."""
        oldest = self._queue[0].queued_at
        self._windows_open += 1
        try:
            while self._queued_images < self.run_size:
                left = oldest + self.max_wait_s - time.perf_counter()
                if left <= 0:
                    return
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    return
        finally:
            self._windows_open -= 1

    def _take_batch(self) -> list[_Item]:
        batch: list[_Item] = []
        size = 0
        now = time.perf_counter()
        while self._queue and size + len(self._queue[0].pixels) <= self.run_size:
            item = self._queue.popleft()
            self._queued_images -= len(item.pixels)
            if item.future.done():  # its caller gave up (cancelled): do not spend the model on it
                continue
            if now - item.queued_at > self.deadline_s:
                item.future.set_exception(
                    DeadlineExceeded(f"queued for {now - item.queued_at:.1f} s, past {self.deadline_s:g} s")
                )
                continue
            batch.append(item)
            size += len(item.pixels)
        return batch

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        started = time.perf_counter()
        try:
            scores = await loop.run_in_executor(
                self._thread, self._stack_and_run, self._run, [b.pixels for b in batch]
            )
        except Exception as exc:  # the model failed: every image of this batch gets the error
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        ran = time.perf_counter() - started
        offset = 0
        for item in batch:
            n = len(item.pixels)
            if not item.future.done():
                item.future.set_result(scores[offset : offset + n])
            offset += n
        if self._observer is not None:
            waits = [started - item.queued_at for item in batch for _ in range(len(item.pixels))]
            self._observer.batch_done(offset, ran, waits)

    @staticmethod
    def _stack_and_run(run: RunBatch, parts: list[np.ndarray]) -> np.ndarray:
        # In the model's thread: copying 32 ViT-sized images is a few MB, kept off the event loop.
        pixels = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return run(np.ascontiguousarray(pixels))

    def warm_up(self, sizes: Sequence[int], image_shape: tuple[int, ...]) -> None:
        """Run each batch size once in the model's thread, before serving (blocking)."""
        for n in sizes:
            self._thread.submit(self._run, np.zeros((n, *image_shape), dtype=np.uint8)).result()

    def close(self) -> None:
        """Refuse new work; batches already queued or running still finish."""
        self._closed = True
        self._thread.shutdown(wait=False)


def warm_up_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, ... up to max_batch_size: the batch shapes greedy batching produces most."""
    sizes, n = [], 1
    while n < max_batch_size:
        sizes.append(n)
        n *= 2
    return [*sizes, max_batch_size]
