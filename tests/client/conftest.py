"""Fixtures for the client tests: image files made with Pillow, and a tiny stdlib HTTP server."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.client.emulator import point_at, running
from tests.client.s3server import S3Server


def digit_image(digit: int, fmt: str = "PNG", size: int = 28) -> bytes:
    """A white-on-black digit like MNIST's, encoded as `fmt`."""
    image = Image.new("L", (size, size), 0)
    ImageDraw.Draw(image).text((size // 3, size // 5), str(digit), fill=255, font_size=size * 2 // 3)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def image_bytes() -> Callable[..., bytes]:
    return digit_image


@dataclass
class Recorded:
    """What the stub server saw: one entry per request."""

    paths: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)  # time.monotonic() when each request was read


# (status, headers, JSON body) the stub answers, in order; the last one repeats.
Script = list[tuple[int, dict[str, str], object]]


@dataclass
class StubServer:
    url: str
    script: Script
    recorded: Recorded


@pytest.fixture
def stub_server() -> Iterator[Callable[[Script], StubServer]]:
    """Start a real HTTP server on a free port that answers requests from a script.

    For behaviour the real service cannot be made to show on cue (a 429 exactly once, a malformed
    body); everything else is tested against the real service.
    """
    servers: list[ThreadingHTTPServer] = []

    def start(script: Script) -> StubServer:
        recorded = Recorded()
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length) if length else b""
                with lock:
                    recorded.arrived.append(time.monotonic())
                    recorded.paths.append(self.path)
                    recorded.bodies.append(body)
                    status, headers, payload = script.pop(0) if len(script) > 1 else script[0]
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return StubServer(f"http://127.0.0.1:{server.server_address[1]}", script, recorded)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _prediction_body(label: str = "7", version: str = "1") -> dict[str, object]:
    return {
        "label": label,
        "score": 0.9,
        "top_k": [
            {"label": label, "index": int(label), "score": 0.9},
            {"label": "1", "index": 1, "score": 0.05},
        ],
        "model": {"name": "digits-vit", "version": version},
    }


def _write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture
def prediction_body() -> Callable[..., dict[str, object]]:
    """A /classify answer as the service writes it."""
    return _prediction_body


@pytest.fixture
def write_tree() -> Callable[[Path, dict[str, bytes]], Path]:
    """Create files (relative path -> bytes) under a root."""
    return _write_tree


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server in a process of its own, shared by the session; tests use their own buckets."""
    with running(S3Server()) as server:
        yield server


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point this process (and the scorer processes it starts) at the S3 server, as a user would."""
    return point_at(s3_server, monkeypatch)


@pytest.fixture
def bucket(s3_server: S3Server, request: pytest.FixtureRequest) -> str:
    """A new, empty bucket for one test."""
    name = "t-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    s3_server.client().create_bucket(Bucket=name)
    return name
