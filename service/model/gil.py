"""The interpreter's thread switch interval for an API worker, from what its model costs.

The event loop gives up the GIL at every socket read and write; while decode threads hold it, the loop
waits up to one switch interval to get it back (Python's default: 5 ms). A short interval helps a cheap
model, where the loop and the decoding are the cost, and hurts a costly one, where ONNX Runtime's
threads are the cost and every extra switch preempts them (docs/benchmarks.md, "How ONNX Runtime's
threads wait, and the thread switch interval"). So by default the interval follows the model.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

SHORT_SWITCH_US = 500
PYTHON_SWITCH_US = 5000
CHEAP_MODEL_MS = 2.0  # a batch of one under this: the loop and decoding are the cost, not the model


def switch_interval_us(setting_us: int, batch_one_ms: float | None) -> int:
    """VITSERVE_GIL_SWITCH_US if set (> 0); else 500 µs for a cheap model, Python's 5 ms otherwise."""
    if setting_us > 0:
        return setting_us
    if batch_one_ms is not None and batch_one_ms < CHEAP_MODEL_MS:
        return SHORT_SWITCH_US
    return PYTHON_SWITCH_US


def follow_the_model(setting_us: int, model_info: dict[str, object]) -> int:
    """Set this process's switch interval for the model described by `model_info` (GET /model's)."""
    measured = model_info.get("batch_one_ms")
    batch_one_ms = float(measured) if isinstance(measured, (int, float)) else None
    interval_us = switch_interval_us(setting_us, batch_one_ms)
    sys.setswitchinterval(interval_us / 1e6)
    log.info("thread switch interval %d µs (a batch of one: %s ms)", interval_us, measured)
    return interval_us
