"""vitserve's loggers under BentoML's server logging, and the access log written off the event loop."""

from __future__ import annotations

import atexit
import logging
import queue
from logging.handlers import QueueHandler, QueueListener

ACCESS_LOGGER = "vitserve.access"
ACCESS_QUEUE_SIZE = 10_000  # lines waiting for the writer thread; past that new lines are dropped

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

    Under load the write of each line to stderr was a fifth of the event loop's busy time (py-spy,
    docs/benchmarks.md): every write releases the GIL, and the loop then waits for a decode thread to
    hand it back. The lines keep their format and go to the same handlers as before; call once per
    worker, after `enable_vitserve_logging`.
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
