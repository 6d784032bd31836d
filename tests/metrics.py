"""Reading a running server's /metrics (Prometheus text format) in tests: one parser for all suites."""

from __future__ import annotations

import re

import httpx


def scrape(url: str) -> dict[str, float]:
    """{series (name with labels): value}, summed over duplicate series (one per worker)."""
    series: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        series[name] = series.get(name, 0.0) + float(value)
    return series


def value(metrics: dict[str, float], pattern: str) -> float:
    """The sum of every series whose full name (labels included) matches the regular expression."""
    regex = re.compile(pattern)
    return sum(v for k, v in metrics.items() if regex.fullmatch(k))


def metric(url: str, series: str) -> float:
    """The sum of one exact series over every worker's samples; 0 where it is absent."""
    return scrape(url).get(series, 0.0)
