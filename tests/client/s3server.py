"""A real S3-compatible server for the object-storage tests: moto's standalone server, as a process.

It speaks S3's HTTP API on a loopback port (ListObjectsV2 pages, conditional PUTs with
If-None-Match, multipart uploads); the scorer reaches it the way a user points it at MinIO or
another S3-compatible store, through the standard AWS_ENDPOINT_URL_S3 variable, with dummy
credentials from the standard AWS_* variables.
"""

from __future__ import annotations

import sys
from typing import Any

import boto3

from tests.client.emulator import EmulatorProcess


class S3Server(EmulatorProcess):
    name = "moto"

    def __init__(self) -> None:
        super().__init__()
        self.env = {
            "AWS_ENDPOINT_URL_S3": self.url,
            "AWS_ACCESS_KEY_ID": "vitserve-test",
            "AWS_SECRET_ACCESS_KEY": "vitserve-test",
            "AWS_DEFAULT_REGION": "us-east-1",
            # No EC2 metadata lookups for credentials or region while testing.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def client(self) -> Any:
        """A boto3 client of the server: the tests' own way to put and inspect objects."""
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
        )
