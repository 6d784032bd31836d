"""The one reader of a server's /metrics (Prometheus text): series, counters by label, histograms.

The server's counters run since it started; a load test or a flood wants what it caused, so its
figures are `after - before` of two scrapes around it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families


class ScrapeError(RuntimeError):
    """/metrics could not be read or lacks a metric the report relies on."""


def fetch(url: str, timeout_s: float = 10.0) -> str:
    try:
        response = httpx.get(f"{url}/metrics", timeout=timeout_s)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise ScrapeError(f"GET {url}/metrics failed: {exc}") from exc
    return response.text


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts by upper bound (the last bound is +inf), as Prometheus keeps them."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    sum: float
    count: float

    def minus(self, before: Histogram) -> Histogram:
        if self.bounds != before.bounds:
            raise ScrapeError(f"bucket bounds changed between scrapes: {before.bounds} -> {self.bounds}")
        return Histogram(
            self.bounds,
            tuple(a - b for a, b in zip(self.cumulative, before.cumulative, strict=True)),
            self.sum - before.sum,
            self.count - before.count,
        )

    def buckets(self) -> list[tuple[float, float, float]]:
        """(lower bound exclusive, upper bound inclusive, count) per bucket, not cumulative."""
        rows, lower, seen = [], 0.0, 0.0
        for bound, cumulative in zip(self.bounds, self.cumulative, strict=True):
            rows.append((lower, bound, cumulative - seen))
            lower, seen = bound, cumulative
        return rows

    def count_above(self, threshold: float) -> float:
        """Observations > threshold; threshold must be one of the bucket bounds."""
        if threshold not in self.bounds:
            raise ScrapeError(f"{threshold} is not a bucket bound of {self.bounds}")
        return self.count - self.cumulative[self.bounds.index(threshold)]


def _samples(text: str, names: set[str]) -> Iterable[tuple[str, dict[str, str], float]]:
    # Match on sample names, not family names: exporters differ on whether a counter's `# TYPE`
    # line names `x` or `x_total`, and the parser files the samples under whichever it saw.
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                yield sample.name, sample.labels, sample.value


def histogram(text: str, name: str) -> Histogram:
    """One histogram, summed over every series (worker processes, label values)."""
    by_bound: dict[float, float] = {}
    total = count = 0.0
    found = False
    for sample_name, labels, value in _samples(text, {f"{name}_bucket", f"{name}_sum", f"{name}_count"}):
        found = True
        if sample_name == f"{name}_bucket":
            bound = float(labels["le"])
            by_bound[bound] = by_bound.get(bound, 0.0) + value
        elif sample_name == f"{name}_sum":
            total += value
        elif sample_name == f"{name}_count":
            count += value
    if not found or math.inf not in by_bound:
        raise ScrapeError(f"histogram {name} is not on /metrics")
    bounds = tuple(sorted(by_bound))
    return Histogram(bounds, tuple(by_bound[b] for b in bounds), total, count)


def counter_by_label(text: str, name: str, by: str, **where: str) -> dict[str, float]:
    """A counter's value per value of label `by`, summed over processes and over the series whose other
    labels match `where`; {} before its first count."""
    totals: dict[str, float] = {}
    for _, labels, value in _samples(text, {name}):
        if by in labels and all(labels.get(k) == v for k, v in where.items()):
            totals[labels[by]] = totals.get(labels[by], 0.0) + value
    return totals


def scrape(url: str) -> dict[str, float]:
    """{series (name with labels): value}, summed over duplicate series (one per worker)."""
    series: dict[str, float] = {}
    for line in fetch(url).splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, number = line.rpartition(" ")
        series[name] = series.get(name, 0.0) + float(number)
    return series


def value(metrics: dict[str, float], pattern: str) -> float:
    """The sum of every series whose full name (labels included) matches the regular expression."""
    regex = re.compile(pattern)
    return sum(v for k, v in metrics.items() if regex.fullmatch(k))


def metric(url: str, series: str) -> float:
    """The sum of one exact series over every worker's samples; 0 where it is absent."""
    return scrape(url).get(series, 0.0)
