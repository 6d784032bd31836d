"""A real vitserve server on a free loopback port, on the shipped model unless told otherwise.

The process handling itself (ports, readiness, stopping a BentoML process tree) is bench/processes.py's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vitserve.bench import processes
from vitserve.bench.processes import free_port

# The shipped default model; VITSERVE_TEST_MODEL_DIR points every harness user at another export of
# the same shape.
DEFAULT_MODEL_DIR = Path(
    os.environ.get("VITSERVE_TEST_MODEL_DIR", Path(__file__).resolve().parents[1] / "models" / "digits-vit")
)
SAMPLES_DIR = DEFAULT_MODEL_DIR / "samples"

__all__ = ["DEFAULT_MODEL_DIR", "SAMPLES_DIR", "ServerProcess", "free_port", "running_server"]


class ServerProcess(processes.ServerProcess):
    """`vitserve serve` on the default model unless told otherwise, with VITSERVE_* overrides."""

    def __init__(
        self, env: dict[str, str] | None = None, model_dir: Path | None = None, log_path: Path | None = None
    ) -> None:
        # A free gRPC port unless told otherwise: servers of parallel runs must not meet on 8001.
        defaults = {
            "VITSERVE_MODEL_DIR": str(model_dir or DEFAULT_MODEL_DIR),
            "VITSERVE_GRPC_PORT": str(free_port()),
        }
        super().__init__(env={**defaults, **(env or {})}, log_path=log_path)


@contextmanager
def running_server(
    env: dict[str, str] | None = None, model_dir: Path | None = None, log_path: Path | None = None
) -> Iterator[ServerProcess]:
    with processes.running(ServerProcess(env, model_dir, log_path)) as server:
        yield server
