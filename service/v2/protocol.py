"""One API worker's v2 surface: the REST infer endpoint, the gRPC server, server metadata and readiness."""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from vitserve.service.flow.classify import ClassifyFlow
from vitserve.service.settings import Settings
from vitserve.service.v2.http import InferEndpoint
from vitserve.service.v2.model import ModelSpec

if TYPE_CHECKING:
    from vitserve.service.v2.grpc_server import GrpcServer

log = logging.getLogger(__name__)
SERVER_NAME = "vitserve"
# The protocol extensions served: Triton's binary tensor data (REST) and classification extensions.
EXTENSIONS = ("binary_tensor_data", "classification")


def server_version() -> str:
    try:
        return version("vitserve")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class V2Protocol:
    """Built with the worker; the gRPC server starts on the worker's event loop (`start_grpc`)."""

    def __init__(self, flow: ClassifyFlow, settings: Settings) -> None:
        self.flow = flow
        self.settings = settings
        self.spec = ModelSpec(flow.metadata, settings.max_batch_images)
        self.endpoint = InferEndpoint(flow, settings, self.spec)
        self.grpc: GrpcServer | None = None
        self._serving: Callable[[], bool] = lambda: True

    def ready_when(self, serving: Callable[[], bool]) -> None:
        """What else readiness needs: the worker not draining after SIGTERM."""
        self._serving = serving

    def ready(self) -> bool:
        """Ready to infer on both ports: serving, and the gRPC server listening unless it is turned off."""
        grpc_up = self.settings.grpc_port == 0 or (self.grpc is not None and self.grpc.started)
        return grpc_up and self._serving()

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": server_version(), "extensions": list(EXTENSIONS)}

    async def start_grpc(self) -> None:
        if self.settings.grpc_port == 0:
            log.info("gRPC is off (VITSERVE_GRPC_PORT=0)")
            return
        from vitserve.service.v2.grpc_server import GrpcServer

        self.grpc = GrpcServer(self)
        await self.grpc.start(self.settings.host, self.settings.grpc_port)

    async def stop_grpc(self) -> None:
        """Refuse new calls and let those in flight finish, up to the request timeout."""
        if self.grpc is not None:
            await self.grpc.stop(grace_s=self.settings.request_timeout_s)
