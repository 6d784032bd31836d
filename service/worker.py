"""One API worker's objects, built at its start-up: the model, the classify flow, the explainer, and
the answers the front door asks for.

service/app.py imports this inside the worker only: BentoML's arbiter imports app.py to read the
service's configuration, and everything here (numpy, Pillow, ONNX Runtime) would only swell a
process that never serves a request.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from vitserve.runtime.cpus import cpu_budget
from vitserve.runtime.decode import DecodeLimits
from vitserve.service.admission import Admission
from vitserve.service.classify import ClassifyFlow, Model
from vitserve.service.classify_http import ClassifyEndpoint
from vitserve.service.explain import Explainer
from vitserve.service.front_door import OVERLOADED, Refusal, Scope
from vitserve.service.logs import ACCESS_LOGGER
from vitserve.service.metrics import ServiceMetrics
from vitserve.service.settings import Settings
from vitserve.service.v2.paths import infer_model, route_label
from vitserve.service.v2.protocol import V2Protocol
from vitserve.service.v2.tensors import v2_refusal_body

log = logging.getLogger(__name__)
access_log = logging.getLogger(ACCESS_LOGGER)
SHED_LOG_PERIOD_S = 1.0


class Gatekeeper:
    """The front door's questions, answered by the classify flow; and what BentoML's stack would record.

    The access log keeps BentoML's line format (`(status=429)`), so that a log search written for
    BentoML's lines still finds the classify requests. Requests shed with 429 get one summary line per
    `SHED_LOG_PERIOD_S` instead of a line each: under a flood a line per refusal cost the worker more
    GIL time than the refusals themselves (docs/reliability.md), and the metrics count each one.
    """

    def __init__(self, flow: ClassifyFlow, log_access: bool) -> None:
        self.flow = flow
        self.log_access = log_access
        self.shed_unlogged = 0

    def _log_shed(self) -> None:
        access_log.info(
            "shed %d classify request(s) (status=429) in the last %.0f s",
            self.shed_unlogged,
            SHED_LOG_PERIOD_S,
        )
        self.shed_unlogged = 0

    def refusal(self, path: str, requests_in_progress: int) -> Refusal | None:
        error = self.flow.refusal(requests_in_progress)
        if error is None:
            return None
        self.flow.metrics.rejected(error.reason)
        body = error.body() if infer_model(path) is None else v2_refusal_body(error)
        return Refusal(error.status, body, error.headers())

    def request_done(self, scope: Scope, status: int, seconds: float) -> None:
        self.flow.metrics.request_done(route_label(scope["path"]), status, seconds)
        if not (self.log_access and access_log.isEnabledFor(logging.INFO)):
            return
        if status == OVERLOADED:
            self.shed_unlogged += 1
            if self.shed_unlogged == 1:  # the first of a period: its line goes out at the period's end
                asyncio.get_running_loop().call_later(SHED_LOG_PERIOD_S, self._log_shed)
        else:
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


@dataclass(frozen=True)
class Worker:
    """What the routes (service/context.py) and the front door are handed."""

    settings: Settings
    flow: ClassifyFlow
    endpoint: ClassifyEndpoint  # POST /classify and /classify_batch, which the front door serves
    explainer: Explainer
    gatekeeper: Gatekeeper
    v2: V2Protocol  # the Open Inference Protocol: REST infer (served by the front door too) and gRPC


def load_model(settings: Settings, metrics: ServiceMetrics) -> Model:
    """In this process, or (several API workers) the model server's, reached over its socket."""
    if settings.api_workers > 1:
        from vitserve.service.model_channel import RemoteModel, read_hello

        # The hello frame carries the artifact's metadata and what the session runs on; the model
        # server may still be loading it.
        hello = read_hello(settings.model_socket, deadline_s=5 * settings.request_timeout_s)
        return RemoteModel(settings.model_socket, hello, attempts=3, on_retry=metrics.inference_retries.inc)
    from vitserve.service.model import LocalModel

    model = LocalModel(settings, observer=metrics)  # loads and warms up the session: seconds
    metrics.inference_worker_starts.inc()
    metrics.record_model(model)
    return model


def build_worker(settings: Settings) -> Worker:
    metrics = ServiceMetrics.create()
    model = load_model(settings, metrics)
    decode_threads = settings.decode_pool_size(cpu_budget())
    log.info("%d decoding thread(s) per API worker", decode_threads)
    flow = ClassifyFlow(
        model,
        Admission(settings.max_in_flight, metrics.in_flight_images),
        metrics,
        DecodeLimits(max_bytes=settings.max_body_bytes, max_pixels=settings.max_pixels),
        decode_threads=decode_threads,
        retry_after_s=settings.retry_after_s,
    )
    explainer = Explainer(settings.model_dir, model.metadata)  # loads its own model on the first /explain
    gatekeeper = Gatekeeper(flow, log_access=bool(settings.access_log))
    v2 = V2Protocol(flow, settings)
    return Worker(settings, flow, ClassifyEndpoint(flow, settings), explainer, gatekeeper, v2)
