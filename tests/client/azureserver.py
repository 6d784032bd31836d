"""A real Azure Blob Storage-compatible server for the object-storage tests: Azurite, Microsoft's
emulator, as a process (Node.js, from the npm registry into build/azurite on first use).

The scorer reaches it through the standard AZURE_STORAGE_CONNECTION_STRING variable, with Azurite's
well-known development account (published by Microsoft for the emulator; it opens nothing else).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.client.emulator import EmulatorProcess

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


class AzureServer(EmulatorProcess):
    """One Azurite blob service, data in a temporary folder."""

    name = "azurite"

    def __init__(self) -> None:
        super().__init__()
        self.account_url = f"{self.url}/{DEV_ACCOUNT}"
        self.env = {
            "AZURE_STORAGE_CONNECTION_STRING": (
                f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
                f"BlobEndpoint={self.account_url};"
            )
        }
        self.data = tempfile.TemporaryDirectory(prefix="vitserve-azurite-")

    def command(self) -> list[str]:
        command = [str(install_azurite()), "--blobHost", "127.0.0.1", "--blobPort", str(self.port)]
        return [*command, "--location", self.data.name, "--skipApiVersionCheck", "--loose"]

    def stop(self) -> None:
        super().stop()
        self.data.cleanup()
