"""Shared fixtures: a real vitserve server (BentoML, ONNX Runtime) on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import running_server


@pytest.fixture(scope="session")
def vitserve_server() -> Iterator[str]:
    """Base URL of a real server on the shipped default model, shared by the whole session."""
    with running_server() as server:
        yield server.url
