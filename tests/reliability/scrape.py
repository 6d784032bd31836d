"""Read one series from a running server's /metrics (Prometheus text format)."""

from __future__ import annotations

import httpx


def metric(url: str, series: str) -> float:
    """The sum of one series over every worker's samples on /metrics."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.rpartition(" ")[0] == series:
            total += float(line.rsplit(" ", 1)[1])
    return total
