"""A real Azure Blob Storage-compatible server for the object-storage tests: Azurite, Microsoft's
emulator, as a process (Node.js, from the npm registry into build/azurite on first use).

The scorer reaches it through the standard AZURE_STORAGE_CONNECTION_STRING variable, with Azurite's
well-known development account (published by Microsoft for the emulator; it opens nothing else).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.gate import wait_for
from vitserve.service.launcher import free_port

REPO = Path(__file__).resolve().parents[2]
AZURITE_VERSION = "3.37.0"
INSTALL = REPO / "build" / "azurite"
BINARY = INSTALL / "node_modules" / ".bin" / "azurite-blob"
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def install_azurite() -> Path:
    """build/azurite/node_modules/.bin/azurite-blob, installed with npm if it is not there yet."""
    if not BINARY.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("the Azure tests need Node.js and npm (Debian: apt-get install nodejs npm)")
        subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(INSTALL),
                "--no-audit",
                "--no-fund",
                f"azurite@{AZURITE_VERSION}",
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
    return BINARY


class AzureServer:
    """One Azurite blob service, data in a temporary folder; `env` is what a client needs to use it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/{DEV_ACCOUNT}"
        self.env = {
            "AZURE_STORAGE_CONNECTION_STRING": (
                f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
                f"BlobEndpoint={self.url};"
            )
        }
        self.data = tempfile.TemporaryDirectory(prefix="vitserve-azurite-")
        self.log_path = Path(tempfile.gettempdir()) / f"vitserve-azurite-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AzureServer:
        command = [str(install_azurite()), "--blobHost", "127.0.0.1", "--blobPort", str(self.port)]
        command += ["--location", self.data.name, "--skipApiVersionCheck", "--loose"]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self._answers, f"Azurite on {self.url} (log: {self.log_path})", timeout_s=60)
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"Azurite exited: {self.log_path.read_text()[-2000:]}")
        try:
            httpx.get(self.url, timeout=2)
        except httpx.TransportError:
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # it waits for idle keep-alive connections to close
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self.data.cleanup()


@contextmanager
def running_azure_server() -> Iterator[AzureServer]:
    server = AzureServer()
    try:
        yield server.start()
    finally:
        server.stop()
