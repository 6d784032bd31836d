"""The model server: one process holding the ONNX Runtime session when there are several API workers.

A BentoML service of its own, declared as a dependency of the API service only in that shape, so
that BentoML starts it, restarts it when it dies and asks it in readiness probes. Its work arrives
over service/model/channel.py's Unix socket, not over BentoML's HTTP: the images of every API worker
meet in its batcher (runtime/batcher.py).

Why the shape exists, and only for a GPU: one API worker parses and decodes on one event loop under one
GIL, which caps the images a process can prepare far below what one GPU runs; more pods would each
load their own copy of the model onto the GPU and split its batches. Several API workers multiply the
decoding while every image still meets one session's batches. On a small CPU, where the model and the
decoding share the same cores, it helped only a cheap model at high concurrency, at more CPU per image
and twice the memory (docs/benchmarks.md, "Several API workers"), so it is off unless
VITSERVE_API_WORKERS says; the GPU suite serves with several (`vitserve bench gpu --api-workers`, 1
for the other shape).
"""

from __future__ import annotations

import bentoml

from vitserve.service.bento.heap import freeze_startup_heap
from vitserve.service.bento.shutdown import GracefulShutdown, api_workers_gone
from vitserve.service.observe.logs import enable_vitserve_logging
from vitserve.service.observe.metrics import ServiceMetrics
from vitserve.service.settings import Settings

MODEL_SERVER_NAME = "vitserve-model"


def model_server_service(settings: Settings, api_service_name: str) -> type:
    """The BentoML service class for `settings` (its decorator needs the timeout at import)."""

    @bentoml.service(
        name=MODEL_SERVER_NAME,
        workers=1,
        traffic={"timeout": settings.request_timeout_s},
        logging={"access": {"enabled": False}},
    )
    class ModelServer:
        def __init__(self) -> None:
            # Imported in this worker only (service/app.py says why).
            from vitserve.service.model.channel import ChannelServer
            from vitserve.service.model.local import LocalModel

            enable_vitserve_logging()
            metrics = ServiceMetrics.create()
            self.model = LocalModel(settings, observer=metrics)
            metrics.inference_worker_starts.inc()
            metrics.record_model(self.model)
            self.channel = ChannelServer(self.model, settings.model_socket)
            # Serve until the API workers have drained: they still send the images they admitted.
            self.shutdown = GracefulShutdown(
                "model server",
                api_workers_gone(api_service_name),
                deadline_s=settings.shutdown_delay_s + settings.request_timeout_s + 5,
            )

        @bentoml.on_startup
        async def _listen(self) -> None:
            await self.channel.start()

        @bentoml.on_startup
        def _install_shutdown(self) -> None:
            self.shutdown.install()

        @bentoml.on_startup
        def _freeze_heap(self) -> None:
            freeze_startup_heap("model server")

        @bentoml.on_shutdown
        def _close(self) -> None:
            self.channel.close()
            self.model.close()

        @bentoml.api
        def info(self) -> dict[str, object]:
            """What the session runs on; the API workers get the same from the channel's hello."""
            return self.model.info()

    return ModelServer
