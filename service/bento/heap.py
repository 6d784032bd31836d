"""Keep Python's full garbage collections off the request path by freezing the start-up heap.

A worker imports bentoml, FastAPI, pydantic, OpenTelemetry, numpy and ONNX Runtime's bindings before
it serves anything: hundreds of thousands of objects that live as long as the process. CPython's
generation-2 collection walks all of them every time it runs, and under a flood those pauses of the
event loop were the whole p99 of shed answers (docs/reliability.md). `gc.freeze()`
moves everything alive at that moment into a permanent generation the collector skips; what
requests allocate is still collected as before.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


def freeze_startup_heap(worker: str) -> int:
    """Collect once, then freeze what survives; returns how many objects were frozen."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info(
        "%s: froze %d start-up objects out of the garbage collector's reach (%.0f ms)",
        worker,
        frozen,
        1000 * (time.perf_counter() - started),
    )
    return frozen
