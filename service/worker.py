"""One API worker's objects, built at its start-up: the model, the flows, the classify endpoint, the
request log; what the front door and the routes are handed.

service/app.py imports this inside the worker only: BentoML's arbiter imports app.py to read the
service's configuration, and everything here (numpy, Pillow, ONNX Runtime) would only swell a
process that never serves a request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vitserve.runtime.cpus import cpu_budget
from vitserve.runtime.decode import DecodeLimits
from vitserve.service.flow.admission import Admission
from vitserve.service.flow.classify import ClassifyFlow, Model
from vitserve.service.flow.explain import Explainer, ExplainFlow
from vitserve.service.observe.logs import RequestLog
from vitserve.service.observe.metrics import ServiceMetrics
from vitserve.service.settings import Settings
from vitserve.service.v2.protocol import V2Protocol
from vitserve.service.web.endpoints import ClassifyEndpoint

if TYPE_CHECKING:
    from starlette.requests import Request

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Worker:
    """What the front door and the routes (service/web/routes.py) are handed."""

    settings: Settings
    flow: ClassifyFlow
    endpoint: ClassifyEndpoint  # POST /classify and /classify_batch, which the front door serves
    explain_flow: ExplainFlow
    log: RequestLog
    v2: V2Protocol  # the Open Inference Protocol: REST infer (served by the front door too) and gRPC


def worker_of(request: Request) -> Worker:
    """The worker's objects, for a route: handed over through `app.state` (web/routes.py's install_routes)."""
    return request.app.state.vitserve  # type: ignore[no-any-return]


def load_model(settings: Settings, metrics: ServiceMetrics) -> Model:
    """In this process, or (several API workers) the model server's, reached over its socket."""
    if settings.api_workers > 1:
        from vitserve.service.model.channel import RemoteModel, read_hello

        # The hello frame carries the artifact's metadata and what the session runs on; the model
        # server may still be loading it.
        hello = read_hello(settings.model_socket, deadline_s=5 * settings.request_timeout_s)
        return RemoteModel(settings.model_socket, hello, attempts=3, on_retry=metrics.inference_retries.inc)
    from vitserve.service.model.local import LocalModel

    model = LocalModel(settings, observer=metrics)  # loads and warms up the session: seconds
    metrics.inference_worker_starts.inc()
    metrics.record_model(model)
    return model


def build_worker(settings: Settings) -> Worker:
    metrics = ServiceMetrics.create()
    model = load_model(settings, metrics)
    decode_threads = settings.decode_pool_size(cpu_budget())
    log.info("%d decoding thread(s) per API worker", decode_threads)
    admission = Admission(settings.max_in_flight, metrics.in_flight_images)
    limits = DecodeLimits(max_bytes=settings.max_body_bytes, max_pixels=settings.max_pixels)
    flow = ClassifyFlow(model, admission, metrics, limits, decode_threads, settings.retry_after_s)
    # Loads its own model on the first /explain.
    explainer = Explainer(
        settings.model_dir, model.metadata, settings.explain_threads, settings.explain_max_waiting
    )
    explain_flow = ExplainFlow(explainer, admission, metrics, limits, settings.retry_after_s)
    return Worker(
        settings,
        flow,
        ClassifyEndpoint(flow, settings),
        explain_flow,
        RequestLog(metrics, log_access=settings.access_log),
        V2Protocol(flow, settings),
    )
