"""Pixels to the model server and probabilities back over a Unix socket: the shape with several API workers.

With several API workers the images of all of them must meet in one batch, so the ONNX Runtime
session and its batcher live in one model server process (service/model/server.py). Each API worker
keeps one connection to it and sends each request's pixels as the raw bytes of a numpy array in one
frame; any number of requests are in flight on a connection at once, matched by id. No HTTP and no
serialisation: a fixed header and the array's bytes, each way.

Frames (little-endian):
  hello, server -> worker, once per connection: u32 length + JSON {"metadata": ..., "info": ...}
  request:  u32 id, u32 n, u32 height, u32 width, u32 channels, then n*h*w*c uint8 bytes
  response: u32 id, u8 status, u32 rows, u32 cols, u32 error length, then rows*cols float64 class
            probabilities (status OK) or the error message (utf-8)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vitserve.runtime.artifact import ArtifactMetadata
from vitserve.runtime.batcher import BatcherClosed, DeadlineExceeded

log = logging.getLogger(__name__)

REQUEST = struct.Struct("<IIIII")
RESPONSE = struct.Struct("<IBIII")
LENGTH = struct.Struct("<I")
OK, DEADLINE, CLOSED, FAILED = 0, 1, 2, 3
STATUS_ERRORS: dict[int, type[Exception]] = {DEADLINE: DeadlineExceeded, CLOSED: BatcherClosed}


class ModelServerError(RuntimeError):
    """The model server ran the request and failed; its message says why."""


class ModelUnreachable(ConnectionError):
    """No connection to the model server could be made or kept (it died, or is restarting)."""


# --- the model server's side --------------------------------------------------------------------------


class ChannelServer:
    """Serves a model (service/flow/classify.py's Model: `infer`, `metadata`, `info`) on a Unix socket."""

    def __init__(self, model: object, path: Path) -> None:
        self.model = model
        self.path = path
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a model server that was killed
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o600)  # the API workers run as the same user
        log.info("model server listening on %s", self.path)

    def close(self) -> None:
        """Stop listening and hang up on every API worker (as a dying server would)."""
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()

    async def wait_closed_connections(self) -> None:
        for writer in list(self._writers):
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def hello(self) -> bytes:
        meta: ArtifactMetadata = self.model.metadata  # type: ignore[attr-defined]
        body = json.dumps({"metadata": meta.to_json(), "info": self.model.info()}).encode()  # type: ignore[attr-defined]
        return LENGTH.pack(len(body)) + body

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        writer.write(self.hello())
        try:
            while True:
                header = await reader.readexactly(REQUEST.size)
                request_id, n, height, width, channels = REQUEST.unpack(header)
                data = await reader.readexactly(n * height * width * channels)
                pixels = np.frombuffer(data, dtype=np.uint8).reshape(n, height, width, channels)
                task = asyncio.create_task(self._answer(writer, request_id, pixels))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the API worker went away; what it had in flight still runs, its answers are dropped
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, request_id: int, pixels: np.ndarray) -> None:
        try:
            probs = await self.model.infer(pixels)  # type: ignore[attr-defined]
        except Exception as exc:
            status = next((s for s, cls in STATUS_ERRORS.items() if isinstance(exc, cls)), FAILED)
            if status == FAILED:
                log.exception("inference failed")
            message = f"{type(exc).__name__}: {exc}".encode()
            frame = RESPONSE.pack(request_id, status, 0, 0, len(message)) + message
        else:
            probs = np.ascontiguousarray(probs, dtype=np.float64)
            frame = RESPONSE.pack(request_id, OK, probs.shape[0], probs.shape[1], 0) + probs.tobytes()
        if not writer.is_closing():
            writer.write(frame)


# --- the API worker's side -----------------------------------------------------------------------------


def read_hello(path: Path, deadline_s: float) -> dict[str, object]:
    """Blocking: connect, read the hello frame, hang up; retried while the model server starts."""
    give_up = time.monotonic() + deadline_s
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(str(path))
                (length,) = LENGTH.unpack(_recv_exactly(sock, LENGTH.size))
                return json.loads(_recv_exactly(sock, length))  # type: ignore[no-any-return]
        except OSError as exc:
            if time.monotonic() > give_up:
                raise ModelUnreachable(f"no model server at {path} after {deadline_s:g} s: {exc}") from exc
            time.sleep(0.2)  # its model is still loading


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(left)
        if not chunk:
            raise ConnectionResetError("the model server closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class _Connection:
    """One open channel: requests written as they come, answers matched to their callers by id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.pending: dict[int, asyncio.Future[np.ndarray]] = {}
        self.next_id = 0
        self.reading = asyncio.create_task(self._read())

    @property
    def alive(self) -> bool:
        return not self.reading.done()

    async def call(self, pixels: np.ndarray) -> np.ndarray:
        request_id = self.next_id = (self.next_id + 1) % 2**32
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        n, height, width, channels = pixels.shape
        self.writer.write(REQUEST.pack(request_id, n, height, width, channels))
        self.writer.write(np.ascontiguousarray(pixels).tobytes())
        try:
            return await future
        finally:
            self.pending.pop(request_id, None)

    async def _read(self) -> None:
        try:
            await self.reader.readexactly(LENGTH.unpack(await self.reader.readexactly(LENGTH.size))[0])
            while True:
                request_id, status, rows, cols, error_length = RESPONSE.unpack(
                    await self.reader.readexactly(RESPONSE.size)
                )
                if status == OK:
                    data = await self.reader.readexactly(rows * cols * 8)
                    result: np.ndarray | Exception = np.frombuffer(data, dtype=np.float64).reshape(rows, cols)
                else:
                    message = (await self.reader.readexactly(error_length)).decode(errors="replace")
                    result = STATUS_ERRORS.get(status, ModelServerError)(message)
                future = self.pending.get(request_id)
                if future is None or future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            lost = ConnectionResetError(f"the model server dropped the connection ({type(exc).__name__})")
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(lost)
        finally:
            self.writer.close()


class RemoteModel:
    """The Model of an API worker when a model server holds the session (service/flow/classify.py's Model).

    A call that loses its connection (the model server died mid-batch, or restarts) is sent again on a
    new one: inference is pure, so a repeat is safe. `on_retry` counts each resend.
    """

    def __init__(
        self, path: Path, hello: dict[str, object], attempts: int, on_retry: Callable[[], None]
    ) -> None:
        self.path = path
        self.metadata = ArtifactMetadata.from_json(str(hello["metadata"]))
        self._info: dict[str, object] = dict(hello["info"])  # type: ignore[call-overload]
        self.attempts = attempts
        self.on_retry = on_retry
        self._connection: _Connection | None = None
        self._connecting: asyncio.Lock | None = None

    def info(self) -> dict[str, object]:
        return self._info

    async def infer(self, pixels: np.ndarray) -> np.ndarray:
        for attempt in range(self.attempts):
            try:
                connection = await self._connect()
                return await connection.call(pixels)
            except (ConnectionError, OSError) as exc:
                if attempt + 1 == self.attempts:
                    raise ModelUnreachable(f"the model server is unreachable ({exc})") from exc
                log.warning("model server connection lost (%r); sending again", exc)
                self.on_retry()
                await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _connect(self) -> _Connection:
        if self._connection is not None and self._connection.alive:
            return self._connection
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._connection is None or not self._connection.alive:
                reader, writer = await asyncio.open_unix_connection(str(self.path))
                self._connection = _Connection(reader, writer)
            return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.writer.close()
