"""Offer 5x the measured capacity for 60 s on loopback and print what was shed, kept and recovered.

    .venv/bin/python -m reliability.overload [--seconds 60] [--factor 5] [--max-in-flight 16]

Starts its own server (the shipped model, or VITSERVE_TEST_MODEL_DIR), measures capacity closed-loop at
the admission bound, floods it open-loop, then measures again. docs/reliability.md quotes its output.
"""

from __future__ import annotations

import argparse
import sys

from vitserve.harness.overload import run_overload
from vitserve.harness.servers import SAMPLES_DIR, running_server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the flood")
    parser.add_argument("--factor", type=float, default=5.0, help="offered load / measured capacity")
    parser.add_argument("--max-in-flight", type=int, default=16, help="VITSERVE_MAX_IN_FLIGHT")
    parser.add_argument("--capacity-seconds", type=float, default=15.0)
    args = parser.parse_args()
    payload = sorted(SAMPLES_DIR.glob("*.png"))[0].read_bytes()
    with running_server(env={"VITSERVE_MAX_IN_FLIGHT": str(args.max_in_flight)}) as server:
        assert server.proc is not None
        report = run_overload(
            server.url,
            server.proc.pid,
            payload,
            args.max_in_flight,
            factor=args.factor,
            capacity_s=args.capacity_seconds,
            overload_s=args.seconds,
            recovery_s=args.capacity_seconds,
        )
    print(f"model: {SAMPLES_DIR.parent}")
    print("\n".join(report.lines()))
    verdicts = {
        "no 5xx besides 503 + Retry-After": not any(k[0] == "5" for k in report.other),
        "every request answered (no reset, no 30 s timeout)": not any(
            k.startswith("no-response") for k in report.other
        ),
        "every shed answer has Retry-After": report.shed_without_retry_after == 0,
        "shed within 100 ms (p99)": report.shed_p99_s <= 0.1,
        "accepted p99 within 2x of p99 at capacity": report.accepted_p99_s <= 2 * report.capacity_p99_s,
        "RSS grew < 200 MiB": report.rss_peak_mib - report.rss_before_mib < 200,
        "recovered to >= 90% of capacity": report.recovered_rps >= 0.9 * report.capacity_rps,
    }
    for name, ok in verdicts.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
