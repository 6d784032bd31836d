"""A real S3-compatible server for the object-storage tests: moto's standalone server, as a process.

It speaks S3's HTTP API on a loopback port (ListObjectsV2 pages, conditional PUTs with
If-None-Match, multipart uploads); the scorer reaches it the way a user points it at MinIO or
another S3-compatible store, through the standard AWS_ENDPOINT_URL_S3 variable, with dummy
credentials from the standard AWS_* variables.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import httpx

from tests.gate import wait_for
from vitserve.service.launcher import free_port


class S3Server:
    """One moto server process; `env` is what a client needs to use it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "AWS_ENDPOINT_URL_S3": self.url,
            "AWS_ACCESS_KEY_ID": "vitserve-test",
            "AWS_SECRET_ACCESS_KEY": "vitserve-test",
            "AWS_DEFAULT_REGION": "us-east-1",
            # No EC2 metadata lookups for credentials or region while testing.
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        self.log_path = Path(tempfile.gettempdir()) / f"vitserve-moto-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> S3Server:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._answers, f"moto's S3 server on {self.url} (log: {self.log_path})", timeout_s=60)
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"moto's server exited: {self.log_path.read_text()[-2000:]}")
        try:
            return httpx.get(f"{self.url}/", timeout=2).status_code < 500
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)

    def client(self) -> Any:
        """A boto3 client of the server: the tests' own way to put and inspect objects."""
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
        )


@contextmanager
def running_s3_server() -> Iterator[S3Server]:
    server = S3Server()
    try:
        yield server.start()
    finally:
        server.stop()
