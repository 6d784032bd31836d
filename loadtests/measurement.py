"""One Locust run's results folder: what the runner writes into it, and reading it back for the report.

Keeping the raw files (Locust CSVs, the request log, both /metrics scrapes) lets `run.py report`
re-judge a run against other SLOs, and lets a test build a run by hand.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.stats import EndpointStats, RequestLog, Schedule, StatsError, read_locust_stats
from vitserve.harness import metrics

LOCUST_PREFIX = "locust"  # Locust writes locust_stats.csv, locust_failures.csv, ...
STATS_CSV = f"{LOCUST_PREFIX}_stats.csv"
FAILURES_CSV = f"{LOCUST_PREFIX}_failures.csv"
REQUEST_LOG = "requests.csv"
SCHEDULE = "schedule.json"
METRICS_BEFORE = "metrics_before.prom"
METRICS_AFTER = "metrics_after.prom"
MODEL = "model.json"  # GET /model of the server under test
SETUP = "setup.json"  # target URL, server settings, user classes
IMAGES_CLASSIFIED = "vitserve_images_classified_total"


@dataclass(frozen=True)
class Measurement:
    path: Path
    endpoints: list[EndpointStats]
    log: RequestLog
    schedule: Schedule
    batch_sizes: metrics.Histogram  # batches the server formed during the run
    images_classified: float
    rejected: dict[str, float]  # server-side refusals by reason, during the run
    model: dict[str, Any]
    setup: dict[str, Any]
    failures: list[tuple[str, str, int]]  # (request name, error message, occurrences)

    @classmethod
    def read(cls, path: Path) -> Measurement:
        try:
            before = (path / METRICS_BEFORE).read_text()
            after = (path / METRICS_AFTER).read_text()
            model = json.loads((path / MODEL).read_text())
            setup = json.loads((path / SETUP).read_text())
        except (OSError, ValueError) as exc:
            raise StatsError(f"{path}: incomplete results folder: {exc}") from exc
        rejected_after = metrics.counter_by_label(after, "vitserve_requests_rejected_total", "reason")
        rejected_before = metrics.counter_by_label(before, "vitserve_requests_rejected_total", "reason")
        return cls(
            path=path,
            endpoints=read_locust_stats(path / STATS_CSV),
            log=RequestLog.read(path / REQUEST_LOG),
            schedule=Schedule.read(path / SCHEDULE),
            batch_sizes=metrics.histogram(after, "vitserve_batch_size").minus(
                metrics.histogram(before, "vitserve_batch_size")
            ),
            # Labelled by prediction: a fresh server has no series yet, so sum whatever exists.
            images_classified=sum(metrics.counter_by_label(after, IMAGES_CLASSIFIED, "label").values())
            - sum(metrics.counter_by_label(before, IMAGES_CLASSIFIED, "label").values()),
            rejected={k: v - rejected_before.get(k, 0.0) for k, v in rejected_after.items()},
            model=model,
            setup=setup,
            failures=_read_failures(path / FAILURES_CSV),
        )


def _read_failures(path: Path) -> list[tuple[str, str, int]]:
    if not path.exists():
        return []  # Locust writes it only when it writes the other CSVs; a hand-built run may omit it
    with path.open(newline="") as f:
        return [(row["Name"], row["Error"], int(row["Occurrences"])) for row in csv.DictReader(f)]
