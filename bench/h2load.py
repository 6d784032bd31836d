"""Floods from a C load generator: h2load (nghttp2) over HTTP/1.1, at a fixed number of connections that
each resend as soon as they are answered, or paced at a request rate per connection.

h2load logs every request (start, status, duration) to a file, so each answer's latency comes from
the generator itself, split by status; its own CPU comes from the kernel's rusage of its process.
Pacing is per connection and HTTP/1.1 keeps one request outstanding on each: a connection waiting
for an answer sends nothing, so a paced flood reaches its rate only with connections >= rate x
latency (FloodPoint reports the rate reached beside the one asked for). Each paced connection ticks
on its own timer from the moment it opens; opened all at once they tick in phase, one herd per tick
and nothing between, so paced connections are opened in small groups spread over one tick (h2load's
rate mode) and their requests arrive spread over time, as an open loop's do.

`apt-get install nghttp2-client` (Debian) provides it.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vitserve.bench.wrk import Upload, run_generator

SUMMARY = re.compile(
    r"requests: (?P<total>\d+) total, (?P<started>\d+) started, (?P<done>\d+) done, \d+ succeeded, "
    r"\d+ failed, (?P<errored>\d+) errored, (?P<timeout>\d+) timeout"
)


OPEN_PERIOD_MS = 10  # paced connections open in groups this far apart


class H2loadMissing(RuntimeError):
    """h2load is not installed."""


@dataclass(frozen=True)
class Answer:
    status: int
    latency_ms: float
    started_s: float  # since the epoch


@dataclass(frozen=True)
class H2loadResult:
    connections: int
    rate_per_connection: float | None  # None: closed loop
    duration_s: float  # closed loop: as asked; paced: the span over which requests were sent
    started: int  # requests sent
    done: int  # answered, whatever the status
    errors: int  # errored (connection reset, refused) and timed out: no answer at all
    answers: list[Answer]
    generator_cpu_s: float  # user + system CPU of the h2load process itself

    def latencies_ms(self, status: int) -> list[float]:
        """Of the requests sent once every connection was open: paced, the first tick opens them, and a
        request's latency then includes its connection's handshake under the flood."""
        if self.rate_per_connection is None or not self.answers:
            return [a.latency_ms for a in self.answers if a.status == status]
        opened = min(a.started_s for a in self.answers) + 1 / self.rate_per_connection
        return [a.latency_ms for a in self.answers if a.status == status and a.started_s >= opened]


def h2load_binary() -> str:
    path = shutil.which("h2load")
    if path is None:
        raise H2loadMissing("h2load is not installed; on Debian: apt-get install -y nghttp2-client")
    return path


def run_h2load(
    url: str, upload: Upload, connections: int, duration_s: float, rate_per_connection: float | None = None
) -> H2loadResult:
    """`connections` HTTP/1.1 connections posting `upload` for duration_s: each as soon as its last is
    answered, or at `rate_per_connection` requests/s (fractions allowed)."""
    with tempfile.TemporaryDirectory(prefix="vitserve-h2load-") as tmp:
        body, log = Path(tmp) / "body", Path(tmp) / "requests.tsv"
        body.write_bytes(upload.body)
        # One thread drives every connection: a second would only take a core from the server.
        command = [h2load_binary(), "--h1", "-t1", f"-c{connections}"]
        if rate_per_connection is None:
            command.append(f"-D{max(1, round(1000 * duration_s))}ms")
        else:
            command += paced_arguments(connections, duration_s, rate_per_connection)
        command += ["-d", str(body), "--log-file", str(log)]
        command += [arg for k, v in upload.headers.items() for arg in ("-H", f"{k}: {v}")]
        out, cpu_s = run_generator([*command, url], dict(os.environ), "h2load")
        answers = []
        if log.exists():
            for line in log.read_text().splitlines():
                start, code, micros = line.split("\t")
                answers.append(Answer(int(code), int(micros) / 1000, int(start) / 1e6))
    summary = SUMMARY.search(out)
    if summary is None:
        raise RuntimeError(f"h2load printed no summary:\n{out}")
    return H2loadResult(
        connections=connections,
        rate_per_connection=rate_per_connection,
        duration_s=duration_s if rate_per_connection is None else sending_s(answers, rate_per_connection),
        started=int(summary["started"]),
        done=int(summary["done"]),
        errors=int(summary["errored"]) + int(summary["timeout"]),
        answers=answers,
        generator_cpu_s=cpu_s,
    )


def paced_arguments(connections: int, duration_s: float, rate_per_connection: float) -> list[str]:
    """h2load's rate mode: `connections` opened a group every OPEN_PERIOD_MS over one tick
    (1 / rate_per_connection), each sending duration_s x rate_per_connection requests at its own pace.
    Rate mode counts requests rather than time (-n, not -D)."""
    tick_s = 1 / rate_per_connection
    groups = max(1, math.floor(1000 * tick_s / OPEN_PERIOD_MS))
    per_group = math.ceil(connections / groups)
    requests = connections * max(1, round(duration_s * rate_per_connection))
    return [
        f"-r{per_group}",
        f"--rate-period={OPEN_PERIOD_MS}ms",
        f"-n{requests}",
        f"--rps={rate_per_connection:.6g}",
    ]


def sending_s(answers: list[Answer], rate_per_connection: float) -> float:
    """How long a paced flood sent for: from its first request to its last, plus the last one's tick."""
    if not answers:
        return 1 / rate_per_connection
    starts = [a.started_s for a in answers]
    return max(starts) - min(starts) + 1 / rate_per_connection


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.floor(q * len(ordered)))]
