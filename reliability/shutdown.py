"""SIGTERM a loaded server, several times, and count what was lost (the target is 0).

    .venv/bin/python -m reliability.shutdown [--rounds 3] [--concurrency 32] [--delay 2]

Each round starts a server (the shipped model, or VITSERVE_TEST_MODEL_DIR) with
VITSERVE_SHUTDOWN_DELAY_S=--delay, loads it through a balancer that polls /readyz, sends SIGTERM to the
supervising process mid-load and prints harness/drain.py's report.
"""

from __future__ import annotations

import argparse
import sys

from vitserve.harness.drain import sigterm_under_load
from vitserve.harness.servers import SAMPLES_DIR, ServerProcess


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--delay", type=int, default=2, help="VITSERVE_SHUTDOWN_DELAY_S")
    parser.add_argument("--answered-before", type=int, default=1000, help="answers before SIGTERM")
    args = parser.parse_args()
    payload = sorted(SAMPLES_DIR.glob("*.png"))[0].read_bytes()
    lost = 0
    for round_ in range(1, args.rounds + 1):
        server = ServerProcess(env={"VITSERVE_SHUTDOWN_DELAY_S": str(args.delay)}).start()
        try:
            report = sigterm_under_load(server, payload, args.concurrency, args.answered_before)
        finally:
            server.stop()
        lost += sum(report.lost.values())
        print(
            f"round {round_} (model {SAMPLES_DIR.parent}, delay {args.delay} s, {args.concurrency} clients)"
        )
        print("\n".join("  " + line for line in report.lines()))
    print(f"lost in {args.rounds} rounds: {lost}")
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
