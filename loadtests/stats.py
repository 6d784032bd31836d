"""Locust's output -> per-endpoint and per-ramp-step statistics.

Per endpoint, over the whole run: Locust's own `*_stats.csv`. Per ramp step: the request log that
loadtests/locustfile.py writes (one row per request), cut by the step schedule. Locust's CSV history
cannot give per-step percentiles: its "current" percentiles cover a sliding 10 s window.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

AGGREGATED = "Aggregated"


class StatsError(ValueError):
    """A results file is missing or malformed."""


@dataclass(frozen=True)
class EndpointStats:
    name: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


def read_locust_stats(path: Path) -> list[EndpointStats]:
    """Rows of Locust's `<prefix>_stats.csv`, the Aggregated row last."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        return [
            EndpointStats(
                name=row["Name"],
                requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]),
                rps=float(row["Requests/s"]),
                p50_ms=_ms(row["50%"]),
                p95_ms=_ms(row["95%"]),
                p99_ms=_ms(row["99%"]),
            )
            for row in rows
        ]
    except (OSError, KeyError, ValueError) as exc:
        raise StatsError(f"{path}: not a Locust stats CSV: {exc}") from exc


def _ms(text: str) -> float:
    return float("nan") if text in ("", "N/A") else float(text)


def parse_users(text: str, max_users: int = 256) -> tuple[int, ...]:
    """ "1,4,16" -> (1, 4, 16): the user count of each ramp step."""
    try:
        users = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise StatsError(f"users must be comma-separated integers, not {text!r}") from exc
    if not users or min(users) < 1 or max(users) > max_users:
        raise StatsError(f"users must be between 1 and {max_users}, got {text!r}")
    return users


@dataclass(frozen=True)
class Schedule:
    """The ramp as run: `users[i]` held for `step_seconds`; the first `settle_seconds` of each step,
    while users spawn and queues fill, are left out of its statistics."""

    users: tuple[int, ...]
    step_seconds: float
    settle_seconds: float

    def __post_init__(self) -> None:
        if not self.users or self.settle_seconds >= self.step_seconds:
            raise StatsError(f"a schedule needs steps and settle_seconds < step_seconds: {self}")

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> Schedule:
        try:
            raw = json.loads(path.read_text())
            return cls(
                tuple(int(u) for u in raw["users"]), float(raw["step_seconds"]), float(raw["settle_seconds"])
            )
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise StatsError(f"{path}: not a step schedule: {exc}") from exc


@dataclass(frozen=True)
class RequestLog:
    """Columns of the request log: completion time since start, request name, latency, success."""

    elapsed_s: np.ndarray
    names: np.ndarray
    response_ms: np.ndarray
    status: np.ndarray  # HTTP status; 0 when no response came back
    ok: np.ndarray

    @classmethod
    def read(cls, path: Path) -> RequestLog:
        try:
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            return cls(
                elapsed_s=np.array([float(r["elapsed_s"]) for r in rows], dtype=np.float64),
                names=np.array([r["name"] for r in rows], dtype=object),
                response_ms=np.array([float(r["response_time_ms"]) for r in rows], dtype=np.float64),
                status=np.array([int(r["status"]) for r in rows], dtype=np.int64),
                ok=np.array([r["ok"] == "1" for r in rows], dtype=bool),
            )
        except (OSError, KeyError, ValueError) as exc:
            raise StatsError(f"{path}: not a request log: {exc}") from exc

    def names_seen(self) -> list[str]:
        return sorted(set(self.names.tolist()))


@dataclass(frozen=True)
class StepStats:
    users: int
    seconds: float  # measured window (the step minus its settle time)
    requests: int
    failures: int
    shed: int  # 429 overloaded: the server refusing load by design, counted among the failures
    rps: float  # successful responses per second
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


def _percentile(values: np.ndarray, q: float) -> float:
    # Nearest rank, as latency percentiles are usually read: p99 is a latency some request really had.
    return float(np.percentile(values, q, method="inverted_cdf")) if values.size else float("nan")


def step_stats(log: RequestLog, schedule: Schedule, name: str | None = None) -> list[StepStats]:
    """Statistics of each ramp step, for one request name or (None) for every request."""
    steps = []
    for i, users in enumerate(schedule.users):
        start = i * schedule.step_seconds + schedule.settle_seconds
        end = (i + 1) * schedule.step_seconds
        mask = (log.elapsed_s >= start) & (log.elapsed_s < end)
        if name is not None:
            mask &= log.names == name
        ok_ms = log.response_ms[mask & log.ok]
        requests = int(mask.sum())
        seconds = end - start
        steps.append(
            StepStats(
                users=users,
                seconds=seconds,
                requests=requests,
                failures=requests - int(ok_ms.size),
                shed=int((mask & (log.status == 429)).sum()),
                rps=ok_ms.size / seconds,
                # Latency of successes: a fast 429 must not make p99 look better.
                p50_ms=_percentile(ok_ms, 50),
                p95_ms=_percentile(ok_ms, 95),
                p99_ms=_percentile(ok_ms, 99),
            )
        )
    return steps
