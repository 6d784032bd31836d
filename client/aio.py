"""`AsyncClient`: the asyncio vitserve client. Same methods as `Client`; the logic is in protocol.py."""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TypeVar, Unpack

import aiohttp
import httpx

from vitserve.client import protocol
from vitserve.client.errors import InvalidRequest, ServiceOverloaded, VitserveError, error_from_aiohttp
from vitserve.client.explain import Explanation
from vitserve.client.explain import explain as explain_operation
from vitserve.client.images import ImageInput, to_payload
from vitserve.client.protocol import DEFAULT_URL
from vitserve.client.results import ModelInfo, Prediction
from vitserve.client.retry import AdaptiveLimit, OverloadGate, RetryPolicy
from vitserve.client.scoring import ScoreOptions, ScoreSummary, score_folder

T = TypeVar("T")


class AsyncClient:
    """An asyncio client for one vitserve server; see `Client` for the retry behaviour.

    >>> async with AsyncClient("http://127.0.0.1:3000") as client:
    ...     prediction = await client.classify("seven.png")

    One Retry-After pauses every request of the client, so many concurrent calls back off together,
    and after an overload answer the client sends fewer requests at once (see retry.AdaptiveLimit).
    It talks HTTP through aiohttp, whose C parser costs a third of httpx's asyncio path in CPU per
    request (measured beside the server on 2 cores, where the scorer's CPU is the server's loss).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = protocol.check_base_url(base_url)
        self.timeout = timeout
        self.retry_policy = RetryPolicy(retries=retries, backoff=backoff, max_backoff=max_backoff)
        self.headers = dict(headers or {})
        self._gate = OverloadGate()
        self._limit = AdaptiveLimit()
        self._waiting: list[asyncio.Future[None]] = []  # requests held back by the limit
        self._root = base_url.rstrip("/")
        # Made on first use: an aiohttp session belongs to the event loop it was made in, and a
        # client may be built before its loop runs.
        self._session: aiohttp.ClientSession | None = None

    async def classify(self, image: ImageInput, *, top_k: int | None = None) -> Prediction:
        """Classify one image (a path, bytes, a binary file object or a PIL image)."""
        return await self._run(protocol.classify(to_payload(image), top_k, self.retry_policy, self._gate))

    async def classify_many(
        self, images: Iterable[ImageInput], *, top_k: int | None = None, batch_size: int = 16
    ) -> list[Prediction | InvalidRequest]:
        """Classify images through /classify_batch; an unreadable image gives its InvalidImage in place."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        results: list[Prediction | InvalidRequest] = []
        for chunk in protocol.chunked(images, batch_size):  # read one chunk at a time: flat memory
            payloads = [to_payload(image) for image in chunk]
            operation = protocol.classify_many(payloads, top_k, batch_size, self.retry_policy, self._gate)
            results.extend(await self._run(operation))
        return results

    async def explain(
        self,
        image: ImageInput,
        *,
        top_k: int | None = None,
        head_fusion: str = "mean",
        for_class: str | int | None = None,
        overlay: bool = True,
    ) -> Explanation:
        """Classify one image and return its attention rollout map; see `Client.explain`."""
        operation = explain_operation(
            to_payload(image), top_k, head_fusion, for_class, overlay, self.retry_policy, self._gate
        )
        return await self._run(operation)

    async def model_info(self) -> ModelInfo:
        """What the server serves: name, version, labels, input size, precision, providers."""
        return await self._run(protocol.model_info(self.retry_policy, self._gate))

    async def ready(self) -> bool:
        """True when the server takes requests (GET /readyz), False while it is starting; not retried."""
        return await self._run(protocol.ready())

    async def score_folder(
        self,
        root: str | Path,
        out: str | Path,
        **options: Unpack[ScoreOptions],
    ) -> ScoreSummary:
        """Classify every image under `root` into `out`, resuming a previous run.

        `root` is a local folder or an object-storage URL (`s3://bucket/prefix`, `gs://…`, `az://…`;
        install the matching extra), listed page by page. `out` is a local .jsonl/.csv file, whose
        rows are appended as results arrive (each group one write + fsync), or a results folder (a
        path ending in "/" or any object-storage URL), where every `commit_rows` rows, or every
        `commit_interval_s` seconds, become one immutable part file; `vitserve merge` makes one file
        of it. Images already in `out` are skipped, so an interrupted run continues where it stopped
        when run again, and every image ends up with exactly one row. `shard` ("K/N" or a Shard)
        scores only the images whose path hashes to shard K of N, into the results folder's
        shard-K-of-N/ sub-folder. An image that cannot be read or classified gets a row with its
        error; a failure of the service or the storage (after retries) stops the run and is
        raised, the rows so far kept. `concurrency` requests of up to `batch_size` images each
        are kept in flight.
        """
        return await score_folder(self, root, out, **options)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _run(self, operation: Generator[protocol.Step, protocol.Reply, T]) -> T:
        """Carry out the steps of an operation, awaiting."""
        reply: protocol.Reply = None
        while True:
            try:
                step = operation.send(reply)
            except StopIteration as finished:
                return finished.value  # type: ignore[no-any-return]
            if isinstance(step, protocol.Sleep):
                await asyncio.sleep(step.seconds)
                reply = None
            else:
                reply = await self._send(step)

    async def _send(self, step: protocol.Send) -> httpx.Response | VitserveError:
        headers, body = step.body()
        while not self._limit.can_send():
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiting:  # cancelled while waiting
                    self._waiting.remove(waiter)
        ticket = self._limit.start()
        reply: httpx.Response | VitserveError | None = None
        try:
            reply = await self._exchange(step, headers, body)
        finally:
            # Synchronous on purpose: it must run even when this request is being cancelled.
            overloaded = isinstance(reply, ServiceOverloaded) or (
                isinstance(reply, httpx.Response) and reply.status_code in (429, 503)
            )
            self._limit.finish(ticket, overloaded)
            waiting, self._waiting = self._waiting, []
            for waiter in waiting:  # all of them re-check the limit; few are ever waiting
                if not waiter.done():
                    waiter.set_result(None)
        return reply

    async def _exchange(
        self, step: protocol.Send, headers: dict[str, str], body: bytes | None
    ) -> httpx.Response | VitserveError:
        """One request over aiohttp, answered as the httpx.Response the protocol reads."""
        if self._session is None:
            # Enough pooled connections for score_folder's default concurrency, plus headroom.
            self._session = aiohttp.ClientSession(
                headers=self.headers,
                timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_read=self.timeout),
                connector=aiohttp.TCPConnector(limit=256),
            )
        url = self._root + step.path
        try:
            async with self._session.request(
                step.method, url, params=step.params or None, data=body, headers=headers
            ) as answer:
                content = await answer.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            return error_from_aiohttp(exc, url)
        # aiohttp has already decoded the body: its framing headers no longer describe `content`.
        kept = [(k, v) for k, v in answer.raw_headers if k.lower() not in _FRAMING_HEADERS]
        return httpx.Response(answer.status, headers=kept, content=content)


_FRAMING_HEADERS = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})
