"""One hardened server shared by the hostile-input, API-fuzzing and no-fetch tests.

Its limits are shrunk so the tests reach them quickly: a 3 s body deadline, 8 images in flight.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import ServerProcess, running_server

HARDENED_ENV = {"VITSERVE_BODY_TIMEOUT_S": "3", "VITSERVE_MAX_IN_FLIGHT": "8"}


@pytest.fixture(scope="package")
def hardened_server() -> Iterator[ServerProcess]:
    with running_server(env=HARDENED_ENV) as server:
        yield server
