"""The BentoML service: wiring only. `bentoml serve vitserve.service.app:VitServe` (or `vitserve serve`).

One image, socket to JSON:
  uvicorn → FrontDoor (service/front_door.py: 429 if full, else straight to the routes)
  → POST /classify (service/api.py: parse the body) → ClassifyFlow (service/classify.py: admit,
  decode in a thread, batch) → Batcher (runtime/batcher.py: the images of concurrent requests, one
  ONNX Runtime call in the model's thread) → top-k (runtime/predictions.py) → JSON.
Everything else (/explain, /model, probes, /metrics, /docs.json) crosses BentoML's own stack.
"""

from __future__ import annotations

import logging

import bentoml

from vitserve.service import api
from vitserve.service.admission import Admission
from vitserve.service.classify import ClassifyFlow, Model
from vitserve.service.context import RouteContext, hand_over
from vitserve.service.explain import Explainer
from vitserve.service.front_door import FrontDoor, Refusal, Scope
from vitserve.service.heap import freeze_startup_heap
from vitserve.service.logs import enable_vitserve_logging
from vitserve.service.metrics import ServiceMetrics
from vitserve.service.model_channel import RemoteModel, read_hello
from vitserve.service.model_server import model_server_service
from vitserve.service.outer_app import wrap_service_app
from vitserve.service.request_timeout import cancel_request_timers
from vitserve.service.settings import Settings
from vitserve.service.shutdown import GracefulShutdown, after_delay

access_log = logging.getLogger("vitserve.access")

API_SERVICE_NAME = "vitserve"
# BentoML reads a service's worker count and timeout from its decorator, at import: the settings are
# read here, once, and passed to everything below.
SETTINGS = Settings.from_env()
DOOR = FrontDoor(api.app, api.CLASSIFY_PATHS, timeout_s=SETTINGS.request_timeout_s)


class Gatekeeper:
    """The front door's questions, answered by the classify flow; and what BentoML's stack would record.

    The access log keeps BentoML's line format (`(status=429,...)`), so that a log search written
    for BentoML's lines still finds the classify requests.
    """

    def __init__(self, flow: ClassifyFlow) -> None:
        self.flow = flow

    def refusal(self, path: str, requests_in_progress: int) -> Refusal | None:
        error = self.flow.refusal(requests_in_progress)
        if error is None:
            return None
        self.flow.metrics.rejected(error.reason)
        return Refusal(error.status, error.body(), error.headers())

    def request_done(self, scope: Scope, status: int, seconds: float) -> None:
        self.flow.metrics.request_done(scope["path"], status, seconds)
        if access_log.isEnabledFor(logging.INFO):
            client = scope.get("client") or ("-", 0)
            access_log.info(
                "%s:%s (scheme=%s,method=%s,path=%s) (status=%d) %.3fms",
                *client,
                scope.get("scheme", "http"),
                scope["method"],
                scope["path"],
                status,
                1000 * seconds,
            )


@bentoml.service(
    name=API_SERVICE_NAME,
    workers=SETTINGS.api_workers,
    traffic={"timeout": SETTINGS.request_timeout_s},
)
@bentoml.asgi_app(api.app, path="/")
class VitServe:
    if SETTINGS.api_workers > 1:  # the images of every API worker meet in the model server's batches
        model_server = bentoml.depends(model_server_service(SETTINGS, API_SERVICE_NAME))

    def __init__(self) -> None:
        enable_vitserve_logging()
        settings = SETTINGS
        metrics = ServiceMetrics.create()
        model = self._load_model(settings, metrics)
        meta = model.metadata
        self.flow = ClassifyFlow(
            model,
            Admission(settings.max_in_flight, metrics.in_flight_images),
            metrics,
            settings.decode_limits(),
            decode_threads=settings.decode_threads,
            retry_after_s=settings.retry_after_s,
        )
        explainer = Explainer(settings.model_dir, meta)  # loads its own model on the first /explain
        hand_over(api.app, RouteContext(settings, self.flow, explainer))
        DOOR.open(Gatekeeper(self.flow))
        self.shutdown = GracefulShutdown(
            "API worker", after_delay(settings.shutdown_delay_s), deadline_s=settings.shutdown_delay_s
        )

    @staticmethod
    def _load_model(settings: Settings, metrics: ServiceMetrics) -> Model:
        if settings.api_workers > 1:
            # The session lives in the model server (service/model_server.py); its hello frame
            # carries the artifact's metadata and what the session runs on.
            hello = read_hello(settings.model_socket, deadline_s=5 * settings.request_timeout_s)
            return RemoteModel(
                settings.model_socket, hello, attempts=3, on_retry=metrics.inference_retries.inc
            )
        # Imported here, in the worker: BentoML's arbiter process imports this module too, and ONNX
        # Runtime would add ~45 MiB to a process that never runs a model.
        from vitserve.service.model import LocalModel

        model = LocalModel(settings, observer=metrics)  # loads and warms up the session: seconds
        metrics.inference_worker_starts.inc()
        metrics.record_model(model)
        return model

    def __is_ready__(self) -> bool:
        # The model was loaded and warmed up in __init__. After SIGTERM readiness fails while the
        # worker still serves (service/shutdown.py).
        return not self.shutdown.draining

    @bentoml.on_startup
    def _install_shutdown(self) -> None:
        self.shutdown.install()

    @bentoml.on_startup
    def _freeze_heap(self) -> None:
        freeze_startup_heap("API worker")  # __init__ has loaded the model and warmed its session

    @bentoml.on_shutdown
    def _close(self) -> None:
        self.flow.close()


# BentoML internals patched at start-up, each in its own module, each checking the pinned release.
cancel_request_timers()
wrap_service_app(VitServe, DOOR.in_front_of)
