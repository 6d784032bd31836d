"""How many CPUs this process may really use, for sizing thread pools (ONNX Runtime's, decoding's).

Its own module, without onnxruntime: API workers that reach the model over a socket size their
decoding pool from it and never load the runtime.
"""

from __future__ import annotations

import os
from pathlib import Path


def cpu_budget() -> int:
    """CPUs this process may really use: the cgroup quota (containers) or the affinity mask."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit visible: the affinity mask is the budget
    return max(1, cpus)
