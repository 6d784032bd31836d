"""A cheap closed-loop load generator: wrk (C, epoll) posting one pre-built body, plus its own CPU cost.

On a 2-core machine the load generator shares the cores with the server it measures. A Python
client spends a millisecond or more of CPU per request, as much as the servers under test; wrk
spends a few tens of microseconds. Each run reports the generator's own CPU per request (from the
kernel's rusage of the wrk process) so that a reader can see it stayed small.

`apt-get install wrk` (Debian) provides it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vitserve.harness.uploads import multipart

# wrk calls done() once at the end of a run: print what we need as one JSON line on stdout.
LUA = """
local f = assert(io.open(os.getenv("VITSERVE_WRK_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
for line in io.lines(os.getenv("VITSERVE_WRK_HEADERS")) do
  local name, value = line:match("^([^:]+): (.*)$")
  wrk.headers[name] = value
end

-- With VITSERVE_WRK_THINK_MS each connection pauses a random (exponential) time of that mean after
-- each answer, so that many connections together arrive like independent users at a set rate.
local think = tonumber(os.getenv("VITSERVE_WRK_THINK_MS") or "")
if think then
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16))
  delay = function()
    return -think * math.log(1 - math.random())
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\n{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
    .. '"p50_us":%d,"p99_us":%d,"max_us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


class WrkMissing(RuntimeError):
    """wrk is not installed."""


@dataclass(frozen=True)
class Upload:
    """One request body, built once and sent unchanged by every request."""

    body: bytes
    content_type: str
    extra_headers: tuple[tuple[str, str], ...] = ()

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type, **dict(self.extra_headers)}

    @classmethod
    def multipart(cls, field: str, filename: str, data: bytes, media_type: str) -> Upload:
        return cls(*multipart([(field, filename, data, media_type)]))


@dataclass(frozen=True)
class WrkResult:
    concurrency: int
    duration_s: float
    requests: int  # completed, whatever their status
    failed: int  # non-2xx/3xx answers, socket errors and timeouts
    p50_ms: float
    p99_ms: float
    max_ms: float
    generator_cpu_s: float  # user + system CPU of the wrk process itself
    socket_errors: int = 0  # connect, read and write errors and timeouts: not answers at all

    @property
    def ok_per_s(self) -> float:
        return (self.requests - self.failed) / self.duration_s

    @property
    def generator_cpu_ms_per_request(self) -> float:
        return 1000 * self.generator_cpu_s / max(self.requests, 1)


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing("wrk is not installed; on Debian: apt-get install -y wrk")
    return path


def run_wrk(
    url: str,
    upload: Upload,
    concurrency: int,
    duration_s: float,
    timeout_s: float = 30,
    think_ms: float | None = None,
) -> WrkResult:
    """`concurrency` connections, each sending its next request as soon as its last is answered, or
    (think_ms) after a random pause of that mean: latency then excludes the pause."""
    with tempfile.TemporaryDirectory(prefix="vitserve-wrk-") as tmp:
        script, body, headers = Path(tmp) / "post.lua", Path(tmp) / "body", Path(tmp) / "headers"
        script.write_text(LUA)
        body.write_bytes(upload.body)
        headers.write_text("".join(f"{k}: {v}\n" for k, v in upload.headers.items()))
        env = {**os.environ, "VITSERVE_WRK_BODY": str(body), "VITSERVE_WRK_HEADERS": str(headers)}
        if think_ms is not None:
            env["VITSERVE_WRK_THINK_MS"] = f"{think_ms:g}"
        # One thread drives every connection: at these rates it is far from busy, and a second
        # thread would only take a core from the server.
        # wrk takes whole seconds only.
        command = [wrk_binary(), "-t1", f"-c{concurrency}", f"-d{max(1, math.ceil(duration_s))}s"]
        command += [f"--timeout={max(1, math.ceil(timeout_s))}s", "-s", str(script), url]
        out, cpu_s = run_generator(command, env, "wrk")
    return parse_summary(out, concurrency, cpu_s, "wrk")


def run_generator(command: list[str], env: dict[str, str], name: str) -> tuple[str, float]:
    """Run a load generator to its end: (its stdout, user + system CPU seconds of the process itself)."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed ({proc.returncode}): {err or out}")
    return out, usage.ru_utime + usage.ru_stime


def parse_summary(out: str, concurrency: int, cpu_s: float, name: str) -> WrkResult:
    """The last JSON line a generator printed (LUA's done() format) -> its result. A generator that
    reports `cpu_us`, its CPU over the measured loop, is billed that instead of `cpu_s`: a Python
    one's start-up (its imports) would otherwise count as load it put on the machine."""
    line = next((ln for ln in reversed(out.splitlines()) if ln.startswith("{")), None)
    if line is None:
        raise RuntimeError(f"{name} printed no summary:\n{out}")
    s = json.loads(line)
    failed = s["connect"] + s["read"] + s["write"] + s["status"] + s["timeout"]
    return WrkResult(
        concurrency=concurrency,
        duration_s=s["duration_us"] / 1e6,
        requests=s["requests"],
        failed=min(failed, s["requests"]) if s["requests"] else failed,
        p50_ms=s["p50_us"] / 1000,
        p99_ms=s["p99_us"] / 1000,
        max_ms=s["max_us"] / 1000,
        generator_cpu_s=s["cpu_us"] / 1e6 if "cpu_us" in s else cpu_s,
        socket_errors=s["connect"] + s["read"] + s["write"] + s["timeout"],
    )
