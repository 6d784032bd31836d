"""vitserve's loggers under BentoML's server logging, the access log written off the event loop, and the
record of each request the front door answers (BentoML's stack, which would record it, never sees them).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import queue
from collections.abc import MutableMapping
from logging.handlers import QueueHandler, QueueListener
from typing import TYPE_CHECKING, Any

from vitserve.service.flow.errors import OVERLOADED
from vitserve.service.v2.paths import route_label

if TYPE_CHECKING:
    from vitserve.service.observe.metrics import ServiceMetrics

ACCESS_LOGGER = "vitserve.access"
ACCESS_QUEUE_SIZE = 10_000  # lines waiting for the writer thread; past that new lines are dropped
SHED_LOG_PERIOD_S = 1.0
access_log = logging.getLogger(ACCESS_LOGGER)

log = logging.getLogger(__name__)


def enable_vitserve_logging() -> None:
    """Call in a worker after BentoML configured logging: else start-up facts and the access log vanish.

    BentoML's server logging sets the root logger to WARNING and only `bentoml` to INFO.
    """
    logging.getLogger("vitserve").setLevel(logging.INFO)


class _DroppingQueueHandler(QueueHandler):
    """Never blocks the loop: a full queue (a stalled log reader) drops lines and says so now and then."""

    dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("access log writer is behind: %d lines dropped so far", self.dropped)


def write_access_log_in_a_thread() -> None:
    """Hand access-log lines to a writer thread instead of writing them on the event loop.

    Under load the write of each line to stderr was a large share of the event loop's busy time
    (py-spy; docs/benchmarks.md, "Where the time goes"): every write releases the GIL, and the loop then
    waits for a decode thread to hand it back. The lines keep their format and go to the same
    handlers as before; call once per worker, after `enable_vitserve_logging`.
    """
    access = logging.getLogger(ACCESS_LOGGER)
    if any(isinstance(h, QueueHandler) for h in access.handlers):
        return
    handlers: list[logging.Handler] = []
    node: logging.Logger | None = access
    while node is not None:  # the handlers propagation would have reached, in its order
        handlers.extend(node.handlers)
        node = node.parent if node.propagate else None
    lines: queue.Queue[logging.LogRecord] = queue.Queue(ACCESS_QUEUE_SIZE)
    listener = QueueListener(lines, *handlers, respect_handler_level=True)
    access.handlers = [_DroppingQueueHandler(lines)]
    access.propagate = False
    listener.start()
    atexit.register(listener.stop)  # writes what is still queued


class RequestLog:
    """What BentoML's stack would record of a request the front door answered: metrics and an access line.

    The access log keeps BentoML's line format (`(status=429)`), so that a log search written for
    BentoML's lines still finds these requests. Requests shed with 429 get one summary line per
    `SHED_LOG_PERIOD_S` instead of a line each: under a flood a line per refusal cost the worker more
    GIL time than the refusals themselves (docs/reliability.md), and the metrics count each one.
    """

    def __init__(self, metrics: ServiceMetrics, log_access: bool) -> None:
        self.metrics = metrics
        self.log_access = log_access
        self.shed_unlogged = 0

    def _log_shed(self) -> None:
        access_log.info(
            "shed %d classify request(s) (status=429) in the last %.0f s",
            self.shed_unlogged,
            SHED_LOG_PERIOD_S,
        )
        self.shed_unlogged = 0

    def request_done(self, scope: MutableMapping[str, Any], status: int, seconds: float) -> None:
        self.metrics.request_done(route_label(scope["path"]), status, seconds)
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
