"""Service-level objectives as data (loadtests/slo.toml) and their verdict on a load-test run."""

from __future__ import annotations

import json
import math
import statistics
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from loadtests.reference import Reference
from loadtests.stats import AGGREGATED, RequestLog, Schedule, StepStats, step_stats

# Keys a file may leave out: added after SLO files were written, with a default that suits them.
OPTIONAL_KEYS = frozenset({"min_goodput_ratio"})


class SloError(ValueError):
    """The SLO file is malformed, or asks about a load the run did not apply."""


@dataclass(frozen=True)
class Slo:
    at_users: int  # the ramp step latency and throughput are judged at
    endpoint: str  # Locust request name for the latency objective; "Aggregated" = every request
    # p99 of `endpoint` at `at_users`, as a multiple of the latency the model alone would give there
    # (Reference.ideal_ms): relative to this host's speed, measured in the same run.
    max_p99_ratio: float
    max_error_rate: float  # every endpoint, ramp steps up to `at_users` (beyond it: overload, reported)
    # /classify digits served per second with `at_users` h2load connections, as a share of the model
    # alone's images/s (loadtests/reference.py): the median over alternating pairs.
    min_capacity_ratio: float
    # Successful responses/s at the ramp's top step, as a share of the best step's: overload must be
    # shed while the service keeps serving near its capacity, measured in the same run.
    min_goodput_ratio: float = 0.8

    def __post_init__(self) -> None:
        if (
            self.at_users < 1
            or self.max_p99_ratio <= 0
            or self.min_capacity_ratio < 0
            or not 0 <= self.max_error_rate <= 1
        ):
            raise SloError(f"out of range: {self}")
        if not 0 <= self.min_goodput_ratio <= 1:
            raise SloError(f"min_goodput_ratio must be within [0, 1], got {self.min_goodput_ratio}")

    @classmethod
    def read(cls, path: Path) -> Slo:
        try:
            text = path.read_text()
            raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (OSError, ValueError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
            raise SloError(f"{path}: cannot read SLOs: {exc}") from exc
        names = {f.name for f in fields(cls)}
        required = names - OPTIONAL_KEYS
        if not required <= set(raw) <= names:
            raise SloError(
                f"{path}: needs exactly the keys {sorted(required)} (and may set {sorted(OPTIONAL_KEYS)}), "
                f"got {sorted(raw)}"
            )
        try:
            return cls(
                at_users=int(raw["at_users"]),
                endpoint=str(raw["endpoint"]),
                max_p99_ratio=float(raw["max_p99_ratio"]),
                max_error_rate=float(raw["max_error_rate"]),
                min_capacity_ratio=float(raw["min_capacity_ratio"]),
                **{key: float(raw[key]) for key in OPTIONAL_KEYS if key in raw},
            )
        except (TypeError, ValueError) as exc:
            raise SloError(f"{path}: {exc}") from exc


@dataclass(frozen=True)
class Verdict:
    objective: str
    target: str
    measured: str
    met: bool


def _step_at(steps: list[StepStats], users: int) -> StepStats:
    for step in steps:
        if step.users == users:
            return step
    raise SloError(f"the SLOs are judged at {users} users, but the ramp ran {[s.users for s in steps]}")


def evaluate(slo: Slo, log: RequestLog, schedule: Schedule, reference: Reference) -> list[Verdict]:
    """One verdict per objective; a missing measurement (no requests at that step) is a miss."""
    endpoint = None if slo.endpoint == AGGREGATED else slo.endpoint
    if endpoint is not None and endpoint not in log.names_seen():
        raise SloError(f"no request named {endpoint!r} in this run; names: {log.names_seen()}")
    latency = _step_at(step_stats(log, schedule, endpoint), slo.at_users)
    # Steps past `at_users` probe overload, where 429s are the designed response: reported, not judged.
    judged = np.zeros(log.ok.shape, dtype=bool)
    for i, users in enumerate(schedule.users):
        if users <= slo.at_users:
            judged |= (log.elapsed_s >= i * schedule.step_seconds) & (
                log.elapsed_s < (i + 1) * schedule.step_seconds
            )
    steps = step_stats(log, schedule)
    top, best = steps[-1], max(steps, key=lambda step: step.rps)
    requests = int(judged.sum())
    failures = int((judged & ~log.ok).sum())
    error_rate = failures / requests if requests else math.nan
    ideal_ms = reference.ideal_ms(slo.at_users)
    capacity = reference.images_per_s
    served = statistics.median(reference.served_rounds) if reference.served_rounds else math.nan
    return [
        Verdict(
            f"p99 of {slo.endpoint} at {slo.at_users} users",
            f"<= {slo.max_p99_ratio:g} x {ideal_ms:.1f} ms (the model alone) "
            f"= {slo.max_p99_ratio * ideal_ms:.0f} ms",
            f"{latency.p99_ms:.0f} ms ({latency.p99_ms / ideal_ms:.1f} x)",
            latency.p99_ms <= slo.max_p99_ratio * ideal_ms,  # NaN (no successes) compares False: a miss
        ),
        Verdict(
            f"error rate up to {slo.at_users} users",
            f"<= {slo.max_error_rate:.2%}",
            f"{error_rate:.2%} ({failures} of {requests})",
            error_rate <= slo.max_error_rate,  # NaN (no requests) compares False: a miss
        ),
        Verdict(
            f"capacity at {reference.connections} connections (h2load, before the ramp)",
            f">= {slo.min_capacity_ratio:.1%} of the model alone's images/s, pair by pair",
            f"{reference.capacity_ratio:.1%} (median; {served:.0f} req/s, "
            f"the model alone {capacity:.0f} images/s)",
            reference.capacity_ratio >= slo.min_capacity_ratio,  # NaN (no pairs) compares False: a miss
        ),
        Verdict(
            f"goodput at {top.users} users (the top step)",
            f">= {slo.min_goodput_ratio:.0%} of the best step's {best.rps:.1f} req/s ({best.users} users)",
            f"{top.rps:.1f} req/s ({top.rps / best.rps:.0%})" if best.rps else "no successes",
            top.rps >= slo.min_goodput_ratio * best.rps and best.rps > 0,
        ),
    ]
