"""The BentoML service: wiring only. `bentoml serve vitserve.service.app:VitServe` (or `vitserve serve`).

One image, socket to JSON (README, "How a request is served"):
  uvicorn → front door (web/door.py: 429 if full, else straight to the endpoint)
  → classify endpoint (web/endpoints.py: parse the body, web/parsing.py) → ClassifyFlow
  (flow/classify.py: admit (flow/admission.py), decode small images on the loop, large ones in a
  thread) → the model (model/local.py: the batcher, runtime/batcher.py, one ONNX Runtime call for
  the images of concurrent requests) → top-k (runtime/predictions.py) → JSON, or an error answer
  rendered once (flow/errors.py); recorded on the way out (observe/).
Everything else (/explain, /model, probes, /metrics, /docs.json) crosses BentoML's own stack to the
routes in web/routes.py.

BentoML's arbiter imports this module too, to read the service's configuration: what only a worker
needs (the routes, numpy, Pillow, ONNX Runtime) is imported in the worker, in `VitServe.__init__`.
"""

from __future__ import annotations

import bentoml
from fastapi import FastAPI

from vitserve.service.bento.heap import freeze_startup_heap
from vitserve.service.bento.outer_app import wrap_service_app
from vitserve.service.bento.request_timeout import cancel_request_timers
from vitserve.service.bento.shutdown import GracefulShutdown, after_delay
from vitserve.service.model.gil import follow_the_model
from vitserve.service.model.server import model_server_service
from vitserve.service.observe.logs import enable_vitserve_logging, write_access_log_in_a_thread
from vitserve.service.settings import API_SERVICE_NAME, Settings
from vitserve.service.supervisor import keep_ready_pipe_from_children, tell_supervisor_ready
from vitserve.service.v2.paths import DoorPaths
from vitserve.service.web.door import FrontDoor

keep_ready_pipe_from_children()
# BentoML reads a service's worker count and timeout from its decorator, at import: the settings are
# read here, once, and passed to everything below.
SETTINGS = Settings.from_env()
# Mounted now, given its routes by each worker at start-up (web/routes.py's install_routes).
HTTP_APP = FastAPI(
    title="vitserve",
    description="Vision Transformer image classification with adaptive batching.",
    docs_url=None,
    redoc_url=None,
)
DOOR = FrontDoor(timeout_s=SETTINGS.request_timeout_s, shed_delay_s=SETTINGS.shed_delay_ms / 1000)


@bentoml.service(
    name=API_SERVICE_NAME,
    workers=SETTINGS.api_workers,
    traffic={"timeout": SETTINGS.request_timeout_s},
)
@bentoml.asgi_app(HTTP_APP, path="/")
class VitServe:
    if SETTINGS.api_workers > 1:  # the images of every API worker meet in the model server's batches
        model_server = bentoml.depends(model_server_service(SETTINGS, API_SERVICE_NAME))

    def __init__(self) -> None:
        from vitserve.service.v2.http import Beside
        from vitserve.service.web.endpoints import DIRECT_PATHS
        from vitserve.service.web.routes import install_routes
        from vitserve.service.worker import build_worker

        enable_vitserve_logging()
        if SETTINGS.access_log:
            write_access_log_in_a_thread()
        worker = build_worker(SETTINGS)
        follow_the_model(SETTINGS.gil_switch_us, worker.flow.model.info())
        self.flow = worker.flow
        self.v2 = worker.v2
        install_routes(HTTP_APP, worker)
        # The classify paths and every v2 infer path.
        DOOR.open(DoorPaths(DIRECT_PATHS), Beside(worker.endpoint, worker.v2.endpoint), worker.log)
        self.shutdown = GracefulShutdown(
            "API worker", after_delay(SETTINGS.shutdown_delay_s), deadline_s=SETTINGS.shutdown_delay_s
        )
        self.v2.ready_when(lambda: not self.shutdown.draining)

    def __is_ready__(self) -> bool:
        # The model was loaded and warmed up in __init__. After SIGTERM readiness fails while the
        # worker still serves (bento/shutdown.py). The gRPC port must be listening too (unless off).
        return self.v2.ready()

    @bentoml.on_startup
    async def _start(self) -> None:
        # One hook, so that the order is written here (BentoML runs several in the order of their names).
        freeze_startup_heap("API worker")  # __init__ has loaded the model and warmed its session
        self.shutdown.install()
        await self.v2.start_grpc()  # on this worker's event loop, beside the HTTP routes
        tell_supervisor_ready()  # last: from here on the worker's death is a crash to recover from

    @bentoml.on_shutdown
    async def _close(self) -> None:
        await self.v2.stop_grpc()  # its calls in flight finish before the model closes
        self.flow.close()


# BentoML internals patched at start-up, each in its own module, each checking the pinned release.
cancel_request_timers()
wrap_service_app(VitServe, DOOR.in_front_of)
